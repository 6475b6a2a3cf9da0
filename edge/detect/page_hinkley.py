"""Page-Hinkley drift test: flags the moment a point's level has moved away from its long-run mean.

Classic form, two-sided and in the point's own units: with ``m`` the running mean *including* the
sample, ``g+ = max(0, g+ + (x - m) - delta)`` and ``g- = max(0, g- - (x - m) - delta)`` (the same as the
textbook ``m_t - min m_t``); score ``max(g+, g-)``, flag when it reaches ``threshold`` (lambda).
It is a drift *detector*: on a flag the point restarts from that sample, so a drift fires once rather
than for as long as it lasts (river's PageHinkley does the same).

The mean's weight is ``max(1 / (n + 1), 1 - exp(-dt / tau_s))``: the cumulative mean of the textbook
while ``tau_s`` is infinite (the default), an EWMA that forgets by time, not samples, otherwise.
The first ``warmup`` samples accumulate but do not score. NaN or bad quality: score 0, no learning.

>>> import numpy as np
>>> d = PageHinkley(1, delta=0.05, threshold=0.8, warmup=5)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.6, 1.6, 1.6])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[8]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel


@kernel
def page_hinkley_kernel(idx, t_ns, x, ok, mean, last_t, count, g_up, g_dn,
                        delta, threshold, warmup, tau_s, learn, out_score, out_flag):
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
                last_t[p] = t_ns[i]
                count[p] = 1
                g_up[p] = 0.0
                g_dn[p] = 0.0
            continue
        dt_ns = t_ns[i] - last_t[p]
        if dt_ns < 0:
            dt_ns = 0
        tau = tau_s[p]
        if dt_ns != memo_dt or tau != memo_tau:
            memo_e = np.exp(-(dt_ns * 1e-9) / tau)
            memo_dt = dt_ns
            memo_tau = tau
        a = 1.0 - memo_e
        if a < 1.0 / (c + 1.0):
            a = 1.0 / (c + 1.0)
        m = mean[p] + a * (xi - mean[p])
        dev = xi - m
        gu = g_up[p] + dev - delta[p]
        if gu < 0.0:
            gu = 0.0
        gd = g_dn[p] - dev - delta[p]
        if gd < 0.0:
            gd = 0.0
        fired = False
        if c + 1 >= warmup[p]:
            sc = gu if gu > gd else gd
            out_score[i] = sc
            fired = sc >= threshold[p]
            out_flag[i] = fired
        if learn:
            last_t[p] = t_ns[i]
            if fired:  # restart from this sample: the new level is the new normal
                mean[p] = xi
                count[p] = 1
                g_up[p] = 0.0
                g_dn[p] = 0.0
            else:
                mean[p] = m
                count[p] = c + 1
                g_up[p] = gu
                g_dn[p] = gd


class PageHinkley(KernelDetector):
    """Per-point two-sided Page-Hinkley; ``delta`` and ``threshold`` are in the point's units."""

    name = "page_hinkley"
    params = ("delta", "threshold", "warmup", "tau_s")
    state_keys = ("mean", "last_t", "count", "g_up", "g_dn")

    def __init__(self, n_points: int, delta=0.005, threshold=50.0, warmup=30, tau_s=float("inf")) -> None:
        super().__init__(n_points)
        self.delta = per_point(delta, n_points, np.float64)
        self.threshold = per_point(threshold, n_points, np.float64)
        self.warmup = per_point(warmup, n_points, np.int64)
        self.tau_s = per_point(tau_s, n_points, np.float64)
        self.mean = np.zeros(n_points)
        self.last_t = np.zeros(n_points, np.int64)
        self.count = np.zeros(n_points, np.int64)
        self.g_up = np.zeros(n_points)
        self.g_dn = np.zeros(n_points)

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        page_hinkley_kernel(idx, t_ns, x, ok, self.mean, self.last_t, self.count, self.g_up, self.g_dn,
                            self.delta, self.threshold, self.warmup, self.tau_s, learn, out_score, out_flag)
