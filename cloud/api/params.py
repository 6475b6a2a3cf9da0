"""The API's query and path parameters as types, and the base of its request bodies, validated before any
route sees them.

A value reaches a route only once it is what the registry and the stores can take: ids without control
characters or backslashes (PostgreSQL refuses NUL; a newline or backslash breaks an InfluxQL string), times
inside int64 nanoseconds, windows that InfluxDB can hold, and cursors of the shape this API issued. Anything
else is a 422 problem+json naming the parameter (``cloud.api.problems``), never a database error turned 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from models.timestamps import RANGE as TIME_RANGE
from models.timestamps import TimeError, TimeRangeError, Unit, parse_time_ns
from models.wire import T_NS_MAX, T_NS_MIN

NAME = r"^[^\x00-\x1f\x7f\\]+$"
"""What a name on the wire may be (``models.wire``): no control character, no backslash."""


def invalid(parameter: str, msg: str, where: str = "query") -> NoReturn:
    """A 422 naming the parameter, for what only a route can judge (end after start), shaped as every other."""
    raise RequestValidationError([{"loc": (where, parameter), "type": "value_error", "msg": msg}])


# -- ids ---------------------------------------------------------------------------------------------------------


def _path_id(what: str, max_length: int) -> Any:
    return Path(min_length=1, max_length=max_length, pattern=NAME, description=what)


AssetId = Annotated[str, _path_id("an asset's id", 128)]
GatewayId = Annotated[str, _path_id("a gateway's id", 64)]
KeyId = Annotated[str, _path_id("an API key's id", 32)]
ShipmentId = Annotated[str, _path_id("a shipment's id", 64)]
Lot = Annotated[str, _path_id("a batch's lot number", 128)]
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an alert's id")]
"""Bounded to the registry's integer column: a larger id is a 422, not a database error."""

Point = Annotated[str, Query(min_length=1, max_length=128, pattern=NAME, description="a point of the asset")]


def _filter(what: str, max_length: int = 128) -> Any:
    """An optional filter; empty, as a form leaves it, filters nothing."""
    return Query(max_length=max_length, pattern=NAME.replace("]+$", "]*$"), description=what)


SiteFilter = Annotated[str | None, _filter("only assets of this site or line", 64)]
TypeFilter = Annotated[str | None, _filter("only assets of this type", 64)]
GatewayFilter = Annotated[str | None, _filter("only assets behind this gateway", 64)]
AssetFilter = Annotated[str | None, _filter("only this asset's")]
RuleFilter = Annotated[str | None, _filter("only this rule's")]
SeverityFilter = Annotated[str | None, _filter("only this severity (low, medium, high, critical)", 16)]

# -- times and windows -------------------------------------------------------------------------------------------

def time_ns(value: object, unit: Unit | None = None) -> int:
    """A time by the platform's one rule (``models.timestamps``): ISO 8601 / RFC 3339 (UTC when no offset is
    given) or epoch s, ms, µs or ns chosen by the number's magnitude, to exact ns inside int64.

    >>> time_ns("2026-01-01T00:00:00.5Z"), time_ns("1767225600500000000"), time_ns("1767225600.5")
    (1767225600500000000, 1767225600500000000, 1767225600500000000)
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("time", "expected epoch s/ms/us/ns or an ISO 8601 time")
    try:
        return parse_time_ns(value, unit)
    except TimeRangeError:
        raise PydanticCustomError("time_range", f"a time must be within {TIME_RANGE}") from None
    except TimeError:
        raise PydanticCustomError("time", "not an epoch time (s, ms, us or ns) nor an ISO 8601 time") from None


_TIME_SCHEMA = {"anyOf": [{"type": "integer", "minimum": T_NS_MIN, "maximum": T_NS_MAX},
                          {"type": "string", "format": "date-time"}]}
TimeNs = Annotated[int, BeforeValidator(time_ns), WithJsonSchema(_TIME_SCHEMA)]
"""A time as the API reads it anywhere: epoch s/ms/µs/ns by magnitude or ISO 8601, inside int64."""

_BLANK_IS_ABSENT = BeforeValidator(lambda v: None if v == "" else v)
_TIME_HELP = "epoch s, ms, µs or ns (by magnitude) or ISO 8601"
Start = Annotated[TimeNs | None, _BLANK_IS_ABSENT, Query(description=f"{_TIME_HELP} (inclusive)")]
End = Annotated[TimeNs | None, _BLANK_IS_ABSENT, Query(description=f"{_TIME_HELP} (exclusive)")]

_UNITS_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
             "d": 86_400_000_000_000}
_DURATION = re.compile(r"([0-9]{1,20})(ms|s|m|h|d)")
MAX_WINDOW_NS = 36_500 * _UNITS_NS["d"]
"""A century: any wider window is one window anyway, and InfluxDB's durations end at int64 ns (292 years)."""


def duration_ns(value: object) -> int:
    """``10s``, ``1m``, ``1h``, ``7d``, ``500ms``: a positive whole number of one unit, at most a century."""
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise PydanticCustomError("duration", "expected a duration like 500ms, 10s, 1m, 1h or 7d")
    ns = int(m[1]) * _UNITS_NS[m[2]]
    if not 0 < ns <= MAX_WINDOW_NS:
        raise PydanticCustomError("duration_range", "a duration must be more than 0 and at most 36500d")
    return ns


Window = Annotated[int | None, BeforeValidator(lambda v: None if v is None or v == "" else duration_ns(v)),
                   WithJsonSchema({"type": "string", "pattern": f"^{_DURATION.pattern}$"}),
                   Query(description="window, e.g. 1m: aggregate server-side")]

# -- cursors -----------------------------------------------------------------------------------------------------


def decode_cursor(value: str | None, adapter: TypeAdapter[Any], *, opaque: bool = True) -> Any:
    """``value`` (base64 JSON when ``opaque``) as ``adapter``'s shape, or a 422 naming ``cursor``."""
    if value is None or value == "":
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) if opaque else value
        return adapter.validate_python(raw)
    except (ValueError, binascii.Error, ValidationError):
        invalid("cursor", "not a cursor this API issued")


def cursor_of(shape: Any, *, opaque: bool = True) -> Any:
    """A ``cursor`` query parameter checked against the ``shape`` of what this API issues for that list."""
    adapter: TypeAdapter[Any] = TypeAdapter(shape)

    def cursor(value: Annotated[str | None, Query(alias="cursor", max_length=512,
                                                  description="next_cursor of the previous page")] = None) -> Any:
        return decode_cursor(value, adapter, opaque=opaque)

    return Depends(cursor)


_Name = Annotated[str, Field(strict=True, min_length=1, max_length=200, pattern=NAME)]
_RowId = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
"""The registry's integer id columns."""
_T = Annotated[int, Field(strict=True, ge=T_NS_MIN, le=T_NS_MAX)]

NameCursor = Annotated[str | None, cursor_of(_Name)]
"""After this id (assets, twins, shipments)."""
RowCursor = Annotated[int | None, cursor_of(_RowId)]
"""Below this row id (newest first: alerts, audit, dead letters)."""
TimeEventCursor = Annotated[tuple[int, str] | None, cursor_of(tuple[_T, _Name])]
"""After this (start_ns, event_id) (anomalies)."""
_IssuedNs = Annotated[int, BeforeValidator(lambda v: time_ns(v, "ns"))]
"""A time this API wrote in ns (a cursor): read as ns whatever its magnitude."""
TimeCursor = Annotated[int | None, cursor_of(_IssuedNs, opaque=False)]
"""From this ns on (telemetry: the plain ns a page's ``next_cursor`` gives)."""
ISSUED: TypeAdapter[Any] = TypeAdapter(_RowId | _Name | tuple[_T, _Name])
"""Any cursor of a shape this API issues, for a route that checks the shape itself (``deps.decode_cursor``)."""

# -- bodies ------------------------------------------------------------------------------------------------------


def _nul_at(value: Any, where: str = "") -> str | None:
    """The path of the first string (or key) holding U+0000 in a decoded JSON body, else None."""
    if isinstance(value, str):
        return (where or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            name = str(k).replace("\x00", "\\x00")  # shown, not carried
            here = f"{where}.{name}" if where else name
            if isinstance(k, str) and "\x00" in k:
                return here
            if (found := _nul_at(v, here)) is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (found := _nul_at(v, f"{where}[{i}]")) is not None:
                return found
    return None


class Body(BaseModel):
    """A request body: no string in it may hold U+0000, which PostgreSQL cannot store in a text column (a 422
    naming the field, not a database error turned 500). Every body model of the API derives from it."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if (where := _nul_at(data)) is not None:
            raise PydanticCustomError("nul", "{where}: U+0000 (NUL) cannot be stored", {"where": where})
        return data
