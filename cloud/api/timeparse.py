"""Query-string times: integer nanoseconds or ISO 8601 / RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime

from cloud.api.problems import Problem


def parse_time(value: str | None, name: str, default_ns: int) -> int:
    if value is None or value == "":
        return default_ns
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(422, "Invalid request", f"{name}: not ns since epoch nor ISO 8601: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


_UNITS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
          "d": 86_400_000_000_000}


def parse_duration(value: str, name: str) -> int:
    v = value.strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if v.endswith(unit) and v[: -len(unit)].isdigit():
            n = int(v[: -len(unit)]) * _UNITS[unit]
            if n > 0:
                return n
    raise Problem(422, "Invalid request", f"{name}: expected a duration like 10s, 1m, 1h, got {value!r}")
