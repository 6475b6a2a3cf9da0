"""Explainable decisions: for an alert, recompute its rule on the stored data and show the evidence
found beside the evidence stored. Each rule family registers how to recompute its alerts by the
``source`` its evidence names, and recomputes through the same functions its live rule runs, as of the
moment (and over the window) the evidence records — so ``matches`` is true exactly when the stored data
and the rule are what they were when it fired.

Every family's rule is deterministic on its data: the cold-chain rules are plain arithmetic; the vibration
trend's bootstrap (its seed in the evidence) and the thermal forecast's band draw from fixed seeds, and the
thermal model that made a forecast is kept in its evidence (the twin's own is refitted as data comes in).
What is not a function of the data (when the data arrived: ``detected_late``) is left out of the
comparison, and the response says so (``not_compared``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloud.registry import Asset
from cloud.rules import local, maintenance
from cloud.rules.coldchain import reefer
from cloud.rules.coldchain.profiles import ProfileError, parse_profile


class NotRecomputable(Exception):
    """The alert's evidence lacks what a recomputation needs (e.g. raised before it was recorded); says why."""


@dataclass(frozen=True)
class Explainer:
    """How one rule family recomputes its alerts: (platform, alert dict) -> the evidence found, or None when
    the rule no longer fires on the stored data; ``not_compared``: evidence keys left out, and why."""

    recompute: Callable[[Any, dict], dict | None]
    not_compared: dict[str, str] = field(default_factory=dict)


def _local(platform, alert: dict) -> dict | None:
    ev = alert["evidence"]
    with platform.registry.session() as s:
        a = s.get(Asset, (alert["tenant"], alert["asset"]))
    rule = local.rule_for(a.type if a else None, alert["rule"])
    if rule is None or "fired_ns" not in ev:
        raise NotRecomputable(f"no local rule {alert['rule']!r} for this asset's type, or no fired_ns in the evidence")
    return local.recompute(platform.store, alert["tenant"], alert["asset"], rule, ev["start_ns"], ev["fired_ns"])


def _coldchain(platform, alert: dict) -> dict | None:
    """The trailer's samples over the window the runner read, judged by the profile and settings it applied
    (recorded in ``assessment``); the last alarm of the same rule and episode start, else that rule's last."""
    ev = alert["evidence"]
    asm = ev.get("assessment")
    if not isinstance(asm, dict):
        raise NotRecomputable("the evidence records no assessment (window, profile, settings): raised before "
                              "cold-chain alerts recorded what recomputing them needs")
    try:
        profile = parse_profile(asm["profile"], "evidence.assessment.profile")
        settings = reefer.ReeferRuleSettings(**asm["settings"])
        as_of, since = int(asm["as_of_ns"]), int(asm["from_ns"])
    except (KeyError, TypeError, ValueError, ProfileError) as exc:
        raise NotRecomputable(f"evidence.assessment is incomplete or invalid: {exc}") from None
    samples = reefer.load_samples(platform.store, alert["tenant"], alert["asset"], since, as_of + 1)
    if alert["rule"] == reefer.PREDICTED_RULE:
        found = _predicted(samples, ev, profile, settings, as_of)
    else:
        out = reefer.assess_trailer(samples, profile, settings, now_ns=as_of, offline=asm.get("offline"))
        same_rule = [a for a in out.alarms if a.rule == alert["rule"]]
        start = (ev.get("window") or {}).get("start_ns")
        # the runner hands an assessment's alarms over in time order: the last of the rule is what it stored
        found = next((a for a in reversed(same_rule) if a.evidence["window"]["start_ns"] == start),
                     same_rule[-1] if same_rule else None)
    if found is None:
        return None
    return {k: v for k, v in found.evidence.items() if k not in _COLDCHAIN_NOT_COMPARED}


def _predicted(samples: dict, ev: dict, profile, settings, as_of: int) -> reefer.LiveAlarm | None:
    """The forecast again, with the thermal model that made it (the twin's is refitted as data comes in)."""
    from cloud.thermal import ThermalModel  # scipy only for predictive alerts

    if "thermal_model" not in ev:
        raise NotRecomputable("the evidence keeps no thermal model: raised before predictive alerts recorded it")
    limit_c = reefer.profile_limit_c(profile, settings.forecast_limit_c)
    stop = reefer.cooling_stopped(samples, limit_c, settings, now_ns=as_of)
    if stop is None:
        return None
    return reefer.predict_excursion(samples, ThermalModel.from_dict(ev["thermal_model"]), stop, limit_c, settings)


_COLDCHAIN_NOT_COMPARED = {
    "detected_late": "when the data arrived, not what it says: fixed when the episode was first found, which a "
                     "later look at the same data cannot know",
}


def _maintenance(platform, alert: dict) -> dict | None:
    """The live rule (``machine_alert``) as of the reading it was judged at, with its class, window and
    bootstrap size; the bootstrap's seed is fixed, so the same data gives the same dates and intervals."""
    ev = alert["evidence"]
    try:
        th, pts, fit = ev["thresholds"], ev["points"], ev["fit"]
        severity = maintenance.SeverityClass(th["group"], th["foundation"], th["boundary"])
        as_of, window_days, n_boot = int(ev["now_ns"]), pts["window_days"], int(fit["bootstrap"])
    except (KeyError, TypeError, ValueError) as exc:
        raise NotRecomputable(f"the evidence lacks what the trend rule needs: {exc}") from None
    found = maintenance.machine_alert(platform.store, alert["tenant"], alert["asset"], severity,
                                      window_days=window_days, n_boot=n_boot, as_of_ns=as_of)
    return None if found is None else found["evidence"]


EXPLAINERS: dict[str, Explainer] = {
    local.SOURCE: Explainer(_local),
    reefer.SOURCE: Explainer(_coldchain, _COLDCHAIN_NOT_COMPARED),
    maintenance.RULE: Explainer(_maintenance),
}


def _as_json(x: Any) -> Any:
    """As JSON holds it: lists for tuples and arrays, null for NaN and infinities (which strict JSON, the API's
    responses and PostgreSQL's JSON column cannot hold)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _as_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_as_json(v) for v in x]
    return x


def explain(platform, alert: dict) -> dict[str, Any]:
    stored = _as_json(alert["evidence"])
    source = stored.get("source")
    ex = EXPLAINERS.get(source)
    if ex is None:
        return {"recomputable": False, "reason": f"no explainer for source {source!r}", "stored": stored}
    try:
        found = _as_json(ex.recompute(platform, alert))
    except NotRecomputable as exc:
        return {"recomputable": False, "reason": str(exc), "stored": stored}
    same = found is not None and all(found[k] == stored[k] for k in found if k in stored and k not in ex.not_compared)
    out = {"recomputable": True, "stored": stored, "recomputed": found, "matches": same}
    if ex.not_compared:
        out["not_compared"] = ex.not_compared
    return out
