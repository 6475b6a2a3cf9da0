"""Fixed limits with hysteresis: the engineering alarm every operator already knows, on the edge.

A point enters the high alarm when ``x > hi`` and leaves it only when ``x < hi - hysteresis``; the low
alarm mirrors it (enter ``x < lo``, leave ``x > lo + hysteresis``). The band stops a value hovering at a
limit from raising an alarm on every other sample. A point leaving one alarm is checked against the other
limit on the same sample. Either limit may be infinite (not set).

Score, in threshold units so the ensemble can mix it with the rest: 0 outside an alarm,
``1 + excess / span`` in one, where ``excess`` is how far past the limit the value is (0 inside the band)
and ``span`` is ``hi - lo``, or the magnitude of the one finite limit (at least 1).
NaN or bad quality: score 0, state kept.

>>> import numpy as np
>>> d = Limits(1, hi=5.0, hysteresis=1.0)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 4.0, 5.5, 4.5, 4.2, 3.9, 5.0, 5.1, 4.5, 1.0])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[2, 3, 4, 7, 8]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel


@kernel
def limits_kernel(idx, t_ns, x, ok, alarm, hi, lo, hysteresis, span, learn, out_score, out_flag):
    """One pass over a tick; ``alarm`` (+1 high, -1 low, 0 none) changes only when ``learn``."""
    for i in range(idx.shape[0]):
        p = idx[i]
        xi = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not ok[i] or xi != xi:
            continue
        a = alarm[p]
        if (a == 1 and xi < hi[p] - hysteresis[p]) or (a == -1 and xi > lo[p] + hysteresis[p]):
            a = 0
        if a == 0:
            if xi > hi[p]:
                a = 1
            elif xi < lo[p]:
                a = -1
        if a != 0:
            excess = xi - hi[p] if a == 1 else lo[p] - xi
            if excess < 0.0:
                excess = 0.0
            out_score[i] = 1.0 + excess / span[p]
            out_flag[i] = True
        if learn:
            alarm[p] = a


def limit_span(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The scale of an excess: the band's width, or the one finite limit's magnitude, at least 1."""
    both = np.isfinite(hi) & np.isfinite(lo) & (hi > lo)
    one = np.where(np.isfinite(hi), np.abs(hi), np.where(np.isfinite(lo), np.abs(lo), 1.0))
    return np.where(both, hi - lo, np.maximum(one, 1.0)).astype(np.float64)


class Limits(KernelDetector):
    """Per-point high/low limits with a hysteresis band; score in threshold units (flag at 1)."""

    name = "limits"
    params = ("hi", "lo", "hysteresis")
    state_keys = ("alarm",)

    def __init__(self, n_points: int, hi=float("inf"), lo=float("-inf"), hysteresis=0.0) -> None:
        super().__init__(n_points)
        self.hi = per_point(hi, n_points, np.float64)
        self.lo = per_point(lo, n_points, np.float64)
        self.hysteresis = per_point(hysteresis, n_points, np.float64)
        if (self.hysteresis < 0).any():
            raise ValueError("limits: hysteresis must be >= 0 (it is a band in the point's units)")
        self.span = np.ascontiguousarray(limit_span(self.hi, self.lo))
        self.alarm = np.zeros(n_points, np.int8)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        super().load_state(state)
        self.span = np.ascontiguousarray(limit_span(self.hi, self.lo))

    def score_scale(self) -> np.ndarray:
        return np.ones(self.n_points)

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        limits_kernel(idx, t_ns, x, ok, self.alarm, self.hi, self.lo, self.hysteresis, self.span,
                      learn, out_score, out_flag)
