"""Two-sided CUSUM on the z-score against a slow, time-decayed baseline: catches small persistent shifts.

A shift of one standard deviation is invisible to a z-score threshold of 6, but it adds ``|z| - k`` to a
cumulative sum on every sample, so it is flagged within tens of samples. The baseline mean and variance
are an EWMA with weight ``1 - exp(-dt / tau_s)`` (as in ``ewma.py``: time, not sample count), and the
sums are the classic ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``; score ``max(S+, S-)``,
flag when it reaches ``h``. Each ``z`` is clipped to ``±clip`` so a single spike cannot fire it (that is the
z-score's job) and a long after-effect of one spike is bounded. The sums are not reset on an alarm: the
point stays flagged while the shift persists and falls back as the baseline absorbs it. The sums
accumulate per sample — CUSUM's run length is in samples by definition; time enters through the
baseline. The first ``warmup`` good samples only learn. NaN or bad quality: score 0, no learning.

>>> import numpy as np
>>> d = Cusum(1, tau_s=3600.0, k=0.5, h=4.0, warmup=5)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.3, 1.3, 1.3, 1.3])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[7, 8, 9]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel

_EPS_VAR = 1e-12


@kernel
def cusum_kernel(idx, t_ns, x, ok, mean, var, last_t, count, s_hi, s_lo,
                 tau_s, k, h, clip, warmup, learn, out_score, out_flag):
    """One pass over a tick; per-point state changes only when ``learn``."""
    memo_dt = -1  # polled points share one interval: reuse exp(-dt / tau) (see ewma.py)
    memo_tau = 0.0
    memo_e = 1.0
    for i in range(idx.shape[0]):
        p = idx[i]
        xi = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not ok[i] or xi != xi:
            continue
        c = count[p]
        if c == 0:
            if learn:
                mean[p] = xi
                var[p] = 0.0
                last_t[p] = t_ns[i]
                count[p] = 1
                s_hi[p] = 0.0
                s_lo[p] = 0.0
            continue
        dt_ns = t_ns[i] - last_t[p]
        if dt_ns < 0:
            dt_ns = 0
        d = xi - mean[p]
        sh = s_hi[p]
        sl = s_lo[p]
        if c >= warmup[p]:
            z = d / np.sqrt(var[p] + _EPS_VAR)
            if z > clip[p]:
                z = clip[p]
            elif z < -clip[p]:
                z = -clip[p]
            sh = sh + z - k[p]
            if sh < 0.0:
                sh = 0.0
            sl = sl - z - k[p]
            if sl < 0.0:
                sl = 0.0
            sc = sh if sh > sl else sl
            out_score[i] = sc
            out_flag[i] = sc >= h[p]
        if learn:
            tau = tau_s[p]
            if dt_ns != memo_dt or tau != memo_tau:
                memo_e = np.exp(-(dt_ns * 1e-9) / tau)
                memo_dt = dt_ns
                memo_tau = tau
            a = 1.0 - memo_e
            if c < warmup[p] and a < 1.0 / (c + 1.0):
                a = 1.0 / (c + 1.0)
            incr = a * d
            mean[p] += incr
            var[p] = (1.0 - a) * (var[p] + d * incr)
            last_t[p] = t_ns[i]
            count[p] = c + 1
            s_hi[p] = sh
            s_lo[p] = sl


class Cusum(KernelDetector):
    """Per-point two-sided CUSUM; ``k`` and ``h`` are in standard deviations of the baseline."""

    name = "cusum"
    params = ("tau_s", "k", "h", "clip", "warmup")
    state_keys = ("mean", "var", "last_t", "count", "s_hi", "s_lo")

    def __init__(self, n_points: int, tau_s=3600.0, k=0.5, h=8.0, clip=4.0, warmup=30) -> None:
        super().__init__(n_points)
        self.tau_s = per_point(tau_s, n_points, np.float64)
        self.k = per_point(k, n_points, np.float64)
        self.h = per_point(h, n_points, np.float64)
        self.clip = per_point(clip, n_points, np.float64)
        self.warmup = per_point(warmup, n_points, np.int64)
        self.mean = np.zeros(n_points)
        self.var = np.zeros(n_points)
        self.last_t = np.zeros(n_points, np.int64)
        self.count = np.zeros(n_points, np.int64)
        self.s_hi = np.zeros(n_points)
        self.s_lo = np.zeros(n_points)

    def score_scale(self) -> np.ndarray:
        return self.h

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        cusum_kernel(idx, t_ns, x, ok, self.mean, self.var, self.last_t, self.count, self.s_hi, self.s_lo,
                     self.tau_s, self.k, self.h, self.clip, self.warmup, learn, out_score, out_flag)
