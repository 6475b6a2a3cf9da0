"""Per-sample flags to anomaly events per point: what an operator sees and what goes to the cloud.

Rules, per point, over its good samples (bad quality or NaN samples are ignored: they neither extend nor
end an event):

* a flagged sample (``mask != 0``) starts a *candidate* run — unless it comes within ``cooldown_s`` of
  the end of the point's previous event, in which case it is ignored;
* the candidate becomes an event when it has ``min_samples`` consecutive flagged samples (debounce) and
  lasts ``min_duration_s`` (last flagged minus first flagged time); an unflagged sample before that
  drops it silently;
* the event ends at the first unflagged sample whose score is below ``release`` (default: any unflagged
  sample ends it); ``end_ns`` is its last flagged or held sample's time. A detector that flags only an
  event's onset and scores the samples that continue it just under 0.5 (``novelty``) keeps its event open
  with a ``release`` under that;
* an event carries ``start_ns``, the peak combined score, the value at that peak, the names of every
  detector that fired during it and its number of flagged samples.

``update`` returns the events that changed in the tick: newly opened ones still open at the end of the
tick (``end_ns`` None) and closed ones (an event opened and closed within one tick is reported once,
closed). ``seq`` numbers events so an open report can be matched with its close. ``open_events()`` shows
what is open now. State saves to .npz like the ensemble's, so a restart neither loses nor repeats one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detect.base import as_tick, check_points, load_npz, per_point, save_npz
from edge.kernels import kernel

_IDLE, _CANDIDATE, _OPEN = 0, 1, 2
_NEVER = np.iinfo(np.int64).min


@dataclass(frozen=True)
class AnomalyEvent:
    point: int
    seq: int
    start_ns: int
    end_ns: int | None
    peak_score: float
    peak_value: float
    detectors: tuple[str, ...]
    n_samples: int

    @property
    def is_open(self) -> bool:
        return self.end_ns is None


@kernel
def events_kernel(idx, t_ns, x, ok, score, mask,
                  phase, start_t, last_t, n_flag, peak, peak_x, bits, seq, reported, cool_until, next_seq,
                  min_samples, min_dur_ns, cooldown_ns, release,
                  out_kind, out_point, out_seq, out_start, out_end, out_peak, out_peak_x, out_bits, out_n,
                  pending):
    """One pass over a tick; writes emitted records (kind 0 open, 1 closed) and returns their number."""
    n_out = 0
    n_pending = 0
    for i in range(idx.shape[0]):
        xi = x[i]
        if not ok[i] or xi != xi:
            continue
        p = idx[i]
        ti = t_ns[i]
        if mask[i] != 0:
            if phase[p] == _IDLE:
                if ti < cool_until[p]:
                    continue
                phase[p] = _CANDIDATE
                start_t[p] = ti
                n_flag[p] = 0
                peak[p] = -1.0
                bits[p] = 0
            n_flag[p] += 1
            last_t[p] = ti
            bits[p] |= mask[i]
            if score[i] > peak[p]:
                peak[p] = score[i]
                peak_x[p] = xi
            if phase[p] == _CANDIDATE and n_flag[p] >= min_samples[p] and ti - start_t[p] >= min_dur_ns[p]:
                phase[p] = _OPEN
                seq[p] = next_seq[0]
                next_seq[0] += 1
                reported[p] = False
                pending[n_pending] = p
                n_pending += 1
        elif phase[p] == _CANDIDATE:
            phase[p] = _IDLE
        elif phase[p] == _OPEN and score[i] >= release[p]:
            last_t[p] = ti  # held: the anomaly goes on without a new onset
        elif phase[p] == _OPEN:
            out_kind[n_out] = 1
            out_point[n_out] = p
            out_seq[n_out] = seq[p]
            out_start[n_out] = start_t[p]
            out_end[n_out] = last_t[p]
            out_peak[n_out] = peak[p]
            out_peak_x[n_out] = peak_x[p]
            out_bits[n_out] = bits[p]
            out_n[n_out] = n_flag[p]
            n_out += 1
            phase[p] = _IDLE
            reported[p] = True
            cool_until[p] = last_t[p] + cooldown_ns[p]
    for j in range(n_pending):
        p = pending[j]
        if phase[p] == _OPEN and not reported[p]:
            out_kind[n_out] = 0
            out_point[n_out] = p
            out_seq[n_out] = seq[p]
            out_start[n_out] = start_t[p]
            out_end[n_out] = 0
            out_peak[n_out] = peak[p]
            out_peak_x[n_out] = peak_x[p]
            out_bits[n_out] = bits[p]
            out_n[n_out] = n_flag[p]
            n_out += 1
            reported[p] = True
    return n_out


def _seconds_to_ns(s: np.ndarray) -> np.ndarray:
    """Durations in ns, clipped to [0, ~146 years] so adding one to a timestamp cannot overflow."""
    return np.round(np.clip(s, 0.0, 2.0**62 * 1e-9) * 1e9).astype(np.int64)


class EventTracker:
    """Debounced, cooled-down anomaly events per point; ``names`` are the ensemble's, in bit order."""

    _STATE = ("phase", "start_t", "last_t", "n_flag", "peak", "peak_x", "bits", "seq", "reported",
              "cool_until", "next_seq", "min_samples", "min_dur_ns", "cooldown_ns", "release")

    def __init__(self, n_points: int, names: list[str], min_samples=1, min_duration_s=0.0,
                 cooldown_s=0.0, release=math.inf) -> None:
        self.n_points = n_points
        self.names = list(names)
        self.min_samples = np.maximum(per_point(min_samples, n_points, np.int64), 1)
        self.min_dur_ns = _seconds_to_ns(per_point(min_duration_s, n_points, np.float64))
        self.cooldown_ns = _seconds_to_ns(per_point(cooldown_s, n_points, np.float64))
        self.release = per_point(release, n_points, np.float64)
        self.phase = np.zeros(n_points, np.int8)
        self.start_t = np.zeros(n_points, np.int64)
        self.last_t = np.zeros(n_points, np.int64)
        self.n_flag = np.zeros(n_points, np.int64)
        self.peak = np.zeros(n_points)
        self.peak_x = np.zeros(n_points)
        self.bits = np.zeros(n_points, np.int64)
        self.seq = np.zeros(n_points, np.int64)
        self.reported = np.zeros(n_points, np.bool_)
        self.cool_until = np.full(n_points, _NEVER, np.int64)
        self.next_seq = np.zeros(1, np.int64)

    def _names(self, bits: int) -> tuple[str, ...]:
        return tuple(name for k, name in enumerate(self.names) if bits >> k & 1)

    def update(self, idx, t_ns, x, ok, score, mask) -> list[AnomalyEvent]:
        """Feed one tick: its samples and the ensemble's ``score`` and ``mask``; returns changed events."""
        idx, t_ns, x, ok = as_tick(idx, t_ns, x, ok)
        check_points(idx, self.n_points)
        score = np.ascontiguousarray(score, np.float64)
        mask = np.ascontiguousarray(mask, np.int64)
        n = idx.shape[0]
        if score.shape != (n,) or mask.shape != (n,):
            raise ValueError(f"score {score.shape} and mask {mask.shape} must match the tick's {n} samples")
        cap = n + min(n, self.n_points)
        out_kind = np.empty(cap, np.int8)
        out_point = np.empty(cap, np.int64)
        out_seq = np.empty(cap, np.int64)
        out_start = np.empty(cap, np.int64)
        out_end = np.empty(cap, np.int64)
        out_peak = np.empty(cap)
        out_peak_x = np.empty(cap)
        out_bits = np.empty(cap, np.int64)
        out_n = np.empty(cap, np.int64)
        pending = np.empty(n, np.int64)
        k = events_kernel(idx, t_ns, x, ok, score, mask,
                          self.phase, self.start_t, self.last_t, self.n_flag, self.peak, self.peak_x,
                          self.bits, self.seq, self.reported, self.cool_until, self.next_seq,
                          self.min_samples, self.min_dur_ns, self.cooldown_ns, self.release,
                          out_kind, out_point, out_seq, out_start, out_end, out_peak, out_peak_x, out_bits,
                          out_n, pending)
        return [
            AnomalyEvent(
                point=int(out_point[j]), seq=int(out_seq[j]), start_ns=int(out_start[j]),
                end_ns=int(out_end[j]) if out_kind[j] == 1 else None, peak_score=float(out_peak[j]),
                peak_value=float(out_peak_x[j]), detectors=self._names(int(out_bits[j])),
                n_samples=int(out_n[j]),
            )
            for j in range(k)
        ]

    def open_events(self) -> list[AnomalyEvent]:
        """Events open now, as they stand (peak so far, ``end_ns`` None)."""
        return [
            AnomalyEvent(point=int(p), seq=int(self.seq[p]), start_ns=int(self.start_t[p]), end_ns=None,
                         peak_score=float(self.peak[p]), peak_value=float(self.peak_x[p]),
                         detectors=self._names(int(self.bits[p])), n_samples=int(self.n_flag[p]))
            for p in np.flatnonzero(self.phase == _OPEN)
        ]

    def state(self) -> dict[str, np.ndarray]:
        out = {key: getattr(self, key) for key in self._STATE}
        out["names"] = np.array(self.names)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for key in self._STATE:
            if key == "release" and key not in state:  # saved before release existed: close as then
                self.release = np.full(np.asarray(state["phase"]).shape[0], math.inf)
                continue
            setattr(self, key, np.ascontiguousarray(np.asarray(state[key])).copy())
        self.names = [str(s) for s in state["names"]]
        self.n_points = self.phase.shape[0]

    def save(self, path: str | Path) -> None:
        save_npz(path, self.state())

    def load(self, path: str | Path) -> None:
        self.load_state(load_npz(path))
