"""A machine's what-if: "if maintenance is postponed by N days, how likely is zone D before then?", from the
trend of its own vibration history, judged by its own ISO 20816-3 class (its profile; group 2, rigid, without one)."""

from __future__ import annotations

from typing import Any

from cloud.packs.base import SimulationError
from cloud.rules.maintenance import (
    POINT,
    SeverityClass,
    fit_trend,
    health_index,
    probability_zone_d_before,
    velocity_history,
)

NS = 1_000_000_000
HISTORY_S = 90 * 24 * 3600


def simulate_machine(platform, tenant: str, asset: str, *, postpone_days: float, now_ns: int,
                     severity: SeverityClass | None = None) -> dict[str, Any]:
    if severity is None:
        from cloud.machines import profile, severity_of

        severity = severity_of(profile(platform.registry, tenant, asset)[0])
    sev = severity
    t, y = velocity_history(platform.store, tenant, asset, now_ns - HISTORY_S * NS, now_ns + 1)  # bounded size
    if t.size < 10:
        raise SimulationError(f"{POINT}: {t.size} readings in the last 90 days; a trend needs at least 10")
    trend = fit_trend(t, y, offset="profile")
    d = trend.crossing(sev.limit_of("D"))
    return {
        "asset": asset, "kind": "vibration-trend", "postpone_days": postpone_days,
        "probability_zone_d": probability_zone_d_before(trend, sev, postpone_days, now_ns=now_ns),
        "zone_now": sev.zone(float(y[-1])), "health": float(health_index(float(y[-1]), sev)),
        "zone_d_limit_mm_s": sev.limit_of("D"), "trend_model": trend.model,
        "zone_d": {k: getattr(d, k) for k in d.__dataclass_fields__} if hasattr(d, "__dataclass_fields__") else str(d),
        "readings": int(t.size),
    }
