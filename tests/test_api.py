"""The operators' API against real servers: roles and tenants, twins with optimistic concurrency, the
desired-configuration loop through the broker, alerts with signed webhooks, pagination, the live
WebSocket and the audit trail. The registry runs on SQLite and on PostgreSQL: same tests, both engines."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cloud.api.app import create_app
from cloud.registry import Asset
from cloud.store import Rows
from cloud.webhooks import AddressPolicy
from models import topics
from models.wire import DesiredConfig, PointSeries, ReportedConfig, TelemetryBatch, decode, encode
from tests.harness.processes import CloudProcess, wait_until

S = 1_000_000_000


@pytest.fixture
def platform(linked_platform):
    p = linked_platform
    # The webhook test's receiver listens on loopback, which a webhook may reach only when allowed.
    p.notifier.webhooks.policy = AddressPolicy(["127.0.0.1/32"])
    reg = p.registry
    keys = {
        "admin": reg.create_api_key("acme", "admin", "alice"),
        "operator": reg.create_api_key("acme", "operator", "olga"),
        "viewer": reg.create_api_key("acme", "viewer", "victor"),
        "other": reg.create_api_key("globex", "admin", "mallory"),
    }
    with reg.session() as s:
        for tenant, asset, gw in (("acme", "trailer-001", "gw-a"), ("acme", "trailer-002", "gw-a"),
                                  ("globex", "trailer-900", "gw-g")):
            s.add(Asset(tenant=tenant, id=asset, type="refrigerated-trailer", gateway=gw, first_seen_ns=0))
    return p, keys


def _client(p, key: str) -> TestClient:
    return TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})


def test_keys_roles_and_tenants(platform):
    p, keys = platform
    anon = TestClient(create_app(p))
    assert anon.get("/health").status_code == 200
    r = anon.get("/api/v1/assets")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert anon.get("/api/v1/assets", headers={"X-API-Key": keys["viewer"]}).status_code == 200
    assert anon.get("/api/v1/assets", headers={"Authorization": "Basic abc"}).status_code == 401

    viewer = _client(p, keys["viewer"])
    for method, path, body in (("post", "/api/v1/sites", {"id": "dc-1"}),
                               ("put", "/api/v1/twins/trailer-001/desired", {"desired": {"setpoint": 4}}),
                               ("post", "/api/v1/alerts/1/ack", None), ("get", "/api/v1/audit", None),
                               ("get", "/api/v1/dead-letters", None), ("post", "/api/v1/assets", {"id": "x"})):
        r = getattr(viewer, method)(path, **({"json": body} if body is not None else {}),
                                    headers={"If-Match": '"0"'})
        assert r.status_code == 403, (method, path, r.text)

    other = _client(p, keys["other"])
    assert [a["id"] for a in other.get("/api/v1/assets").json()["items"]] == ["trailer-900"]
    for path in ("/api/v1/assets/trailer-001", "/api/v1/twins/trailer-001", "/api/v1/assets/trailer-001/latest",
                 "/api/v1/assets/trailer-001/telemetry?point=supply_air", "/api/v1/assets/trailer-001/anomalies",
                 "/api/v1/assets/trailer-001/alarms", "/api/v1/gateways/gw-a"):
        assert other.get(path).status_code == 404, path
    alert_id, _ = p.alerts.raise_alert("acme", "trailer-001", "door-open-long", "medium", "door open", {})
    assert other.get(f"/api/v1/alerts/{alert_id}").status_code == 404
    assert other.post(f"/api/v1/alerts/{alert_id}/ack").status_code == 404
    assert other.put("/api/v1/twins/trailer-001/desired", json={"desired": {}},
                     headers={"If-Match": '"0"'}).status_code == 404
    assert other.put("/api/v1/gateways/gw-a/config", json={"config": {}},
                     headers={"If-Match": '"0"'}).status_code == 404


# Routes whose cross-tenant answers tests/test_shipments.py checks (they need a shipment and a lot to exist).
SHIPMENT_ROUTES = {"/api/v1/batches/{lot}", "/api/v1/batches/{lot}/reject", "/api/v1/batches/{lot}/release",
                   "/api/v1/shipments/{shipment_id}", "/api/v1/shipments/{shipment_id}/report",
                   "/api/v1/shipments/{shipment_id}/batches", "/api/v1/shipments/{shipment_id}/custody",
                   "/api/v1/shipments/{shipment_id}/consignee", "/api/v1/shared/shipments/{shipment_id}",
                   "/api/v1/shared/shipments/{shipment_id}/report"}


def test_every_route_that_names_a_resource_answers_404_to_another_tenant(platform):
    p, keys = platform
    alert_id, _ = p.alerts.raise_alert("acme", "trailer-001", "door-open-long", "medium", "door open", {})
    key_id = next(k["id"] for k in _client(p, keys["admin"]).get("/api/v1/keys").json()["items"]
                  if k["name"] == "olga")
    hook_id = _client(p, keys["admin"]).post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}).json()["id"]
    assert _client(p, keys["admin"]).put("/api/v1/shares/charterer-a/assets/trailer-001").status_code == 201
    command_id = p.commands.issue("acme", "trailer-001", "rebirth", {}, ttl_s=60, actor="test")["id"]
    ids = {"asset": "trailer-001", "gateway": "gw-a", "alert_id": str(alert_id), "key_id": key_id,
           "hook_id": str(hook_id), "grantee": "charterer-a", "command_id": command_id, "snapshot": "1"}
    bodies = {"/api/v1/twins/{asset}/desired": {"desired": {"setpoint": 2}},
              "/api/v1/assets/{asset}/commands": {"action": "rebirth"},
              "/api/v1/gateways/{gateway}/config": {"config": {}}, "/api/v1/assets/{asset}/simulate": {},
              "/api/v1/assets/{asset}/baseline": {}, "/api/v1/keys/{key_id}/revoke": {"reason": "mine now"},
              **{f"/api/v1/people/{{asset}}/{r}": {"reason": "someone else's", "start_ns": 0, "end_ns": 1}
                 for r in ("identity", "report", "read", "erase")},
              "/api/v1/people/{asset}/consents": {"grantee": "someone"},
              "/api/v1/twins/{asset}/rul": {"horizon_cycles": 40}, "/api/v1/assets/{asset}/machine": {}}
    app = create_app(p)
    routes = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() if "{" in path for m in ops}
    assert {path for _, path in routes} >= SHIPMENT_ROUTES  # a renamed route must be renamed here too
    other = _client(p, keys["other"])  # an admin, of another tenant
    checked = sorted(r for r in routes if r[1] not in SHIPMENT_ROUTES)
    assert len(checked) >= 16, checked
    for method, path in checked:
        url = path.format(**ids) + ("?point=supply_air" if path.endswith("/telemetry") else "")  # new name: KeyError
        r = other.request(method, url, json=bodies.get(path), headers={"If-Match": '"0"'})
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    mine = _client(p, keys["admin"])
    assert next(k for k in mine.get("/api/v1/keys").json()["items"] if k["id"] == key_id)["revoked"] is False
    assert mine.get(f"/api/v1/alerts/{alert_id}").json()["state"] == "open"
    assert [h["id"] for h in mine.get("/api/v1/webhooks").json()["items"]] == [hook_id]  # neither deleted nor rotated


def test_concurrent_desired_puts_exactly_one_wins(platform):
    p, keys = platform
    ops = [_client(p, keys["operator"]) for _ in range(2)]
    r = ops[0].get("/api/v1/twins/trailer-001")
    assert r.headers["etag"] == '"0"'
    barrier = threading.Barrier(2)
    results: list[int] = []

    def put(c: TestClient, sp: float) -> None:
        barrier.wait()
        results.append(c.put("/api/v1/twins/trailer-001/desired", json={"desired": {"setpoint": sp}},
                             headers={"If-Match": '"0"'}).status_code)

    threads = [threading.Thread(target=put, args=(c, sp)) for c, sp in zip(ops, (3.0, 5.0), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412]
    twin = ops[0].get("/api/v1/twins/trailer-001")
    assert twin.headers["etag"] == '"1"' and twin.json()["desired"]["setpoint"] in (3.0, 5.0)
    assert ops[0].put("/api/v1/twins/trailer-001/desired", json={"desired": {}}).status_code == 428


def test_twin_reports_latest_values_and_the_delta(platform):
    p, keys = platform
    now = time.time_ns()
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "setpoint", [now - 2 * S, now - S], [6.0, 5.0], [0, 0])
    rows.extend_series("acme", "trailer-001", "supply_air", [now - S], [4.5], [0])
    p.store.write(rows)
    op = _client(p, keys["operator"])
    op.put("/api/v1/twins/trailer-001/desired", json={"desired": {"setpoint": 4.0, "supply_air": 4.5}},
           headers={"If-Match": '"0"'}).raise_for_status()
    twin = op.get("/api/v1/twins/trailer-001").json()
    assert twin["reported"]["points"]["setpoint"] == {"value": 5.0, "t_ns": now - S}
    assert twin["delta"] == {"setpoint": {"desired": 4.0, "reported": 5.0}}
    assert (twin["status"], twin["health"], twin["version"]) == ("online", 1.0, 1)


def _listen(url: str, topic_filter: str) -> tuple[mqtt.Client, list]:
    host, port = url.removeprefix("mqtt://").split(":")
    got: list = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, *_: cl.subscribe(topic_filter, 1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload, m.retain))
    c.connect(host, int(port))
    c.loop_start()
    assert ready.wait(10)
    return c, got


def test_gateway_config_is_published_retained_and_the_report_closes_the_loop(platform, mosquitto):
    p, keys = platform
    gw = f"gw-{time.time_ns() % 10**9}"
    p.registry.ensure_tenant("acme")
    with p.registry.session() as s:
        from cloud.registry import Gateway
        s.add(Gateway(tenant="acme", id=gw, state="online", counters={}, config_version=2))
    op = _client(p, keys["operator"])
    r = op.put(f"/api/v1/gateways/{gw}/config", json={"config": {"tick_ms": 200}, "reason": "slower ticks"},
               headers={"If-Match": '"0"'})
    assert r.status_code == 200 and r.json()["version"] == 3  # above what the gateway already runs
    c, got = _listen(mosquitto.url, topics.config_desired("acme", gw))  # subscribed after: retained
    wait_until(lambda: got, what="the retained desired config")
    msg = decode(got[0][1], DesiredConfig)
    assert (msg.version, msg.config, got[0][2]) == (3, {"tick_ms": 200}, True)
    assert op.put(f"/api/v1/gateways/{gw}/config", json={"config": {}}, headers={"If-Match": '"0"'}).status_code == 412
    c.publish(topics.config_reported("acme", gw), encode(ReportedConfig(gateway=gw, version=3, applied=True)),
              qos=1).wait_for_publish()
    g = wait_until(lambda: (x := op.get(f"/api/v1/gateways/{gw}").json())["config_version"] == 3 and x,
                   what="the applied version")
    assert g["config_report"]["applied"] is True and g["desired_version"] == 3
    c.publish(topics.config_desired("acme", gw), b"", retain=True).wait_for_publish()
    c.disconnect()


def test_a_config_put_without_baselines_keeps_the_baselines_the_cloud_pushed(platform, mosquitto):
    p, keys = platform
    gw = f"gw-{time.time_ns() % 10**9}"
    p.registry.ensure_tenant("acme")
    baseline = {"id": "fit-1", "points": ["speed", "motor_current"], "mean": [0.0, 0.0], "scale": [1.0, 1.0],
                "loadings": [[1.0], [0.0]], "eigvals": [1.0], "t2_limit": 9.0, "spe_limit": 1.0}
    with p.registry.session() as s:
        from cloud.registry import Gateway
        s.add(Gateway(tenant="acme", id=gw, state="online", counters={}, desired_version=4,
                      desired_config={"tick_ms": 100, "baselines": {"pump-001": baseline}}))
    op = _client(p, keys["operator"])
    r = op.put(f"/api/v1/gateways/{gw}/config", json={"config": {"tick_ms": 200}}, headers={"If-Match": '"4"'})
    assert r.status_code == 200 and r.json()["version"] == 5
    c, got = _listen(mosquitto.url, topics.config_desired("acme", gw))
    wait_until(lambda: got, what="the retained desired config")
    assert decode(got[0][1], DesiredConfig).config == {"tick_ms": 200, "baselines": {"pump-001": baseline}}
    r = op.put(f"/api/v1/gateways/{gw}/config", json={"config": {"baselines": {}}}, headers={"If-Match": '"5"'})
    assert r.status_code == 200  # said explicitly: the baselines go
    with p.registry.session() as s:
        assert s.get(Gateway, ("acme", gw)).desired_config == {"baselines": {}}
    c.publish(topics.config_desired("acme", gw), b"", retain=True).wait_for_publish()
    c.disconnect()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["X-Twin-Signature"], body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alert_lifecycle_with_dedup_signed_webhook_and_mqtt_notification(platform, mosquitto):
    p, keys = platform
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Hook.received = []
    admin, op, viewer = (_client(p, keys[k]) for k in ("admin", "operator", "viewer"))
    hook = admin.post("/api/v1/webhooks", json={"url": f"http://127.0.0.1:{srv.server_port}/hook"}).json()
    c, notes = _listen(mosquitto.url, "twin/v1/acme/alerts")

    evidence = {"rule": "supply-air-high", "limit": 8.0, "values": [9.1, 9.4]}
    first, new1 = p.alerts.raise_alert("acme", "trailer-002", "supply-air-high", "high", "too warm", evidence)
    again, new2 = p.alerts.raise_alert("acme", "trailer-002", "supply-air-high", "high", "too warm", evidence)
    assert (first == again, new1, new2) == (True, True, False)
    listed = viewer.get("/api/v1/alerts", params={"state": "open", "asset": "trailer-002"}).json()["items"]
    assert [(a["id"], a["occurrences"], a["evidence"]["limit"]) for a in listed] == [(first, 2, 8.0)]

    assert viewer.post(f"/api/v1/alerts/{first}/ack").status_code == 403
    acked = op.post(f"/api/v1/alerts/{first}/ack", json={"note": "driver called"}).json()
    assert (acked["state"], acked["acked_by"].startswith("key:"), acked["note"]) == ("acknowledged", True,
                                                                                    "driver called")
    assert acked["command"] is None  # not a device's own alarm: nothing goes to a gateway
    assert op.post(f"/api/v1/alerts/{first}/ack").status_code == 409
    assert op.post(f"/api/v1/alerts/{first}/resolve").json()["state"] == "resolved"
    reopened, new3 = p.alerts.raise_alert("acme", "trailer-002", "supply-air-high", "high", "too warm", evidence)
    assert new3 and reopened != first

    p.notifier.drain()
    events = [json.loads(b)["event"] for _, b in _Hook.received]
    assert events == ["alert.opened", "alert.acknowledged", "alert.resolved", "alert.opened"]
    for sig, body in _Hook.received:
        assert sig == "sha256=" + hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
    wait_until(lambda: len(notes) == 4, what="4 MQTT notifications")
    srv.shutdown()
    c.disconnect()

    audit = admin.get("/api/v1/audit").json()["items"]
    assert [e["action"] for e in audit][:3] == ["alert.resolved", "alert.acknowledged", "webhook.create"]
    lines = admin.get("/api/v1/audit", params={"format": "ndjson"}).text.splitlines()
    assert json.loads(lines[0])["action"] == "alert.resolved"


def test_cursor_pagination_returns_every_asset_once(platform):
    p, keys = platform
    admin = _client(p, keys["admin"])
    for i in range(23):
        admin.post("/api/v1/assets", json={"id": f"pump-{i:02d}", "type": "refrigerated-trailer"}).raise_for_status()
    seen, cursor, pages = [], None, 0
    while True:
        body = admin.get("/api/v1/assets", params={"limit": 10, "type": "refrigerated-trailer",
                                                   **({"cursor": cursor} if cursor else {})}).json()
        seen += [a["id"] for a in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == sorted([f"pump-{i:02d}" for i in range(23)] + ["trailer-001", "trailer-002"])
    assert admin.get("/api/v1/assets", params={"cursor": "!!"}).status_code == 422


def test_live_websocket_streams_only_subscribed_assets_of_the_own_tenant(platform, mosquitto):
    p, keys = platform
    app = create_app(p)
    with TestClient(app) as tc, \
            tc.websocket_connect(f"/api/v1/live?api_key={keys['viewer']}") as ws, \
            tc.websocket_connect(f"/api/v1/live?api_key={keys['other']}") as intruder:
        ws.send_json({"subscribe": ["trailer-001"]})
        assert ws.receive_json() == {"type": "subscribed", "assets": ["trailer-001"]}
        intruder.send_json({"subscribe": ["trailer-001"]})
        intruder.receive_json()
        batch = TelemetryBatch(tenant="acme", gateway="gw-a", seq=0, series=[
            PointSeries(asset="trailer-002", point="door", t_ns=[1], values=[1.0], quality=[0]),
            PointSeries(asset="trailer-001", point="supply_air", t_ns=[5, 6], values=[4.0, 4.25], quality=[0, 0])])
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect(host, int(port))
        c.loop_start()
        c.publish(topics.telemetry("acme", "gw-a"), encode(batch, compress=True), qos=1).wait_for_publish()
        msg = ws.receive_json()
        assert msg == {"type": "telemetry", "asset": "trailer-001", "point": "supply_air", "t_ns": [5, 6],
                       "values": [4.0, 4.25]}
        c.disconnect()
        c.loop_stop()
        intruder.send_json({"subscribe": []})
        assert intruder.receive_json()["type"] == "subscribed"  # nothing telemetry arrived before this reply
    with TestClient(app) as tc, pytest.raises(WebSocketDisconnect) as closed, \
            tc.websocket_connect("/api/v1/live?api_key=nope") as ws:
        ws.receive_json()
    assert closed.value.code == 4401


def _children(pid: int) -> list[int]:
    return [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]


def test_api_workers_answer_from_processes_of_their_own_what_the_parent_ingests(tmp_path, mosquitto, influxdb,
                                                                                  influx_db):
    """``twin cloud run --api-workers 2``: two API processes beside the parent, which keeps the ingest worker;
    a batch the parent ingests is read back through them (their latest values come from the store)."""
    cloud = CloudProcess(tmp_path, mosquitto.url, f"sqlite:///{tmp_path / 'r.sqlite'}", influxdb.url, influx_db,
                         extra_env={"TWIN_API_WORKERS": "2"})
    cloud.start()
    try:
        cloud.wait_ready()
        spawned = [c for c in _children(cloud.proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(spawned) == 2, spawned
        t0 = time.time_ns()
        batch = TelemetryBatch(tenant="acme", gateway="gw-1", seq=0, sent_ns=t0, series=[
            PointSeries(asset="trailer-009", point="supply_air", t_ns=[t0 - 1000, t0], values=[3.5, 4.25],
                        quality=[0, 0])])
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        c.connect(host, int(port))
        c.loop_start()
        c.publish(topics.telemetry("acme", "gw-1"), encode(batch, compress=True), qos=1).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
        with cloud.client() as api:
            twin = wait_until(lambda: (r := api.get("/api/v1/twins/trailer-009")).status_code == 200
                              and r.json()["reported"]["points"] and r.json(), what="the twin through an API worker")
            assert twin["reported"]["points"] == {"supply_air": {"value": 4.25, "t_ns": t0}}
            assert all(api.get("/api/v1/twins/trailer-009").status_code == 200 for _ in range(20))
    finally:
        cloud.stop()
