"""The predictive cold-chain alarm: a trailer whose compressor stopped while its thermostat must be calling
is run forward on its calibrated thermal twin, and "excursion expected in N min" is raised while the forecast
reaches the profile's warm limit — the one alarm that comes *before* the load is harmed. ``cooling_stopped`` is
cheap and decides whether the (scipy) forecast is worth making; ``predict_excursion`` makes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cloud.rules.coldchain.excursions import iso
from cloud.rules.coldchain.live import (
    PREDICTED_RULE,
    LiveAlarm,
    ReeferRuleSettings,
    SeriesLike,
    _evidence,
    clean,
    held_at,
)
from cloud.rules.coldchain.profiles import Profile
from cloud.rules.coldchain.reefer import _control_air, _rate_per_s

if TYPE_CHECKING:
    from cloud.thermal import ThermalModel

_NS = 1_000_000_000


@dataclass(frozen=True)
class CoolingStopped:
    """The trailer is warming with its compressor off now, and it is not a defrost."""

    off_since_ns: int
    warm_since_ns: int
    last_ns: int
    control_air_c: float
    setpoint_c: float
    product_c: float


def profile_limit_c(profile: Profile, default_c: float) -> float:
    """The warm limit a forecast is judged against: the profile's lowest upper boundary."""
    highs = [b.above for b in profile.boundaries if b.above is not None and not b.band]
    return min(highs) if highs else default_c


def cooling_stopped(samples: Mapping[str, SeriesLike], limit_c: float, settings: ReeferRuleSettings | None = None,
                    now_ns: int | None = None) -> CoolingStopped | None:
    """Whether the record *ends* with the compressor off while the thermostat must be calling (control air
    ``predict_margin_c`` above setpoint for ``predict_confirm_s``), not in a defrost, the product air still
    below ``limit_c``, and the data current (``now_ns``): only then is a forecast worth making. Cheap, so
    the thermal twin is fitted and run only for the trailers that need it."""
    s = settings or ReeferRuleSettings()
    pts = {name: clean(series) for name, series in samples.items()}
    if any(p not in pts or pts[p][0].size < 2 for p in (s.product_point, "compressor_current", "setpoint")):
        return None
    grid, product = pts[s.product_point]
    if now_ns is not None and now_ns - int(grid[-1]) > s.late_after_s * _NS:
        return None  # late data: the moment to warn has passed
    if float(product[-1]) >= limit_c:
        return None  # the excursion has begun: that is no longer a prediction
    current = held_at(*pts["compressor_current"], grid)
    off = current < s.off_current_a
    if not off[-1]:
        return None
    a = int(np.flatnonzero(~off)[-1]) + 1 if (~off).any() else 0
    if "defrost" in pts and (held_at(*pts["defrost"], grid[a:]) >= 0.5).any():
        return None
    control, setpoint = _control_air(pts, grid)
    warm = control[a:] > setpoint[a:] + s.predict_margin_c
    if not warm[-1]:
        return None
    w = a + (int(np.flatnonzero(~warm)[-1]) + 1 if (~warm).any() else 0)
    if int(grid[-1]) - int(grid[w]) < s.predict_confirm_s * _NS:
        return None
    supply, ret = (held_at(*pts[p], grid) if p in pts else np.full(grid.size, np.nan)
                   for p in ("supply_air", "return_air"))
    gap = float(np.nanmedian((supply + s.supply_lag_s * _rate_per_s(grid, supply) - ret)[w:]))
    if gap > s.defrost_gap_c:
        return None  # the heaters' signature: a defrost, which ends by itself
    return CoolingStopped(int(grid[a]), int(grid[w]), int(grid[-1]), float(control[-1]), float(setpoint[-1]),
                          float(product[-1]))


def predict_excursion(samples: Mapping[str, SeriesLike], thermal: ThermalModel, stop: CoolingStopped,
                      limit_c: float, settings: ReeferRuleSettings | None = None) -> LiveAlarm | None:
    """The predictive alert: the calibrated twin run forward with the compressor off from the last sample;
    an alarm when its central forecast reaches ``limit_c`` within ``predict_horizon_s``, else None."""
    from cloud.thermal import Scenario, ThermalFitError, TrailerHistory  # scipy only when a model is given

    s = settings or ReeferRuleSettings()
    try:
        history = TrailerHistory.from_samples(samples)
        with np.errstate(all="ignore"):
            f = thermal.forecast(history, s.predict_horizon_s, Scenario(compressor_off=True), limit_c=limit_c)
    except (ThermalFitError, np.linalg.LinAlgError, ValueError, FloatingPointError):
        return None
    if f.excursion_ns is None:
        return None
    start = int(f.t_ns[0])
    lead_s = (f.excursion_ns - start) / _NS
    at = iso(f.excursion_ns - f.excursion_ns % _NS)  # to the second: the forecast is not better than that
    step = max(1, round(300 / ((f.t_ns[1] - f.t_ns[0]) / _NS))) if f.t_ns.size > 1 else 1  # every 5 min

    def rel(t: int | None) -> float | None:
        return None if t is None else (t - start) / _NS

    forecast = {"from": iso(start), "horizon_s": s.predict_horizon_s, "scenario": "compressor_off",
                "t_ns": f.t_ns[::step].tolist(), "supply_c": f.supply_c[::step].round(2).tolist(),
                "supply_lo_c": f.supply_lo_c[::step].round(2).tolist(),
                "supply_hi_c": f.supply_hi_c[::step].round(2).tolist(),
                "excursion_at": at, "excursion_ns": f.excursion_ns,
                "earliest_s": rel(f.earliest_ns), "latest_s": rel(f.latest_ns),
                "model": {"fitted_until": iso(thermal.fitted_until_ns), "tau_box_s": thermal.tau_box_s,
                          "residual_c": thermal.residual_c}}
    values = {"point": s.product_point, "reading_c": stop.product_c, "control_air_c": stop.control_air_c,
              "setpoint_c": stop.setpoint_c, "off_since": iso(stop.off_since_ns),
              "warm_since": iso(stop.warm_since_ns), "lead_s": lead_s}
    evidence = _evidence("excursion-predicted", stop.warm_since_ns, None, values,
                         {"limit_c": limit_c, "predict_margin_c": s.predict_margin_c,
                          "predict_confirm_s": s.predict_confirm_s, "horizon_s": s.predict_horizon_s})
    evidence.update(limit_c=limit_c, lead_s=lead_s, forecast=forecast, classification="excursion_predicted",
                    thermal_model=thermal.to_dict(),  # the twin is refitted later: keep the one that forecast
                    detected_late=False,  # made from current data only (cooling_stopped)
                    explanation=(f"The compressor has not run since {iso(stop.off_since_ns)} while the air is "
                                 f"{stop.control_air_c - stop.setpoint_c:.1f} K above its setpoint and it is not "
                                 f"defrosting. With the compressor staying off, this trailer's calibrated thermal "
                                 f"twin puts {s.product_point} at {limit_c:g} °C at {at}, "
                                 f"{lead_s / 60:.0f} min from the last reading ({stop.product_c:g} °C)."))
    return LiveAlarm(PREDICTED_RULE, "high", start,
                     f"excursion expected in {lead_s / 60:.0f} min: {s.product_point} reaches {limit_c:g} °C "
                     "with the compressor off", evidence)
