"""One timestamp rule for the whole platform (``models.timestamps``): ISO 8601 to the ns, and a bare number in s, ms,
µs or ns chosen by its magnitude — every time in every unit read right, except a finer unit's first 115 days from
the epoch. Every reader of times (the API, ``twin detect run``, replay, a gateway's MQTT source) gives the same
answer for the same text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from cloud.api.params import time_ns as api_time_ns
from edge.config import MqttSubscription
from edge.detect.offline import parse_timestamp as offline_parse
from edge.sources.mqtt import PayloadError, _Route
from models.timestamps import NS_PER, TimeError, TimeRangeError, epoch_unit, parse_time_ns
from models.wire import T_NS_MAX, T_NS_MIN
from simulators.replay import _parse_times

EDGE_OF_AMBIGUITY = 10**16
"""ns: 115.7 days. Beyond it (either side of the epoch) a time is read right in whichever unit it is written."""
units = st.sampled_from(["s", "ms", "us", "ns"])


def whole(t_ns: int, unit: str) -> int:
    """``t_ns`` truncated toward zero to a whole number of ``unit`` (stays inside int64 ns)."""
    scale = NS_PER[unit]
    return abs(t_ns) // scale * scale * (1 if t_ns >= 0 else -1)


def iso(t_ns: int, offset_min: int = 0, digits: int = 9, sep: str = "T", zone: str | None = None) -> str:
    """``t_ns`` as ISO 8601 text in a zone ``offset_min`` east of UTC, with ``digits`` fraction digits."""
    sec, frac = divmod(t_ns, 10**9)
    tz = timezone(timedelta(minutes=offset_min))
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=sec)
    text = local.astimezone(tz).replace(tzinfo=None).isoformat(sep=sep)
    if digits:
        text += "." + f"{frac:09d}"[:digits]
    return text + (zone if zone is not None else local.astimezone(tz).strftime("%z")[:3] + ":" +
                   local.astimezone(tz).strftime("%z")[3:])


@given(t_ns=st.one_of(st.integers(EDGE_OF_AMBIGUITY, T_NS_MAX), st.integers(T_NS_MIN, -EDGE_OF_AMBIGUITY)),
       unit=units, as_text=st.booleans())
@example(t_ns=EDGE_OF_AMBIGUITY, unit="ns", as_text=True)
@example(t_ns=-EDGE_OF_AMBIGUITY, unit="ms", as_text=False)
@example(t_ns=T_NS_MAX, unit="s", as_text=True)
@example(t_ns=T_NS_MIN, unit="us", as_text=True)
def test_an_integer_in_any_unit_is_read_by_its_magnitude(t_ns, unit, as_text):
    t = whole(t_ns, unit)  # still beyond the edge: it is a multiple of every unit
    n = t // NS_PER[unit]
    assert epoch_unit(n) == unit
    assert parse_time_ns(str(n) if as_text else n) == t


@given(n=st.integers(-(10**20), 10**20), unit=units)
def test_a_declared_unit_is_used_whatever_the_magnitude(n, unit):
    if T_NS_MIN <= n * NS_PER[unit] <= T_NS_MAX:
        assert parse_time_ns(n, unit) == parse_time_ns(str(n), unit) == n * NS_PER[unit]
    else:
        with pytest.raises(TimeRangeError):
            parse_time_ns(n, unit)


@given(t_ns=st.integers(-(2**62), 2**62), offset_min=st.integers(-14 * 60, 14 * 60),
       digits=st.integers(0, 9), sep=st.sampled_from(["T", " "]))
def test_iso_8601_is_read_to_the_nanosecond_in_any_zone(t_ns, offset_min, digits, sep):
    t = t_ns - t_ns % 10 ** (9 - digits)  # what ``digits`` fraction digits can say
    assert parse_time_ns(iso(t, offset_min, digits, sep)) == t
    assert parse_time_ns(iso(t, 0, digits, sep, zone="Z")) == parse_time_ns(iso(t, 0, digits, sep, zone="")) == t


@given(t_ns=st.integers(-(2**62), 2**62))
def test_decimal_seconds_are_exact(t_ns):
    sec, frac = divmod(abs(t_ns), 10**9)
    text = f"{'-' if t_ns < 0 else ''}{sec}.{frac:09d}"
    assert parse_time_ns(text) == parse_time_ns(Decimal(text)) == t_ns


@pytest.mark.parametrize(("value", "ns"), [
    ("0", 0), (0, 0), ("20", 20 * 10**9), ("-1.5", -1_500_000_000), (" 1714564800 ", 1_714_564_800 * 10**9),
    ("1714564800.25", 1_714_564_800_250_000_000), (1_714_564_800.25, 1_714_564_800_250_000_000),
    ("1714564800250", 1_714_564_800_250_000_000), ("1714564800250000", 1_714_564_800_250_000_000),
    ("1714564800250000000", 1_714_564_800_250_000_000), ("1.71456480025e9", 1_714_564_800_250_000_000),
    ("9999999999", None), ("10000000000", 10**16), ("9999999999999", None), ("10000000000000", 10**16),
    ("2024-05-01T12:00:00Z", 1_714_564_800 * 10**9), ("2024-05-01T12:00:00z", 1_714_564_800 * 10**9),
    ("2024-05-01T12:00:00", 1_714_564_800 * 10**9), ("2024-05-01T14:00:00+02:00", 1_714_564_800 * 10**9),
    ("2024-05-01 12:00:00,123456789123Z", 1_714_564_800_123_456_789), ("20240501T120000.5Z", 1_714_564_800_500_000_000),
    ("1969-12-31T23:59:59.5Z", -500_000_000), (datetime(2024, 5, 1, 12, tzinfo=UTC), 1_714_564_800 * 10**9),
    ("9999-12-31T23:59:59Z", None), ("0001-01-01T00:00:00+14:00", None), ("99999999999999999999999", None),
    ("1e9999", None),
])
def test_the_table(value, ns):
    """The bounds of the bands and the formats, as the module's docstring states them; None: out of range."""
    if ns is None:
        with pytest.raises(TimeRangeError, match="outside 1677-09-21 to 2262-04-11"):
            parse_time_ns(value)
    else:
        assert parse_time_ns(value) == ns


@pytest.mark.parametrize("value", ["yesterday", "", "²", "¹²", "nan", "inf", "1e99999", "2026-13-45", "1_000",
                                   "0x10", "12:00", "2024-05-01T12:00:00" + "0" * 60, True, None, [1], b"1"])
def test_what_is_not_a_time_is_a_time_error_naming_it(value):
    with pytest.raises(TimeError) as caught:
        parse_time_ns(value)  # type: ignore[arg-type]
    assert not isinstance(caught.value, TimeRangeError)


@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.decimals(allow_nan=True)))
def test_any_input_is_a_time_in_range_or_a_time_error(value):
    try:
        ns = parse_time_ns(value)
    except TimeError:
        return
    assert T_NS_MIN <= ns <= T_NS_MAX


def _mqtt(text: str) -> int:
    sub = MqttSubscription(topic="s/+", asset="a", point="p", ts_unit="auto")
    return _Route(sub, ())._timestamp({"t": text})


READERS = {"api": api_time_ns, "twin detect run": offline_parse, "replay": lambda x: int(_parse_times([x], "f")[0]),
           "mqtt source": _mqtt}


@given(t_ns=st.integers(-(2**62), 2**62), form=st.sampled_from(["s", "ms", "us", "ns", "iso", "iso+05:30", "frac"]))
def test_every_reader_of_times_agrees(t_ns, form):
    if form in NS_PER:
        t = whole(t_ns, form)
        text = str(t // NS_PER[form])
    elif form == "frac":
        t, text = t_ns, f"{'-' if t_ns < 0 else ''}{abs(t_ns) // 10**9}.{abs(t_ns) % 10**9:09d}"
    else:
        t, text = t_ns, iso(t_ns, 330 if form.endswith("30") else 0)
    answers = {name: _outcome(read, text) for name, read in READERS.items()}
    assert answers == dict.fromkeys(READERS, _outcome(parse_time_ns, text))
    if abs(t) >= EDGE_OF_AMBIGUITY or form in ("s", "iso", "iso+05:30", "frac"):
        assert answers["api"] == t


def _outcome(read, text: str) -> int | str:
    """The time read, or "refused" (each reader refuses in its own words: a 422, a line number, a payload error)."""
    try:
        return read(text)
    except (ValueError, PydanticCustomError):
        return "refused"


def test_every_reader_refuses_the_same_text():
    for text in ("yesterday", "9999-12-31T23:59:59Z"):
        with pytest.raises(PydanticCustomError):
            api_time_ns(text)
        for name, read in READERS.items():
            if name != "api":
                with pytest.raises((ValueError, PayloadError), match=r"timestamp 'yesterday' is neither ISO 8601 "
                                   r"nor epoch|timestamp '9999-12-31T23:59:59Z' is outside"):
                    read(text)


def test_a_gateway_declares_its_devices_unit():
    sub = MqttSubscription(topic="s/+", asset="a", point="p", ts_unit="ms")
    route = _Route(sub, ())
    assert route._timestamp({"t": 1_714_564_800}) == 1_714_564_800 * 10**6  # seconds by magnitude, ms as declared
    assert route._timestamp({"t": "2024-05-01T12:00:00Z"}) == 1_714_564_800 * 10**9
    with pytest.raises(PayloadError, match=r"'t': timestamp 1e\+300 is outside"):
        route._timestamp({"t": 1e300})
    with pytest.raises(PayloadError, match="'t' is not a time"):
        route._timestamp({"t": [1]})


ROOT = Path(__file__).resolve().parents[1]
PARSER_PENDING: dict[str, str] = {}


def test_no_other_module_parses_iso_8601_text():
    """``datetime.fromisoformat`` is models.timestamps' alone: a second reader of times is how four came to be."""
    found = sorted(p.relative_to(ROOT).as_posix() for package in ("cloud", "edge", "models", "simulators", "twin")
                   for p in (ROOT / package).rglob("*.py") if "fromisoformat(" in p.read_text())
    assert found == sorted(["models/timestamps.py", *PARSER_PENDING])
