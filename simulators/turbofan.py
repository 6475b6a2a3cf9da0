"""NASA C-MAPSS turbofan trajectories replayed as a fleet of live engines, with their failure times as truth.

The rotating-machine simulator is our own physics; C-MAPSS is the benchmark the prognostics literature
scores against (RMSE, PHM score), so replaying it through the wire lets the platform's RUL rules be
compared with published results. Each file row is one flight cycle of one engine: unit, cycle, three
operating settings, 21 sensors, whitespace separated (``train_FD00x.txt`` run to failure,
``test_FD00x.txt`` stop early, ``RUL_FD00x.txt`` gives the test engines' remaining cycles).

Unit ``u`` of data set ``FD001`` becomes asset ``engine-FD001-001`` (test split: ``engine-FD001-test-001``)
with the points of the ``turbofan`` asset type: ``setting_1..3``, ``s_1..s_21``. Cycle ``c`` is sent at
``t0 + (c - 1) · cycle_period``; all engines start together. Values are the file's numbers unchanged
(``repr`` of the parsed float), quality good.

Ground truth: a train engine fails at its last cycle (RUL 0 there, the usual convention); a test engine
at its last cycle plus its RUL_FD00x value. The fault window starts ``rul_cap_cycles`` (default 125)
before failure, the piecewise-linear RUL convention for when degradation becomes visible; a window that
starts after the replay ends is left out (nothing in the data can show it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from simulators.devices import (
    DEFAULT_TOPIC_TEMPLATE,
    ArrayTriple,
    PayloadStyle,
    PublishReport,
    Reading,
    interleave,
    publish_readings,
)

ASSET_TYPE = "turbofan"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "CMAPSS"
"""The shared data folder beside the repository (``../shared/data/CMAPSS``)."""
DATASETS = ("FD001", "FD002", "FD003", "FD004")
SETTINGS = ("setting_1", "setting_2", "setting_3")
SENSORS = tuple(f"s_{i}" for i in range(1, 22))
POINTS: tuple[str, ...] = (*SETTINGS, *SENSORS)
"""Point ids in file column order (columns 3..26)."""
FAULT_MODES = {"FD001": ["hpc"], "FD002": ["hpc"], "FD003": ["hpc", "fan"], "FD004": ["hpc", "fan"]}
Split = Literal["train", "test"]
_NS = 1_000_000_000
DEFAULT_START = datetime(2025, 6, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Engine:
    """One engine's trajectory: cycle numbers, values (cycles x 24, POINTS order) and when it fails."""

    asset_id: str
    dataset: str
    split: Split
    unit: int
    cycles: np.ndarray  # int64, 1..n
    values: np.ndarray  # float64, shape (n, 24)
    failure_cycle: int  # last cycle for train; last cycle + true RUL for test


def engine_id(dataset: str, unit: int, split: Split = "train") -> str:
    return f"engine-{dataset}-{unit:03d}" if split == "train" else f"engine-{dataset}-test-{unit:03d}"


def _check(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"data set {dataset!r}: use one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: use train or test")


def load_cmapss(data_dir: Path | str, dataset: str, split: Split = "train") -> np.ndarray:
    """The file's rows as float64, shape (rows, 26): unit, cycle, 3 settings, 21 sensors."""
    _check(dataset, split)
    path = Path(data_dir) / f"{split}_{dataset}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (pass the folder holding the C-MAPSS text files)")
    rows = np.loadtxt(path, ndmin=2)
    if rows.shape[1] != 2 + len(POINTS):
        raise ValueError(f"{path}: expected 26 columns (unit, cycle, 3 settings, 21 sensors), got {rows.shape[1]}")
    return rows


def load_rul(data_dir: Path | str, dataset: str) -> np.ndarray:
    """True remaining cycles after the last row of each test engine, in unit order."""
    _check(dataset, "test")
    return np.loadtxt(Path(data_dir) / f"RUL_{dataset}.txt", ndmin=1).astype(np.int64)


def load_engines(data_dir: Path | str = DEFAULT_DATA, dataset: str = "FD001", split: Split = "train",
                 units: int | None = None) -> list[Engine]:
    """The first ``units`` engines of a file (all when None), in unit order."""
    rows = load_cmapss(data_dir, dataset, split)
    unit_col = rows[:, 0].astype(np.int64)
    ids = np.unique(unit_col)
    if units is not None:
        if units < 1:
            raise ValueError("units must be at least 1")
        ids = ids[:units]
    rul = load_rul(data_dir, dataset) if split == "test" else None
    engines = []
    for u in ids.tolist():
        mine = rows[unit_col == u]
        cycles = mine[:, 1].astype(np.int64)
        if not np.array_equal(cycles, np.arange(1, len(cycles) + 1)):
            raise ValueError(f"{split}_{dataset}.txt: unit {u}: cycles are not 1, 2, 3, ...")
        last = int(cycles[-1])
        failure = last if rul is None else last + int(rul[u - 1])
        engines.append(Engine(engine_id(dataset, u, split), dataset, split, u, cycles,
                              np.ascontiguousarray(mine[:, 2:]), failure))
    return engines


def cycle_ns(t0_ns: int, cycle: np.ndarray | int, cycle_period_s: float) -> np.ndarray:
    """When cycle ``c`` (1-based) is sent."""
    return t0_ns + np.round((np.asarray(cycle, np.int64) - 1) * cycle_period_s * _NS).astype(np.int64)


def engine_series(engines: list[Engine], t0_ns: int, cycle_period_s: float = 1.0
                  ) -> dict[tuple[str, str], ArrayTriple]:
    """{(asset, point): (t_ns, values, quality)} for every engine and point, ready for ``interleave``."""
    if cycle_period_s <= 0:
        raise ValueError("cycle_period_s must be positive")
    out: dict[tuple[str, str], ArrayTriple] = {}
    for e in engines:
        t_ns = cycle_ns(t0_ns, e.cycles, cycle_period_s)
        good = np.zeros(len(t_ns), np.int8)
        for j, point in enumerate(POINTS):
            out[(e.asset_id, point)] = (t_ns, e.values[:, j], good)
    return out


def turbofan_readings(engines: list[Engine], t0_ns: int, cycle_period_s: float = 1.0) -> Iterator[Reading]:
    """Every engine's cycles as device readings in time order (engine by engine within a cycle)."""
    return interleave(engine_series(engines, t0_ns, cycle_period_s))


def ground_truth(engines: list[Engine], t0_ns: int, cycle_period_s: float = 1.0, *,
                 rul_cap_cycles: int = 125) -> dict:
    """Failure times and degradation windows, in the shape of a scenario's ``ground_truth.json``."""
    period_ns = round(cycle_period_s * _NS)
    end_ns = t0_ns + max((int(e.cycles[-1]) for e in engines), default=0) * period_ns
    faults = []
    for e in engines:
        failure_ns = int(cycle_ns(t0_ns, e.failure_cycle, cycle_period_s))
        start_ns = int(cycle_ns(t0_ns, max(1, e.failure_cycle - rul_cap_cycles), cycle_period_s))
        if start_ns < t0_ns + int(e.cycles[-1]) * period_ns:
            faults.append({"asset": e.asset_id, "kind": "engine_degradation", "start_ns": start_ns,
                           "end_ns": failure_ns, "failure_ns": failure_ns,
                           "params": {"fault_modes": FAULT_MODES[e.dataset], "failure_cycle": e.failure_cycle,
                                      "rul_cap_cycles": rul_cap_cycles}})
    return {
        "scenario": f"cmapss-{'-'.join(sorted({f'{e.dataset}-{e.split}' for e in engines}))}",
        "mode": "replay",
        "start_ns": t0_ns,
        "end_ns": end_ns,
        "sample_period_s": cycle_period_s,
        "assets": [{"id": e.asset_id, "type": ASSET_TYPE,
                    "params": {"dataset": e.dataset, "split": e.split, "unit": e.unit, "cycles": int(e.cycles[-1]),
                               "failure_cycle": e.failure_cycle}} for e in engines],
        "faults": faults,
        "events": [],
    }


@dataclass
class TurbofanRun:
    engines: list[Engine]
    ground_truth: dict
    report: PublishReport | None
    n_readings: int


def start_ns(realtime: bool, cycle_period_s: float, start: datetime = DEFAULT_START) -> int:
    """Live: the next cycle boundary on the wall clock. Replay into history: ``start``."""
    if realtime:
        period_ns = max(1, round(cycle_period_s * _NS))
        return (time.time_ns() // period_ns + 1) * period_ns
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    return int(start.timestamp()) * _NS + start.microsecond * 1_000


def run_turbofan(
    data_dir: Path | str = DEFAULT_DATA,
    dataset: str = "FD001",
    *,
    split: Split = "train",
    units: int | None = None,
    cycle_period_s: float = 1.0,
    broker_url: str | None = None,
    realtime: bool = True,
    start: datetime = DEFAULT_START,
    qos: int = 1,
    style: PayloadStyle = "json",
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    out_dir: Path | str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TurbofanRun:
    """Load, write ``ground_truth.json`` (if ``out_dir``), then publish every cycle of every engine.

    ``realtime`` sends each cycle when the wall clock reaches it (live engines); otherwise samples are
    stamped from ``start`` and sent as fast as the broker acknowledges (back-filling history).
    """
    engines = load_engines(data_dir, dataset, split, units)
    t0 = start_ns(realtime, cycle_period_s, start)
    truth = ground_truth(engines, t0, cycle_period_s)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    n = sum(len(e.cycles) for e in engines) * len(POINTS)
    report = None
    if broker_url:
        report = publish_readings(
            broker_url, turbofan_readings(engines, t0, cycle_period_s), qos=qos, style=style,
            topic_template=topic_template, realtime=realtime,
            on_progress=None if on_progress is None else lambda sent: on_progress(sent, n))
    return TurbofanRun(engines, truth, report, n)
