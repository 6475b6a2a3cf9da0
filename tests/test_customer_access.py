"""A charterer's key: it sees the health, open alerts and predicted maintenance dates of the vessels its organisation
was shared, and nothing else — 404 on every other vessel and on every other route of the app, walked from the
app's own route table, as the cross-tenant sweep of ``test_api.py`` walks it. Real Mosquitto, InfluxDB, and the
registry on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from cloud.api.app import create_app
from cloud.registry import Alert, ApiKey, Asset, AuditEntry, Gateway, Site, Twin
from cloud.sharing import Share
from cloud.store import Rows
from cloud.webhooks import AddressPolicy

S = 1_000_000_000
DAY = 86_400 * S
GRANTEE = "charterer-a"
MINE = ["vessel-001", "vessel-002"]
PUBLIC = {"/health", "/", "/static/{path:path}", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""Served to anyone, key or not: a customer key must get exactly what an anonymous request gets."""
VIEW = {"/api/v1/shared/assets", "/api/v1/shared/assets/{asset}", "/api/v1/shared/shipments",
        "/api/v1/shared/shipments/{shipment_id}", "/api/v1/shared/shipments/{shipment_id}/report",
        "/api/v1/shared/people", "/api/v1/shared/people/{asset}/report"}
STAFF_404 = {"/api/v1/assets/{asset}/zone": (404, "asset 'vessel-001' has no vibration velocity reading yet"),
             "/api/v1/assets/{asset}/snapshots/{snapshot}": (404, "snapshot 1 of 'vessel-001' not found")}
"""A vessel has no vibration velocity nor waveform snapshot: its staff are told so, naming them, where the customer
gets the role's 'no such resource'."""
DETAIL_KEYS = {"id", "name", "type", "status", "health", "last_seen_ns", "open_alerts", "predicted_maintenance"}
ALERT_KEYS = {"severity", "state", "title", "classification", "opened_ns", "last_seen_ns"}
DUE = {"what": "turbocharger cleaning", "at_ns": 1_767_225_600 * S, "at": "2026-01-01T00:00:00Z",
       "interval_ns": [1_767_225_600 * S - DAY, 1_767_225_600 * S + DAY]}


def _client(p, key: str | None = None) -> TestClient:
    return TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"} if key else {})


@pytest.fixture
def fleet(linked_platform):
    p = linked_platform
    p.notifier.webhooks.policy = AddressPolicy(["127.0.0.1/32"])
    reg = p.registry
    keys = {"admin": reg.create_api_key("acme", "admin", "alice"), "viewer": reg.create_api_key("acme", "viewer"),
            "globex": reg.create_api_key("globex", "admin", "mallory")}
    with reg.session() as s:
        for tenant, asset, kind in (("acme", "vessel-001", "vessel"), ("acme", "vessel-002", "vessel"),
                                    ("acme", "vessel-003", "vessel"), ("acme", "trailer-001", "refrigerated-trailer"),
                                    ("globex", "vessel-900", "vessel")):
            s.add(Asset(tenant=tenant, id=asset, type=kind, gateway=f"gw-{tenant}", name=asset.upper(),
                        first_seen_ns=0))
    admin, globex = _client(p, keys["admin"]), _client(p, keys["globex"])
    for asset in MINE:
        assert admin.put(f"/api/v1/shares/{GRANTEE}/assets/{asset}").status_code == 201
    assert admin.put("/api/v1/shares/charterer-b/assets/vessel-003").status_code == 201
    assert globex.put(f"/api/v1/shares/{GRANTEE}/assets/vessel-900").status_code == 201  # same name, other tenant
    with reg.session() as s:
        s.add_all([Site(tenant="acme", id=site, name=site, kind="site") for site in ("dc-1", "store-7")])
        s.add(Gateway(tenant="acme", id="gw-acme", state="online", counters={}))
    assert admin.post("/api/v1/shipments", json={"id": "shp-1", "profile": "who-type-1", "origin_site": "dc-1",
                                                 "destination_site": "store-7"}).status_code == 201
    assert admin.post("/api/v1/shipments/shp-1/batches",
                      json={"lot": "LOT-1", "product": "spares", "quantity": 1}).status_code == 201
    hook = admin.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201
    keys["hook_id"] = str(hook.json()["id"])
    made = admin.post(f"/api/v1/shares/{GRANTEE}/keys", json={"name": "ops desk"})
    assert made.status_code == 201 and made.json()["role"] == "customer" and made.json()["grantee"] == GRANTEE
    keys["customer"] = made.json()["key"]
    keys["customer_id"] = made.json()["id"]
    now = time.time_ns()
    rows = Rows()
    for asset in ("vessel-001", "vessel-003", "trailer-001"):
        rows.extend_series("acme", asset, "me_shaft_power", [now - 60 * S, now - S], [9000.0, 9050.0], [0, 0])
    p.store.write(rows)
    injector = {"source": "vessel-engine", "classification": "fuel_injector", "cylinder": 4,
                "values": {"windows": [{"cylinder_c": 402.0}]}, "thresholds": {"high_k": 50}}
    tc = {"source": "vessel-engine", "classification": "turbocharger_fouling", "maintenance_due": DUE,
          "values": {"exhaust_rise_k": 31.0}}
    ids = {"injector": p.alerts.raise_alert("acme", "vessel-001", "me-cylinder-deviation-cyl4", "high",
                                            "cylinder 4 exhaust 58 K above the mean", injector)[0],
           "tc": p.alerts.raise_alert("acme", "vessel-001", "me-performance", "medium", "turbocharger fouling", tc)[0],
           "other": p.alerts.raise_alert("acme", "vessel-003", "me-performance", "high", "not yours", tc)[0],
           "gone": p.alerts.raise_alert("acme", "vessel-002", "shaft-line-vibration-1", "high", "fixed", {})[0]}
    p.alerts.transition("acme", ids["gone"], "resolved", "test")
    p.twins.merge_model("acme", "vessel-002", {"maintenance": {"shaft_bearing_1": {
        "what": "shaft bearing 1 inspection (vibration zone D)", "at_ns": DUE["at_ns"] + 30 * DAY, "at": "2026-01-31",
        "interval_ns": [None, None]}}, "calibration": {"secret": 1}})
    return p, keys, ids


def test_a_customer_key_lists_exactly_the_vessels_shared_with_its_organisation(fleet):
    p, keys, _ = fleet
    page = _client(p, keys["customer"]).get("/api/v1/shared/assets").json()
    assert [a["id"] for a in page["items"]] == MINE and page["next_cursor"] is None
    one, two = page["items"]
    assert (one["status"], one["open_alerts"], one["name"]) == ("online", 2, "VESSEL-001")
    assert one["health"] == pytest.approx(1.0 - 0.5 - 0.25)  # a high and a medium alert open
    assert one["next_maintenance"]["at_ns"] == DUE["at_ns"]
    assert (two["status"], two["open_alerts"], two["health"]) == ("offline", 0, 1.0)
    assert two["next_maintenance"]["what"].startswith("shaft bearing 1")
    pages = _client(p, keys["customer"]).get("/api/v1/shared/assets", params={"limit": 1}).json()
    nxt = _client(p, keys["customer"]).get("/api/v1/shared/assets", params={"cursor": pages["next_cursor"]}).json()
    assert [a["id"] for a in pages["items"] + nxt["items"]] == MINE


def test_it_sees_health_open_alerts_and_predicted_maintenance_and_nothing_else(fleet):
    p, keys, _ = fleet
    c = _client(p, keys["customer"])
    v1 = c.get("/api/v1/shared/assets/vessel-001").json()
    assert set(v1) == DETAIL_KEYS
    assert [(a["classification"], a["severity"]) for a in v1["open_alerts"]] == [("fuel_injector", "high"),
                                                                               ("turbocharger_fouling", "medium")]
    assert all(set(a) == ALERT_KEYS for a in v1["open_alerts"])  # no evidence (raw values), no id or rule to act on
    assert v1["predicted_maintenance"] == [{**DUE, "source": "alert"}]
    v2 = c.get("/api/v1/shared/assets/vessel-002").json()
    assert v2["open_alerts"] == []  # the resolved one is not shown
    assert [m["source"] for m in v2["predicted_maintenance"]] == ["trend"]
    text = c.get("/api/v1/shared/assets/vessel-001").text
    assert "402.0" not in text and "cylinder_c" not in text  # the evidence's raw value: not even inside a title
    assert "secret" not in c.get("/api/v1/shared/assets/vessel-002").text


@pytest.mark.parametrize("asset", ["vessel-003", "trailer-001", "vessel-900", "no-such-vessel"])
def test_a_vessel_not_shared_with_it_is_not_found(fleet, asset):
    """Shared with another charterer, never shared, another tenant's shared with the same grantee name, absent:
    one answer, so a key cannot learn which vessels exist."""
    p, keys, _ = fleet
    r = _client(p, keys["customer"]).get(f"/api/v1/shared/assets/{asset}")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == f"no asset {asset!r}"


def _routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, walked from its route table (routers included at any depth;
    a WebSocket as "WS")."""
    out: set[tuple[str, str]] = set()

    def walk(routes) -> None:
        for r in routes:
            if hasattr(r, "effective_candidates"):  # FastAPI's included router
                walk(r.effective_candidates())
                continue
            if hasattr(r, "routes") and not hasattr(r, "endpoint"):  # a plain mount or router
                walk(r.routes)
                continue
            path = getattr(r, "path", "") or getattr(getattr(r, "original_route", None), "path", "")
            methods = getattr(r, "methods", None)
            out.update((m, path) for m in (methods or {"WS"}) if m != "HEAD")

    walk(app.routes)
    return out


def test_every_other_route_of_the_app_answers_a_customer_key_404(fleet):
    p, keys, ids = fleet
    app = create_app(p)
    routes = _routes(app)
    documented = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= routes, documented - routes  # the walk saw every documented route, and more
    assert ("WS", "/api/v1/live") in routes and ("GET", "/") in routes
    admin = _client(p, keys["admin"])
    state = ("/api/v1/keys", "/api/v1/alerts", "/api/v1/shares", "/api/v1/assets", "/api/v1/webhooks",
             "/api/v1/batches/LOT-1", "/api/v1/twins/vessel-001", "/api/v1/sites")
    before = {path: admin.get(path).json() for path in state}
    # The real ids of the tenant's resources — the customer's own shared vessel among them — so a 404 comes from the
    # role, not from an id that does not exist.
    filled = {"asset": "vessel-001", "gateway": "gw-acme", "alert_id": str(ids["injector"]),
              "key_id": keys["customer_id"], "hook_id": keys["hook_id"], "grantee": GRANTEE, "shipment_id": "shp-1",
              "lot": "LOT-1", "static": "js/dom.js", "snapshot": "1",
              "command_id": p.commands.issue("acme", "vessel-001", "rebirth", {}, ttl_s=60, actor="test")["id"]}
    query = {"/api/v1/assets/{asset}/telemetry": {"point": "me_shaft_power"}}
    customer, anonymous = _client(p, keys["customer"]), _client(p)
    checked = 0
    for method, path in sorted(routes):
        if method == "WS":
            continue
        url = path.replace("{path:path}", "{static}").format(**filled)
        if path in PUBLIC:
            mine, anon = customer.request(method, url), anonymous.request(method, url)
            assert (mine.status_code, mine.content) == (anon.status_code, anon.content), (method, path)
            continue
        if path in VIEW:
            continue
        if method == "GET":  # every id names something the tenant has: its own staff are answered
            staff = admin.get(url, params=query.get(path))
            detail = staff.json()["detail"] if staff.status_code == 404 else None
            assert (staff.status_code, detail) == STAFF_404.get(path, (200, None)), (method, path)
        r = customer.request(method, url, params=query.get(path), json={}, headers={"If-Match": '"0"'})
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert (r.json()["title"], r.json()["detail"]) == ("Not found", "no such resource"), (method, path)
        checked += 1
    assert checked >= 50, checked
    after = {path: admin.get(path).json() for path in state}
    assert after == before  # and nothing was changed on the way (a key made, an alert acknowledged, a share...)
    with TestClient(app) as tc, tc.websocket_connect(f"/api/v1/live?api_key={keys['customer']}") as ws, \
            pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 4404


def test_staff_keys_do_not_get_the_grantee_view(fleet):
    p, keys, _ = fleet
    for who in ("admin", "viewer", "globex"):
        c = _client(p, keys[who])
        assert c.get("/api/v1/shared/assets").status_code == 404
        assert c.get("/api/v1/shared/assets/vessel-001").status_code == 404


def test_unsharing_hides_the_vessel_and_a_revoked_key_stops_working(fleet):
    p, keys, _ = fleet
    admin, c = _client(p, keys["admin"]), _client(p, keys["customer"])
    assert admin.delete(f"/api/v1/shares/{GRANTEE}/assets/vessel-002").status_code == 204
    assert admin.delete(f"/api/v1/shares/{GRANTEE}/assets/vessel-002").status_code == 404
    assert [a["id"] for a in c.get("/api/v1/shared/assets").json()["items"]] == ["vessel-001"]
    assert c.get("/api/v1/shared/assets/vessel-002").status_code == 404
    listed = next(k for k in admin.get("/api/v1/keys").json()["items"] if k["id"] == keys["customer_id"])
    assert (listed["role"], listed["grantee"], listed["name"]) == ("customer", GRANTEE, "ops desk")
    assert admin.post(f"/api/v1/keys/{keys['customer_id']}/revoke", json={"reason": "charter ended"}).status_code == 200
    fresh = _client(p, keys["customer"])  # a new app: no cached lookup
    assert fresh.get("/api/v1/shared/assets").status_code == 401


def test_shares_are_managed_by_admins_and_audited(fleet):
    p, keys, _ = fleet
    admin, viewer = _client(p, keys["admin"]), _client(p, keys["viewer"])
    assert viewer.put(f"/api/v1/shares/{GRANTEE}/assets/vessel-003").status_code == 403
    assert viewer.post(f"/api/v1/shares/{GRANTEE}/keys").status_code == 403
    assert admin.put(f"/api/v1/shares/{GRANTEE}/assets/vessel-001").status_code == 200  # again: no change
    assert admin.put(f"/api/v1/shares/{GRANTEE}/assets/vessel-900").status_code == 404  # another tenant's
    assert admin.put("/api/v1/shares/bad%5Cname/assets/vessel-001").status_code == 422
    assert admin.post("/api/v1/keys", json={"role": "customer"}).status_code == 422  # only with a grantee, here
    assert admin.post("/api/v1/shares/nobody/keys").status_code == 404  # a grantee exists once shared with
    listed = admin.get("/api/v1/shares", params={"grantee": GRANTEE}).json()["items"]
    assert [(s["grantee"], s["asset"]) for s in listed] == [(GRANTEE, a) for a in MINE]
    page = admin.get("/api/v1/shares", params={"limit": 2}).json()
    rest = admin.get("/api/v1/shares", params={"cursor": page["next_cursor"]}).json()
    assert [(s["grantee"], s["asset"]) for s in page["items"] + rest["items"]] == \
        [(GRANTEE, "vessel-001"), (GRANTEE, "vessel-002"), ("charterer-b", "vessel-003")]
    assert rest["next_cursor"] is None
    with p.registry.session() as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.tenant == "acme"))]
        assert actions.count("share.create") == 3 and actions.count("key.create") == 1
        assert s.scalar(select(ApiKey.grantee).where(ApiKey.role == "customer")) == GRANTEE
        assert len(s.scalars(select(Share).where(Share.tenant == "globex")).all()) == 1
        assert s.get(Twin, ("acme", "vessel-002")) is not None
        assert s.scalar(select(Alert.state).where(Alert.rule == "shaft-line-vibration-1")) == "resolved"
