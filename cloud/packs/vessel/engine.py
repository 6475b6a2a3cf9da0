"""The main engine read as its engineers read it: each cylinder against the others, the engine against its
shop test.

- **Cylinder deviation** (``me-cylinder-deviation-cylN``). In a steady window every cylinder runs at the same
  load, so one cylinder's exhaust temperature far from the mean of the cylinders is that cylinder's own doing;
  the first suspect is its fuel injector (hot: a worn, dribbling nozzle burning late; cold: a clogged one
  delivering too little). It must hold in ``hold_windows`` consecutive steady windows of the last ``recent_h``.
  The alert is resolved when the cylinder is back within ``resolve_k`` for as many windows (injector changed).
- **Performance against the shop test** (``me-performance``). At each steady window's load, the exhaust
  temperature (the mean of the cylinders near their median, so one bad injector does not move it) and the
  scavenge air pressure are compared with the shop-test curves; a trend of each (weighted linear least squares
  with a residual bootstrap, ``cloud.rules.maintenance.fit_trend``) predicts when it crosses its service limit. Exhaust
  rising *and* scavenge air falling at the same load, both heading for their limits, is the signature of a fouled
  turbocharger (less air for the same fuel): alarmed when the first limit is predicted within ``horizon_days``.
  One of them alone is alarmed only once past its limit, as what it is: a single trend over a few days of
  voyages is the weather and the load as often as the engine (a step of a few kelvin extrapolates far).

Every alarm carries its evidence: the rule, the windows judged, their values, the thresholds, and for trends
the fit and the predicted date with its interval.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cloud.packs.base import Alarm
from cloud.packs.vessel.data import VesselConfig, Windows, cylinders
from cloud.rules.maintenance import TrendFit, fit_trend

SOURCE = "vessel-engine"
CYLINDER_RULE = "me-cylinder-deviation-cyl{}"
PERFORMANCE_RULE = "me-performance"
_DAY_NS = 86_400 * 10**9
_H_NS = 3600 * 10**9


def iso(t_ns: float | None) -> str | None:
    if t_ns is None or not math.isfinite(t_ns):
        return None
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _r(x: float, digits: int = 2) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


def cylinder_deviations(w: Windows) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(cylinder numbers, temperatures cylinders x windows, deviation from the mean of the cylinders, K).
    A window missing any cylinder has NaN deviations: a mean of five is not the engine's mean."""
    cyl = cylinders(list(w.values))
    if not cyl:
        return [], np.zeros((0, len(w))), np.zeros((0, len(w)))
    temps = np.stack([w.values[p] for _, p in cyl])
    mean = temps.mean(axis=0)  # NaN if any cylinder is
    return [n for n, _ in cyl], temps, temps - mean


def cylinder_alarms(w: Windows, cfg: VesselConfig, now_ns: int) -> tuple[list[Alarm], list[tuple[str, str]]]:
    """Alarms for cylinders off the mean in the last ``hold_windows`` steady windows; (rule, why) to resolve."""
    spec = cfg.cylinders
    numbers, temps, dev = cylinder_deviations(w)
    if not numbers:
        return [], []
    recent = np.flatnonzero((w.t_ns > now_ns - round(spec.recent_h * _H_NS)) & (w.t_ns <= now_ns)
                            & np.all(np.isfinite(dev), axis=0))
    if len(recent) < spec.hold_windows:
        return [], []  # the engine has not run steadily of late: nothing new to say about a cylinder
    held = recent[-spec.hold_windows:]
    alarms, resolved = [], []
    for row, n in enumerate(numbers):
        d = dev[row, held]
        rule = CYLINDER_RULE.format(n)
        if np.all(np.abs(d) < spec.resolve_k):
            resolved.append((rule, f"cylinder {n} back within {spec.resolve_k:g} K of the mean in "
                                   f"{len(held)} steady windows"))
            continue
        same_sign = bool(np.all(d > 0) or np.all(d < 0))
        smallest = float(np.min(np.abs(d)))
        if not same_sign or smallest < spec.medium_k:
            continue
        hot = bool(d[-1] > 0)
        severity = "high" if smallest >= spec.high_k else "medium"
        last = held[-1]
        suspect = ("fuel injector: worn or dribbling nozzle, late combustion (then exhaust valve, blow-by)" if hot
                   else "fuel injector or fuel pump delivering too little: clogged nozzle (then the thermocouple)")
        evidence = {
            "source": SOURCE, "rule": rule, "classification": "fuel_injector", "cylinder": n, "now_ns": now_ns,
            "direction": "above" if hot else "below", "suspect": suspect,
            "window": {"start_ns": int(w.t_ns[held[0]] - cfg.steady.window_bins * cfg.steady.bin_s * 1e9),
                       "end_ns": int(w.t_ns[last])},
            "values": {"windows": [
                {"end_ns": int(w.t_ns[i]), "load": _r(w.load[i], 4), "speed_rpm": _r(w.speed[i]),
                 "cylinder_c": _r(temps[row, i]), "mean_c": _r(float(np.mean(temps[:, i]))),
                 "deviation_k": _r(dev[row, i]), "cylinders_c": [_r(x) for x in temps[:, i]]} for i in held]},
            "thresholds": {"medium_k": spec.medium_k, "high_k": spec.high_k, "hold_windows": spec.hold_windows,
                           "resolve_k": spec.resolve_k, "steady": cfg.steady.model_dump(mode="json")},
        }
        title = (f"cylinder {n} exhaust {abs(float(d[-1])):.0f} K {'above' if hot else 'below'} the mean of the "
                 f"cylinders at {100 * float(w.load[last]):.0f} % load: check its fuel injector")
        alarms.append(Alarm(rule, severity, title, evidence, int(w.t_ns[last])))
    return alarms, resolved


# --- performance against the shop test ----------------------------------------------------------------


def engine_exhaust(temps: np.ndarray, outlier_k: float) -> np.ndarray:
    """The engine's exhaust temperature per window: the mean of the cylinders within ``outlier_k`` of their
    median, so a cylinder that the deviation rule is about (a bad injector) does not move the engine's figure."""
    median = np.median(temps, axis=0)
    inside = np.abs(temps - median) < outlier_k
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inside, temps, 0.0).sum(axis=0) / inside.sum(axis=0)


def shop_deviations(w: Windows, cfg: VesselConfig) -> dict[str, np.ndarray]:
    """Per steady window: the engine's exhaust (``engine_exhaust``) minus the shop test at its load, K; scavenge air and
    turbocharger speed below the shop test, % of it (positive: worse). NaN beyond the tested loads."""
    _, temps, _ = cylinder_deviations(w)
    shop = cfg.shop_test
    exh = engine_exhaust(temps, cfg.cylinders.medium_k) if len(temps) else np.full(len(w), np.nan)
    scav = w.values.get("me_scav_air_pressure", np.full(len(w), np.nan))
    tc = w.values.get("me_tc_speed", np.full(len(w), np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"exhaust_rise_k": exh - shop.at("exh_temp_c", w.load),
                "scavenge_drop_pct": 100.0 * (1.0 - scav / shop.at("scav_bar", w.load)),
                "tc_speed_drop_pct": 100.0 * (1.0 - tc / shop.at("tc_rpm", w.load))}


def _trend_summary(fit: TrendFit, limit: float, now_ns: int, significance: float) -> dict[str, Any]:
    now_days = (now_ns - fit.t_ref_ns) / _DAY_NS
    level = float(fit.predict(now_days))
    rising_share = float(np.mean(fit.boot[:, 1] > 0))
    rising = fit.b > 0 and rising_share >= significance
    c = fit.crossing(limit)
    if level >= limit:
        lead = 0.0
    elif rising and math.isfinite(c.days):
        lead = max(c.days - now_days, 0.0)
    else:
        lead = math.inf

    def at(days: float) -> int | None:
        return None if not math.isfinite(days) else fit.t_ref_ns + round(max(days, now_days) * _DAY_NS)

    when = at(now_days + lead) if math.isfinite(lead) else None
    interval = [at(c.lower), at(c.upper)] if math.isfinite(lead) and lead > 0 else [when, when]
    return {"level": _r(level, 3), "limit": limit, "per_day": _r(fit.b, 4), "rising": bool(rising),
            "rising_share": _r(rising_share, 3), "lead_days": _r(lead, 2), "at_ns": when, "at": iso(when),
            "interval_ns": interval, "interval": [iso(x) for x in interval], "p_never": _r(c.p_never, 3),
            "fit": {"model": fit.model, "a": fit.a, "b_per_day": fit.b, "sigma": fit.sigma, "n": fit.n_points,
                    "span_days": _r(fit.span_days, 3), "t_ref_ns": fit.t_ref_ns, "confidence": fit.confidence,
                    "bootstrap": len(fit.boot), "seed": 0}}


def _lead(trend: dict[str, Any]) -> float:
    return math.inf if trend["lead_days"] is None else float(trend["lead_days"])


def performance(w: Windows, cfg: VesselConfig, now_ns: int) -> tuple[Alarm | None, dict[str, Any] | None]:
    """The performance alarm (or None) and the trend summary (or None: too little steady running to judge); the
    summary's ``fits`` are the (TrendFit, limit) of each deviation, for the what-if."""
    spec = cfg.performance
    since = now_ns - round(spec.history_days * _DAY_NS)
    devs = shop_deviations(w, cfg)
    keep = (w.t_ns > since) & (w.t_ns <= now_ns) & np.isfinite(devs["exhaust_rise_k"]) \
        & np.isfinite(devs["scavenge_drop_pct"])
    t = w.t_ns[keep]
    if len(t) < spec.min_windows or (t.max() - t.min()) / _DAY_NS < spec.min_span_days:
        return None, None
    trends, fits = {}, {}
    for key, limit in (("exhaust_rise_k", spec.exhaust_rise_limit_k),
                       ("scavenge_drop_pct", spec.scavenge_drop_limit_pct)):
        fit = fit_trend(t, devs[key][keep], model="linear", half_life_days=spec.half_life_days, n_boot=spec.n_boot,
                        confidence=0.9, seed=0)
        trends[key] = _trend_summary(fit, limit, now_ns, spec.significance)
        fits[key] = (fit, limit)
    exh, scav = trends["exhaust_rise_k"], trends["scavenge_drop_pct"]
    tc = devs["tc_speed_drop_pct"][keep]
    due = min(_lead(exh), _lead(scav))
    first = exh if _lead(exh) <= _lead(scav) else scav
    summary = {"exhaust": exh, "scavenge": scav, "due_days": _r(due, 2), "due_ns": first["at_ns"],
               "due": first["at"], "windows": len(t), "fits": fits}
    beyond = [t for t in (exh, scav) if _lead(t) == 0.0]
    together = exh["rising"] and scav["rising"] and max(_lead(exh), _lead(scav)) <= 2 * spec.horizon_days
    if not beyond and not (together and due <= spec.horizon_days):
        return None, summary
    if together:
        classification, what = "turbocharger_fouling", "turbocharger fouling"
    elif exh in beyond:
        classification, what = "exhaust_temperature_rise", "exhaust temperature above the shop test"
    else:
        classification, what = "scavenge_pressure_drop", "scavenge air below the shop test"
    severity = "high" if due <= 7.0 else "medium"
    when = "now" if due == 0 else f"in {due:.1f} days ({first['at'][:10]})"
    title = (f"{what}: exhaust {exh['level']:+.0f} K and scavenge air {-scav['level']:+.1f} % against the shop test "
             f"at the same load; service limit reached {when}")
    evidence = {
        "source": SOURCE, "rule": PERFORMANCE_RULE, "classification": classification, "now_ns": now_ns,
        "window": {"start_ns": int(t.min()), "end_ns": int(t.max())},
        "maintenance_due": {"what": "turbocharger cleaning" if classification == "turbocharger_fouling"
                            else "engine performance check", "at_ns": first["at_ns"], "at": first["at"],
                            "interval_ns": first["interval_ns"], "interval": first["interval"]},
        "values": {"windows": len(t), "exhaust_rise_k": exh["level"], "scavenge_drop_pct": scav["level"],
                   "tc_speed_drop_pct": _r(float(np.median(tc[-spec.min_windows:])), 2),
                   "last_windows": [{"end_ns": int(t[i]), "load": _r(w.load[keep][i], 4),
                                     "exhaust_rise_k": _r(devs["exhaust_rise_k"][keep][i]),
                                     "scavenge_drop_pct": _r(devs["scavenge_drop_pct"][keep][i])}
                                    for i in range(max(0, len(t) - 6), len(t))]},
        "trends": {"exhaust_rise_k": exh, "scavenge_drop_pct": scav},
        "thresholds": {**spec.model_dump(mode="json"), "shop_test": cfg.shop_test.model_dump(mode="json")},
    }
    return Alarm(PERFORMANCE_RULE, severity, title, evidence, now_ns), summary
