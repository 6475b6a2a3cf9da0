"""Spike / rate of change: the absolute change since the point's previous good sample, per second.

The rate is taken from timestamps, so a point sampled every 100 ms and one sampled every minute share one
``max_rate`` in units per second. Duplicate or out-of-order timestamps would divide by zero or flip the
sign: the interval is floored at ``min_dt_s``. After a gap longer than ``max_gap_s`` the previous sample
says nothing about the rate, so the sample only learns. A spike that comes back is flagged twice, on
the way up and on the way down (the event layer joins them). NaN or bad quality: score 0, skipped.

>>> import numpy as np
>>> d = Spike(1, max_rate=2.0)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 9.0, 1.0])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[8, 9]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel


@kernel
def spike_kernel(idx, t_ns, x, ok, last_x, last_t, seen, max_rate, min_dt_s, max_gap_s,
                 learn, out_score, out_flag):
    """One pass over a tick; per-point state changes only when ``learn``."""
    for i in range(idx.shape[0]):
        p = idx[i]
        xi = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not ok[i] or xi != xi:
            continue
        if seen[p]:
            dt = (t_ns[i] - last_t[p]) * 1e-9
            if dt <= max_gap_s[p]:
                if dt < min_dt_s[p]:
                    dt = min_dt_s[p]
                rate = abs(xi - last_x[p]) / dt
                out_score[i] = rate
                out_flag[i] = rate >= max_rate[p]
        if learn:
            last_x[p] = xi
            last_t[p] = t_ns[i]
            seen[p] = True


class Spike(KernelDetector):
    """Per-point |dx/dt| limit in units per second (``max_rate`` infinite: never flags)."""

    name = "spike"
    params = ("max_rate", "min_dt_s", "max_gap_s")
    state_keys = ("last_x", "last_t", "seen")

    def __init__(self, n_points: int, max_rate=float("inf"), min_dt_s=1e-3, max_gap_s=float("inf")) -> None:
        super().__init__(n_points)
        self.max_rate = per_point(max_rate, n_points, np.float64)
        self.min_dt_s = per_point(min_dt_s, n_points, np.float64)
        if (self.min_dt_s <= 0).any():
            raise ValueError("spike: min_dt_s must be > 0 (it bounds the rate of duplicate timestamps)")
        self.max_gap_s = per_point(max_gap_s, n_points, np.float64)
        self.last_x = np.zeros(n_points)
        self.last_t = np.zeros(n_points, np.int64)
        self.seen = np.zeros(n_points, np.bool_)

    def score_scale(self) -> np.ndarray:
        return self.max_rate

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        spike_kernel(idx, t_ns, x, ok, self.last_x, self.last_t, self.seen,
                     self.max_rate, self.min_dt_s, self.max_gap_s, learn, out_score, out_flag)
