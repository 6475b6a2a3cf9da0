"""Mean kinetic temperature (USP <1160>, the Haynes formula named by ICH Q1A(R2)), interval-weighted.

MKT is the single temperature that would degrade a product as much as the recorded history did. A
logger's readings are rarely evenly spaced (outages, burst logging on alarm), so each term is weighted
by how long its reading held; evenly spaced readings give the textbook formula unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

R_KJ_MOL_K = 8.3144e-3
DEFAULT_DELTA_H_KJ_MOL = 83.144
KELVIN = 273.15
_NS = 1_000_000_000


def hold_durations_ns(t_ns: np.ndarray) -> np.ndarray:
    """How long each reading holds: until the next one; the last one for the median spacing.

    One reading alone holds for 0 s (there is no spacing to take a median of).
    """
    t = np.asarray(t_ns, np.int64)
    if t.size < 2:
        return np.zeros(t.size, np.int64)
    gaps = np.diff(t)
    return np.append(gaps, np.int64(np.median(gaps)))


def time_weighted_mean_c(temps_c: np.ndarray, weights: np.ndarray) -> float:
    temps, w = np.asarray(temps_c, float), np.asarray(weights, float)
    if w.sum() <= 0:  # one reading, or all at one instant: every reading counts the same
        w = np.ones_like(temps)
    return float(np.dot(w, temps) / w.sum())


def mkt_c(temps_c: np.ndarray, weights: np.ndarray | None = None,
          delta_h_kj_mol: float = DEFAULT_DELTA_H_KJ_MOL) -> float:
    """MKT in °C of readings held for ``weights`` (any time unit; None = evenly spaced).

    ``MKT_K = (ΔH/R) / -ln(Σ wᵢ exp(-ΔH/(R Tᵢ)) / Σ wᵢ)``; exp is shifted by its largest exponent so
    cold frozen product does not underflow. The result is clamped to the time-weighted mean: it can
    never be below it mathematically (Jensen), only by a rounding unit, and a tool that reports less
    than the mean is wrong by definition.

    >>> round(mkt_c([20.0, 2.0, 25.0], [2, 4, 1]), 2)
    15.68
    """
    temps = np.asarray(temps_c, float)
    if temps.size == 0:
        raise ValueError("MKT of no readings")
    w = np.ones_like(temps) if weights is None else np.asarray(weights, float)
    if w.sum() <= 0:
        w = np.ones_like(temps)
    e_over_r = delta_h_kj_mol / R_KJ_MOL_K
    x = -e_over_r / (temps + KELVIN)
    shift = x.max()
    log_mean = shift + np.log(np.dot(w, np.exp(x - shift)) / w.sum())
    return max(float(e_over_r / -log_mean - KELVIN), time_weighted_mean_c(temps, w))


class WindowMkt(NamedTuple):
    """The worst (highest) MKT over any window of the given length, and where that window lies."""

    mkt_c: float
    start_ns: int
    end_ns: int
    complete: bool  # False: the record is shorter than the window; the value covers the whole record


def rolling_mkt(t_ns: np.ndarray, temps_c: np.ndarray, window_s: float,
                delta_h_kj_mol: float = DEFAULT_DELTA_H_KJ_MOL) -> WindowMkt:
    """Maximum MKT over every window of ``window_s`` inside the record (readings held as in
    :func:`hold_durations_ns`).

    The readings make a step function, so the windowed mean of ``exp(-ΔH/RT)`` moves linearly between
    the positions where a window edge meets a reading: its maximum is at one of those, and checking
    them all is exact, not a sampled approximation.
    """
    t = np.asarray(t_ns, np.int64)
    temps = np.asarray(temps_c, float)
    hold = hold_durations_ns(t)
    end = int(t[-1] + hold[-1])
    window_ns = round(window_s * _NS)
    if end - int(t[0]) <= window_ns:
        return WindowMkt(mkt_c(temps, hold, delta_h_kj_mol), int(t[0]), end, False)
    e_over_r = delta_h_kj_mol / R_KJ_MOL_K
    x = -e_over_r / (temps + KELVIN)
    shift = x.max()
    rel_s = (np.append(t, end) - t[0]) / _NS  # reading edges, seconds from the first reading
    cum = np.concatenate(([0.0], np.cumsum(np.exp(x - shift) * np.diff(rel_s))))
    span = rel_s[-1]
    w = window_ns / _NS
    ends = np.concatenate((rel_s[rel_s >= w], rel_s[rel_s + w <= span] + w))
    ends = np.unique(np.clip(ends, w, span))
    means = (np.interp(ends, rel_s, cum) - np.interp(ends - w, rel_s, cum)) / w
    best = int(np.argmax(means >= means.max() * (1 - 1e-12)))  # of equal windows, report the earliest
    end_ns = int(t[0]) + round(float(ends[best]) * _NS)
    start_ns = end_ns - window_ns
    inside = _clip_readings(t, hold, temps, start_ns, end_ns)
    return WindowMkt(mkt_c(inside[1], inside[0], delta_h_kj_mol), start_ns, end_ns, True)


def _clip_readings(t: np.ndarray, hold: np.ndarray, temps: np.ndarray, start_ns: int,
                   end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Each reading's held time that falls inside [start, end), and its temperature."""
    overlap = np.minimum(t + hold, end_ns) - np.maximum(t, start_ns)
    keep = overlap > 0
    return overlap[keep], temps[keep]
