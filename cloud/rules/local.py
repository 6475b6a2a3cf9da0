"""Local rules (a threshold held for a time, evaluated on the gateway): their alarms become alerts in
the cloud, and an auditor can have the cloud recompute any such alert from the stored samples. The rules are
the asset type's: a shipped or pack type's, or a tenant's own (``type_definition``). A device's own alarm (an OPC-UA
condition) arrives the same way, and its alert follows the device's acknowledgement (``acknowledged_on_device``)."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from cloud.alerts import AlertError, AlertService
from cloud.registry import AssetTypeRecord
from cloud.store import TimeSeriesStore
from models.catalogue import AssetType, LocalRule, builtin_types
from models.wire import AlarmEvent, AnomalyEvent

SOURCE = "edge-local-rule"
ANOMALY_SOURCE = "edge-anomaly"


def type_definition(session: Session, tenant: str, type_id: str | None) -> AssetType | None:
    """The type as the tenant's gateways run it: the catalogue's (shipped or a pack's), else the tenant's own."""
    if not type_id:
        return None
    if (found := builtin_types().get(type_id)) is not None:
        return found
    row = session.get(AssetTypeRecord, (tenant, type_id))
    try:
        return None if row is None else AssetType.model_validate(row.definition)
    except ValidationError:
        return None  # stored before the catalogue's shape changed: its rules are unknown, not an error here


def rule_for(asset_type: str | AssetType | None, name: str) -> LocalRule | None:
    t = builtin_types().get(asset_type) if isinstance(asset_type, str) else asset_type
    return None if t is None else next((r for r in t.local_rules if r.name == name), None)


def alert_from_alarm(alerts: AlertService, ev: AlarmEvent, asset_type: str | AssetType | None) -> tuple[int, bool]:
    """The gateway's alarm, as an alert with the evidence the gateway gave and the rule it applied."""
    rule = rule_for(asset_type, ev.rule)
    evidence: dict[str, Any] = {"source": SOURCE, "gateway": ev.gateway, "event_id": ev.event_id,
                                "start_ns": ev.start_ns, **ev.evidence}
    if rule is not None:
        evidence["rule"] = rule.model_dump()
    point = ev.evidence.get("point", rule.point if rule else "?")
    cmp = "above" if (rule is None or rule.above is not None) else "below"
    title = f"{point} {cmp} {ev.evidence.get('limit', '?')} for {ev.evidence.get('for_s', '?')} s"
    if ev.evidence.get("source") == "opcua":  # a device's own alarm (edge/sources/opcua_alarms.py)
        title = f"{ev.rule}: {ev.evidence.get('message') or 'raised by the device'}"[:500]
    alert_id, new = alerts.raise_alert(ev.tenant, ev.asset, ev.rule, ev.severity, title, evidence,
                                       at_ns=int(ev.evidence.get("fired_ns", ev.start_ns)))
    if ev.evidence.get("source") == "opcua" and ev.evidence.get("acked") == 1:
        acknowledged_on_device(alerts, ev.tenant, alert_id, ev.gateway)
    return alert_id, new


def acknowledged_on_device(alerts: AlertService, tenant: str, alert_id: int, gateway: str) -> None:
    """A device's alarm acknowledged where it was raised (an operator on the SCADA, or the cloud's own command):
    its alert, still open, becomes acknowledged by the device; one acknowledged or resolved already stays."""
    with contextlib.suppress(AlertError):
        alerts.transition(tenant, alert_id, "acknowledged", f"device via {gateway}", "acknowledged on the device")


def alert_from_anomaly(alerts: AlertService, ev: AnomalyEvent) -> tuple[int, bool]:
    """The gateway's anomaly event, as a low-severity alert per point (one open alert per point's anomalies:
    a later event, or the close of this one, refreshes it). The evidence is the event: when, how strong,
    which detectors and channels saw it."""
    evidence: dict[str, Any] = {"source": ANOMALY_SOURCE, "gateway": ev.gateway, "event_id": ev.event_id,
                                "point": ev.point, "start_ns": ev.start_ns, "end_ns": ev.end_ns,
                                "peak_score": ev.peak_score, "peak_value": ev.peak_value,
                                "detectors": list(ev.detectors)}
    seen = ", ".join(d.split(".", 1)[1] for d in ev.detectors if "." in d) or ", ".join(ev.detectors)
    title = f"unusual {ev.point} ({seen}), score {ev.peak_score:.2f}"
    return alerts.raise_alert(ev.tenant, ev.asset, f"anomaly:{ev.point}", "low", title, evidence,
                              at_ns=ev.start_ns)


def recompute(store: TimeSeriesStore, tenant: str, asset: str, rule: LocalRule, start_ns: int,
              fired_ns: int) -> dict[str, Any] | None:
    """Re-run the rule on the stored samples around the alarm; the evidence it finds, or None."""
    lookback = int(rule.for_s * 1e9) + 3_600_000_000_000
    ser = store.query_range(tenant, asset, rule.point, start_ns - lookback, fired_ns + 1, limit=100_000)
    good = [(t, v) for t, v, q in zip(ser.t_ns, ser.values, ser.quality or [0] * len(ser.t_ns), strict=True)
            if q == 0]
    for since, fired, value in rule.firings([t for t, _ in good], [v for _, v in good]):
        if fired == fired_ns:
            return {"point": rule.point, "start_ns": since, "fired_ns": fired, "value": value,
                    "limit": rule.limit, "for_s": rule.for_s, "samples_examined": len(good)}
    return None
