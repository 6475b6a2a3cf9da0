"""The person pack's alert rules, on the 5-minute grid, as pure functions the live pack and the benchmark share.

- ``predicted-low``: the 30-minute forecast below 70 mg/dL (with a 5 mg/dL margin: below 75) while the reading
  is still at or above 70, on two consecutive readings (one noisy reading does not wake a parent at night);
  stays open until the reading is back above 80 or the forecast has been above 80 for 30 minutes; then it may
  fire again.
- ``urgent-low``: the reading below 54 mg/dL now (consensus level 2), until back at or above 70.
- ``prolonged-high``: above 250 mg/dL for 2 hours, until back at or below 180.
- ``signal-loss``: no reading for 20 minutes, until readings return.

Each episode is (rule, start index, end index or None while open). Routing to carers and escalation when no one
acknowledges are the pack's (``__init__.py``). None of these says what to do about the glucose.
"""

from __future__ import annotations

import numpy as np

LOW = 70.0
URGENT_LOW = 54.0
HIGH = 250.0
HIGH_BACK = 180.0
HIGH_FOR_STEPS = 24      # 2 hours
LOSS_STEPS = 4           # 20 minutes without a reading
CONFIRM = 2
MARGIN = 5.0
CLEAR = 80.0
CLEAR_STEPS = 6

Episode = tuple[str, int, int | None]


def predicted_low(g: np.ndarray, forecast: np.ndarray) -> list[Episode]:
    out: list[Episode] = []
    start = None
    streak = clear = 0
    for j in range(g.size):
        gj, fj = g[j], forecast[j]
        if start is None:
            streak = streak + 1 if (np.isfinite(gj) and np.isfinite(fj) and gj >= LOW and fj < LOW + MARGIN) else 0
            if streak >= CONFIRM:
                start, clear = j, 0
        else:
            clear = clear + 1 if (np.isfinite(fj) and fj >= CLEAR) else 0
            if (np.isfinite(gj) and gj > CLEAR and gj >= fj) or clear >= CLEAR_STEPS:
                out.append(("predicted-low", start, j))
                start, streak = None, 0
    if start is not None:
        out.append(("predicted-low", start, None))
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end exclusive) of each run of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def urgent_low(g: np.ndarray) -> list[Episode]:
    out: list[Episode] = []
    j, n = 0, g.size
    while j < n:
        if np.isfinite(g[j]) and g[j] < URGENT_LOW:
            k = j + 1
            while k < n and not (np.isfinite(g[k]) and g[k] >= LOW):
                k += 1
            out.append(("urgent-low", j, k if k < n else None))
            j = k
        j += 1
    return out


def prolonged_high(g: np.ndarray) -> list[Episode]:
    out: list[Episode] = []
    above = np.isfinite(g) & (g > HIGH)
    j, n = 0, g.size
    for a, b in _runs(above):
        if b - a < HIGH_FOR_STEPS or a < j:
            continue
        k = a + HIGH_FOR_STEPS
        while k < n and not (np.isfinite(g[k]) and g[k] <= HIGH_BACK):
            k += 1
        out.append(("prolonged-high", a + HIGH_FOR_STEPS - 1, k if k < n else None))
        j = k
    return out


def signal_loss(g: np.ndarray) -> list[Episode]:
    return [("signal-loss", a + LOSS_STEPS - 1, b if b < g.size else None)
            for a, b in _runs(~np.isfinite(g)) if b - a >= LOSS_STEPS]


def all_episodes(g: np.ndarray, forecast: np.ndarray) -> list[Episode]:
    return sorted(predicted_low(g, forecast) + urgent_low(g) + prolonged_high(g) + signal_loss(g),
                  key=lambda e: (e[1], e[0]))
