"""Explainable decisions: for an alert, recompute its rule on the stored data and show the evidence
found beside the evidence stored. The alert's evidence names its ``source``: an edge local rule is recomputed
here (any asset type's), everything else by the pack that raised it (``Pack.explain``, found by the source it
declares), through the same functions its live rule runs, as of the moment (and over the window) the evidence
records — so ``matches`` is true exactly when the stored data and the rule are what they were when it fired.

Every rule is deterministic on its data (a pack keeps in the evidence the seeds and models it used). What is
not a function of the data (when the data arrived: ``detected_late``) is left out of the comparison, and the
response says so (``not_compared``).
"""

from __future__ import annotations

import math
from typing import Any

from cloud.packs import NotRecomputable, pack_for_source
from cloud.registry import Asset
from cloud.rules import local

__all__ = ["NotRecomputable", "explain"]


def _local(platform, alert: dict) -> dict | None:
    ev = alert["evidence"]
    with platform.registry.session() as s:
        a = s.get(Asset, (alert["tenant"], alert["asset"]))
        definition = local.type_definition(s, alert["tenant"], a.type if a else None)
    rule = local.rule_for(definition, alert["rule"])
    if rule is None or "fired_ns" not in ev:
        raise NotRecomputable(f"no local rule {alert['rule']!r} for this asset's type, or no fired_ns in the evidence")
    return local.recompute(platform.store, alert["tenant"], alert["asset"], rule, ev["start_ns"], ev["fired_ns"])


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
    pack = None if source == local.SOURCE else pack_for_source(source)
    if source != local.SOURCE and pack is None:
        return {"recomputable": False, "reason": f"no explainer for source {source!r}", "stored": stored}
    not_compared = dict(pack.not_compared) if pack is not None else {}
    try:
        found = _as_json(_local(platform, alert) if pack is None else pack(platform).explain(alert))
    except NotRecomputable as exc:
        return {"recomputable": False, "reason": str(exc), "stored": stored}
    same = found is not None and all(found[k] == stored[k] for k in found if k in stored and k not in not_compared)
    out = {"recomputable": True, "stored": stored, "recomputed": found, "matches": same}
    if not_compared:
        out["not_compared"] = not_compared
    return out
