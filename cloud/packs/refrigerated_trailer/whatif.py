"""A trailer's what-if: its calibrated thermal twin (``cloud.thermal``), fitted on its own last day, refitted
when the stored fit is older than ``REFIT_AFTER_S``, kept on the twin as its model. The predictive alert runs
the same model forward. Imported only when needed: it brings scipy."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.packs.base import SimulationError
from cloud.rules.coldchain.profiles import load_profile
from cloud.rules.coldchain.reefer import assess_trailer, load_samples
from cloud.thermal import Scenario, ThermalFitError, ThermalModel, TrailerHistory, fit

NS = 1_000_000_000
HISTORY_S = 24 * 3600
REFIT_AFTER_S = 3600


def thermal_model(platform, tenant: str, asset: str, now_ns: int) -> tuple[ThermalModel, TrailerHistory]:
    """The trailer's calibrated thermal twin and its last day up to ``now_ns``: the model kept on the twin
    while it is fresh, else fitted again and kept (what-ifs here, the predictive alert in the rules)."""
    samples = load_samples(platform.store, tenant, asset, now_ns - HISTORY_S * NS, now_ns + 1)
    try:
        history = TrailerHistory.from_samples(samples)
    except ThermalFitError as exc:
        raise SimulationError(f"not enough history to model this trailer: {exc}") from None
    stored = platform.twins.model(tenant, asset).get("thermal")
    if stored and int(history.t_ns[-1]) - stored["fitted_until_ns"] < REFIT_AFTER_S * NS:
        return ThermalModel.from_dict(stored), history
    defrosts = [(e.start_ns, e.end_ns) for e in assess_trailer(samples, load_profile("who-type-1")).events
                if e.kind == "defrost"]
    try:
        model = fit(history, exclude=defrosts)
    except (ThermalFitError, np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
        raise SimulationError(f"cannot fit this trailer's thermal model from its history: {exc}") from None
    platform.twins.merge_model(tenant, asset, {"thermal": model.to_dict()})
    return model, history


def simulate_trailer(platform, tenant: str, asset: str, *, horizon_s: float, limit_c: float, now_ns: int,
                     compressor_off: bool = False, door_open_s: float = 0.0, ambient_offset_c: float = 0.0,
                     setpoint_c: float | None = None) -> dict[str, Any]:
    model, history = thermal_model(platform, tenant, asset, now_ns)
    scenario = Scenario(compressor_off=compressor_off, door_open_s=door_open_s, ambient_offset_c=ambient_offset_c,
                        setpoint_c=setpoint_c)
    try:
        fc = model.forecast(history, horizon_s, scenario, limit_c=limit_c)
        baseline = model.forecast(history, horizon_s, Scenario(), limit_c=limit_c)
    except (np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
        raise SimulationError(f"the thermal model cannot forecast from this history: {exc}") from None

    def rel(ns: int | None) -> float | None:
        return None if ns is None else (ns - int(fc.t_ns[0])) / NS

    facts = {
        "asset": asset, "kind": "reefer-thermal", "limit_c": limit_c, "horizon_s": horizon_s,
        "scenario": {"compressor_off": compressor_off, "door_open_s": door_open_s,
                     "ambient_offset_c": ambient_offset_c, "setpoint_c": setpoint_c},
        "time_to_excursion_s": rel(fc.excursion_ns), "earliest_s": rel(fc.earliest_ns), "latest_s": rel(fc.latest_ns),
        "baseline_time_to_excursion_s": rel(baseline.excursion_ns),
        "model": {"tau_ambient_s": model.tau_ambient_s, "tau_box_s": model.tau_box_s,
                  "cooling_lift_k": model.cooling_lift_k, "door_ratio": model.door_ratio,
                  "fitted_until_ns": model.fitted_until_ns, "warnings": model.warnings},
    }
    # What "Apply" in the panel keeps in the audit trail beside the change it makes: the forecast in figures an
    # auditor can read (no series: it must stay small), as of the moment it was asked.
    evidence = {**facts, "forecast_from_ns": int(fc.t_ns[0]), "supply_end_c": _finite(fc.supply_c[-1]),
                "supply_min_c": _finite(fc.supply_c.min()), "supply_max_c": _finite(fc.supply_c.max()),
                "cargo_end_c": _finite(fc.cargo_c[-1])}
    return {
        **facts,
        "t_ns": fc.t_ns.tolist(), "supply_c": fc.supply_c.round(3).tolist(),
        "supply_lo_c": fc.supply_lo_c.round(3).tolist(), "supply_hi_c": fc.supply_hi_c.round(3).tolist(),
        "cargo_c": fc.cargo_c.round(3).tolist(),
        "evidence": evidence,
    }


def _finite(x: float) -> float | None:
    """JSON for the audit trail takes no NaN."""
    return round(float(x), 3) if np.isfinite(x) else None
