"""The small interface every detector follows (after river's ``learn_one``/``score_one``, over batches)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Detector(ABC):
    """Holds per-point state as numpy arrays; the numba kernel does the work.

    ``update`` is the hot path: score each sample against the state *before* it, then learn it —
    exactly what an online detector on a stream does. ``score`` and ``learn`` are the two halves,
    for backtests and for fitting a baseline on known-normal data.
    """

    name: str = "detector"

    def __init__(self, n_points: int) -> None:
        self.n_points = n_points

    @abstractmethod
    def update(
        self, idx: np.ndarray, t_ns: np.ndarray, x: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score then learn each sample in order; returns (score >= 0, flag) per sample."""

    @abstractmethod
    def score(
        self, idx: np.ndarray, t_ns: np.ndarray, x: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score without changing state."""

    @abstractmethod
    def learn(self, idx: np.ndarray, t_ns: np.ndarray, x: np.ndarray, ok: np.ndarray) -> None:
        """Update state without scoring."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the detector, for save/load across restarts."""

    @abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def resize(self, n_points: int) -> None:
        """Grow to ``n_points`` (new points start cold); used when configuration adds points."""
        st = self.state()
        for key, arr in st.items():
            if arr.ndim >= 1 and arr.shape[0] == self.n_points and n_points > self.n_points:
                grown = np.zeros((n_points, *arr.shape[1:]), dtype=arr.dtype)
                grown[: self.n_points] = arr
                st[key] = grown
        self.n_points = n_points
        self.load_state(st)
