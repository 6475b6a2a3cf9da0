"""Multivariate statistical process control over one asset's points: Hotelling T² and SPE (Q).

Per-point detectors miss a broken *relation*: supply air 4 °C and compressor current 2 A are each normal,
together they are not. ``fit(X)`` learns the relation from rows of known-normal aligned values (the fit is
``models.mspc``, numpy only, the one the cloud runs on history): standardise each column, eigen-decompose the
correlation matrix, keep ``k`` principal components. A row then scores

* ``T² = sum_c t_c² / lambda_c`` with ``t = P^T z`` — how unusual the row is *inside* the normal subspace;
* ``SPE = |z - P t|²`` — how far it is *off* it (the broken relation). With ``k`` = all columns (the
  default) ``T²`` is the Mahalanobis distance² and there is no SPE.

Limits at false-alarm rate ``alpha``: ``limits="theory"`` uses the chi-square quantile for T² (exact)
and Jackson-Mudholkar for SPE; ``limits="quantile"`` the training rows' empirical quantiles
(better for non-Gaussian data, needs many more than ``1/alpha`` rows). The edge gets only the arrays of an
``MspcBaseline`` (``save``/``load`` an .npz). Score = ``max(T²/T²_limit, SPE/SPE_limit)``, flag at 1.
``limit_scale`` widens both limits: a baseline of a few minutes does not hold all of a process's normal
variation (slow drift, small operating-point moves), so its quantile alone is too tight.

**Smoothed rows (MEWMA)**, ``fit(..., t_ns=..., smooth_tau_s=tau)``: each row is replaced by a causal,
time-decayed mean of the rows so far (weight ``1 - exp(-dt / tau)``, a running mean until that is
larger), and the baseline is fitted on smoothed rows too. Noise averages out while a sustained shift
does not, so small persistent shifts (a valve closing by a few per cent) stand out that single noisy
rows hide; the price is a delay of about ``tau``. The baseline carries ``smooth_tau_s`` so the edge
smooths exactly as the fit did.

**Rows from a tick** (``RowBuilder``): points report separately, so rows are built by last-value hold.
Each of the asset's points (``columns``, global point indices in the baseline's column order) holds its
last good value; the good samples of the asset's points are grouped by timestamp — a run of consecutive
samples with equal ``t_ns`` — and one row is emitted per group, at the group's last sample, after the
group's values are applied. A held value older than ``max_age_s`` at the row's time, or a point never
seen, makes that column NaN, and a row with a NaN is not scored. Groups are closed at the end of a tick:
gateways send whole poll cycles per tick; one split across ticks gives two rows. ``Mspc`` (a ``Detector``)
attaches a row's score to the sample that emitted it, so it can join an ``Ensemble``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=500)
>>> base = fit(np.c_[a, a + 0.05 * rng.normal(size=500)], n_components=1)
>>> d = Mspc(2, base, columns=[0, 1])
>>> idx = np.tile([0, 1], 5).astype(np.int64)
>>> t = np.repeat(np.arange(5) * 10**9, 2).astype(np.int64)
>>> x = np.array([0.1, 0.1, -0.5, -0.5, 1.0, 1.05, 1.0, -1.0, 0.3, 0.3])
>>> score, flag = d.update(idx, t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[7]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.base import Detector, as_tick, check_points, load_npz, save_npz
from edge.kernels import kernel
from models.mspc import fit_arrays, smooth_rows

_NEVER = np.iinfo(np.int64).min


@dataclass
class MspcBaseline:
    """What the edge needs to score rows: fitted by ``fit``, shipped as an .npz."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,) column standard deviations (1 where a column was constant)
    loadings: np.ndarray  # (d, k) orthonormal principal directions of the standardised data
    eigvals: np.ndarray  # (k,) variance along each direction
    t2_limit: float
    spe_limit: float  # 0 when k == d (no residual space)
    smooth_tau_s: float = 0.0  # > 0: rows are time-decayed means (MEWMA) before scoring

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "loadings": self.loadings, "eigvals": self.eigvals,
                "t2_limit": np.float64(self.t2_limit), "spe_limit": np.float64(self.spe_limit),
                "smooth_tau_s": np.float64(self.smooth_tau_s)}

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> MspcBaseline:
        return cls(mean=np.ascontiguousarray(st["mean"], np.float64),
                   scale=np.ascontiguousarray(st["scale"], np.float64),
                   loadings=np.ascontiguousarray(st["loadings"], np.float64),
                   eigvals=np.ascontiguousarray(st["eigvals"], np.float64),
                   t2_limit=float(st["t2_limit"]), spe_limit=float(st["spe_limit"]),
                   smooth_tau_s=float(st.get("smooth_tau_s", 0.0)))  # absent in baselines saved before

    def save(self, path: str | Path) -> None:
        save_npz(path, self.state())

    @classmethod
    def load(cls, path: str | Path) -> MspcBaseline:
        return cls.from_state(load_npz(path))


def fit(X: np.ndarray, n_components: int | float | None = None, alpha: float = 0.001,
        limits: str = "theory", *, t_ns: np.ndarray | None = None, smooth_tau_s: float = 0.0,
        limit_scale: float = 1.0) -> MspcBaseline:
    """Fit on rows of known-normal aligned values (rows with a NaN are dropped): ``models.mspc.fit_arrays``, the
    fit the cloud uses too, after smoothing.

    ``n_components``: None = all (Mahalanobis), an int = that many, a float in (0, 1) = the fewest
    explaining that share of the variance. ``smooth_tau_s`` > 0 fits on smoothed rows (see the module
    docstring) and needs the rows' ``t_ns``; ``limit_scale`` multiplies both limits.
    """
    X = np.asarray(X, np.float64)
    if smooth_tau_s < 0 or not np.isfinite(smooth_tau_s):
        raise ValueError(f"fit: smooth_tau_s must be a finite number >= 0, got {smooth_tau_s}")
    if smooth_tau_s > 0:
        if t_ns is None or np.shape(t_ns) != (X.shape[0],):
            raise ValueError("fit: smooth_tau_s needs t_ns, one timestamp (ns) per row of X")
        X = smooth_rows(t_ns, X, smooth_tau_s)
    arrays = fit_arrays(X, n_components, alpha, limits, limit_scale)
    return MspcBaseline(**arrays, smooth_tau_s=float(smooth_tau_s))


@kernel
def smooth_rows_kernel(t_ns, rows, tau_s, mean, last_t, count, out):
    """Time-decayed mean of the complete rows so far, into ``out``; a row with a NaN gives a NaN row and is
    skipped. ``mean`` (d,), ``last_t`` (1,) and ``count`` (1,) are the state, updated in place."""
    d = rows.shape[1]
    for r in range(rows.shape[0]):
        bad = False
        for j in range(d):
            if rows[r, j] != rows[r, j]:
                bad = True
                break
        if bad:
            for j in range(d):
                out[r, j] = np.nan
            continue
        c = count[0]
        a = 1.0
        if c > 0:
            dt_ns = t_ns[r] - last_t[0]
            if dt_ns < 0:
                dt_ns = 0
            a = 1.0 - np.exp(-(dt_ns * 1e-9) / tau_s)
            if a < 1.0 / (c + 1.0):  # a running mean until the window fills, as in ewma.py
                a = 1.0 / (c + 1.0)
        for j in range(d):
            mean[j] += a * (rows[r, j] - mean[j])
            out[r, j] = mean[j]
        last_t[0] = t_ns[r]
        count[0] = c + 1


class RowSmoother:
    """Causal time-decayed mean of rows (the MEWMA of ``fit(..., smooth_tau_s=...)``), state across ticks."""

    def __init__(self, n_features: int, tau_s: float) -> None:
        self.tau_s = float(tau_s)
        self.mean = np.zeros(n_features)
        self.last_t = np.zeros(1, np.int64)
        self.count = np.zeros(1, np.int64)
        self.first_t = np.full(1, _NEVER, np.int64)  # the first complete row's time: when warm-up began

    def smooth(self, t_ns, rows, learn: bool = True) -> np.ndarray:
        """Smoothed rows; ``learn=False`` leaves the state as it was (for ``score``)."""
        rows = np.ascontiguousarray(rows, np.float64)
        t_ns = np.ascontiguousarray(t_ns, np.int64)
        out = np.empty_like(rows)
        st = (self.mean, self.last_t, self.count) if learn else (self.mean.copy(), self.last_t.copy(),
                                                                 self.count.copy())
        smooth_rows_kernel(t_ns, rows, self.tau_s, *st, out)
        if learn and self.first_t[0] == _NEVER:
            complete = ~np.isnan(out).any(axis=1)
            if complete.any():
                self.first_t[0] = t_ns[np.argmax(complete)]
        return out

    def warm(self, t_ns, smoothed: np.ndarray) -> np.ndarray:
        """Per smoothed row, whether the mean had run for 2·tau: before, it averages fewer rows than the
        baseline's smoothed rows did, so its scatter is larger than the limit allows (the first is a raw row)."""
        t_ns = np.asarray(t_ns, np.int64)
        first = self.first_t[0]
        if first == _NEVER:  # scoring on a smoother that never learned: warm-up starts in these rows
            complete = ~np.isnan(smoothed).any(axis=1)
            if not complete.any():
                return np.zeros(t_ns.shape, np.bool_)
            first = t_ns[np.argmax(complete)]
        return t_ns >= first + round(2.0 * self.tau_s * 1e9)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "last_t": self.last_t, "count": self.count, "first_t": self.first_t}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        self.mean = np.ascontiguousarray(st["mean"], np.float64).copy()
        self.last_t = np.ascontiguousarray(st["last_t"], np.int64).copy()
        self.count = np.ascontiguousarray(st["count"], np.int64).copy()
        # absent in states saved before warm-up existed: a smoother that has run counts as warm
        self.first_t = np.ascontiguousarray(st.get("first_t", np.full(1, np.iinfo(np.int64).min + 1)),
                                            np.int64).copy()


@kernel
def score_rows_kernel(rows, mean, scale, loadings, eigvals, t2_limit, spe_limit,
                      out_score, out_t2, out_spe, z, tvec):
    """T², SPE and the normalised score of each row; a row with a NaN scores 0. ``z``/``tvec`` are scratch."""
    d = loadings.shape[0]
    k = loadings.shape[1]
    for r in range(rows.shape[0]):
        out_score[r] = 0.0
        out_t2[r] = 0.0
        out_spe[r] = 0.0
        bad = False
        for j in range(d):
            v = rows[r, j]
            if v != v:
                bad = True
                break
            z[j] = (v - mean[j]) / scale[j]
        if bad:
            continue
        t2 = 0.0
        for c in range(k):
            s = 0.0
            for j in range(d):
                s += loadings[j, c] * z[j]
            tvec[c] = s
            t2 += s * s / eigvals[c]
        spe = 0.0
        if k < d:
            for j in range(d):
                e = z[j]
                for c in range(k):
                    e -= loadings[j, c] * tvec[c]
                spe += e * e
        sc = t2 / t2_limit
        if spe_limit > 0.0 and spe / spe_limit > sc:
            sc = spe / spe_limit
        out_score[r] = sc
        out_t2[r] = t2
        out_spe[r] = spe


def score_rows(base: MspcBaseline, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, T², SPE) per row; score is in limit units (flag at 1), 0 for rows with a NaN."""
    rows = np.ascontiguousarray(rows, np.float64)
    n = rows.shape[0]
    out = np.empty(n), np.empty(n), np.empty(n)
    t2_limit = base.t2_limit if base.t2_limit > 0 else np.inf
    score_rows_kernel(rows, base.mean, base.scale, base.loadings, base.eigvals, t2_limit, base.spe_limit,
                      *out, np.empty(base.n_features), np.empty(base.loadings.shape[1]))
    return out


@kernel
def hold_rows_kernel(idx, t_ns, x, ok, col_of, held, held_t, max_age_ns, out_rows, out_t, out_pos):
    """Last-value-hold rows, one per run of equal timestamps among the asset's good samples; returns count."""
    d = held.shape[0]
    n_rows = 0
    group_t = 0
    last_i = -1
    for i in range(idx.shape[0] + 1):
        if i < idx.shape[0]:
            c = col_of[idx[i]]
            xi = x[i]
            if c < 0 or not ok[i] or xi != xi:
                continue
            ti = t_ns[i]
        if last_i >= 0 and (i == idx.shape[0] or ti != group_t):
            for j in range(d):
                fresh = held_t[j] != _NEVER and group_t - held_t[j] <= max_age_ns
                out_rows[n_rows, j] = held[j] if fresh else np.nan
            out_t[n_rows] = group_t
            out_pos[n_rows] = last_i
            n_rows += 1
        if i < idx.shape[0]:
            held[c] = xi
            held_t[c] = ti
            group_t = ti
            last_i = i
    return n_rows


class RowBuilder:
    """Aligned rows of one asset's points from ticks, by last-value hold (see the module docstring)."""

    def __init__(self, n_points: int, columns, max_age_s: float = float("inf")) -> None:
        self.columns = np.ascontiguousarray(columns, np.int64)
        if self.columns.ndim != 1 or len(set(self.columns.tolist())) != self.columns.shape[0]:
            raise ValueError("columns must be distinct point indices, one per baseline column")
        self.max_age_ns = np.int64(min(max_age_s * 1e9, 2.0**62)) if max_age_s >= 0 else np.int64(-1)
        self.held = np.full(self.columns.shape[0], np.nan)
        self.held_t = np.full(self.columns.shape[0], _NEVER, np.int64)
        self.resize(n_points)

    def resize(self, n_points: int) -> None:
        if self.columns.shape[0] and (self.columns.min() < 0 or self.columns.max() >= n_points):
            raise ValueError(f"columns name points outside 0..{n_points - 1}")
        self.n_points = n_points
        self.col_of = np.full(n_points, -1, np.int64)
        self.col_of[self.columns] = np.arange(self.columns.shape[0])

    def rows(self, idx, t_ns, x, ok=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row t_ns, rows (n_rows, d) with NaN for stale/unseen, index of the emitting sample)."""
        idx, t_ns, x, ok = as_tick(idx, t_ns, x, ok)
        check_points(idx, self.n_points)
        n = idx.shape[0]
        out_rows = np.empty((n, self.columns.shape[0]))
        out_t = np.empty(n, np.int64)
        out_pos = np.empty(n, np.int64)
        k = hold_rows_kernel(idx, t_ns, x, ok, self.col_of, self.held, self.held_t, self.max_age_ns,
                             out_rows, out_t, out_pos)
        return out_t[:k], out_rows[:k], out_pos[:k]

    def state(self) -> dict[str, np.ndarray]:
        return {"columns": self.columns, "held": self.held, "held_t": self.held_t,
                "max_age_ns": np.int64(self.max_age_ns)}

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        self.columns = np.ascontiguousarray(st["columns"], np.int64)
        self.held = np.ascontiguousarray(st["held"], np.float64).copy()
        self.held_t = np.ascontiguousarray(st["held_t"], np.int64).copy()
        self.max_age_ns = np.int64(st["max_age_ns"])
        self.resize(self.n_points)


class Mspc(Detector):
    """T²/SPE over the asset points ``columns`` of a tick; other points are ignored (score 0)."""

    name = "mspc"

    def __init__(self, n_points: int, baseline: MspcBaseline, columns,
                 max_age_s: float = float("inf")) -> None:
        super().__init__(n_points)
        self.baseline = baseline
        self.builder = RowBuilder(n_points, columns, max_age_s)
        if self.builder.columns.shape[0] != baseline.n_features:
            raise ValueError(f"mspc: {self.builder.columns.shape[0]} columns for a baseline of "
                             f"{baseline.n_features} features")
        self.smoother = RowSmoother(baseline.n_features, baseline.smooth_tau_s)
        self.last_t2 = np.empty(0)
        self.last_spe = np.empty(0)

    def _run(self, idx, t_ns, x, ok, learn: bool, out_score=None, out_flag=None):
        keep = None if learn else (self.builder.held.copy(), self.builder.held_t.copy())
        try:
            row_t, rows, pos = self.builder.rows(idx, t_ns, x, ok)
        finally:
            if keep is not None:
                self.builder.held, self.builder.held_t = keep
        warm = None
        if self.baseline.smooth_tau_s > 0:
            rows = self.smoother.smooth(row_t, rows, learn)
            warm = self.smoother.warm(row_t, rows)
        n = np.shape(idx)[0]
        score = np.zeros(n) if out_score is None else out_score
        flag = np.zeros(n, np.bool_) if out_flag is None else out_flag
        score[:] = 0.0
        flag[:] = False
        rs, t2, spe = score_rows(self.baseline, rows)
        if warm is not None:
            rs = np.where(warm, rs, 0.0)  # warming up (see RowSmoother.warm): not scored
        score[pos] = rs
        flag[pos] = rs >= 1.0
        self.last_t2 = np.zeros(n)
        self.last_t2[pos] = t2
        self.last_spe = np.zeros(n)
        self.last_spe[pos] = spe
        return score, flag

    def update(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, True)

    def score(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, False)

    def learn(self, idx, t_ns, x, ok) -> None:
        row_t, rows, _ = self.builder.rows(idx, t_ns, x, ok)
        if self.baseline.smooth_tau_s > 0:
            self.smoother.smooth(row_t, rows)

    def run_into(self, idx, t_ns, x, ok, learn, out_score, out_flag) -> None:
        self._run(idx, t_ns, x, ok, learn, out_score, out_flag)

    def score_scale(self) -> np.ndarray:
        return np.ones(self.n_points)

    def state(self) -> dict[str, np.ndarray]:
        st = {f"baseline.{k}": v for k, v in self.baseline.state().items()}
        st.update({f"rows.{k}": v for k, v in self.builder.state().items()})
        st.update({f"smooth.{k}": v for k, v in self.smoother.state().items()})
        return st

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        base = {k[9:]: v for k, v in state.items() if k.startswith("baseline.")}
        self.baseline = MspcBaseline.from_state(base)
        self.builder.load_state({k[5:]: v for k, v in state.items() if k.startswith("rows.")})
        self.smoother = RowSmoother(self.baseline.n_features, self.baseline.smooth_tau_s)
        smooth = {k[7:]: v for k, v in state.items() if k.startswith("smooth.")}
        if smooth:  # states saved before smoothing existed start the smoother cold
            self.smoother.load_state(smooth)

    def resize(self, n_points: int) -> None:
        self.n_points = n_points
        self.builder.resize(n_points)


class MspcGroup(Detector):
    """One ``Mspc`` per asset that has a baseline, as one detector of a gateway's ensemble (a mask bit is per
    kind, not per asset). Assets' columns are disjoint, so a sample gets the score of its own asset's member.

    Nothing learned is saved: a member's baseline comes with the configuration, and its held values refill
    within one reporting cycle after a restart.
    """

    name = "mspc"

    def __init__(self, n_points: int, members: list[Mspc] | None = None) -> None:
        super().__init__(n_points)
        self.members = list(members or [])
        taken = np.concatenate([m.builder.columns for m in self.members]) if self.members else np.empty(0, np.int64)
        if len(np.unique(taken)) != len(taken):
            raise ValueError("mspc: two baselines claim the same point")

    def _run(self, idx, t_ns, x, ok, learn: bool, out_score, out_flag) -> None:
        out_score[:] = 0.0
        out_flag[:] = False
        for m in self.members:
            score, flag = m.update(idx, t_ns, x, ok) if learn else m.score(idx, t_ns, x, ok)
            np.maximum(out_score, score, out=out_score)
            out_flag |= flag

    def update(self, idx, t_ns, x, ok):
        n = np.shape(idx)[0]
        score, flag = np.zeros(n), np.zeros(n, np.bool_)
        self._run(idx, t_ns, x, ok, True, score, flag)
        return score, flag

    def score(self, idx, t_ns, x, ok):
        n = np.shape(idx)[0]
        score, flag = np.zeros(n), np.zeros(n, np.bool_)
        self._run(idx, t_ns, x, ok, False, score, flag)
        return score, flag

    def learn(self, idx, t_ns, x, ok) -> None:
        for m in self.members:
            m.learn(idx, t_ns, x, ok)

    def run_into(self, idx, t_ns, x, ok, learn, out_score, out_flag) -> None:
        self._run(idx, t_ns, x, ok, learn, out_score, out_flag)

    def score_scale(self) -> np.ndarray:
        return np.ones(self.n_points)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def resize(self, n_points: int) -> None:
        self.n_points = n_points
        for m in self.members:
            m.resize(n_points)
