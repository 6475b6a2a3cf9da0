"""EWMA mean/variance z-score with time-based decay.

The weight of a new sample is ``1 - exp(-dt / tau)``, so a point sampled every 100 ms and one sampled
every minute forget at the same rate in seconds, and a gap of an hour mostly resets the baseline.
The first ``warmup`` good samples of a point only learn. NaN or bad quality: score 0, no learning.

>>> import numpy as np
>>> d = EwmaZ(1, tau_s=60.0, threshold=4.0, warmup=5)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 9.0, 1.0])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[8]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import Detector
from edge.kernels import kernel

_EPS_VAR = 1e-12


@kernel
def ewma_z_kernel(idx, t_ns, x, ok, mean, var, last_t, count, tau_s, threshold, warmup, learn,
                  out_score, out_flag):
    """One pass over a tick. State arrays are per point and updated in place when ``learn``."""
    # exp() is most of the cost of a sample; polled points share one interval, so remember the last
    # (interval, tau) -> exp(-dt / tau) — bit-identical to recomputing it.
    memo_dt = -1
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
            continue
        dt_ns = t_ns[i] - last_t[p]
        if dt_ns < 0:
            dt_ns = 0
        d = xi - mean[p]
        if c >= warmup[p]:
            z = abs(d) / np.sqrt(var[p] + _EPS_VAR)
            out_score[i] = z
            out_flag[i] = z >= threshold[p]
        if learn:
            tau = tau_s[p]
            if dt_ns != memo_dt or tau != memo_tau:
                memo_e = np.exp(-(dt_ns * 1e-9) / tau)
                memo_dt = dt_ns
                memo_tau = tau
            a = 1.0 - memo_e
            # Until the window has seen enough samples, weigh them as a running mean would,
            # so warm-up does not depend on the sampling interval.
            if c < warmup[p] and a < 1.0 / (c + 1.0):
                a = 1.0 / (c + 1.0)
            incr = a * d
            mean[p] += incr
            var[p] = (1.0 - a) * (var[p] + d * incr)
            last_t[p] = t_ns[i]
            count[p] = c + 1


class EwmaZ(Detector):
    """Per-point EWMA z-score; parameters may be scalars or one value per point."""

    name = "ewma_z"

    def __init__(self, n_points: int, tau_s=600.0, threshold=6.0, warmup=30) -> None:
        super().__init__(n_points)
        self.tau_s = np.broadcast_to(np.asarray(tau_s, np.float64), (n_points,)).copy()
        self.threshold = np.broadcast_to(np.asarray(threshold, np.float64), (n_points,)).copy()
        self.warmup = np.broadcast_to(np.asarray(warmup, np.int64), (n_points,)).copy()
        self.mean = np.zeros(n_points)
        self.var = np.zeros(n_points)
        self.last_t = np.zeros(n_points, np.int64)
        self.count = np.zeros(n_points, np.int64)

    def _run(self, idx, t_ns, x, ok, learn: bool):
        n = idx.shape[0]
        score = np.empty(n)
        flag = np.empty(n, np.bool_)
        ewma_z_kernel(idx, t_ns, x, ok, self.mean, self.var, self.last_t, self.count,
                      self.tau_s, self.threshold, self.warmup, learn, score, flag)
        return score, flag

    def update(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, True)

    def run_into(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        ewma_z_kernel(idx, t_ns, x, ok, self.mean, self.var, self.last_t, self.count,
                      self.tau_s, self.threshold, self.warmup, learn, out_score, out_flag)

    def score(self, idx, t_ns, x, ok):
        mean, var, last_t, count = self.mean.copy(), self.var.copy(), self.last_t.copy(), self.count.copy()
        try:
            return self._run(idx, t_ns, x, ok, False)
        finally:
            self.mean, self.var, self.last_t, self.count = mean, var, last_t, count

    def learn(self, idx, t_ns, x, ok):
        self._run(idx, t_ns, x, ok, True)

    def state(self):
        return {"tau_s": self.tau_s, "threshold": self.threshold, "warmup": self.warmup,
                "mean": self.mean, "var": self.var, "last_t": self.last_t, "count": self.count}

    def load_state(self, state):
        for key in ("tau_s", "threshold", "warmup", "mean", "var", "last_t", "count"):
            setattr(self, key, np.asarray(state[key]).copy())
        self.n_points = self.mean.shape[0]
