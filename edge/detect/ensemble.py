"""Several detectors over the same tick, one kernel pass each, combined into one score per sample.

Combined score in [0, 1]. Each enabled detector's score is divided by its per-point threshold
(``Detector.score_scale``: the score at which it flags) to give ``r >= 0``, 1 meaning "at threshold".
The largest ``r`` of a sample is squashed with ``u = r / (1 + r)``: 0 when nothing is unusual, 0.5 at
threshold, 2/3 at twice it, 0.9 at ten times, toward 1 beyond (no exp: it runs on every sample). Then
``u`` is snapped to the flag: raised to 0.5 if any detector fired, held just below 0.5 if none did (a
hysteresis band holds a flag below threshold). So ``score >= 0.5`` exactly when ``mask != 0``.
Max rather than noisy-OR, because detectors watching one signal are far from independent: three
detectors at 0.4 of threshold are not an anomaly.

``mask`` has bit ``k`` set when detector ``k`` (order of ``names``) flagged the sample; a detector that is
disabled for a point never contributes to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.detect.base import Detector, as_tick, check_points, load_npz, save_npz
from edge.kernels import kernel

_BELOW_HALF = float(np.nextafter(0.5, 0.0))


@kernel
def combine_kernel(n, idx, scores, flags, inv_scale, enabled_bits, out_score, out_mask):
    """Scores and flags are (detectors, capacity), only the first ``n`` columns this tick's; ``inv_scale``
    is (points, detectors), 0 where a detector is disabled; ``enabled_bits`` one mask per point."""
    n_det = scores.shape[0]
    for i in range(n):
        p = idx[i]
        rmax = 0.0
        m = 0
        for k in range(n_det):
            r = scores[k, i] * inv_scale[p, k]
            if r > rmax:  # False for the NaN of a disabled detector's infinite score
                rmax = r
            if flags[k, i]:
                m |= 1 << k
        m &= enabled_bits[p]
        u = rmax / (1.0 + rmax)
        if rmax == np.inf:
            u = 1.0
        if m != 0:
            if u < 0.5:
                u = 0.5
        elif u > _BELOW_HALF:
            u = _BELOW_HALF
        out_score[i] = u
        out_mask[i] = m


class Ensemble:
    """Runs ``detectors`` (all sized for the same points) and combines them; see the module docstring.

    ``enabled`` is one bool array per detector with one value per point (default: all enabled).
    """

    def __init__(self, detectors: Sequence[Detector], enabled: Sequence[np.ndarray] | None = None) -> None:
        self.detectors = list(detectors)
        if not self.detectors:
            raise ValueError("an ensemble needs at least one detector")
        if len(self.detectors) > 63:
            raise ValueError("an ensemble holds at most 63 detectors (one bit each in an int64 mask)")
        sizes = {d.n_points for d in self.detectors}
        if len(sizes) != 1:
            raise ValueError(f"detectors are sized for different numbers of points: {sorted(sizes)}")
        self.n_points = sizes.pop()
        k = len(self.detectors)
        if enabled is None:
            self.enabled = np.ones((k, self.n_points), np.bool_)
        else:
            self.enabled = np.ascontiguousarray(np.array([np.broadcast_to(e, self.n_points) for e in enabled],
                                                         dtype=np.bool_).reshape(k, self.n_points))
        self._scores = np.empty((k, 0))
        self._flags = np.empty((k, 0), np.bool_)
        self._refresh_scale()

    @property
    def names(self) -> list[str]:
        """Detector names in bit order of the mask."""
        return [d.name for d in self.detectors]

    def _refresh_scale(self) -> None:
        scale = np.array([np.broadcast_to(d.score_scale(), self.n_points) for d in self.detectors],
                         np.float64)
        scale = scale.reshape(len(self.detectors), self.n_points)
        with np.errstate(divide="ignore"):
            inv = np.where(scale > 0, 1.0 / scale, np.inf)
        self._inv_scale = np.ascontiguousarray(np.where(self.enabled, inv, 0.0).T)
        weights = np.left_shift(np.int64(1), np.arange(len(self.detectors), dtype=np.int64))
        self._enabled_bits = np.ascontiguousarray((self.enabled.T * weights).sum(axis=1), dtype=np.int64)

    def _run(self, idx, t_ns, x, ok, learn: bool) -> tuple[np.ndarray, np.ndarray]:
        idx, t_ns, x, ok = as_tick(idx, t_ns, x, ok)
        check_points(idx, self.n_points)
        n = idx.shape[0]
        if self._scores.shape[1] < n:
            self._scores = np.empty((len(self.detectors), n))
            self._flags = np.empty((len(self.detectors), n), np.bool_)
        for k, det in enumerate(self.detectors):
            det.run_into(idx, t_ns, x, ok, learn, self._scores[k, :n], self._flags[k, :n])
        score = np.empty(n)
        mask = np.empty(n, np.int64)
        combine_kernel(n, idx, self._scores, self._flags, self._inv_scale, self._enabled_bits, score, mask)
        return score, mask

    def update(self, idx, t_ns, x, ok=None) -> tuple[np.ndarray, np.ndarray]:
        """Score then learn every sample; returns (score in [0, 1], int64 bitmask of detectors that fired)."""
        return self._run(idx, t_ns, x, ok, True)

    def score(self, idx, t_ns, x, ok=None) -> tuple[np.ndarray, np.ndarray]:
        """Like ``update`` but against the state at the start of the tick, which is left unchanged."""
        return self._run(idx, t_ns, x, ok, False)

    def learn(self, idx, t_ns, x, ok=None) -> None:
        self._run(idx, t_ns, x, ok, True)

    def detector_scores(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each detector's raw (score, flag) for the last tick's first ``n`` samples: explains a score."""
        return self._scores[:, :n].copy(), self._flags[:, :n].copy()

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"names": np.array(self.names), "enabled": self.enabled}
        for k, det in enumerate(self.detectors):
            for key, arr in det.state().items():
                out[f"d{k}.{key}"] = np.asarray(arr)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        names = [str(s) for s in state["names"]]
        if names != self.names:
            raise ValueError(f"saved ensemble runs {names}, this one {self.names}: "
                             "build it from the same config")
        for k, det in enumerate(self.detectors):
            prefix = f"d{k}."
            det.load_state({key[len(prefix):]: arr for key, arr in state.items() if key.startswith(prefix)})
        self.enabled = np.ascontiguousarray(np.asarray(state["enabled"], np.bool_))
        self.n_points = self.detectors[0].n_points
        self._refresh_scale()

    def save(self, path: str | Path) -> None:
        """Write the whole state to an .npz (atomically), so a restarted agent continues where it stopped."""
        save_npz(path, self.state())

    def load(self, path: str | Path) -> None:
        """Restore state saved by ``save`` into an ensemble built from the same configuration."""
        self.load_state(load_npz(path))
