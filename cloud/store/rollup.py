"""Resolutions of the time series and which one answers a read.

A store keeps raw samples for a while and roll-ups beyond: per window of 1 minute, 1 hour..., the sum, count,
minimum, maximum, last value and worst quality of the samples in it. Sums and counts (not only means) are what
make a roll-up exact for coarser windows: the mean of a day is the sum of its hours' sums over the sum of their
counts. ``plan`` cuts a requested time range into spans, each read from one resolution:

- raw reads take raw samples where they are still kept, else the finest roll-up that still covers the time;
- windowed reads (``every``) take the coarsest resolution whose windows divide ``every`` (the answer is then
  exact and cheapest), among those that cover the time and are complete there; where none divides it, the finest
  that covers the time, and the span says so.

A roll-up window is complete once the database or the platform has rolled it up for the last time (see
``settle_ns``); until then its time is read from raw samples. Data that arrives later than that (a gateway
replaying an outage) is rolled up again by the platform's backfill of the windows it touched.

>>> m, h = Resolution("1m", MINUTE_NS, 400 * DAY_NS), Resolution("1h", HOUR_NS, 0)
>>> raw = Resolution("raw", 0, 30 * DAY_NS)
>>> now = 100 * DAY_NS
>>> [(s.resolution.name, s.end_ns // DAY_NS) for s in plan((raw, m, h), 60 * DAY_NS, now, now, every=DAY_NS)]
[('1h', 99), ('raw', 100)]
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS

ROLLUP_FIELDS = ("value", "value_sum", "value_count", "value_min", "value_max", "value_last", "quality")
"""Fields of a roll-up row: ``value`` is the window's mean (what a query written for raw data reads), ``value_count``
and ``quality`` are integers, the others floats."""
LATE_WINDOWS = 2
"""The database recomputes each roll-up window this many times (1.x ``RESAMPLE ... FOR 2 windows``, 2.x
``range(start: -2 windows)``): data up to one window late is rolled up by the database itself."""
LATE_SLACK_NS = 30 * SECOND_NS
"""Samples that land later than this after their time are marked for the platform's backfill: less than the one
window the database waits, so clocks may disagree by up to 30 s and still nothing is missed."""
SETTLE_MARGIN_NS = MINUTE_NS
"""After its last recomputation a roll-up window is complete once this margin has passed (scheduling, run time)."""
ROLLUP_POLICY = re.compile(r"downsampled_(\d+)([smhdw])")
"""How a roll-up's retention policy (1.x) or bucket (2.x, ``db/downsampled_1m``) is named: its window."""
_UNIT_NS = {"s": SECOND_NS, "m": MINUTE_NS, "h": HOUR_NS, "d": DAY_NS, "w": 7 * DAY_NS}


def duration_name(ns: int) -> str:
    """``60 s`` -> ``1m``; the largest of d, h, m, s that divides it (``0`` -> ``raw``)."""
    if ns == 0:
        return "raw"
    for unit in ("d", "h", "m", "s"):
        if ns % _UNIT_NS[unit] == 0:
            return f"{ns // _UNIT_NS[unit]}{unit}"
    return f"{ns}ns"


def rollup_window_ns(policy: str) -> int | None:
    """The window of a roll-up named by its policy (``downsampled_1h`` -> 1 h in ns), else None."""
    m = ROLLUP_POLICY.fullmatch(policy)
    return int(m[1]) * _UNIT_NS[m[2]] if m and int(m[1]) > 0 else None


@dataclass(frozen=True)
class Resolution:
    """Raw samples (``every_ns`` 0) or a roll-up of windows of ``every_ns``, kept ``keep_ns`` (0: forever)."""

    name: str
    every_ns: int
    keep_ns: int = 0

    @property
    def raw(self) -> bool:
        return self.every_ns == 0

    @property
    def settle_ns(self) -> int:
        """How long after a window ends it may still change without the platform's backfill."""
        return 0 if self.raw else (LATE_WINDOWS - 1) * self.every_ns + SETTLE_MARGIN_NS

    def kept_from(self, now_ns: int) -> int | None:
        """From when this resolution still holds all it was given (None: it keeps everything)."""
        return None if self.keep_ns == 0 else now_ns - self.keep_ns

    def complete_before(self, now_ns: int) -> int | None:
        """Up to when its windows are final (None: raw, always)."""
        return None if self.raw else _floor(now_ns - self.settle_ns, self.every_ns)


RAW_FOREVER = Resolution("raw", 0, 0)


@dataclass(frozen=True)
class Span:
    """Part of a read served by one resolution; ``every_ns``: the window of each value there (0: samples);
    ``exact``: the values are what raw samples would answer for what was asked."""

    start_ns: int
    end_ns: int
    resolution: Resolution
    every_ns: int = 0
    exact: bool = True


def _floor(t: int, step: int) -> int:
    return t // step * step


def _ceil(t: int, step: int) -> int:
    return -((-t) // step) * step


def plan(resolutions: Sequence[Resolution], start_ns: int, end_ns: int, now_ns: int,
         every: int | None = None) -> list[Span]:
    """Cut [start, end) into spans, each read from one resolution (see the module's docstring).

    ``resolutions``: raw first, then the roll-ups; each roll-up's window must divide the coarsest one. Cuts
    between resolutions fall on the coarsest roll-up's windows (and, for windowed reads, on ``every``), so no
    window of the answer mixes two sources; a cut can only move towards the finer side, where the data is.
    """
    if end_ns <= start_ns:
        return []
    rollups = [r for r in resolutions if not r.raw]
    if not rollups:
        return [Span(start_ns, end_ns, resolutions[0] if resolutions else RAW_FOREVER, every or 0, True)]
    coarsest = max(r.every_ns for r in rollups)
    step = math.lcm(every, coarsest) if every else coarsest
    bounds: dict[Resolution, tuple[int | None, int | None]] = {}
    cuts = {start_ns, end_ns}
    for r in resolutions:
        lo, hi = r.kept_from(now_ns), r.complete_before(now_ns)
        lo = None if lo is None else _ceil(lo, step)
        hi = None if hi is None else _floor(hi, step)
        bounds[r] = (lo, hi)
        cuts.update(c for c in (lo, hi) if c is not None and start_ns < c < end_ns)
    edges = sorted(cuts)
    spans: list[Span] = []
    for a, b in itertools.pairwise(edges):
        have = [r for r in resolutions if (bounds[r][0] is None or a >= bounds[r][0])
                and (bounds[r][1] is None or b <= bounds[r][1])]
        r, span_every, exact = _choose(resolutions, have, every)
        if spans and spans[-1].resolution == r and spans[-1].every_ns == span_every:
            spans[-1] = Span(spans[-1].start_ns, b, r, span_every, exact)
        else:
            spans.append(Span(a, b, r, span_every, exact))
    return spans


def _choose(resolutions: Sequence[Resolution], have: list[Resolution],
            every: int | None) -> tuple[Resolution, int, bool]:
    """The resolution for one stretch of time, the window its values will have there, and whether they are what
    raw samples would answer."""
    if not have:  # older than every retention: whatever was kept longest may still hold some of it
        have = [max(resolutions, key=lambda r: (r.keep_ns == 0, r.keep_ns, r.every_ns))]
    finest = min(have, key=lambda r: r.every_ns)
    if every is None:
        return finest, finest.every_ns, finest.raw
    exact = [r for r in have if r.raw or every % r.every_ns == 0]
    if exact:
        return max(exact, key=lambda r: r.every_ns), every, True
    return finest, max(every, finest.every_ns), False
