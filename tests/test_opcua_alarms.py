"""OPC-UA Alarms & Conditions: a real asyncua server raises OffNormalAlarm conditions (``SimAlarms``), the edge
source turns each into one alarm that opens when the condition goes active and closes when it clears, and the
Acknowledge method it calls back reaches the server with the latest EventId; the agent puts those alarms into
the outbox as ``AlarmEvent``s, as a local rule's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import EdgeAgent
from edge.config import OpcUaSource, parse_config
from edge.sources.opcua import OpcUaSourceRunner
from edge.sources.opcua_alarms import SourceAlarm
from simulators.opcua_alarms import SimAlarms
from simulators.opcua_server import SimOpcUaServer
from tests.harness import free_port
from tests.harness.opcua import Recorder
from tests.harness.processes import wait_until

ASSET, OTHER = "trailer-321", "trailer-322"
FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}


@pytest.fixture(scope="module")
def plc() -> Iterator[tuple[SimOpcUaServer, SimAlarms]]:
    with SimOpcUaServer(free_port(), [(ASSET, "refrigerated-trailer"), (OTHER, "refrigerated-trailer")]) as sim:
        yield sim, SimAlarms(sim)


def _cfg(sim: SimOpcUaServer, **alarms: object) -> dict:
    return {"type": "opcua", "endpoint": sim.endpoint, "alarms": alarms, **FAST,
            "nodes": [{"node": sim.node_id(ASSET, "supply_air"), "asset": ASSET, "point": "supply_air"}]}


def test_a_condition_opens_is_acknowledged_back_and_closes(plc: tuple[SimOpcUaServer, SimAlarms]) -> None:
    sim, alarms = plc
    got: list[SourceAlarm] = []
    runner = OpcUaSourceRunner(OpcUaSource.model_validate(_cfg(sim, min_severity=200)))
    runner.on_alarm = got.append
    runner.start(Recorder())
    try:
        wait_until(lambda: runner.counters()["opcua_values"] >= 1, 15, what="the session")
        alarms.activate(ASSET, "DoorOpen", severity=700, message="door open while cooling")
        alarms.activate(OTHER, "DoorOpen", severity=100)  # below min_severity
        wait_until(lambda: len(got) == 1 and runner.counters()["opcua_alarms_unmapped"] == 1, 10, what="the alarm")
        [a] = got
        assert (a.asset, a.rule, a.severity, a.end_ns) == (ASSET, "DoorOpen", "high", None)
        assert a.evidence == {"source": "opcua", "condition": "DoorOpen", "opcua_severity": 700,
                              "message": "door open while cooling", "acked": 0}
        assert runner.acknowledge(ASSET, "DoorOpen", "seen by the driver") == "Good"
        assert alarms.acks == [("DoorOpen", "seen by the driver")] and alarms.acked(ASSET, "DoorOpen")
        wait_until(lambda: len(got) == 2, 10, what="the acknowledged event")  # the same alarm, now acknowledged
        assert (got[1].rule, got[1].start_ns, got[1].end_ns, got[1].evidence["acked"]) == (
            "DoorOpen", a.start_ns, None, 1)
        assert runner.acknowledge(ASSET, "DoorOpen") == "BadConditionBranchAlreadyAcked"
        assert runner.acknowledge(ASSET, "NoSuchCondition") == "BadConditionNotFound"
        alarms.clear(ASSET, "DoorOpen", message="door closed")
        wait_until(lambda: len(got) == 3, 10, what="the clearing")
        assert (got[2].rule, got[2].start_ns, got[2].evidence["acked"]) == ("DoorOpen", a.start_ns, 1)
        assert got[2].end_ns is not None and got[2].end_ns >= a.start_ns
        assert (ASSET, "DoorOpen") not in runner.alarms.open  # cleared and acknowledged: over
        c = runner.counters()
        assert (c["opcua_alarms"], c["opcua_acks"], c["opcua_alarm_events"]) == (3, 1, 4)
    finally:
        runner.stop()


def test_a_gateway_that_connects_later_learns_of_an_active_condition(plc: tuple[SimOpcUaServer, SimAlarms]) -> None:
    """ConditionRefresh after subscribing: the server sends again what it retains (active or unacknowledged)."""
    sim, alarms = plc
    alarms.activate(ASSET, "HighPressure", severity=500, message="raised before the gateway came")
    got: list[SourceAlarm] = []
    runner = OpcUaSourceRunner(OpcUaSource.model_validate(_cfg(sim)))
    runner.on_alarm = got.append
    runner.start(Recorder())
    try:
        wait_until(lambda: any(a.rule == "HighPressure" for a in got), 15, what="the refreshed condition")
        [a] = [a for a in got if a.rule == "HighPressure"]
        assert (a.asset, a.severity, a.end_ns, a.evidence["acked"]) == (ASSET, "medium", None, 0)
        assert runner.acknowledge(ASSET, "HighPressure", "late") == "Good"
        alarms.clear(ASSET, "HighPressure")
        wait_until(lambda: len([a for a in got if a.rule == "HighPressure"]) == 3, 10, what="acknowledged, cleared")
    finally:
        runner.stop()


def test_the_agent_puts_a_condition_into_the_outbox_as_an_alarm(plc: tuple[SimOpcUaServer, SimAlarms],
                                                                tmp_path: Path) -> None:
    sim, alarms = plc
    cfg = parse_config({
        "tenant": "acme", "gateway": "gw-ac", "uplink": {"url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")}, "state_dir": str(tmp_path / "state"),
        "assets": [{"id": ASSET, "type": "refrigerated-trailer"}],
        "sources": [_cfg(sim, asset=ASSET, min_severity=200)]})  # not the low ones earlier tests left retained
    agent = EdgeAgent(cfg)
    for s in agent.sources:
        s.on_alarm = agent._source_alarm  # what start() does, without the uplink
        s.start(agent.sink)
    try:
        wait_until(lambda: agent.sources[0].counters()["opcua_values"] >= 1, 15, what="the session")
        alarms.activate(OTHER, "CompressorTrip", severity=900, message="trip")  # unknown SourceName: the asset
        wait_until(lambda: agent.counts["alarms"] == 1, 10, what="the alarm")
        [row] = agent.outbox.pending_after(10, 0, 0)
        ev = json.loads(row.payload)
        assert (ev["kind"], ev["asset"], ev["rule"], ev["severity"], ev["end_ns"]) == (
            "alarm", ASSET, "CompressorTrip", "critical", None)
        assert ev["event_id"] == f"gw-ac:{ASSET}:CompressorTrip:{ev['start_ns']}"
    finally:
        for s in agent.sources:
            s.stop()
        agent.outbox.close()
