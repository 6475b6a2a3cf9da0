"""C-MAPSS files: reading them, the run-to-failure target and the hash a model version records.

Each file has 26 space-separated columns (unit, cycle, 3 operating settings, 21 sensors); training
units run to failure, test units stop early and ``RUL_FD00x.txt`` holds their true remaining cycles.
The data stay where the user keeps them (``--data DIR``); nothing is copied into the repository.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = ("FD001", "FD002", "FD003", "FD004")
N_SENSORS = 21
RUL_CAP = 125
"""Piecewise-linear target cap: an engine early in life shows no degradation, so any RUL above the cap is
indistinguishable from the cap (Heimes 2008; 125 is the usual value, 130 the other one in use)."""


def default_data_dir() -> Path:
    """``../shared/data/CMAPSS`` next to the repository, where the shared data sets live."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "CMAPSS"


@dataclass(frozen=True)
class Trajectories:
    """Rows sorted by (unit, cycle); ``starts[i]:starts[i+1]`` are the rows of ``units[i]``."""

    unit: np.ndarray  # int64 (n,)
    cycle: np.ndarray  # int64 (n,)
    settings: np.ndarray  # float64 (n, 3)
    sensors: np.ndarray  # float64 (n, 21)

    @property
    def starts(self) -> np.ndarray:
        """Index of each unit's first row, plus the row count at the end."""
        change = np.flatnonzero(np.diff(self.unit)) + 1
        return np.concatenate([[0], change, [len(self.unit)]]).astype(np.int64)

    @property
    def units(self) -> np.ndarray:
        return self.unit[self.starts[:-1]]

    def last_rows(self) -> np.ndarray:
        """Index of each unit's last cycle: where a test engine is scored."""
        return self.starts[1:] - 1

    def subset(self, units: np.ndarray) -> Trajectories:
        keep = np.isin(self.unit, units)
        return Trajectories(self.unit[keep], self.cycle[keep], self.settings[keep], self.sensors[keep])


def from_array(a: np.ndarray) -> Trajectories:
    """Rows of the 26-column layout (any order) → sorted trajectories."""
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or a.shape[1] < 5 + N_SENSORS:
        raise ValueError(f"C-MAPSS rows need 26 columns (unit, cycle, 3 settings, 21 sensors), got shape {a.shape}")
    order = np.lexsort((a[:, 1], a[:, 0]))
    a = a[order]
    return Trajectories(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:5].copy(),
                        a[:, 5:5 + N_SENSORS].copy())


def load_trajectories(path: Path | str) -> Trajectories:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such C-MAPSS file (expected e.g. train_FD001.txt from the NASA set)")
    return from_array(np.loadtxt(path, ndmin=2))


def load_true_rul(path: Path | str) -> np.ndarray:
    """True RUL of each test unit, in unit order (RUL_FD00x.txt: one number per line)."""
    return np.loadtxt(Path(path), ndmin=1).astype(np.float64)


def dataset_files(data_dir: Path | str, dataset: str) -> dict[str, Path]:
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    d = Path(data_dir)
    return {"train": d / f"train_{dataset}.txt", "test": d / f"test_{dataset}.txt", "rul": d / f"RUL_{dataset}.txt"}


def rul_target(traj: Trajectories, cap: float | None = RUL_CAP) -> np.ndarray:
    """Cycles left until each unit's last (failure) cycle, capped at ``cap`` (None: uncapped)."""
    starts = traj.starts
    last = np.repeat(traj.cycle[starts[1:] - 1], np.diff(starts))
    rul = (last - traj.cycle).astype(np.float64)
    return rul if cap is None else np.minimum(rul, cap)


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
