"""Every query and path parameter of the API is validated before it is used: hostile values answer 4xx
problem+json naming the parameter, never 5xx. The cases outside probes found (cursors, times, windows, points with
control characters) are tests of their own; a sweep sends every hostile value to every parameter of every
operation in ``/openapi.json``, against the real app on a real registry (PostgreSQL) and store (InfluxDB)."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Alert, AnomalyRecord, Asset
from cloud.settings import CloudSettings
from cloud.store import Rows

S = 1_000_000_000
T0 = 1_767_225_600 * S
ADMIN_KEY = "params-admin-key-0123456789"
PROBLEM = "application/problem+json"


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


HOSTILE = [
    "", " ", "\t", "\n", "a\nb", "\r\n", "\x00", "a\x00b", "\x7f", "\\", "'", '"', "' OR '1'='1", 'x" OR 1=1 --',
    "²", "¹²", "٣", "１２", "99999999999999999999999", "-99999999999999999999999", "9223372036854775807",
    "-9223372036854775808", "-9223372036854775806", "9223372036854775806", "2147483648", "-1", "0", "1e309",
    "NaN", "-inf", "1.5",
    "99999999999999999999d", "0s", "-1s", "1.5h", "9999999999999999999ms", "²s", "36500d", "106751d",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "2026-13-45", "2026-01-01T00:00:00+25:00",
    "W10", "e30", _b64(None), _b64([1]), _b64(["a", "b"]), _b64(99999999999999999999), _b64(-1), _b64("\x00"),
    _b64(1.5), _b64([1e400, "x"]), _b64({"a": 1}), _b64([T0, "\x00"]), "!!", "=",
    "x" * 5000, "../../etc/passwd", "%", "🚀", "null", "true", "[]",
]
"""What a careless or hostile client puts in a parameter; every one goes to every parameter."""

VALID = {"asset": "trailer-001", "point": "supply_air", "gateway": "gw-a", "alert_id": "1", "key_id": "k-none",
         "shipment_id": "shp-1", "lot": "lot-1", "webhook_id": "1", "command_id": "c-none", "grantee": "g-none",
         "snapshot": "1"}
"""Path and required query parameters other than the one probed: real where the registry has them."""

BODIES = {
    "/api/v1/twins/{asset}/desired": {"desired": {}},
    "/api/v1/twins/{asset}/rul": {"horizon_cycles": 40},
    "/api/v1/assets/{asset}/machine": {},
    **{f"/api/v1/people/{{asset}}/{r}": {"reason": "probe", "start_ns": 0, "end_ns": 1}
       for r in ("identity", "report", "read", "erase")},
    "/api/v1/people/{asset}/consents": {"grantee": "g-none"},
    "/api/v1/gateways/{gateway}/config": {"config": {}},
    "/api/v1/alerts/{alert_id}/ack": {"note": ""},
    "/api/v1/alerts/{alert_id}/resolve": {"note": ""},
    "/api/v1/keys/{key_id}/revoke": {"reason": "probe"},
    "/api/v1/assets/{asset}/simulate": {},
    "/api/v1/assets/{asset}/baseline": {},
    "/api/v1/assets/{asset}/commands": {"action": "rebirth"},
    "/api/v1/shipments/{shipment_id}/custody": {"asset": "trailer-001", "from": T0},
    "/api/v1/shipments/{shipment_id}/batches": {"lot": "lot-9", "product": "vaccine", "quantity": 1},
    "/api/v1/batches/{lot}/release": {"reason": "probe", "username": "probe", "password": "probe"},
    "/api/v1/batches/{lot}/reject": {"reason": "probe", "username": "probe", "password": "probe"},
    "/api/v1/shipments/{shipment_id}/consignee": {"name": "probe", "email": "probe@store.example"},
}
"""Valid bodies, so that a request with a body reaches the code that uses its path parameters."""


@pytest.fixture(scope="module")
def api(postgres, influxdb, mosquitto):
    db = f"params_{uuid.uuid4().hex[:10]}"
    postgres.create_database(db)
    influxdb.create_database(db)
    settings = CloudSettings(database_url=postgres.url_for(db), store="influx", influx_url=influxdb.url,
                             influx_bucket=f"{db}/autogen", influx_database=db, mqtt_url=mosquitto.url,
                             api_rate_per_s=1e6, api_rate_burst=1_000_000, bootstrap_api_key=ADMIN_KEY,
                             bootstrap_tenant="acme")
    p = Platform.open(settings, with_link=True)  # the broker is up: a gateway's config goes out, or is a 404
    p.start()
    assert p.link.connected.wait(10)
    with p.registry.session() as s:  # two or three of each list, so that pages of one need cursors
        for asset in ("trailer-001", "trailer-002", "trailer-003"):
            s.add(Asset(tenant="acme", id=asset, type="refrigerated-trailer", gateway="gw-a", first_seen_ns=0))
        for event in ("ev-1", "ev-2"):  # the same start: the event id breaks the tie
            s.add(AnomalyRecord(tenant="acme", event_id=event, gateway="gw-a", asset="trailer-001",
                                point="supply_air", start_ns=T0, end_ns=T0 + S, peak_score=5.0, peak_value=9.0,
                                detectors=["spike"]))
        for rule in ("too-warm", "door-open"):
            s.add(Alert(tenant="acme", asset="trailer-001", rule=rule, dedup_key=f"trailer-001/{rule}",
                        severity="high", title=rule, evidence={}, opened_ns=T0, last_seen_ns=T0))
        for site in ("dc-1", "dc-2"):
            p.registry.audit(s, "acme", "test", "site.create", f"site:{site}")
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "supply_air", [T0 + i * S for i in range(60)], [4.0] * 60, [0] * 60)
    p.store.write(rows)
    with TestClient(create_app(p), headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    raise_server_exceptions=False) as client:
        yield client
    p.close()
    influxdb.drop_database(db)
    postgres.drop_database(db)


def _problem(r, status: int, parameter: str) -> str:
    """The problem's detail, once it is known to be ``status`` in problem+json naming ``parameter``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and parameter in body["detail"], body
    return body["detail"]


CURSOR_ROUTES = ["/api/v1/assets", "/api/v1/dead-letters", "/api/v1/assets/trailer-001/telemetry",
                 "/api/v1/assets/trailer-001/anomalies", "/api/v1/alerts", "/api/v1/audit", "/api/v1/shipments",
                 "/api/v1/twins"]


@pytest.mark.parametrize("route", CURSOR_ROUTES)
@pytest.mark.parametrize("cursor", ["W10", "e30", _b64("\x00"), _b64(2**70), _b64([T0]), "!!"])
def test_a_cursor_the_api_did_not_issue_is_a_422_naming_cursor(api, route, cursor):
    params = {"cursor": cursor, **({"point": "supply_air"} if route.endswith("/telemetry") else {})}
    _problem(api.get(route, params=params), 422, "cursor")


def test_cursors_the_api_issued_still_page_through_every_list(api):
    first = api.get("/api/v1/assets/trailer-001/telemetry",
                    params={"point": "supply_air", "start": T0, "end": T0 + 60 * S, "limit": 40}).json()
    assert len(first["t_ns"]) == 40 and first["next_cursor"] == str(T0 + 39 * S + 1)
    rest = api.get("/api/v1/assets/trailer-001/telemetry",
                   params={"point": "supply_air", "start": T0, "end": T0 + 60 * S, "limit": 40,
                           "cursor": first["next_cursor"]}).json()
    assert rest["t_ns"] == [T0 + i * S for i in range(40, 60)] and rest["next_cursor"] is None
    for route, key in (("/api/v1/assets", "id"), ("/api/v1/twins", "asset"), ("/api/v1/alerts", "id"),
                       ("/api/v1/assets/trailer-001/anomalies", "event_id"), ("/api/v1/audit", "id")):
        whole = [item[key] for item in api.get(route, params={"limit": 100}).json()["items"]]
        paged, cursor = [], None
        while True:
            page = api.get(route, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            paged += [item[key] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert len(whole) >= 2 and paged == whole, route


@pytest.mark.parametrize(("parameter", "value"), [
    ("start", "²"), ("start", "¹²"), ("end", "99999999999999999999999"), ("end", "-99999999999999999999999"),
    ("start", "9999-12-31T23:59:59Z"), ("end", "0001-01-01T00:00:00+14:00"), ("start", "2026-13-45"),
])
def test_a_time_that_is_not_one_is_a_422_naming_it(api, parameter, value):
    for route, extra in (("/api/v1/assets/trailer-001/telemetry", {"point": "supply_air"}),
                         ("/api/v1/assets/trailer-001/anomalies", {})):
        _problem(api.get(route, params={parameter: value, **extra}), 422, parameter)


def test_times_in_ns_and_iso_8601_are_both_read(api):
    iso = api.get("/api/v1/assets/trailer-001/telemetry",
                  params={"point": "supply_air", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:10.5Z"})
    ns = api.get("/api/v1/assets/trailer-001/telemetry",
                 params={"point": "supply_air", "start": str(T0), "end": str(T0 + 10 * S + S // 2)})
    assert iso.json()["t_ns"] == ns.json()["t_ns"] == [T0 + i * S for i in range(11)]
    assert ns.json()["end_ns"] == T0 + 10 * S + S // 2


def test_an_empty_optional_parameter_is_an_absent_one(api):
    """As a form leaves it: ``?site=&every=`` filters nothing and aggregates nothing."""
    assert [a["id"] for a in api.get("/api/v1/assets", params={"site": "", "type": ""}).json()["items"]] == \
        ["trailer-001", "trailer-002", "trailer-003"]
    r = api.get("/api/v1/assets/trailer-001/telemetry",
                params={"point": "supply_air", "start": "", "end": "", "every": "", "cursor": ""})
    assert r.status_code == 200 and r.json()["every_ns"] is None


@pytest.mark.parametrize("every", ["99999999999999999999d", "²s", "0s", "-1s", "1.5h", "10", "1y"])
def test_a_window_that_is_not_a_duration_is_a_422_naming_every(api, every):
    _problem(api.get("/api/v1/assets/trailer-001/telemetry", params={"point": "supply_air", "every": every}),
             422, "every")


def test_a_window_wider_than_the_range_is_one_window(api):
    r = api.get("/api/v1/assets/trailer-001/telemetry",
                params={"point": "supply_air", "start": T0, "end": T0 + 60 * S, "every": "3650d", "agg": "count"})
    assert r.status_code == 200 and r.json()["values"] == [60]


@pytest.mark.parametrize("point", ["supply\nair", "supply_air\x00", "\x00", "a\rb", "back\\slash", ""])
def test_a_point_with_a_control_character_is_a_422_naming_point(api, point):
    _problem(api.get("/api/v1/assets/trailer-001/telemetry", params={"point": point}), 422, "point")


@pytest.mark.parametrize("route", ["/api/v1/assets/{}", "/api/v1/assets/{}/latest", "/api/v1/twins/{}",
                                   "/api/v1/gateways/{}", "/api/v1/shipments/{}", "/api/v1/batches/{}"])
def test_a_path_id_with_a_nul_or_newline_is_a_422_naming_it(api, route):
    name = {"assets": "asset", "twins": "asset", "gateways": "gateway", "shipments": "shipment_id",
            "batches": "lot"}[route.split("/")[3]]
    for value in ("a\x00b", "a\nb"):
        _problem(api.get(route.format(quote(value, safe=""))), 422, name)


BODY_PROBES = {
    ("POST", "/api/v1/sites"): {"id": "dc-9", "name": "n", "parent": "dc-1"},
    ("POST", "/api/v1/assets"): {"id": "a-9", "type": "refrigerated-trailer", "gateway": "gw-a", "site": "dc-1",
                                 "line": "dc-1", "name": "n"},
    ("POST", "/api/v1/asset-types"): {"id": "pump-x", "name": "n", "description": "d", "points": {"p": {"unit": "C"}}},
    ("POST", "/api/v1/keys"): {"role": "viewer", "name": "n"},
    ("POST", "/api/v1/keys/k-none/revoke"): {"reason": "r"},
    ("POST", "/api/v1/alerts/1/ack"): {"note": "n"},
    ("PUT", "/api/v1/twins/trailer-001/desired"): {"desired": {"mode": "eco"}, "reason": "r"},
    ("PUT", "/api/v1/gateways/gw-a/config"): {"config": {"x": "y"}, "reason": "r"},
    ("POST", "/api/v1/shipments"): {"profile": "who-type-1", "origin_site": "dc-1", "destination_site": "dc-2",
                                    "reference": "r"},
    ("POST", "/api/v1/shipments/shp-1/custody"): {"asset": "trailer-001", "from": T0, "point": "supply_air"},
    ("POST", "/api/v1/shipments/shp-1/batches"): {"lot": "lot-1", "product": "p", "quantity": 1, "unit": "u"},
    ("POST", "/api/v1/batches/lot-1/release"): {"reason": "r", "username": "u", "password": "p"},
    ("POST", "/api/v1/subjects/erase"): {"subject": "s", "reason": "r"},
    ("POST", "/api/v1/assets/trailer-001/baseline"): {"reason": "r", "points": ["supply_air"], "start": T0},
    ("POST", "/api/v1/assets/trailer-001/simulate"): {"at": "2026-01-01T00:00:00Z"},
}
"""A valid body of each operation that stores or looks up what it is sent."""


def test_no_string_in_a_body_causes_a_server_error(api):
    """PostgreSQL stores no NUL and no string longer than its column: a NUL anywhere in a body answers 422
    naming the field, a string of 10,000 characters a 4xx (or is stored whole where it may be), never a 5xx."""
    for site in ("dc-1", "dc-2"):
        api.post("/api/v1/sites", json={"id": site})
    assert api.post("/api/v1/shipments", json={"id": "shp-1", "profile": "who-type-1", "origin_site": "dc-1",
                                               "destination_site": "dc-2"}).status_code == 201
    for (method, path), body in BODY_PROBES.items():
        for field, value in body.items():
            if not isinstance(value, str | list):
                continue
            for hostile in ("a\x00b", "x" * 10_000):
                r = api.request(method, path, json={**body, field: [hostile] if isinstance(value, list) else hostile},
                                headers={"If-Match": '"0"'})
                assert r.status_code < 500, (method, path, field, hostile[:5], r.status_code, r.text[:200])
                if "\x00" in hostile:
                    _problem(r, 422, field)
    r = api.put("/api/v1/twins/trailer-001/desired", json={"desired": {"mode": {"a\x00": 1}}},
                headers={"If-Match": '"0"'})
    assert "desired.mode.a\\x00: U+0000 (NUL) cannot be stored" in _problem(r, 422, "desired")


def _operations(client: TestClient) -> list[tuple[str, str, list[tuple[str, str, bool]]]]:
    """(method, path template, [(where, name, required)]) for every operation with query or path parameters."""
    out = []
    for path, ops in client.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            params = [(p["in"], p["name"], p.get("required", False)) for p in op.get("parameters", [])
                      if p["in"] in ("query", "path")]
            if params:
                out.append((method.upper(), path, params))
    return out


def test_no_malformed_parameter_causes_a_server_error(api):
    """Every hostile value in every query and path parameter: 4xx (or a 2xx where the value happens to be
    valid), and a 422 names the parameter."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for method, path, params in _operations(api):
        for where, name, _ in params:
            for value in HOSTILE:
                url = path
                query = {n: VALID[n] for w, n, required in params if w == "query" and required and n != name}
                for w, n, _ in params:
                    if w == "path":
                        url = url.replace("{" + n + "}", quote(value if n == name else VALID[n], safe=""))
                if where == "query":
                    query[name] = value
                r = api.request(method, url, params=query, json=BODIES.get(path),
                                headers={"If-Match": '"0"'} if method == "PUT" else {})
                statuses[r.status_code] += 1
                what = f"{method} {path} {where}.{name}={value[:40]!r}"
                if r.status_code >= 500:
                    failures.append(f"{what}: {r.status_code} {r.text[:200]}")
                elif r.status_code == 422 and (r.headers["content-type"] != PROBLEM or name not in r.json()["detail"]):
                    failures.append(f"{what}: 422 not naming {name}: {r.text[:200]}")
    print(f"\nparameter probes: {sum(statuses.values())}, statuses {dict(sorted(statuses.items()))}, "
          f"{len(failures)} failing")
    assert sum(statuses.values()) >= 59 * len(HOSTILE)
    assert not failures, "\n".join(failures)
