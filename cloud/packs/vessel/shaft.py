"""The shaft line through the rotating-machine rules: ISO 10816-3 zones and a vibration trend per bearing, at sea
speed only, with the bearing's own temperature saying whether it is the bearing that wears.

Each intermediate bearing ``k`` with a vibration point ``shaft_vib_k`` is judged by
``cloud.rules.maintenance.maintenance_alert`` — the zone of the trended level, the predicted zone-C and zone-D
dates with their bootstrap interval — on its steady windows at ``min_speed_ratio`` of MCR speed or more
(vibration grows with speed squared: manoeuvring readings would only add scatter). The class is the pack's
setting: a shaft line behind a > 300 kW engine on a ship's structure is group 1, flexible (3.5 / 7.1 / 11 mm/s).

An alarm (zone C or D now, or zone D predicted within ``horizon_days``) is a **wearing shaft bearing** when
that bearing also runs warmer against its neighbours than it did at the start of the history, by
``temperature_rise_k`` or more (the same room and the same shaft speed warm them all alike); otherwise it is
shaft-line vibration of another cause (misalignment, propeller, foundation), reported as such.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cloud.packs.base import Alarm
from cloud.packs.vessel.data import VesselConfig, Windows
from cloud.rules.maintenance import SeverityClass, TrendFit, fit_trend, maintenance_alert

SOURCE = "vessel-shaft"
RULE = "shaft-line-vibration-{}"
VIB_POINT = re.compile(r"shaft_vib_(\d+)$")
_DAY_NS = 86_400 * 10**9
_FORECAST_MAX_DAYS = 365.0


def bearings(points: list[str]) -> list[int]:
    return sorted(int(m.group(1)) for p in points if (m := VIB_POINT.match(p)))


def temperature_rise(w: Windows, bearing: int, t_ns: np.ndarray) -> dict[str, Any] | None:
    """How much warmer ``bearing`` runs against the other intermediate bearings over the judged windows: the
    mean difference over the last day minus that over the first day, K (None: no temperatures to compare)."""
    own = w.values.get(f"shaft_bearing_{bearing}_temp")
    others = [v for p, v in w.values.items()
              if re.fullmatch(r"shaft_bearing_\d+_temp", p) and p != f"shaft_bearing_{bearing}_temp"]
    if own is None or not others:
        return None
    keep = np.isin(w.t_ns, t_ns)
    diff = (own - np.mean(others, axis=0))[keep]
    t = w.t_ns[keep]
    ok = np.isfinite(diff)
    diff, t = diff[ok], t[ok]
    if len(diff) < 2:
        return None
    first = t <= t.min() + _DAY_NS
    last = t >= t.max() - _DAY_NS
    start, end = float(np.mean(diff[first])), float(np.mean(diff[last]))
    return {"point": f"shaft_bearing_{bearing}_temp", "against_others_start_k": round(start, 2),
            "against_others_now_k": round(end, 2), "rise_k": round(end - start, 2),
            "first_ns": int(t.min()), "last_ns": int(t.max())}


def judged(w: Windows, cfg: VesselConfig, now_ns: int, bearing: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(t_ns, velocity corrected to MCR speed, mm/s) of the bearing's steady windows at sea in the history, or
    None when there are too few. Corrected as velocity ~ speed squared, so voyages at different service speeds
    compare (conservative: the zones are then judged as if at MCR speed)."""
    spec = cfg.shaft
    v = w.values.get(f"shaft_vib_{bearing}")
    if v is None:
        return None
    since = now_ns - round(spec.history_days * _DAY_NS)
    keep = (w.speed >= spec.min_speed_ratio * cfg.engine.mcr_rpm) & (w.t_ns >= since) & (w.t_ns <= now_ns)
    keep &= np.isfinite(v)
    if keep.sum() < spec.min_windows:
        return None
    return w.t_ns[keep], v[keep] * (cfg.engine.mcr_rpm / w.speed[keep]) ** 2


def zone_d_fit(w: Windows, cfg: VesselConfig, now_ns: int, bearing: int) -> TrendFit | None:
    """The trend ``maintenance_alert`` fits to the bearing (same data, same model choice, same seed)."""
    series = judged(w, cfg, now_ns, bearing)
    if series is None:
        return None
    return fit_trend(*series, model="auto", offset="profile", n_boot=cfg.shaft.n_boot, confidence=0.9, seed=0)


def shaft_alarms(w: Windows, cfg: VesselConfig, asset: str, now_ns: int
                 ) -> tuple[list[Alarm], dict[str, dict[str, Any]]]:
    """Alarms per bearing and, per bearing past zone A whose trend reaches zone D, its date (forecast)."""
    spec = cfg.shaft
    severity = SeverityClass(spec.group, spec.foundation)
    alarms, forecast = [], {}
    for k in bearings(list(w.values)):
        series = judged(w, cfg, now_ns, k)
        if series is None:
            continue
        t, corrected = series
        found = maintenance_alert(asset, t, corrected, severity, now_ns=now_ns, window_days=spec.history_days,
                                  horizon_days=_FORECAST_MAX_DAYS, n_boot=spec.n_boot, seed=0)
        if found is None:
            continue
        ev = found["evidence"]
        ev.pop("probability_zone_d_within_horizon", None)  # of the year asked of it here, not of the pack's horizon
        d = ev["zone_d"]
        if d["at_ns"] is not None and d["p_never"] < 0.1 and ev["zone"] != "A":
            forecast[f"shaft_bearing_{k}"] = {"what": f"shaft bearing {k} inspection (vibration zone D)",
                                              "at_ns": d["at_ns"], "at": d["at"], "interval_ns": d["interval_ns"],
                                              "interval": d["interval"]}
        lead = ev["lead_days"] if ev["lead_days"] is not None else math.inf
        if ev["zone"] not in ("C", "D") and (lead > spec.horizon_days or ev["zone"] == "A"):
            continue  # in zone A a trend is the voyage's speed and sea, not the bearing
        temp = temperature_rise(w, k, t)
        wearing = temp is not None and temp["rise_k"] >= spec.temperature_rise_k
        rule = RULE.format(k)
        level = found["severity"]
        title = (f"shaft bearing {k} wearing: {found['title']}; it runs {temp['rise_k']:.1f} K warmer against its "
                 f"neighbours than {(now_ns - temp['first_ns']) / _DAY_NS:.0f} days ago" if wearing and temp
                 else f"shaft line at bearing {k}: {found['title']}")
        evidence = {**ev, "source": SOURCE, "rule": rule, "point": f"shaft_vib_{k}", "bearing": k,
                    "classification": "shaft_bearing_wear" if wearing else "shaft_line_vibration",
                    "window": {"start_ns": ev["points"]["first_ns"], "end_ns": ev["points"]["last_ns"]},
                    "values": {"corrected_to_rpm": cfg.engine.mcr_rpm, "level_mm_s": ev["level_mm_s"],
                               "last_value_mm_s": ev["points"]["last_value_mm_s"],
                               "windows": ev["points"]["n"], "bearing_temperature": temp},
                    "maintenance_due": {"what": f"shaft bearing {k} inspection", "at_ns": d["at_ns"], "at": d["at"],
                                        "interval_ns": d["interval_ns"], "interval": d["interval"]}}
        evidence["thresholds"] = {**ev["thresholds"], "horizon_days": spec.horizon_days,
                                  "min_speed_ratio": spec.min_speed_ratio,
                                  "temperature_rise_k": spec.temperature_rise_k}
        alarms.append(Alarm(rule, level, title, evidence, now_ns))
    return alarms, forecast
