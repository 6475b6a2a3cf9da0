"""The small interface every detector follows (after river's ``learn_one``/``score_one``, over batches)."""

from __future__ import annotations

import functools
import inspect
import os
from abc import ABC, abstractmethod
from pathlib import Path

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
        """Grow to ``n_points`` (new points start cold); used when configuration adds points.

        New rows of a parameter array take the constructor's default for it (a zero threshold would
        flag everything); new rows of state arrays are zero, which every kernel reads as "never seen".
        """
        defaults = _constructor_defaults(type(self))
        st = self.state()
        for key, arr in st.items():
            if arr.ndim >= 1 and arr.shape[0] == self.n_points and n_points > self.n_points:
                grown = np.zeros((n_points, *arr.shape[1:]), dtype=arr.dtype)
                if key in defaults and defaults[key] is not None:
                    grown[self.n_points :] = defaults[key]
                grown[: self.n_points] = arr
                st[key] = grown
        self.n_points = n_points
        self.load_state(st)

    # -- additions used by the ensemble; not part of the two-method contract ------------------------

    def score_scale(self) -> np.ndarray:
        """Per point, the score at which a sample is flagged: the ensemble divides scores by it.

        Detectors whose score is already in threshold units (flag at 1) return ones.
        """
        return np.broadcast_to(np.asarray(getattr(self, "threshold", 1.0), np.float64), (self.n_points,))

    def run_into(
        self,
        idx: np.ndarray,
        t_ns: np.ndarray,
        x: np.ndarray,
        ok: np.ndarray,
        learn: bool,
        out_score: np.ndarray,
        out_flag: np.ndarray,
    ) -> None:
        """``update`` (``learn``) or ``score`` writing into caller-owned buffers, so an ensemble allocates
        nothing per tick. Inputs must already be contiguous and of the kernel dtypes (see ``as_tick``)."""
        score, flag = self.update(idx, t_ns, x, ok) if learn else self.score(idx, t_ns, x, ok)
        out_score[:] = score
        out_flag[:] = flag


def as_tick(
    idx: np.ndarray, t_ns: np.ndarray, x: np.ndarray, ok: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four tick arrays as the contiguous dtypes the kernels are compiled for (no copy if they are).

    Numba compiles one machine-code version per argument type and layout; coercing here keeps it to one
    and makes a strided or int32 input work instead of triggering a recompile or a wrong read.
    """
    idx = np.ascontiguousarray(idx, np.int64)
    t_ns = np.ascontiguousarray(t_ns, np.int64)
    x = np.ascontiguousarray(x, np.float64)
    ok = np.ones(idx.shape[0], np.bool_) if ok is None else np.ascontiguousarray(ok, np.bool_)
    n = idx.shape[0]
    if idx.ndim != 1 or t_ns.shape != (n,) or x.shape != (n,) or ok.shape != (n,):
        raise ValueError(
            f"tick arrays must be 1-D and of one length: idx {idx.shape}, t_ns {t_ns.shape}, "
            f"x {x.shape}, ok {ok.shape}"
        )
    return idx, t_ns, x, ok


def check_points(idx: np.ndarray, n_points: int) -> None:
    """Kernels index state without bounds checks (for speed), so a bad index must be caught here."""
    if idx.shape[0] and (int(idx.min()) < 0 or int(idx.max()) >= n_points):
        raise IndexError(
            f"point index out of range: got {int(idx.min())}..{int(idx.max())}, detector has {n_points} "
            "points (resize() it when configuration adds points)"
        )


def per_point(value, n_points: int, dtype) -> np.ndarray:
    """A parameter given as a scalar or one value per point, as a fresh contiguous per-point array."""
    arr = np.asarray(value, dtype)
    try:
        return np.ascontiguousarray(np.broadcast_to(arr, (n_points,)), dtype).copy()
    except ValueError:
        raise ValueError(f"parameter has shape {arr.shape}; give a scalar or {n_points} values") from None


@functools.cache
def _constructor_defaults(cls: type) -> dict[str, object]:
    sig = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty and name not in ("self", "n_points")
    }


def constructor_params(cls: type) -> dict[str, object]:
    """A detector class's per-point parameters and their defaults, read from its constructor."""
    return dict(_constructor_defaults(cls))


class KernelDetector(Detector):
    """The thin class beside a kernel: parameters and state are named arrays with one row per point.

    A subclass lists ``params`` and ``state_keys`` and implements ``_kernel`` (one kernel call with
    ``learn`` and the output buffers); everything else — validation, score/learn/update, save/load —
    is here. Kernels must leave state untouched when ``learn`` is False, which makes ``score`` free.
    """

    params: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()

    def _kernel(self, idx, t_ns, x, ok, learn: bool, out_score, out_flag) -> None:
        raise NotImplementedError

    def run_into(self, idx, t_ns, x, ok, learn, out_score, out_flag) -> None:
        self._kernel(idx, t_ns, x, ok, learn, out_score, out_flag)

    def _run(self, idx, t_ns, x, ok, learn: bool) -> tuple[np.ndarray, np.ndarray]:
        idx, t_ns, x, ok = as_tick(idx, t_ns, x, ok)
        check_points(idx, self.n_points)
        n = idx.shape[0]
        score = np.empty(n)
        flag = np.empty(n, np.bool_)
        self._kernel(idx, t_ns, x, ok, learn, score, flag)
        return score, flag

    def update(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, True)

    def score(self, idx, t_ns, x, ok):
        return self._run(idx, t_ns, x, ok, False)

    def learn(self, idx, t_ns, x, ok) -> None:
        self._run(idx, t_ns, x, ok, True)

    def state(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in (*self.params, *self.state_keys)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for key in (*self.params, *self.state_keys):
            setattr(self, key, np.ascontiguousarray(np.asarray(state[key])).copy())
        self.n_points = getattr(self, self.state_keys[0]).shape[0]


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to ``path`` atomically (temp file + rename): a crash mid-save keeps the old state."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}
