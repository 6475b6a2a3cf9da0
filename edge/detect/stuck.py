"""Stuck or flat-lined sensor: a value that has not moved for too long, or a signal with no variance.

Two criteria, either one flags:

* **unchanged** — the sample is within ``tol`` of the value that started the current run, and that run
  started at least ``duration_s`` ago (timestamps, so a gap without samples counts: a report-by-exception
  source that sends nothing *is* unchanged). Score = run length / ``duration_s``.
* **flat** (only when ``var_eps > 0``) — the time-decayed variance over ``window_s`` (an exponential
  window, weight ``1 - exp(-dt / window_s)``, cumulative until the window fills) is below ``var_eps``
  and the point has been observed for at least ``window_s``. Catches a dead sensor that still
  dithers in its last digit.

The score is in threshold units (flag at 1; the flat criterion scores at least 1).
NaN or bad quality: score 0, skipped.

>>> import numpy as np
>>> d = Stuck(1, duration_s=5.0)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[8]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel


@kernel
def stuck_kernel(idx, t_ns, x, ok, ref, since_t, last_t, count, vmean, vvar, first_t,
                 duration_s, tol, var_eps, window_s, learn, out_score, out_flag):
    """One pass over a tick; per-point state changes only when ``learn``."""
    memo_dt = -1  # polled points share one interval: reuse exp(-dt / window) (see ewma.py)
    memo_w = 0.0
    memo_e = 1.0
    for i in range(idx.shape[0]):
        p = idx[i]
        xi = x[i]
        ti = t_ns[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not ok[i] or xi != xi:
            continue
        c = count[p]
        if c == 0:
            if learn:
                ref[p] = xi
                since_t[p] = ti
                last_t[p] = ti
                count[p] = 1
                vmean[p] = xi
                vvar[p] = 0.0
                first_t[p] = ti
            continue
        same = abs(xi - ref[p]) <= tol[p]
        r = 0.0
        if same:
            u = (ti - since_t[p]) * 1e-9 / duration_s[p]
            if u > 0.0:
                r = u
        vm = vmean[p]
        vv = vvar[p]
        if var_eps[p] > 0.0:
            dt_ns = ti - last_t[p]
            if dt_ns < 0:
                dt_ns = 0
            w = window_s[p]
            if dt_ns != memo_dt or w != memo_w:
                memo_e = np.exp(-(dt_ns * 1e-9) / w)
                memo_dt = dt_ns
                memo_w = w
            a = 1.0 - memo_e
            if a < 1.0 / (c + 1.0):
                a = 1.0 / (c + 1.0)
            d = xi - vm
            incr = a * d
            vm = vm + incr
            vv = (1.0 - a) * (vv + d * incr)
            if (ti - first_t[p]) * 1e-9 >= window_s[p] and vv < var_eps[p] and r < 1.0:
                r = 1.0
        out_score[i] = r
        out_flag[i] = r >= 1.0
        if learn:
            if not same:
                ref[p] = xi
                since_t[p] = ti
            last_t[p] = ti
            count[p] = c + 1
            vmean[p] = vm
            vvar[p] = vv


class Stuck(KernelDetector):
    """Per-point flat-line detector; score in threshold units (flag at 1)."""

    name = "stuck"
    params = ("duration_s", "tol", "var_eps", "window_s")
    state_keys = ("ref", "since_t", "last_t", "count", "vmean", "vvar", "first_t")

    def __init__(self, n_points: int, duration_s=3600.0, tol=0.0, var_eps=0.0, window_s=600.0) -> None:
        super().__init__(n_points)
        self.duration_s = per_point(duration_s, n_points, np.float64)
        self.tol = per_point(tol, n_points, np.float64)
        self.var_eps = per_point(var_eps, n_points, np.float64)
        self.window_s = per_point(window_s, n_points, np.float64)
        if (self.duration_s <= 0).any() or (self.window_s <= 0).any():
            raise ValueError("stuck: duration_s and window_s must be > 0 seconds")
        self.ref = np.zeros(n_points)
        self.since_t = np.zeros(n_points, np.int64)
        self.last_t = np.zeros(n_points, np.int64)
        self.count = np.zeros(n_points, np.int64)
        self.vmean = np.zeros(n_points)
        self.vvar = np.zeros(n_points)
        self.first_t = np.zeros(n_points, np.int64)

    def score_scale(self) -> np.ndarray:
        return np.ones(self.n_points)

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        stuck_kernel(idx, t_ns, x, ok, self.ref, self.since_t, self.last_t, self.count, self.vmean,
                     self.vvar, self.first_t, self.duration_s, self.tol, self.var_eps, self.window_s,
                     learn, out_score, out_flag)
