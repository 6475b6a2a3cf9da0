"""Alarms & Conditions on the simulated PLC: OffNormalAlarm conditions whose events a client subscribes to on the
Server object, and the Acknowledge method a client calls back on a condition.

Why: a PLC raises its own alarms (a door switch off normal, a drive trip) and an operator acknowledges them;
asyncua emits condition events but keeps no acknowledgeable state, so this holds it as a PLC does: a condition
acknowledged by its latest EventId (OPC 10000-9 §5.7.3), a stale or unknown EventId refused with
BadEventIdUnknown, each state change (active, cleared, acknowledged) sent as a new event, and ConditionRefresh
answered with the conditions still retained (active or unacknowledged)::

    alarms = SimAlarms(sim)                       # sim: a started SimOpcUaServer
    alarms.activate("trailer-001", "DoorOpen", severity=700, message="door open while cooling")
    alarms.acks                                   # [(condition, comment)] acknowledged by clients
    alarms.acked("trailer-001", "DoorOpen")        # its AckedState
    alarms.clear("trailer-001", "DoorOpen")
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.common.methods import uamethod

from simulators.opcua_server import SimOpcUaServer


@dataclass
class _Condition:
    node: ua.NodeId
    asset: str
    name: str
    severity: int
    active: bool = False
    acked: bool = True
    event_id: bytes = b""
    message: str = ""
    gen: Any = field(default=None, repr=False)


class SimAlarms:
    """OffNormalAlarm conditions on ``sim`` (one per (asset, name), created on first use), driven from any thread."""

    def __init__(self, sim: SimOpcUaServer) -> None:
        self.sim = sim
        self._conditions: dict[tuple[str, str], _Condition] = {}
        self.acks: list[tuple[str, str]] = []
        """Every accepted Acknowledge: (condition name, the comment the client sent)."""
        sim._call(self._link())

    async def _link(self) -> None:
        server = self.sim._server
        assert server is not None
        method = server.get_node(ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge))
        server.link_method(method, uamethod(self._acknowledge))
        await server.iserver.setup_condition_methods()  # ConditionRefresh (asyncua binds it only when asked)

    def activate(self, asset: str, name: str, severity: int = 700, message: str = "") -> bytes:
        """Raise the condition (unacknowledged); returns the EventId of the event sent."""
        return self.sim._call(self._change(asset, name, severity, True, False, message or f"{name} active"))

    def acked(self, asset: str, name: str) -> bool:
        """The condition's AckedState as the server holds it."""
        return self._conditions[(asset, name)].acked

    def clear(self, asset: str, name: str, message: str = "") -> bytes:
        c = self._conditions[(asset, name)]
        return self.sim._call(self._change(asset, name, c.severity, False, c.acked, message or f"{name} cleared"))

    async def _change(self, asset: str, name: str, severity: int, active: bool, acked: bool, message: str) -> bytes:
        server = self.sim._server
        assert server is not None
        c = self._conditions.get((asset, name))
        if c is None:
            ns = self.sim._ns
            parent = server.get_node(ua.NodeId(asset, ns))
            node = await parent.add_object(ua.NodeId(f"{asset}.{name}", ns), f"{ns}:{name}")
            gen = await server.get_event_generator(ua.ObjectIds.OffNormalAlarmType, ua.ObjectIds.Server)
            c = self._conditions[(asset, name)] = _Condition(node.nodeid, asset, name, severity, gen=gen)
        c.severity, c.active, c.acked, c.message = severity, active, acked, message
        await self._send(c)
        return c.event_id

    async def _send(self, c: _Condition) -> None:
        ev = c.gen.event
        ev.add_property("NodeId", c.node, ua.VariantType.NodeId)  # the ConditionId a client acknowledges on
        ev.SourceNode, ev.SourceName = ua.NodeId(c.asset, self.sim._ns), c.asset
        ev.ConditionName, ev.Severity, ev.Retain = c.name, c.severity, c.active or not c.acked
        setattr(ev, "ActiveState/Id", c.active)
        setattr(ev, "AckedState/Id", c.acked)
        await c.gen.trigger(message=c.message)
        eid = ev.EventId
        c.event_id = eid.Value if isinstance(eid, ua.Variant) else eid

    async def _acknowledge(self, parent: ua.NodeId, event_id: bytes, comment: ua.LocalizedText) -> Any:
        c = next((c for c in self._conditions.values() if c.node == parent), None)
        if c is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        if event_id != c.event_id:
            return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        if c.acked:
            return ua.StatusCode(ua.StatusCodes.BadConditionBranchAlreadyAcked)
        self.acks.append((c.name, comment.Text or ""))
        c.acked, c.message = True, f"{c.name} acknowledged"
        await asyncio.sleep(0)
        await self._send(c)
        return None
