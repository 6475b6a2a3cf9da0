"""Timestamps as every part of the platform reads them: one rule, exact to the nanosecond.

A time is ISO 8601 / RFC 3339 text (no offset means UTC; a fraction of any length is kept to the ns), or a bare
number: epoch time in a unit chosen by the number's magnitude, or in a unit the caller declares (a gateway's
``ts_unit``: what a device sends is configured, not guessed).

========================  ============  ========================================================
|number| (no unit given)  unit          misread only for
========================  ============  ========================================================
below 10^10               seconds       ms, µs or ns within 115 days of 1970-01-01
10^10 to below 10^13      milliseconds  µs or ns within 115 days of 1970-01-01
10^13 to below 10^16      microseconds  ns within 115 days of 1970-01-01
10^16 and above           nanoseconds   —
========================  ============  ========================================================

Why by magnitude, and why these bounds: the platform reads times from people and tools that disagree. Logger
exports and spreadsheets write epoch seconds, browsers and many IoT platforms milliseconds, the wire and the API's
own answers nanoseconds; one fixed unit would misread most of them by a factor of a thousand or more, silently,
which is why four parsers had grown, each right for its own callers (the API read a bare integer as ns, the CSV
readers as seconds). Times end in 2262 (int64 ns), which is 9.2·10^9 s, 9.2·10^12 ms or 9.2·10^15 µs: each bound
is the smallest power of ten above every time a unit can express, so every time in every unit is read right,
except a finer unit's first 115 days after (or before) the epoch, which no sensor, logger or client sends (0 is 0
in any unit). A seconds figure in [9.2·10^9, 10^10) is then an error (past 2262), not a millisecond time.

Fractions finer than 1 ns are rounded half to even; anything outside int64 ns (1677-09-21 to 2262-04-11) is a
:class:`TimeRangeError`; anything else that is not a time is a :class:`TimeError`. Both are ``ValueError``.

>>> parse_time_ns("2024-05-01T12:00:00.123456789Z"), parse_time_ns("1714564800.25")
(1714564800123456789, 1714564800250000000)
>>> parse_time_ns(1714564800000) == parse_time_ns("1714564800000000") == parse_time_ns(1714564800 * 10**9)
True
>>> parse_time_ns(1714564800, unit="ms")
1714564800000000
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

from models.wire import T_NS_MAX, T_NS_MIN

Unit = Literal["s", "ms", "us", "ns"]
NS_PER: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
BANDS: tuple[tuple[int, Unit], ...] = ((10**10, "s"), (10**13, "ms"), (10**16, "us"))
"""(|number| below this, unit); at or above the last bound: ns."""
MAX_TEXT = 64
"""Longer text is no time (the longest ISO 8601 with a ns fraction and an offset is 35 characters)."""
RANGE = "1677-09-21 to 2262-04-11 (int64 ns since the epoch)"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?", re.ASCII)
_FRACTION = re.compile(r"^(.*[T ][0-9]{2}(?::?[0-9]{2}){2})[.,]([0-9]+)(.*)$", re.ASCII)
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_LIMIT = Decimal(max(-T_NS_MIN, T_NS_MAX))


class TimeError(ValueError):
    """Not a time: neither ISO 8601 nor an epoch number."""


class TimeRangeError(TimeError):
    """A time, but outside what int64 nanoseconds hold."""


def epoch_unit(number: int | float | Decimal) -> Unit:
    """The unit a bare epoch number is read in (the table above)."""
    size = abs(number)
    for bound, unit in BANDS:
        if size < bound:
            return unit
    return "ns"


def parse_time_ns(value: str | int | float | Decimal | datetime, unit: Unit | None = None) -> int:
    """Nanoseconds since the epoch of ``value``: text (ISO 8601 or a number), a number, or a datetime.

    ``unit``: the unit of a bare number when the source declares one; None reads it by magnitude.
    """
    if isinstance(value, bool):
        raise TimeError(f"{value!r} is not a time")
    if isinstance(value, datetime):
        return datetime_ns(value)
    if isinstance(value, int | float | Decimal):
        return _number_ns(value, unit, value)
    if not isinstance(value, str):
        raise TimeError(f"a time is text or a number, not {type(value).__name__}")
    text = value.strip()
    if len(text) > MAX_TEXT or not text.isascii():
        raise TimeError(f"timestamp {_shown(value)} is neither ISO 8601 nor epoch s/ms/us/ns")
    if _INTEGER.fullmatch(text):  # the common case, without Decimal
        return _number_ns(int(text), unit, value)
    if _NUMBER.fullmatch(text):
        return _number_ns(Decimal(text), unit, value)
    return _iso_ns(text, value)


def datetime_ns(dt: datetime) -> int:
    """Exact ns of a datetime (naive is UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        delta = dt - _EPOCH
    except OverflowError:  # an offset that takes year 1 or 9999 past datetime's range
        raise TimeRangeError(f"{dt.isoformat()} is outside {RANGE}") from None
    return _checked((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000, dt)


def _number_ns(number: int | float | Decimal, unit: Unit | None, shown: object) -> int:
    if isinstance(number, float):
        if number != number or number in (float("inf"), float("-inf")):
            raise TimeError(f"timestamp {_shown(shown)} is not a finite number")
        number = Decimal(repr(number))
    if isinstance(number, Decimal) and not number.is_finite():
        raise TimeError(f"timestamp {_shown(shown)} is not a finite number")
    scale = NS_PER[unit or epoch_unit(number)]
    if isinstance(number, int):
        return _checked(number * scale, shown)
    ns = _CONTEXT.multiply(number, Decimal(scale))
    if abs(ns) > _LIMIT:  # before int(): an exponent like 1e9999 would build a huge integer
        raise TimeRangeError(f"timestamp {_shown(shown)} is outside {RANGE}")
    return _checked(int(ns.to_integral_value(rounding=ROUND_HALF_EVEN)), shown)


def _iso_ns(text: str, shown: str) -> int:
    frac_ns = 0
    m = _FRACTION.match(text)
    if m:  # datetime keeps microseconds only: the fraction is taken apart and added exactly
        text = m.group(1) + m.group(3)
        frac_ns = int(_CONTEXT.multiply(Decimal("0." + m.group(2)), Decimal(10**9)).to_integral_value())
    if text[-1:] == "z":  # RFC 3339 allows it; fromisoformat takes only "Z"
        text = text[:-1] + "Z"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise TimeError(f"timestamp {_shown(shown)} is neither ISO 8601 nor epoch s/ms/us/ns") from None
    try:
        return _checked(datetime_ns(dt) + frac_ns, shown)
    except TimeRangeError:
        raise TimeRangeError(f"timestamp {_shown(shown)} is outside {RANGE}") from None


def _checked(ns: int, shown: object) -> int:
    if not T_NS_MIN <= ns <= T_NS_MAX:
        raise TimeRangeError(f"timestamp {_shown(shown)} is outside {RANGE}")
    return ns


def _shown(value: object) -> str:
    """The value as an error message quotes it: repr, cut short (hostile input can be long)."""
    text = repr(value.isoformat() if isinstance(value, datetime) else value)
    return text if len(text) <= 48 else text[:45] + "..."
