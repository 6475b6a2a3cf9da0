"""Hostile or careless clients: body size and rate limits, CORS closed by default, security headers,
keys shown once, stored hashed and revocable."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import ApiKey
from cloud.settings import CloudSettings


def _platform(tmp_path, **settings) -> Platform:
    return Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", store="embedded",
                                       embedded_path=str(tmp_path / "ts.sqlite"), **settings))


def test_a_body_over_the_limit_is_refused_with_413(tmp_path):
    p = _platform(tmp_path, api_max_body_bytes=1000)
    key = p.registry.create_api_key("acme", "admin")
    c = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    r = c.post("/api/v1/sites", content=b"{" + b" " * 2000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["title"] == "Payload too large"

    def chunks():
        for _ in range(5):
            yield b" " * 400  # no Content-Length: counted as it streams

    r = c.post("/api/v1/sites", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert c.post("/api/v1/sites", json={"id": "dc-1"}).status_code == 201


def test_each_key_is_rate_limited_on_its_own(tmp_path):
    p = _platform(tmp_path, api_rate_per_s=1.0, api_rate_burst=5)
    a, b = p.registry.create_api_key("acme", "viewer"), p.registry.create_api_key("acme", "viewer")
    c = TestClient(create_app(p))
    codes = [c.get("/api/v1/assets", headers={"X-API-Key": a}).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    r = c.get("/api/v1/assets", headers={"X-API-Key": a})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert c.get("/api/v1/assets", headers={"X-API-Key": b}).status_code == 200


def test_cors_is_closed_by_default_and_open_only_to_listed_origins(tmp_path):
    closed = TestClient(create_app(_platform(tmp_path)))
    r = closed.options("/api/v1/assets", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    (tmp_path / "open").mkdir()
    p = _platform(tmp_path / "open", api_cors_origins=["https://ops.example"])
    opened = TestClient(create_app(p))
    r = opened.options("/api/v1/assets", headers={"Origin": "https://ops.example",
                                                  "Access-Control-Request-Method": "GET"})
    assert r.headers["access-control-allow-origin"] == "https://ops.example"
    r = opened.options("/api/v1/assets", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_responses_carry_security_headers(tmp_path):
    r = TestClient(create_app(_platform(tmp_path))).get("/health")
    assert (r.headers["x-content-type-options"], r.headers["x-frame-options"], r.headers["referrer-policy"]) == \
        ("nosniff", "DENY", "no-referrer")


def test_keys_are_shown_once_stored_hashed_and_revocable(tmp_path):
    p = _platform(tmp_path, api_key_cache_s=0.0)
    admin = TestClient(create_app(p), headers={"Authorization": f"Bearer {p.registry.create_api_key('acme', 'admin')}"})
    made = admin.post("/api/v1/keys", json={"role": "operator", "name": "night shift"}).json()
    assert made["key"].startswith("twk_") and made["role"] == "operator"
    with p.registry.session() as s:
        stored = s.scalar(select(ApiKey).where(ApiKey.id == made["id"]))
        assert stored.hash != made["key"] and made["key"] not in stored.hash
    listed = admin.get("/api/v1/keys").json()["items"]
    assert all("key" not in k and "hash" not in k for k in listed)
    op = TestClient(create_app(p), headers={"Authorization": f"Bearer {made['key']}"})
    assert op.get("/api/v1/me").json() == {"tenant": "acme", "role": "operator", "key_id": made["id"],
                                           "name": "night shift"}
    assert admin.post(f"/api/v1/keys/{made['id']}/revoke", json={"reason": "laptop lost"}).status_code == 200
    assert op.get("/api/v1/me").status_code == 401
    assert admin.post("/api/v1/keys", json={"role": "emperor"}).status_code == 422
    assert [e["action"] for e in admin.get("/api/v1/audit").json()["items"]][:2] == ["key.revoke", "key.create"]
