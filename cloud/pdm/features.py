"""From raw C-MAPSS trajectories to one feature row per (unit, cycle), using only cycles up to that one.

Two steps. ``ConditionNormaliser`` takes the operating condition out of the sensors: FD002/FD004 jump
between six flight conditions (altitude, Mach, throttle) whose effect on a sensor is far larger than the
wear, so each sensor is standardised with the mean and spread of its own condition (found by clustering
the three settings). ``window_features`` then summarises each normalised sensor over trailing windows:
level (means), rate (least-squares slopes), noise (std) and drift from the engine's own first cycles,
which removes the engine-to-engine manufacturing offset. Everything is causal, so the row at a test
engine's last cycle is computed exactly as a training row was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans

from cloud.pdm.data import Trajectories

CONDITION_TOL = 0.05
"""Largest RMS distance (setting units: kft, Mach, % throttle) of a row from its condition's centre. The
six C-MAPSS conditions are ≥ 0.1 apart in every setting; the noise on a setting is a few thousandths."""


@dataclass
class ConditionNormaliser:
    """Per-condition standardisation of the sensors; drops sensors constant within every condition."""

    n_conditions: int | None = None  # None: the fewest clusters that fit the settings within CONDITION_TOL
    min_std: float = 1e-6
    centres_: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    mean_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    std_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    sensors_: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def fit(self, traj: Trajectories) -> ConditionNormaliser:
        s = traj.settings
        for k in ([self.n_conditions] if self.n_conditions else range(1, 10)):
            km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(s)
            if self.n_conditions or np.sqrt(km.inertia_ / len(s)) <= CONDITION_TOL:
                break
        self.centres_ = km.cluster_centers_
        label = km.labels_
        n_cond = len(self.centres_)
        x = traj.sensors
        self.mean_ = np.zeros((n_cond, x.shape[1]))
        self.std_ = np.ones((n_cond, x.shape[1]))
        for c in range(n_cond):
            rows = x[label == c]
            self.mean_[c] = rows.mean(axis=0)
            self.std_[c] = rows.std(axis=0)
        # A sensor that only reflects the condition (or never moves) is constant within each: nothing to learn.
        self.sensors_ = np.flatnonzero((self.std_ > self.min_std * (1.0 + np.abs(self.mean_))).any(axis=0))
        self.std_ = np.where(self.std_ > self.min_std * (1.0 + np.abs(self.mean_)), self.std_, np.inf)
        return self

    def condition(self, settings: np.ndarray) -> np.ndarray:
        d = ((settings[:, None, :] - self.centres_[None, :, :]) ** 2).sum(axis=2)
        return np.argmin(d, axis=1)

    def transform(self, traj: Trajectories) -> np.ndarray:
        """(n, kept sensors) standardised within each row's condition."""
        c = self.condition(traj.settings)
        z = (traj.sensors - self.mean_[c]) / self.std_[c]
        return z[:, self.sensors_]


def _trailing(a: np.ndarray, starts: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(sum over the trailing ``window`` rows of the same unit, count of those rows); None: since the start."""
    n = a.shape[0]
    csum = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])
    idx = np.arange(n)
    first = np.repeat(starts[:-1], np.diff(starts))
    lo = first if window is None else np.maximum(first, idx - window + 1)
    return csum[idx + 1] - csum[lo], (idx + 1 - lo).astype(np.float64)


def _leading(a: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Mean of the unit's first ``window`` rows, using only rows up to the current one (causal)."""
    n = a.shape[0]
    csum = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])
    idx = np.arange(n)
    first = np.repeat(starts[:-1], np.diff(starts))
    hi = np.minimum(idx + 1, first + window)
    return (csum[hi] - csum[first]) / (hi - first)[:, None]


@dataclass(frozen=True)
class WindowSpec:
    """Which trailing summaries to compute; the defaults were chosen by grouped CV (see ``cloud.pdm.model``)."""

    means: tuple[int | None, ...] = (5, 20, None)
    slopes: tuple[int | None, ...] = (20, None)
    stds: tuple[int | None, ...] = ()
    baseline: int = 20  # cycles that define the engine's own starting level
    drift_window: int = 10


def window_features(z: np.ndarray, traj: Trajectories, spec: WindowSpec = WindowSpec()) -> tuple[np.ndarray, list[str]]:
    """Feature matrix (one row per input row) and column names; ``z`` is the normalised sensor matrix."""
    starts = traj.starts
    first = np.repeat(starts[:-1], np.diff(starts))
    t = (np.arange(len(z)) - first).astype(np.float64)[:, None]  # cycles since the unit's first row
    cols: list[np.ndarray] = [t, z]
    names = ["age"] + [f"s{j}_last" for j in range(z.shape[1])]
    for w in spec.means:
        s, n = _trailing(z, starts, w)
        cols.append(s / n[:, None])
        names += [f"s{j}_mean{w or 'all'}" for j in range(z.shape[1])]
    for w in spec.slopes:
        sx, n = _trailing(z, starts, w)
        st, _ = _trailing(t, starts, w)
        stt, _ = _trailing(t * t, starts, w)
        stx, _ = _trailing(t * z, starts, w)
        n = n[:, None]
        den = n * stt - st * st
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(den > 0, (n * stx - st * sx) / np.where(den > 0, den, 1.0), 0.0)
        cols.append(slope)
        names += [f"s{j}_slope{w or 'all'}" for j in range(z.shape[1])]
    for w in spec.stds:
        s, n = _trailing(z, starts, w)
        s2, _ = _trailing(z * z, starts, w)
        m = s / n[:, None]
        cols.append(np.sqrt(np.maximum(s2 / n[:, None] - m * m, 0.0)))
        names += [f"s{j}_std{w or 'all'}" for j in range(z.shape[1])]
    s, n = _trailing(z, starts, spec.drift_window)
    cols.append(s / n[:, None] - _leading(z, starts, spec.baseline))
    names += [f"s{j}_drift" for j in range(z.shape[1])]
    return np.hstack(cols), names
