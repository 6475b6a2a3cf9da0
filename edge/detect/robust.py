"""Robust z-score: distance from the rolling median in units of the rolling MAD.

Median and MAD ignore a minority of outliers in the window, so a burst of spikes does not inflate the
baseline the way it inflates an EWMA variance. Each point keeps the last ``window`` good samples in a
ring buffer plus the same values kept sorted (insert and remove by binary search and a shift), so the
median is a lookup and the MAD a k-th-of-two-sorted-runs search: O(window) per sample (a vectorised scan
and one shift), no allocation.

``z = |x - median| / (1.4826 * MAD + 1e-9)`` — 1.4826 makes MAD a standard deviation for normal data;
the tiny floor keeps a flat window finite (any change from a flat line then scores very high).
A point scores once it holds ``warmup`` samples (capped at ``window``). A gap longer than
``max_gap_s`` empties the window: the process may have changed while unobserved.
NaN or bad quality: score 0, no learning.

>>> import numpy as np
>>> d = RobustZ(1, window=8, threshold=6.0, warmup=5)
>>> t = (np.arange(10) * 1e9).astype(np.int64)
>>> x = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02, 9.0, 1.0])
>>> score, flag = d.update(np.zeros(10, np.int64), t, x, np.ones(10, bool))
>>> [int(i) for i in np.flatnonzero(flag)]
[8]
"""

from __future__ import annotations

import numpy as np

from edge.detect.base import KernelDetector, per_point
from edge.kernels import kernel

MAD_TO_SIGMA = 1.4826
_EPS_SCALE = 1e-9


@kernel(inline="always")
def _sorted_median(s, p, n):
    h = n // 2
    if n % 2 == 1:
        return s[p, h]
    return (s[p, h - 1] + s[p, h]) * 0.5


@kernel(inline="always")
def _count_below(s, p, n, v):
    """How many of ``s[p, :n]`` are < v: the insertion point. A counting scan, not a bisect: a bisect is a
    chain of dependent loads from a row that is usually not in L1 yet, a scan is a few SIMD loads."""
    c = 0
    for j in range(n):
        c += s[p, j] < v
    return c


@kernel(inline="always")
def _count_at_most(s, p, n, v):
    c = 0
    for j in range(n):
        c += s[p, j] <= v
    return c


@kernel
def _sorted_mad(s, p, n, med):
    """Median of |s - med| for sorted ``s[p, :n]`` in O(log n).

    The deviations form two ascending runs: ``A[j] = med - s[p, m-1-j]`` left of the median and
    ``B[j] = s[p, m+j] - med`` right of it. The k-th smallest of their union is found by binary search on
    how many of the k+1 smallest come from A (the classic k-th of two sorted arrays).
    """
    m = _count_below(s, p, n, med)
    a = m
    b = n - m
    k = n // 2
    lo = k + 1 - b if k + 1 - b > 0 else 0
    hi = a if a < k + 1 else k + 1
    while lo < hi:
        i = (lo + hi) >> 1
        if med - s[p, m - 1 - i] < s[p, m + k - i] - med:  # A[i] < B[k-i]: take more from A
            lo = i + 1
        else:
            hi = i
    i = lo
    j = k + 1 - i
    a_last = med - s[p, m - i] if i > 0 else -1.0  # A[i-1]
    b_last = s[p, m + j - 1] - med if j > 0 else -1.0  # B[j-1]
    if a_last >= b_last:
        kth = a_last
        prev = med - s[p, m - i + 1] if i > 1 else -1.0  # A[i-2]
        if b_last > prev:
            prev = b_last
    else:
        kth = b_last
        prev = s[p, m + j - 2] - med if j > 1 else -1.0  # B[j-2]
        if a_last > prev:
            prev = a_last
    if n % 2 == 1:
        return kth
    return (prev + kth) * 0.5


@kernel
def robust_z_kernel(idx, t_ns, x, ok, ring, srt, fill, head, last_t,
                    window, threshold, warmup, max_gap_s, learn, out_score, out_flag):
    """One pass over a tick. ``ring``/``srt`` are (points, max window); state changes only when ``learn``."""
    for i in range(idx.shape[0]):
        p = idx[i]
        xi = x[i]
        out_score[i] = 0.0
        out_flag[i] = False
        if not ok[i] or xi != xi:
            continue
        n = fill[p]
        if n > 0 and (t_ns[i] - last_t[p]) * 1e-9 > max_gap_s[p]:
            n = 0
            if learn:
                fill[p] = 0
                head[p] = 0
        if n > 0 and n >= warmup[p]:
            med = _sorted_median(srt, p, n)
            mad = _sorted_mad(srt, p, n, med)
            z = abs(xi - med) / (MAD_TO_SIGMA * mad + _EPS_SCALE)
            out_score[i] = z
            out_flag[i] = z >= threshold[p]
        if learn:
            w = window[p]
            hp = head[p]
            if n == w:  # full: the new value replaces the oldest, one shift between their positions
                r = _count_below(srt, p, n, ring[p, hp])
                q = _count_at_most(srt, p, n, xi)
                if q <= r:
                    for j in range(r, q, -1):
                        srt[p, j] = srt[p, j - 1]
                    srt[p, q] = xi
                else:
                    for j in range(r, q - 1):
                        srt[p, j] = srt[p, j + 1]
                    srt[p, q - 1] = xi
            else:
                j = n  # insertion-sort step from the top
                while j > 0 and srt[p, j - 1] > xi:
                    srt[p, j] = srt[p, j - 1]
                    j -= 1
                srt[p, j] = xi
                fill[p] = n + 1
            ring[p, hp] = xi
            hp += 1
            head[p] = 0 if hp >= w else hp
            last_t[p] = t_ns[i]


class RobustZ(KernelDetector):
    """Per-point rolling median/MAD z-score over the last ``window`` samples (window may differ per point)."""

    name = "robust_z"
    params = ("window", "threshold", "warmup", "max_gap_s")
    state_keys = ("fill", "head", "last_t", "ring", "srt")

    def __init__(self, n_points: int, window=32, threshold=6.0, warmup=32, max_gap_s=float("inf")) -> None:
        super().__init__(n_points)
        self.window = per_point(window, n_points, np.int64)
        if (self.window < 1).any():
            raise ValueError("robust_z: window must be >= 1 sample")
        self.threshold = per_point(threshold, n_points, np.float64)
        self.warmup = np.minimum(per_point(warmup, n_points, np.int64), self.window)
        self.max_gap_s = per_point(max_gap_s, n_points, np.float64)
        width = int(self.window.max()) if n_points else 1
        self.ring = np.zeros((n_points, width))
        self.srt = np.zeros((n_points, width))
        self.fill = np.zeros(n_points, np.int64)
        self.head = np.zeros(n_points, np.int64)
        self.last_t = np.zeros(n_points, np.int64)

    def _kernel(self, idx, t_ns, x, ok, learn, out_score, out_flag):
        robust_z_kernel(idx, t_ns, x, ok, self.ring, self.srt, self.fill, self.head, self.last_t,
                        self.window, self.threshold, self.warmup, self.max_gap_s, learn, out_score, out_flag)

    def resize(self, n_points: int) -> None:
        super().resize(n_points)
        width = int(self.window.max()) if n_points else 1
        if width > self.ring.shape[1]:  # a new point's default window is wider than any so far
            pad = ((0, 0), (0, width - self.ring.shape[1]))
            self.ring = np.pad(self.ring, pad)
            self.srt = np.pad(self.srt, pad)
