"""Desired state and commands that reach the device and come back confirmed, through real processes: the API
(``twin cloud run`` on PostgreSQL and InfluxDB) → retained command queue on a real Mosquitto → the edge agent
(``twin edge run``) → a real asyncua OPC-UA server (trailer-001) and an MQTT device (trailer-002) → read back,
reported, and the twin's delta closed."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect as ws_connect

from cloud.api.app import create_app
from cloud.registry import Asset
from cloud.store import Rows
from models import topics
from models.wire import Command, CommandQueue, encode
from simulators.obedient import MqttReefer, ReeferPlant, follow_setpoint
from simulators.opcua_server import NAMESPACE_URI, SimOpcUaServer
from tests.harness import free_port
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

GATEWAY = "gw-cmd"


@pytest.fixture(scope="module")
def rig(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("commands")
    db = f"cmd_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    sim = SimOpcUaServer(free_port(), [("trailer-001", "refrigerated-trailer")])
    sim.start()
    sim.set_value("trailer-001", "setpoint", 4.0)
    sim.set_value("trailer-001", "supply_air", 4.0)
    sim.set_value("trailer-001", "mode", 1.0)  # continuous: the plant holds its setpoint
    plc_plant = follow_setpoint(sim, "trailer-001", ReeferPlant(setpoint_c=4.0, supply_air_c=4.0, tau_s=3.0))
    device = MqttReefer(mosquitto.url, "trailer-002", ReeferPlant(setpoint_c=4.0, supply_air_c=4.0, tau_s=3.0,
                                                                  defrost_s=10.0))
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db)
    cloud.start()
    cloud.wait_ready()
    nodes = [{"node": f"nsu={NAMESPACE_URI};s=trailer-001.{p}", "asset": "trailer-001", "point": p}
             for p in ("setpoint", "supply_air", "mode")]
    cfg = gateway_config(work / "edge", mosquitto.url, mosquitto.url, gateway=GATEWAY,
                         assets=["trailer-001", "trailer-002"])
    cfg["sources"].append({"type": "opcua", "name": "plc", "endpoint": sim.endpoint, "nodes": nodes,
                           "reconnect_max_s": 1.0})  # back within a second of the PLC's restart
    edge = EdgeProcess(work / "edge", cfg)
    edge.start()
    edge.wait_log("uplink: connected")
    with cloud.client() as api:
        for asset in ("trailer-001", "trailer-002"):
            wait_until(lambda a=asset: _reported(api, a, "setpoint") == 4.0, timeout=60,
                       what=f"{asset}'s setpoint 4 reported")
    yield cloud, edge, sim, device, mosquitto
    edge.stop()
    cloud.stop()
    device.close()
    plc_plant.set()
    sim.stop()
    influxdb.drop_database(db)
    postgres.drop_database(db)


def _twin(api, asset: str) -> dict:
    r = api.get(f"/api/v1/twins/{asset}")
    return r.json() if r.status_code == 200 else {}


def _reported(api, asset: str, point: str):
    return _twin(api, asset).get("reported", {}).get("points", {}).get(point, {}).get("value")


def _command(api, asset: str, cid: str) -> dict:
    return api.get(f"/api/v1/assets/{asset}/commands/{cid}").raise_for_status().json()


def _finished(api, asset: str, cid: str, timeout: float = 40) -> dict:
    return wait_until(lambda: (c := _command(api, asset, cid))["state"] in ("succeeded", "failed", "expired") and c,
                      timeout=timeout, what=f"command {cid} finished")


def test_desired_setpoint_reaches_the_opcua_trailer_is_read_back_and_the_delta_closes(rig):
    cloud, _, sim, _, _ = rig
    with cloud.client() as api:
        etag = api.get("/api/v1/twins/trailer-001").headers["etag"]
        r = api.put("/api/v1/twins/trailer-001/desired", headers={"If-Match": etag},
                    json={"desired": {"setpoint": -18.0}, "reason": "frozen load from tomorrow"})
        assert r.status_code == 200, r.text
        assert r.json()["delta"] == {"setpoint": {"desired": -18.0, "reported": 4.0}}
        wait_until(lambda: sim.value("trailer-001", "setpoint") == -18.0, timeout=30, what="the PLC's setpoint -18")
        twin = wait_until(lambda: (t := _twin(api, "trailer-001"))["delta"] == {} and t, timeout=30,
                          what="the delta closed")
        # ...and the trailer follows physically: its supply air, read by the gateway, comes down towards -18.
        wait_until(lambda: (_reported(api, "trailer-001", "supply_air") or 99) < -15.0, timeout=30,
                   what="trailer-001's supply air below -15")
    assert twin["desired"] == {"setpoint": -18.0}
    assert twin["reported"]["points"]["setpoint"]["value"] == -18.0
    node = "ns=2;s=trailer-001.setpoint"
    assert [w for w in sim.writes if w[0] == node] == [(node, -18.0, "Good")]  # written once, accepted


def test_setpoint_command_reaches_the_mqtt_trailer_and_succeeds_with_the_reported_value(rig):
    cloud, _, _, device, _ = rig
    before = len(device.writes)
    live = ws_connect(f"ws://127.0.0.1:{cloud.port}/api/v1/live?api_key={cloud.api_key}")
    live.send(json.dumps({"subscribe": ["trailer-002"]}))
    assert json.loads(live.recv(10))["type"] == "subscribed"
    with cloud.client() as api:
        r = api.post("/api/v1/assets/trailer-002/commands",
                     json={"action": "set", "property": "setpoint", "value": -18, "ttl_s": 60,
                           "reason": "frozen load", "evidence": {"forecast_supply_air_c": -17.2}})
        assert r.status_code == 202, r.text
        cmd = r.json()
        assert (cmd["state"], cmd["args"]) == ("pending", {"property": "setpoint", "value": -18.0})
        assert cmd["issued_by"].endswith("(bootstrap)") and cmd["why"] == "frozen load"
        done = _finished(api, "trailer-002", cmd["id"])
        assert (done["state"], done["value"]) == ("succeeded", -18.0), done
        assert done["delivered_ns"] is not None and done["evidence"] == {"forecast_supply_air_c": -17.2}
        wait_until(lambda: _reported(api, "trailer-002", "setpoint") == -18.0, timeout=30,
                   what="trailer-002 reports -18")
        wait_until(lambda: (_reported(api, "trailer-002", "supply_air") or 99) < -15.0, timeout=30,
                   what="trailer-002's supply air below -15")
        [entry] = [e for e in api.get("/api/v1/audit").json()["items"] if e["action"] == "command.set"
                   and e["after"]["command"] == cmd["id"]]
    assert device.writes[before:] == [{"topic": "sim/trailer-002/set/setpoint", "v": -18.0}]
    # The audit trail: who, when, why and what the decision rested on.
    assert (entry["target"], entry["reason"], entry["actor"]) == ("asset:trailer-002", "frozen load", cmd["issued_by"])
    assert entry["after"]["evidence"] == {"forecast_supply_air_c": -17.2} and entry["t_ns"] >= cmd["issued_ns"]
    # Live: every step of its lifecycle went to the WebSocket client watching the asset.
    states = []
    while not states or states[-1] != "succeeded":
        msg = json.loads(live.recv(10))
        if msg["type"] == "command" and msg["command"]["id"] == cmd["id"]:
            states.append(msg["command"]["state"])
    live.close()
    assert states == ["pending", "delivered", "succeeded"]


def test_the_gateway_refuses_what_its_own_configuration_does_not_declare_writable(rig):
    """Even when the cloud (or whoever reached the broker) asks: the edge checks against its local types."""
    _, _, sim, device, broker = rig
    writes_opc, writes_mqtt = len(sim.writes), len(device.writes)
    now = time.time_ns()
    asks = CommandQueue(commands=[
        Command(id="forged-1", asset="trailer-002", action="set", args={"property": "compressor_current", "value": 0},
                issued_ns=now, expires_ns=now + 60 * 10**9),
        Command(id="forged-2", asset="trailer-001", action="set", args={"property": "setpoint", "value": -60},
                issued_ns=now, expires_ns=now + 60 * 10**9)])
    reports: list[dict] = []
    c = _broker_client(broker.url)
    c.on_message = lambda _c, _u, m: reports.append(json.loads(m.payload))
    c.subscribe(topics.commands_reported("acme", GATEWAY), qos=1)
    time.sleep(0.5)
    c.publish(topics.commands("acme", GATEWAY), encode(asks), qos=1).wait_for_publish(10)
    final = wait_until(lambda: (f := {r["id"]: r for r in reports if r["state"] not in ("delivered",)})
                       .keys() >= {"forged-1", "forged-2"} and f, timeout=20, what="both refused")
    c.disconnect()
    c.loop_stop()
    assert final["forged-1"]["state"] == "failed"
    assert final["forged-1"]["reason"] == ("'compressor_current' is not writable on refrigerated-trailer in this "
                                           "gateway's configuration")
    assert (final["forged-2"]["state"], final["forged-2"]["reason"]) == (
        "failed", "setpoint: -60 degC is outside -30..25 degC")
    time.sleep(0.5)
    assert (len(sim.writes), len(device.writes)) == (writes_opc, writes_mqtt)


def _broker_client(url: str) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(host, int(port))
    c.loop_start()
    return c


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "set", "property": "setpoint", "value": -50}, "value"),
    ({"action": "set", "property": "setpoint", "value": "cold"}, "value"),
    ({"action": "set", "property": "compressor_current", "value": 1}, "property"),
    ({"action": "set", "property": "no_such_thing", "value": 1}, "property"),
    ({"action": "command", "name": "self_destruct"}, "name"),
])
def test_a_bad_command_is_a_422_naming_the_field_and_nothing_reaches_the_devices(rig, body, field):
    cloud, _, sim, device, _ = rig
    writes_opc, writes_mqtt = len(sim.writes), len(device.writes)
    with cloud.client() as api:
        for asset in ("trailer-001", "trailer-002"):
            r = api.post(f"/api/v1/assets/{asset}/commands", json=body)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert any(e["where"].startswith(f"body.{field}") for e in r.json()["errors"]), r.json()
    time.sleep(1.0)
    assert (len(sim.writes), len(device.writes)) == (writes_opc, writes_mqtt)


def test_an_out_of_range_desired_setpoint_or_a_viewer_is_refused(rig):
    cloud, _, sim, _, _ = rig
    writes = len(sim.writes)
    with cloud.client() as api:
        etag = api.get("/api/v1/twins/trailer-001").headers["etag"]
        r = api.put("/api/v1/twins/trailer-001/desired", headers={"If-Match": etag},
                    json={"desired": {"setpoint": -50}})
        assert r.status_code == 422
        assert r.json()["errors"][0]["where"] == "body.desired.setpoint"
        assert "outside -30..25 degC" in r.json()["errors"][0]["msg"]
        viewer = api.post("/api/v1/keys", json={"role": "viewer", "name": "v"}).raise_for_status().json()["key"]
    with cloud.client(viewer) as v:
        r = v.post("/api/v1/assets/trailer-001/commands", json={"action": "set", "property": "setpoint", "value": 2})
        assert r.status_code == 403
    assert len(sim.writes) == writes


def test_a_write_the_opcua_server_refuses_comes_back_failed_with_its_status(rig):
    cloud, _, sim, _, _ = rig
    writes = len(sim.writes)
    with cloud.client() as api:
        r = api.post("/api/v1/assets/trailer-001/commands", json={"action": "command", "name": "start_defrost"})
        assert r.status_code == 202, r.text
        done = _finished(api, "trailer-001", r.json()["id"])
    # The simulated PLC has no defrost node and refuses the Write; the server's own status comes back.
    assert done["state"] == "failed"
    assert done["reason"].endswith("s=trailer-001.defrost_request: BadUserAccessDenied"), done["reason"]
    assert sim.writes[writes:] == [("ns=2;s=trailer-001.defrost_request", 1.0, "BadUserAccessDenied")]


def test_offline_gateway_runs_a_command_within_its_ttl_and_never_one_past_it(rig):
    cloud, edge, _, device, _ = rig
    edge.stop()
    before = len(device.writes)
    with cloud.client() as api:
        short = api.post("/api/v1/assets/trailer-002/commands",
                         json={"action": "set", "property": "setpoint", "value": -20, "ttl_s": 2}).json()
        long = api.post("/api/v1/assets/trailer-002/commands",
                        json={"action": "set", "property": "setpoint", "value": -19, "ttl_s": 120}).json()
        expired = _finished(api, "trailer-002", short["id"], timeout=15)
        assert (expired["state"], expired["delivered_ns"]) == ("expired", None)
        assert _command(api, "trailer-002", long["id"])["state"] == "pending"
        edge.start()
        done = _finished(api, "trailer-002", long["id"])
        assert (done["state"], done["value"]) == ("succeeded", -19.0)
        assert _command(api, "trailer-002", short["id"])["state"] == "expired"
    assert device.writes[before:] == [{"topic": "sim/trailer-002/set/setpoint", "v": -19.0}]


def test_a_redelivered_command_is_not_run_twice(rig):
    cloud, _, _, device, broker = rig
    with cloud.client() as api:
        cmd = api.post("/api/v1/assets/trailer-002/commands",
                       json={"action": "set", "property": "setpoint", "value": -21, "ttl_s": 120}).json()
        assert _finished(api, "trailer-002", cmd["id"])["state"] == "succeeded"
        writes = len(device.writes)

        def repeated() -> int:
            gws = api.get("/api/v1/gateways").raise_for_status().json()["items"]
            return next(g["counters"] for g in gws if g["id"] == GATEWAY).get("commands_repeated", 0)

        seen = repeated()
        again = CommandQueue(commands=[Command(id=cmd["id"], asset="trailer-002", action="set", args=cmd["args"],
                                               issued_ns=cmd["issued_ns"], expires_ns=cmd["expires_ns"])])
        c = _broker_client(broker.url)
        for _ in range(2):
            c.publish(topics.commands("acme", GATEWAY), encode(again), qos=1).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
        wait_until(lambda: repeated() >= seen + 2, timeout=20, what="the redelivery seen twice")
        assert _command(api, "trailer-002", cmd["id"])["state"] == "succeeded"
    assert len(device.writes) == writes


def test_a_setpoint_outside_the_loads_profile_needs_confirmation_and_is_recorded_confirmed(rig):
    """trailer-002 carries a WHO refrigerator shipment (below -0.5 degC is an excursion): -15 only with confirm."""
    cloud, _, _, device, _ = rig
    with cloud.client() as api:
        for site in ("dc-1", "store-1"):
            api.post("/api/v1/sites", json={"id": site}).raise_for_status()
        api.post("/api/v1/shipments", json={"id": "shp-cmd", "profile": "who-30-day-refrigerator",
                                            "origin_site": "dc-1", "destination_site": "store-1"}).raise_for_status()
        api.post("/api/v1/shipments/shp-cmd/custody",
                 json={"asset": "trailer-002", "from": time.time_ns() - 10**9}).raise_for_status()
        writes = len(device.writes)
        refused = api.post("/api/v1/assets/trailer-002/commands",
                           json={"action": "set", "property": "setpoint", "value": -15, "reason": "wrong trailer?"})
        assert refused.status_code == 422
        [err] = refused.json()["errors"]
        assert err["where"] == "body.confirm"
        assert "-15 degC is outside profile who-30-day-refrigerator of shipment shp-cmd" in err["msg"]
        etag = api.get("/api/v1/twins/trailer-002").headers["etag"]
        r = api.put("/api/v1/twins/trailer-002/desired", headers={"If-Match": etag},
                    json={"desired": {"setpoint": -15}})
        assert (r.status_code, r.json()["errors"][0]["where"]) == (422, "body.confirm")
        assert len(device.writes) == writes  # nothing reached the trailer
        inside = api.post("/api/v1/assets/trailer-002/commands",
                          json={"action": "set", "property": "setpoint", "value": 4}).json()
        assert (inside["confirmed"], _finished(api, "trailer-002", inside["id"])["state"]) == (False, "succeeded")
        cmd = api.post("/api/v1/assets/trailer-002/commands",
                       json={"action": "set", "property": "setpoint", "value": -15, "confirm": True,
                             "reason": "product re-classified frozen"}).json()
        assert cmd["confirmed"] is True
        assert _finished(api, "trailer-002", cmd["id"])["state"] == "succeeded"
        [entry] = [e for e in api.get("/api/v1/audit").json()["items"]
                   if e["action"] == "command.set" and e["after"]["command"] == cmd["id"]]
    assert entry["after"]["confirmed"] is True
    assert entry["after"]["outside_profile"].startswith("-15 degC is outside profile who-30-day-refrigerator")
    assert device.writes[writes:] == [{"topic": "sim/trailer-002/set/setpoint", "v": 4.0},
                                      {"topic": "sim/trailer-002/set/setpoint", "v": -15.0}]


def test_start_defrost_reaches_the_mqtt_trailer_and_its_supply_air_warms(rig):
    cloud, _, _, device, _ = rig
    writes = len(device.writes)
    with cloud.client() as api:
        cold = wait_until(lambda: (v := _reported(api, "trailer-002", "supply_air")) is not None and v < 0 and v,
                          timeout=30, what="trailer-002 running cold")
        cmd = api.post("/api/v1/assets/trailer-002/commands",
                       json={"action": "command", "name": "start_defrost", "reason": "ice on the coil"}).json()
        done = _finished(api, "trailer-002", cmd["id"])
        assert (done["state"], done["reason"]) == ("succeeded", "published to sim/trailer-002/cmd/defrost")
        wait_until(lambda: _reported(api, "trailer-002", "supply_air") > cold + 5, timeout=30,
                   what="the defrost warming the supply air")
    assert device.writes[writes:] == [{"topic": "sim/trailer-002/cmd/defrost", "start": 1}]


def test_a_drives_speed_reference_is_met_within_its_slip_and_commands_are_rate_limited_per_asset(linked_platform):
    """The machine's ``speed_setpoint`` is reported by its ``speed`` point, within 60 rpm; and at most 30 commands a
    minute reach one asset (429 problem+json), another asset is not held up by it."""
    p = linked_platform
    p.registry.ensure_tenant("acme")
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="pump-001", type="rotating-machine", gateway="gw-m", first_seen_ns=0))
        s.add(Asset(tenant="acme", id="pump-002", type="rotating-machine", gateway="gw-m", first_seen_ns=0))
    now = time.time_ns()
    rows = Rows()
    rows.extend_series("acme", "pump-001", "speed", [now - 10**9], [1765.0], [0])
    p.store.write(rows)
    p.twins.put_desired("acme", "pump-001", {"speed_setpoint": 1800.0}, 0, "test")
    assert p.twins.state("acme", "pump-001").delta == {}
    p.twins.put_desired("acme", "pump-001", {"speed_setpoint": 1700.0}, 1, "test")
    assert p.twins.state("acme", "pump-001").delta == {"speed_setpoint": {"desired": 1700.0, "reported": 1765.0}}

    key = p.registry.create_api_key("acme", "operator", "olga")
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    codes = [api.post("/api/v1/assets/pump-001/commands", json={"action": "rebirth", "ttl_s": 5}).status_code
             for _ in range(31)]
    assert codes == [202] * 30 + [429]
    r = api.post("/api/v1/assets/pump-001/commands", json={"action": "rebirth"})
    assert r.headers["content-type"].startswith("application/problem+json") and 0 < r.json()["retry_after_s"] <= 60
    assert api.post("/api/v1/assets/pump-002/commands", json={"action": "rebirth"}).status_code == 202
    r = api.post("/api/v1/assets/pump-001/commands", json={"action": "set", "property": "speed_setpoint",
                                                          "value": 2400})
    assert r.status_code == 422 and r.json()["errors"][0]["where"] == "body.value"
    for body in (b'{"action": "rebirth", "evidence": {"forecast": NaN}}', b'{"action": "set", "property": '
                 b'"speed_setpoint", "value": Infinity}', b'{"action": "rebirth", "ttl_s": 1e400}'):
        r = api.post("/api/v1/assets/pump-002/commands", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text


def test_an_opcua_write_the_server_refuses_returns_its_status_and_reads_back_nothing():
    """The source's write as the actuator uses it, on a real asyncua server: a Double node written as Int16 is
    BadTypeMismatch, a node it does not have BadUserAccessDenied (asyncua's answer), a namespace it does not have
    BadNodeIdUnknown without a Write, a good write reads back what it wrote."""
    from edge.config import OpcUaSource
    from edge.sources.opcua import OpcUaSourceRunner
    from tests.harness.opcua import Recorder

    with SimOpcUaServer(free_port(), [("trailer-009", "refrigerated-trailer")]) as sim:
        cfg = OpcUaSource.model_validate({"type": "opcua", "endpoint": sim.endpoint, "reconnect_min_s": 0.1,
                                          "nodes": [{"node": sim.node_id("trailer-009", "setpoint"),
                                                     "asset": "trailer-009", "point": "setpoint"}]})
        runner = OpcUaSourceRunner(cfg)
        runner.start(Recorder())
        try:
            node = sim.node_id("trailer-009", "setpoint")
            status = wait_until(lambda: _try_write(runner, node, 3, "Int16"), timeout=20, what="a session")
            assert status == ("BadTypeMismatch", None)
            assert runner.write(f"nsu={NAMESPACE_URI};s=trailer-009.nothing", 1.0, "Double", 10) == (
                "BadUserAccessDenied", None)
            assert runner.write("nsu=urn:elsewhere;s=trailer-009.setpoint", 1.0, "Double", 10) == (
                "BadNodeIdUnknown", None)
            assert runner.write(node, -18.0, "Double", 10) == ("Good", -18.0)
        finally:
            runner.stop()
    assert [(v, s) for _, v, s in sim.writes] == [(3, "BadTypeMismatch"), (1.0, "BadUserAccessDenied"),
                                                  (-18.0, "Good")]


def _try_write(runner, node: str, value: float, data_type: str):
    try:
        return runner.write(node, value, data_type, 10)
    except ConnectionError:
        return None


def test_a_command_to_an_unreachable_opcua_server_is_retried_within_its_ttl_then_fails_with_why(rig):
    """The PLC's server stops and comes back ~5 s later: a setpoint with a 2 s TTL is tried until its TTL and
    comes back failed saying the server could not be reached; one with 60 s is written once the server is back,
    after the first (one asset's commands in order). Another asset's command, issued behind them, is not held up."""
    cloud, _, sim, _, _ = rig
    down = threading.Thread(target=sim.restart, kwargs={"down_s": 3.0}, name="plc-restart")
    down.start()
    with cloud.client() as api:
        body = {"action": "set", "property": "setpoint", "confirm": True, "reason": "while the PLC restarts"}
        short = api.post("/api/v1/assets/trailer-001/commands", json={**body, "value": -17, "ttl_s": 2}).json()
        long = api.post("/api/v1/assets/trailer-001/commands", json={**body, "value": -14, "ttl_s": 60}).json()
        other = api.post("/api/v1/assets/trailer-002/commands", json={**body, "value": -13, "ttl_s": 60}).json()
        meanwhile = _finished(api, "trailer-002", other["id"])
        failed = wait_until(lambda: (c := _command(api, "trailer-001", short["id"]))["state"] == "failed" and c,
                            timeout=30, what="the short command failed")
        done = _finished(api, "trailer-001", long["id"], timeout=60)
    down.join(30)
    assert failed["delivered_ns"] is not None
    assert failed["reason"].startswith("the OPC-UA server did not take the write to nsu=urn:assettwin:sim;s=trailer-001"
                                       ".setpoint: "), failed["reason"]
    assert re.search(r"; tried \d+ times until the command's TTL ran out$", failed["reason"]), failed["reason"]
    assert (done["state"], done["value"]) == ("succeeded", -14.0), done
    assert done["delivered_ns"] >= failed["finished_ns"]
    assert (meanwhile["state"], meanwhile["value"]) == ("succeeded", -13.0) and meanwhile["finished_ns"] < min(
        failed["finished_ns"], done["finished_ns"]), (meanwhile, failed, done)
    assert sim.value("trailer-001", "setpoint") == -14.0
    assert [w for w in sim.writes if w[1] in (-17.0, -14.0)] == [("ns=2;s=trailer-001.setpoint", -14.0, "Good")]


def test_apply_in_the_what_if_panel_confirms_a_change_outside_the_profile_and_the_trailer_follows(rig):
    """The dashboard in Chromium: a what-if answer for a -16 degC setpoint on trailer-001, which carries a WHO
    refrigerator load; Apply is refused for confirmation, the operator confirms on the page, the desired state is
    stored with the forecast in the audit trail, the command's lifecycle shows as it moves, the PLC follows. The
    model's answer is the pack's shape, served to the page (the rig holds seconds of history, not the day a fit
    needs; tests/test_simulate.py checks the real model's evidence)."""
    from playwright.sync_api import sync_playwright

    from tests.test_web import CHROMIUM, CHROMIUM_FLAGS

    cloud, _, sim, _, _ = rig
    evidence = {"kind": "reefer-thermal", "scenario": {"setpoint_c": -16.0}, "limit_c": 8.0, "horizon_s": 21600.0,
                "time_to_excursion_s": None, "supply_end_c": -15.8, "model": {"tau_box_s": 5400.0}}
    answer = {"asset": "trailer-001", "kind": "reefer-thermal", "limit_c": 8.0, "horizon_s": 21600.0,
              "scenario": {"compressor_off": False, "door_open_s": 0.0, "ambient_offset_c": 0.0, "setpoint_c": -16.0},
              "t_ns": [time.time_ns() + i * 10**12 for i in range(3)], "supply_c": [4.0, -10.0, -15.8],
              "time_to_excursion_s": None, "baseline_time_to_excursion_s": None, "model": {"warnings": []},
              "evidence": evidence}
    with cloud.client() as api:
        for site in ("dc-apply", "store-apply"):
            assert api.post("/api/v1/sites", json={"id": site}).status_code in (201, 200), site
        api.post("/api/v1/shipments", json={"id": "shp-apply", "profile": "who-30-day-refrigerator",
                                            "origin_site": "dc-apply", "destination_site": "store-apply"}
                 ).raise_for_status()
        api.post("/api/v1/shipments/shp-apply/custody",
                 json={"asset": "trailer-001", "from": time.time_ns() - 10**9}).raise_for_status()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script(f"sessionStorage.setItem('assettwin.key', {json.dumps(cloud.api_key)})")
            page.route("**/api/v1/assets/trailer-001/simulate", lambda route: route.fulfill(json=answer))
            page.goto(f"{cloud.url}/#/asset/trailer-001")
            page.fill("#what-if input[name=setpoint_c]", "-16")
            page.click("#whatif-run")
            page.fill("#whatif-apply-reason", "frozen load, forecast checked")
            page.click("#whatif-apply-run")
            page.wait_for_selector("#whatif-apply[data-state=confirm]")
            assert "-16 degC is outside profile who-30-day-refrigerator" in page.inner_text("#whatif-apply-status")
            assert api.get("/api/v1/twins/trailer-001").json()["desired"].get("setpoint") != -16.0  # not yet
            page.click("#whatif-apply-confirm")
            page.wait_for_selector("#whatif-apply[data-state=succeeded]")
            shown = page.inner_text("#whatif-apply-commands")
            browser.close()
        assert errors == []
        twin = api.get("/api/v1/twins/trailer-001").json()
        audit = api.get("/api/v1/audit").json()["items"]
    assert twin["desired"]["setpoint"] == -16.0 and twin["reported"]["points"]["setpoint"]["value"] == -16.0
    [put] = [e for e in audit if e["action"] == "twin.desired.put" and e["after"]["desired"].get("setpoint") == -16.0]
    [cmd] = [e for e in audit if e["action"] == "command.set" and e["after"]["args"]["value"] == -16.0]
    assert put["after"]["evidence"] == evidence and put["reason"] == "frozen load, forecast checked"
    assert cmd["after"]["evidence"] == evidence and cmd["after"]["confirmed"] is True
    # Its lifecycle as the page saw it move (delivered may come and go between two messages).
    assert shown.startswith("setpoint → -16: pending → ") and shown.endswith(
        "succeeded (written to nsu=urn:assettwin:sim;s=trailer-001.setpoint, read back -16.0)"), shown
    assert sim.value("trailer-001", "setpoint") == -16.0
    assert sim.writes[-1] == ("ns=2;s=trailer-001.setpoint", -16.0, "Good")


def test_the_run_mode_is_written_over_opcua_and_mqtt_and_the_units_start_cycling(rig):
    """``mode`` 0 (start-stop) on both trailers: the PLC's node read back, the MQTT unit's own report; the MQTT unit
    then stops its compressor below its band (it cycles instead of holding the setpoint)."""
    cloud, _, sim, device, _ = rig
    before = len(device.writes)
    with cloud.client() as api:
        sent = {a: api.post(f"/api/v1/assets/{a}/commands", json={"action": "set", "property": "mode", "value": 0,
                                                                   "reason": "save fuel"}).json()
                for a in ("trailer-001", "trailer-002")}
        done = {a: _finished(api, a, c["id"]) for a, c in sent.items()}
        assert api.post("/api/v1/assets/trailer-001/commands",
                        json={"action": "set", "property": "mode", "value": 2}).status_code == 422
    assert {a: (d["state"], d["value"]) for a, d in done.items()} == {
        "trailer-001": ("succeeded", 0.0), "trailer-002": ("succeeded", 0.0)}, done
    assert done["trailer-002"]["reason"] == "published to sim/trailer-002/set/mode, device reported mode = 0.0"
    assert sim.value("trailer-001", "mode") == 0.0
    assert [w for w in sim.writes if w[0].endswith(".mode")] == [("ns=2;s=trailer-001.mode", 0.0, "Good")]
    assert device.writes[before:] == [{"topic": "sim/trailer-002/set/mode", "v": 0.0}]
    wait_until(lambda: not device.plant.compressor_on, timeout=30, what="trailer-002's compressor stopping")
