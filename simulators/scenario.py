"""Scenarios: a fleet, its faults and its timing in one YAML file, run into published data plus ground truth.

A scenario is what a test or a demo needs to judge the platform: the same file and seed always give the
same samples and the same ``ground_truth.json`` (in compressed mode), so a detector's or a rule's
findings can be scored against the faults that were really injected. Example::

    name: trailer-faults
    seed: 7
    mode: compressed            # or realtime: starts now, each sample sent at its own wall-clock time
    start: 2025-06-02T00:00:00Z # compressed mode only
    duration: 2d                # number of seconds, or 90s / 15m / 36h / 2d
    sample_period: 60s
    broker: mqtt://127.0.0.1:1883   # omit to simulate and write files only
    topic_template: sim/{asset}/{point}
    style: json                 # or bare
    fleet:
      - {count: 2, prefix: trailer, setpoint_c: 4.0}      # trailer-001, trailer-002
      - {id: freezer-01, setpoint_c: -20.0, params: {ua_w_per_k: 180}}
    faults:
      - {asset: trailer-001, kind: door_open, start: 10h, duration: 40m}
      - {asset: trailer-002, kind: sensor_stuck, point: supply_air, start: 20h, duration: 3h}
"""

from __future__ import annotations

import csv
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from simulators.devices import DEFAULT_TOPIC_TEMPLATE, PublishReport, interleave, publish_readings
from simulators.trailer import (
    ASSET_TYPE,
    Fault,
    FaultKind,
    Trailer,
    TrailerParams,
    TrailerRun,
    simulate_fleet,
)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", value)
        if not m:
            raise ValueError(f"duration {value!r}: use seconds or a number with s, m, h or d (e.g. 36h)")
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class NumberedEntry(BaseModel):
    """One asset (``id``) or ``count`` numbered ones (``{prefix}-001`` …), with their parameters: the shape of a
    scenario's trailers, machines and vessels. ``entry`` names the kind in the error."""

    entry: ClassVar[str] = "fleet"
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    count: int | None = Field(None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way(self) -> NumberedEntry:
        if (self.id is None) == (self.count is None):
            raise ValueError(f"{self.entry} entry: give either 'id' or 'count'")
        return self


class FleetEntry(NumberedEntry):
    """One trailer (``id``) or ``count`` numbered ones (``{prefix}-001`` …), with their parameters."""

    prefix: str = "trailer"
    setpoint_c: float | None = None


class FaultSpec(BaseModel):
    """A fault on one asset, placed by offset from the scenario start."""

    model_config = ConfigDict(extra="forbid")
    asset: str
    kind: FaultKind
    start: Seconds
    duration: Seconds = Field(gt=0)
    point: str | None = None
    factor: float | None = None
    rate_per_h: float | None = None
    silent: bool | None = None


class ScenarioRun(BaseModel):
    """What every scenario file says about the run itself, whatever assets it simulates (trailers here,
    machines in ``simulators.machine``): name, seed, time span and how the samples go out."""

    model_config = ConfigDict(extra="forbid")
    name: str
    seed: int = 0
    mode: Literal["compressed", "realtime"] = "compressed"
    start: datetime = datetime(2025, 6, 2, tzinfo=UTC)
    duration: Seconds = Field(gt=0)
    sample_period: Seconds = Field(60.0, gt=0)
    step: Seconds = Field(10.0, gt=0)
    broker: str | None = None
    topic_template: str = DEFAULT_TOPIC_TEMPLATE
    style: Literal["json", "bare"] = "json"
    qos: Literal[0, 1] = 1
    rate: float | None = Field(None, gt=0)
    readings_csv: bool = False


class Scenario(ScenarioRun):
    fleet: list[FleetEntry] = Field(min_length=1)
    faults: list[FaultSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _faults_name_assets(self) -> Scenario:
        ids = [a for a, _ in self.assets()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"scenario {self.name}: asset ids repeat")
        for i, f in enumerate(self.faults):
            if f.asset not in ids:
                raise ValueError(f"scenario {self.name}: faults[{i}]: unknown asset {f.asset!r}")
            _fault(f, 0)  # kind-specific checks (a sensor fault names a point) at load, not at run
        return self

    def assets(self) -> list[tuple[str, TrailerParams]]:
        """(id, params) of every trailer, with counted entries numbered per prefix from 001."""
        numbered: dict[str, int] = {}
        out = []
        for entry in self.fleet:
            extra = entry.params | ({} if entry.setpoint_c is None else {"setpoint_c": entry.setpoint_c})
            params = TrailerParams(**extra)
            if entry.id is not None:
                out.append((entry.id, params))
                continue
            assert entry.count is not None
            first = numbered.get(entry.prefix, 0)
            numbered[entry.prefix] = first + entry.count
            out += [(f"{entry.prefix}-{i:03d}", params) for i in range(first + 1, first + entry.count + 1)]
        return out


def load_scenario(path: Path | str) -> Scenario:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return Scenario.model_validate(data)


def asset_seed(scenario_seed: int, asset_id: str) -> int:
    """A trailer's seed from the scenario's and its id, so adding a trailer leaves the others' data alone."""
    ss = np.random.SeedSequence([scenario_seed, zlib.crc32(asset_id.encode())])
    return int(ss.generate_state(1, np.uint64)[0])


@dataclass
class ScenarioResult:
    runs: list[TrailerRun]
    ground_truth: dict[str, Any]
    report: PublishReport | None
    n_readings: int


def _start_ns(scenario: Scenario) -> int:
    if scenario.mode == "realtime":
        # The next sample boundary: every sample is then sent at the wall-clock time it carries.
        period_ns = round(scenario.sample_period * 1e9)
        return (time.time_ns() // period_ns + 1) * period_ns
    start = scenario.start if scenario.start.tzinfo else scenario.start.replace(tzinfo=UTC)
    return int(start.timestamp()) * 1_000_000_000 + start.microsecond * 1_000


def _fault(f: FaultSpec, t0_ns: int) -> Fault:
    start = t0_ns + round(f.start * 1e9)
    return Fault(kind=f.kind, start_ns=start, end_ns=start + round(f.duration * 1e9), point=f.point,
                 factor=f.factor, rate_per_h=f.rate_per_h, silent=f.silent)


def build_trailers(scenario: Scenario, t0_ns: int) -> list[Trailer]:
    faults: dict[str, list[Fault]] = {}
    for f in scenario.faults:
        faults.setdefault(f.asset, []).append(_fault(f, t0_ns))
    return [Trailer(a, p, asset_seed(scenario.seed, a), faults.get(a, [])) for a, p in scenario.assets()]


def ground_truth(scenario: Scenario, trailers: list[Trailer], runs: list[TrailerRun], t0_ns: int) -> dict:
    """What was really simulated: true parameters, injected faults, and normal events (defrost, doors)."""
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "mode": scenario.mode,
        "start_ns": t0_ns,
        "end_ns": t0_ns + round(scenario.duration * 1e9),
        "sample_period_s": scenario.sample_period,
        "topic_template": scenario.topic_template,
        "style": scenario.style,
        "assets": [{"id": t.asset_id, "type": ASSET_TYPE, "seed": t.seed, "params": t.params.model_dump()}
                   for t in trailers],
        "faults": [{"asset": r.asset_id, "kind": f.kind, "start_ns": f.start_ns, "end_ns": f.end_ns,
                    "params": f.params()} for r in runs for f in r.faults],
        "events": [{"asset": r.asset_id, "kind": e.kind, "start_ns": e.start_ns, "end_ns": e.end_ns}
                   for r in runs for e in r.events],
    }


def _series(runs: list[TrailerRun]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {(r.asset_id, point): s for r in runs for point, s in r.points.items()}


def _write_csv(path: Path, runs: list[TrailerRun]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["asset", "point", "t_ns", "value", "quality"])
        w.writerows((r.asset, r.point, r.t_ns, repr(r.value), r.quality) for r in interleave(_series(runs)))


def run_scenario(
    scenario: Scenario,
    out_dir: Path | str,
    *,
    broker_url: str | None = None,
    publish: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScenarioResult:
    """Simulate the fleet, write ``ground_truth.json`` (and ``readings.csv`` if asked), then publish.

    ``broker_url`` overrides the scenario's broker; with neither, or ``publish=False``, nothing is sent.
    The ground truth is written before publishing so an observer can read it while data arrive.
    ``on_progress(sent, total)`` follows the publishing.
    """
    t0_ns = _start_ns(scenario)
    trailers = build_trailers(scenario, t0_ns)
    runs = simulate_fleet(trailers, t0_ns, scenario.duration, scenario.sample_period, step_s=scenario.step)
    truth = ground_truth(scenario, trailers, runs, t0_ns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if scenario.readings_csv:
        _write_csv(out / "readings.csv", runs)
    n = sum(len(s.t_ns) for r in runs for s in r.points.values())
    broker = broker_url or scenario.broker
    report = None
    if publish and broker:
        report = publish_readings(
            broker, interleave(_series(runs)), qos=scenario.qos, style=scenario.style,
            topic_template=scenario.topic_template, rate=scenario.rate,
            realtime=scenario.mode == "realtime",
            on_progress=None if on_progress is None else lambda sent: on_progress(sent, n))
    return ScenarioResult(runs, truth, report, n)
