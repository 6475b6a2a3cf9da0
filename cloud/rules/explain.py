"""Explainable decisions: for an alert, recompute its rule on the stored data and show the evidence
found beside the evidence stored. Each rule family registers how to recompute its alerts by the
``source`` its evidence names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud.registry import Asset
from cloud.rules import local

Explainer = Callable[[Any, dict], dict | None]  # (platform, alert dict) -> recomputed evidence


def _local(platform, alert: dict) -> dict | None:
    ev = alert["evidence"]
    with platform.registry.session() as s:
        a = s.get(Asset, (alert["tenant"], alert["asset"]))
    rule = local.rule_for(a.type if a else None, alert["rule"])
    if rule is None or "fired_ns" not in ev:
        return None
    return local.recompute(platform.store, alert["tenant"], alert["asset"], rule, ev["start_ns"], ev["fired_ns"])


EXPLAINERS: dict[str, Explainer] = {local.SOURCE: _local}


def explain(platform, alert: dict) -> dict[str, Any]:
    source = alert["evidence"].get("source")
    fn = EXPLAINERS.get(source)
    if fn is None:
        return {"recomputable": False, "reason": f"no explainer for source {source!r}", "stored": alert["evidence"]}
    found = fn(platform, alert)
    stored = alert["evidence"]
    same = found is not None and all(found.get(k) == stored.get(k) for k in found if k in stored)
    return {"recomputable": True, "stored": stored, "recomputed": found, "matches": same}
