"""Preallocated sample buffers: the only per-sample work on the hot path is one append here.

Sources call ``append`` from their own threads; the agent's tick calls ``swap`` and gets the whole
batch as numpy arrays. Two buffers alternate so appends never wait for detection. A buffer that
fills before the tick doubles rather than drops: losing a sample is never the answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick's samples in arrival order."""

    idx: np.ndarray  # int64 point index
    t_ns: np.ndarray  # int64
    x: np.ndarray  # float64, NaN where a source had no number
    quality: np.ndarray  # int8, models.wire.Quality

    def __len__(self) -> int:
        return int(self.idx.shape[0])


class _Columns:
    __slots__ = ("idx", "n", "q", "t", "x")

    def __init__(self, capacity: int) -> None:
        self.idx = np.empty(capacity, np.int64)
        self.t = np.empty(capacity, np.int64)
        self.x = np.empty(capacity, np.float64)
        self.q = np.empty(capacity, np.int8)
        self.n = 0

    def grow(self) -> None:
        cap = self.idx.shape[0] * 2
        for name in ("idx", "t", "x", "q"):
            old = getattr(self, name)
            new = np.empty(cap, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


class SampleBuffer:
    def __init__(self, capacity: int = 65_536) -> None:
        self._capacity = capacity
        self._front = _Columns(capacity)
        self._back = _Columns(capacity)
        self._lock = threading.Lock()

    def append(self, idx: int, t_ns: int, x: float, quality: int) -> None:
        with self._lock:
            c = self._front
            n = c.n
            if n == c.idx.shape[0]:
                c.grow()
            c.idx[n] = idx
            c.t[n] = t_ns
            c.x[n] = x
            c.q[n] = quality
            c.n = n + 1

    def __len__(self) -> int:
        return self._front.n

    def swap(self) -> Tick:
        """Take everything appended so far; the arrays returned are copies the caller owns."""
        with self._lock:
            full, self._front = self._front, self._back
            self._back = full
            n = full.n
            full.n = 0
        # Copy outside the lock: sources keep appending into the other buffer meanwhile.
        return Tick(full.idx[:n].copy(), full.t[:n].copy(), full.x[:n].copy(), full.q[:n].copy())
