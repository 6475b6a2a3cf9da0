"""A PLC's own alarm, from the PLC to the cloud and acknowledged back, through real processes: the simulated PLC (a
real asyncua server with ``SimAlarms``) raises an OPC-UA condition → ``twin edge run`` puts it in its alarm path →
``twin cloud run`` (PostgreSQL, InfluxDB, Mosquitto) opens an alert → an operator's ``POST …/ack`` → an
``acknowledge`` command on the gateway's retained queue → Acknowledge on the server (AckedState true) → the command
succeeded with the server's Good. A condition acknowledged on the SCADA moves its alert to acknowledged instead, and
a sample's full status code (BadSensorFailure) is read back from the API."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asyncua import Client, ua

from simulators.opcua_alarms import SimAlarms
from simulators.opcua_server import SimOpcUaServer
from tests.harness import free_port
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

GATEWAY, ASSET = "gw-ack", "trailer-501"
FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


@pytest.fixture(scope="module")
def rig(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("alarm-ack")
    db = f"ack_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    sim = SimOpcUaServer(free_port(), [(ASSET, "refrigerated-trailer")])
    sim.start()
    alarms = SimAlarms(sim)
    sim.set_value(ASSET, "supply_air", 4.0)
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db)
    cfg = gateway_config(work / "edge", mosquitto.url, mosquitto.url, gateway=GATEWAY, assets=[ASSET], sources=[
        {"type": "opcua", "name": "plc", "endpoint": sim.endpoint, "alarms": {}, **FAST,
         "nodes": [{"node": sim.node_id(ASSET, "supply_air"), "asset": ASSET, "point": "supply_air"}]}])
    edge = EdgeProcess(work / "edge", cfg)
    cloud.start()
    edge.start()  # beside the cloud: its outbox holds what it reads until the cloud is there
    cloud.wait_ready()
    with cloud.client() as api:  # the gateway has announced the asset: commands can reach it
        wait_until(lambda: api.get(f"/api/v1/twins/{ASSET}").status_code == 200, 60, what="the asset's twin")
    yield cloud, edge, sim, alarms
    edge.stop()
    cloud.stop()
    sim.stop()
    influxdb.drop_database(db)
    postgres.drop_database(db)


def _alert(api, rule: str, state: str = "open") -> dict:
    items = api.get("/api/v1/alerts", params={"asset": ASSET, "rule": rule}).json()["items"]
    return next((a for a in items if a["state"] == state), {})


def _command(api, cid: str) -> dict:
    return api.get(f"/api/v1/assets/{ASSET}/commands/{cid}").raise_for_status().json()


def _finished(api, cid: str) -> dict:
    return wait_until(lambda: (c := _command(api, cid))["state"] in ("succeeded", "failed", "expired") and c, 30,
                      what=f"command {cid} finished")


def test_an_alert_acknowledged_in_the_cloud_is_acknowledged_on_the_plc(rig):
    cloud, _, _, alarms = rig
    alarms.activate(ASSET, "DoorOpen", severity=700, message="door open while cooling")
    with cloud.client() as api:
        alert = wait_until(lambda: _alert(api, "DoorOpen"), 30, what="the DoorOpen alert")
        assert (alert["severity"], alert["title"]) == ("high", "DoorOpen: door open while cooling")
        assert (alert["evidence"]["source"], alert["evidence"]["condition"], alert["evidence"]["acked"]) == (
            "opcua", "DoorOpen", 0)
        r = api.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "driver closes it at the next stop"})
        assert r.status_code == 200, r.text
        acked = r.json()
        cmd = acked["command"]
        assert acked["state"] == "acknowledged" and acked["acked_by"] == cmd["issued_by"]
        assert (cmd["action"], cmd["args"], cmd["state"], cmd["evidence"]) == (
            "acknowledge", {"condition": "DoorOpen", "comment": "driver closes it at the next stop"}, "pending",
            {"alert": alert["id"]})
        done = _finished(api, cmd["id"])
        assert (done["state"], done["value"], done["gateway"]) == ("succeeded", "Good", GATEWAY), done
        assert alarms.acked(ASSET, "DoorOpen")
        assert alarms.acks == [("DoorOpen", "driver closes it at the next stop")]
        # The PLC's acknowledged event comes back through the gateway: the alert stays the operator's.
        wait_until(lambda: api.get(f"/api/v1/alerts/{alert['id']}").json()["evidence"]["acked"] == 1, 30,
                   what="the acknowledged event in the alert's evidence")
        again = api.get(f"/api/v1/alerts/{alert['id']}").json()
        assert (again["state"], again["acked_by"]) == ("acknowledged", acked["acked_by"])
        audit = api.get("/api/v1/audit").json()["items"]
    [entry] = [e for e in audit if e["action"] == "command.acknowledge" and e["after"]["command"] == cmd["id"]]
    assert entry["target"] == f"asset:{ASSET}"
    assert entry["reason"] == f"alert {alert['id']} acknowledged: driver closes it at the next stop"


def _acknowledge_on_scada(sim: SimOpcUaServer, name: str, event_id: bytes, comment: str) -> None:
    """Another OPC-UA client (the plant's SCADA) acknowledges the condition on the server."""
    async def call() -> None:
        async with Client(sim.endpoint) as scada:
            await scada.get_node(sim.node_id(ASSET, name)).call_method(
                ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
                ua.Variant(event_id, ua.VariantType.ByteString), ua.LocalizedText(comment))

    asyncio.run(call())


def test_a_condition_acknowledged_on_the_scada_acknowledges_its_alert(rig):
    cloud, _, sim, alarms = rig
    event_id = alarms.activate(ASSET, "HighPressure", severity=900, message="discharge pressure high")
    with cloud.client() as api:
        alert = wait_until(lambda: _alert(api, "HighPressure"), 30, what="the HighPressure alert")
        _acknowledge_on_scada(sim, "HighPressure", event_id, "seen in the control room")
        acked = wait_until(lambda: _alert(api, "HighPressure", "acknowledged"), 30, what="the alert acknowledged")
        assert (acked["id"], acked["acked_by"], acked["evidence"]["acked"]) == (alert["id"], f"device via {GATEWAY}", 1)
        assert api.post(f"/api/v1/alerts/{alert['id']}/ack").status_code == 409  # nothing left to send


def test_an_acknowledgement_waits_for_a_gateway_that_is_offline(rig):
    cloud, edge, _, alarms = rig
    alarms.activate(ASSET, "CompressorTrip", severity=800, message="compressor tripped")
    with cloud.client() as api:
        alert = wait_until(lambda: _alert(api, "CompressorTrip"), 30, what="the CompressorTrip alert")
        edge.stop()
        cmd = api.post(f"/api/v1/alerts/{alert['id']}/ack").json()["command"]
        assert (cmd["state"], cmd["args"]) == ("pending", {"condition": "CompressorTrip", "comment": ""})
        assert not alarms.acked(ASSET, "CompressorTrip")
        edge.start()  # its queue is retained: the acknowledgement runs once the PLC has re-sent its conditions
        done = _finished(api, cmd["id"])
    assert (done["state"], done["value"]) == ("succeeded", "Good"), done
    assert alarms.acked(ASSET, "CompressorTrip")


def test_a_samples_full_status_code_is_kept_in_the_cloud(rig):
    cloud, _, sim, _ = rig
    sim.set_value(ASSET, "supply_air", None, status="BadSensorFailure")
    sim.set_value(ASSET, "supply_air", 5.5, status="UncertainLastUsableValue")
    sim.set_value(ASSET, "supply_air", 6.0)
    with cloud.client() as api:
        def samples() -> dict:
            r = api.get(f"/api/v1/assets/{ASSET}/telemetry", params={"point": "supply_air"}).json()
            return r if r["values"][-1:] == [6.0] and r.get("status") else {}

        got = wait_until(samples, 30, what="the coded samples in the cloud")
    assert (got["values"][-3:], got["quality"][-3:]) == ([None, 5.5, 6.0], [2, 1, 0])
    assert got["status"][-3:] == [ua.StatusCodes.BadSensorFailure, ua.StatusCodes.UncertainLastUsableValue, 0]
