"""OPC-UA Alarms & Conditions into the gateway's alarm path, and acknowledgements back to the server.

Why: a PLC raises its own alarms (a door off normal, a drive trip) and the people on shift acknowledge them;
reading only values would lose both. An event monitored item on the notifier (the Server object by default)
selects the condition's fields; each (asset, condition) becomes one ``SourceAlarm`` when it goes active, again,
with its end, when it clears, and again when it is acknowledged at the server (by an operator on the SCADA, or by
the cloud's command: ``evidence["acked"]`` is 1), so the cloud sees the same alarm open, acknowledged and close. The
latest EventId and the ConditionId are kept per condition, and a ConditionRefresh after each (re)subscription
brings back the conditions the server retains: the Acknowledge method (OPC 10000-9 §5.7.3) is
called on the ConditionId with the EventId the server last sent, as the specification asks. A condition not known
before the refresh has ended (a session just made) is not refused but a ConnectionError: the actuator tries again.

Counters: ``opcua_alarms`` (activations, clearings and acknowledgements handed on), ``opcua_alarm_events`` (events
received), ``opcua_alarms_unmapped`` (events of no configured asset, or below ``min_severity``), ``opcua_acks``
(acknowledgements this gateway sent that the server accepted).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asyncua import Client, ua

from edge.config import OpcUaAlarms

log = logging.getLogger("edge.sources.opcua")

HANDLE = 0x7FFF0001
"""The event item's client handle: never a node's (those are 1..N)."""
_FIELDS = ("EventId", "EventType", "SourceName", "Time", "Message", "Severity", "ConditionName", "ActiveState/Id",
           "AckedState/Id", "Retain")
_NAME = re.compile(r"[\x00-\x1f\x7f\\]")
_REFRESH = (ua.NodeId(ua.ObjectIds.RefreshStartEventType), ua.NodeId(ua.ObjectIds.RefreshEndEventType))
REFRESH_WAIT_S = 5.0
"""How long after a ConditionRefresh a server that sends no RefreshEnd event is taken to have sent what it retains."""


@dataclass(frozen=True)
class SourceAlarm:
    """A condition of a server, as the gateway's alarm path takes it (an ``AlarmEvent`` once numbered)."""

    asset: str
    rule: str
    severity: str
    start_ns: int
    end_ns: int | None
    evidence: dict[str, float | str | int]


@dataclass
class _Open:
    start_ns: int
    condition_id: ua.NodeId | None
    event_id: bytes
    acked: bool
    active: bool = True
    evidence: dict = field(default_factory=dict)
    end_ns: int | None = None


def severity(opcua: int) -> str:
    """OPC-UA's 1..1000 in the ranges OPC 10000-9 suggests (801+ high, 601+ medium high, 401+ medium)."""
    return "critical" if opcua > 800 else "high" if opcua > 600 else "medium" if opcua > 400 else "low"


def event_item(notifier: ua.NodeId) -> ua.MonitoredItemCreateRequest:
    select = [ua.SimpleAttributeOperand(TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
                                        BrowsePath=[ua.QualifiedName(n, 0) for n in name.split("/")],
                                        AttributeId=ua.AttributeIds.Value) for name in _FIELDS]
    select.append(ua.SimpleAttributeOperand(TypeDefinitionId=ua.NodeId(ua.ObjectIds.ConditionType), BrowsePath=[],
                                            AttributeId=ua.AttributeIds.NodeId))  # the ConditionId
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=notifier, AttributeId=ua.AttributeIds.EventNotifier),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=HANDLE, SamplingInterval=0,
                                                    Filter=ua.EventFilter(SelectClauses=select), QueueSize=1000,
                                                    DiscardOldest=False))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def timestamp_ns(ts: datetime | None) -> int:
    """Exact ns since the epoch; 0 when absent (OPC-UA's "no time" decodes to 1601)."""
    if not isinstance(ts, datetime):
        return 0
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return max(0, (ts - _EPOCH) // _US * 1000)


class AlarmTracker:
    """The conditions of one source's server: events in, ``SourceAlarm`` out, acknowledgements back."""

    def __init__(self, cfg: OpcUaAlarms, assets: set[str], emit: Callable[[SourceAlarm], None]) -> None:
        self.cfg = cfg
        self.assets = assets
        self.emit = emit
        self.open: dict[tuple[str, str], _Open] = {}
        self.counts = {"opcua_alarms": 0, "opcua_alarm_events": 0, "opcua_alarms_unmapped": 0, "opcua_acks": 0}
        self._refreshed_at = math.inf
        """When the conditions the server retains are known (monotonic): a RefreshEnd, or REFRESH_WAIT_S after."""

    async def subscribe(self, client: Client, sub_id: int) -> None:
        self._refreshed_at = math.inf
        [res] = await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub_id, TimestampsToReturn=ua.TimestampsToReturn.Neither,
            ItemsToCreate=[event_item(ua.NodeId.from_string(self.cfg.notifier))]))
        if not res.StatusCode.is_good():
            raise ConnectionError(f"alarms: event item on {self.cfg.notifier} refused: {res.StatusCode.name}")
        # ConditionRefresh: the server sends every condition it retains (active or unacknowledged) again, so a
        # gateway that (re)connects learns of alarms raised while it was away. A server without it: new ones only.
        [ref] = await client.uaclient.call([ua.CallMethodRequest(
            ObjectId=ua.NodeId(ua.ObjectIds.ConditionType),
            MethodId=ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
            InputArguments=[ua.Variant(sub_id, ua.VariantType.UInt32)])])
        self._refreshed_at = min(self._refreshed_at, time.monotonic() + REFRESH_WAIT_S)
        if not ref.StatusCode.is_good():
            self._refreshed_at = 0.0
            log.info("alarms: ConditionRefresh answered %s; only changes from now on", ref.StatusCode.name)

    def on_events(self, events: list[ua.EventFieldList]) -> None:
        """Called on the source's loop for each EventNotificationList."""
        for ev in events:
            f = dict(zip((*_FIELDS, "ConditionId"), (v.Value for v in ev.EventFields), strict=False))
            if f.get("EventType") in _REFRESH:  # the brackets around a ConditionRefresh's conditions
                if f.get("EventType") == _REFRESH[1]:
                    self._refreshed_at = 0.0
                continue
            self.counts["opcua_alarm_events"] += 1
            asset = f.get("SourceName") if f.get("SourceName") in self.assets else self.cfg.asset
            level = int(f.get("Severity") or 0)
            name = _NAME.sub("_", str(f.get("ConditionName") or f.get("EventType") or "event"))[:128]
            if asset is None or level < self.cfg.min_severity:
                self.counts["opcua_alarms_unmapped"] += 1
                continue
            active, acked = bool(f.get("ActiveState/Id")), f.get("AckedState/Id") is not False
            t_ns = timestamp_ns(f.get("Time")) or time.time_ns()
            eid = f.get("EventId") or b""
            eid = eid.Value if isinstance(eid, ua.Variant) else eid
            key = (asset, name)
            msg = f.get("Message")
            evidence = {"source": "opcua", "condition": name, "opcua_severity": level,
                        "message": (msg.Text if isinstance(msg, ua.LocalizedText) else str(msg or ""))[:500],
                        "acked": int(acked)}
            cur = self.open.get(key)
            if active and (cur is None or not cur.active):
                cur = self.open[key] = _Open(t_ns, f.get("ConditionId"), eid, acked, evidence=evidence)
                self._emit(asset, name, level, cur, None)
            elif cur is not None:
                newly_acked = acked and not cur.acked
                cur.event_id, cur.acked = eid, acked
                cur.condition_id = f.get("ConditionId") or cur.condition_id
                if cur.active and not active:
                    cur.active, cur.end_ns = False, t_ns
                    cur.evidence = evidence
                    self._emit(asset, name, level, cur, t_ns)
                elif newly_acked:  # acknowledged at the server, active or cleared: the cloud's alert follows
                    cur.evidence = evidence
                    self._emit(asset, name, level, cur, cur.end_ns)
                if not cur.active and acked:
                    del self.open[key]  # cleared and acknowledged: the condition is over

    def _emit(self, asset: str, name: str, level: int, cur: _Open, end_ns: int | None) -> None:
        self.counts["opcua_alarms"] += 1
        self.emit(SourceAlarm(asset, name, severity(level), cur.start_ns, end_ns, cur.evidence))

    async def acknowledge(self, client: Client, asset: str, condition: str, comment: str) -> str:
        """Call Acknowledge on the condition with the EventId last received; the server's status name."""
        cur = self.open.get((asset, condition))
        if cur is None or cur.condition_id is None:
            if time.monotonic() < self._refreshed_at:  # a session just (re)made: the server may yet send it
                raise ConnectionError("the server has not sent the conditions it retains yet")
            return "BadConditionNotFound"
        [res] = await client.uaclient.call([ua.CallMethodRequest(
            ObjectId=cur.condition_id, MethodId=ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
            InputArguments=[ua.Variant(cur.event_id, ua.VariantType.ByteString),
                            ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText)])])
        if res.StatusCode.is_good():
            self.counts["opcua_acks"] += 1
        log.info("opcua alarm %s on %s: acknowledge answered %s", condition, asset, res.StatusCode.name,
                 extra={"asset": asset, "condition": condition, "status": res.StatusCode.name})
        return res.StatusCode.name

    def acknowledge_from(self, loop: asyncio.AbstractEventLoop | None, client: Client | None, asset: str,
                         condition: str, comment: str, timeout_s: float) -> str:
        """From any thread: ``acknowledge`` on the session up now; ConnectionError when there is none."""
        if loop is None or client is None:
            raise ConnectionError("no OPC-UA session to acknowledge on")
        return asyncio.run_coroutine_threadsafe(self.acknowledge(client, asset, condition, comment),
                                                loop).result(timeout_s)
