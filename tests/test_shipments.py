"""Shipments and batches against real servers (Mosquitto, InfluxDB; the registry on SQLite and on
PostgreSQL): an excursion quarantines exactly the batches that were in that container at that time, QA
releases or rejects them with a signed reason, the audit trail keeps every state, the report recomputes
MKT from the stored readings, and another tenant sees none of it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Asset, Site, User
from cloud.rules.coldchain import evaluate, load_profile, mkt_c
from cloud.rules.coldchain.mkt import hold_durations_ns
from cloud.sharing import issue_customer_key
from cloud.shipments import attach, canonical_json, create_user, verify_record
from cloud.shipments.signing import KeyStore
from cloud.store import Rows
from tests.harness.processes import wait_until

S = 1_000_000_000
H = 3600 * S
T0 = (time.time_ns() // H - 72) * H  # three days ago, on the hour
PROFILE = "who-type-1"
QUINN = {"username": "quinn", "password": "correct horse battery"}
"""The QA person's login and password, entered at every signature."""
ALICE = {"username": "alice", "password": "alice's own passphrase"}


@pytest.fixture
def platform(linked_platform, tmp_path):
    p = linked_platform
    p.settings.signing_key_dir = str(tmp_path / "signing-keys")  # outside the registry, as in production
    attach(p).keys = KeyStore(p.settings.signing_key_dir)  # the platform attached its service when it opened
    reg = p.registry
    keys = {role: reg.issue_api_key("acme", role, name) for role, name in
            (("admin", "alice"), ("qa", "quinn"), ("operator", "olga"), ("viewer", "victor"))}
    keys["other"] = reg.issue_api_key("globex", "admin", "mallory")
    with reg.session() as s:
        for tenant, site in (("acme", "dc-1"), ("acme", "store-7"), ("globex", "dc-g"), ("globex", "store-g")):
            s.add(Site(tenant=tenant, id=site, name=site, kind="site"))
        for tenant, asset in (("acme", "trailer-1"), ("acme", "trailer-2"), ("acme", "coldroom-7"),
                              ("globex", "trailer-1")):
            s.add(Asset(tenant=tenant, id=asset, type="refrigerated-trailer", first_seen_ns=0))
    create_user(reg, "acme", "test", username="quinn", full_name="Quinn Quality", role="qa", **_pw(QUINN))
    create_user(reg, "acme", "test", username="alice", full_name="Alice Admin", role="admin", **_pw(ALICE))
    create_user(reg, "acme", "test", username="olga", full_name="Olga Operator", role="operator",
                password="operators sign nothing")
    app = create_app(p)
    clients = {role: TestClient(app, headers={"Authorization": f"Bearer {key}"}) for role, (_, key) in keys.items()}
    actors = {role: f"key:{key_id} ({name})" for (role, (key_id, _)), name in
              zip(keys.items(), ("alice", "quinn", "olga", "victor", "mallory"), strict=True)}
    return p, clients, actors


def _pw(creds: dict[str, str]) -> dict[str, str]:
    return {"password": creds["password"]}


def _shipment(c: TestClient, sid: str, legs: list[tuple[str, int, int | None]], lots: list[dict],
              origin: str = "dc-1", destination: str = "store-7") -> None:
    r = c.post("/api/v1/shipments", json={"id": sid, "profile": PROFILE, "origin_site": origin,
                                          "destination_site": destination})
    assert r.status_code == 201, r.text
    for asset, start, end in legs:
        r = c.post(f"/api/v1/shipments/{sid}/custody", json={"asset": asset, "from": start, "to": end})
        assert r.status_code == 201, r.text
    for lot in lots:
        r = c.post(f"/api/v1/shipments/{sid}/batches", json={"product": "vaccine", "quantity": 100, **lot})
        assert r.status_code == 201, r.text


def _states(c: TestClient, lots: list[str]) -> dict[str, str]:
    return {lot: c.get(f"/api/v1/batches/{lot}").json()["state"] for lot in lots}


def _listen(url: str, topic_filter: str) -> tuple[mqtt.Client, list]:
    host, port = url.removeprefix("mqtt://").split(":")
    got: list = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, *_: cl.subscribe(topic_filter, 1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda cl, u, m: got.append((m.topic, json.loads(m.payload)))
    c.connect(host, int(port))
    c.loop_start()
    assert ready.wait(10)
    return c, got


def test_an_excursion_quarantines_exactly_the_batches_in_that_trailer_at_that_time(platform, mosquitto):
    p, c, _ = platform
    op = c["operator"]
    listener, notes = _listen(mosquitto.url, "twin/v1/+/notifications/#")
    _shipment(op, "in", [("trailer-1", T0, None), ("trailer-2", T0 + 10 * H, None)],
              [{"lot": "IN-1"}, {"lot": "IN-2"}, {"lot": "DROPPED", "unloaded": T0 + 3 * H}])
    _shipment(op, "left", [("trailer-1", T0, T0 + 4 * H), ("trailer-2", T0 + 4 * H, None)], [{"lot": "LEFT"}])
    _shipment(op, "left-as-it-began", [("trailer-1", T0, T0 + 5 * H), ("coldroom-7", T0 + 5 * H, None)],
              [{"lot": "EDGE"}])
    _shipment(op, "after", [("trailer-2", T0, T0 + 7 * H), ("trailer-1", T0 + 7 * H, None)], [{"lot": "AFTER"}])
    _shipment(op, "elsewhere", [("trailer-2", T0, None)], [{"lot": "ELSEWHERE"}])
    _shipment(c["other"], "g", [("trailer-1", T0, None)], [{"lot": "GLOBEX"}], "dc-g", "store-g")

    svc = attach(p)
    got = svc.quarantine_for_excursion("acme", "trailer-1", T0 + 5 * H, T0 + 6 * H, "heat-total: >= 30 °C for 10 h")

    assert got == ["IN-1", "IN-2"]
    assert _states(op, ["IN-1", "IN-2", "DROPPED", "LEFT", "EDGE", "AFTER", "ELSEWHERE"]) == {
        "IN-1": "quarantined", "IN-2": "quarantined", "DROPPED": "available", "LEFT": "available",
        "EDGE": "available", "AFTER": "available", "ELSEWHERE": "available"}
    assert c["other"].get("/api/v1/batches/GLOBEX").json()["state"] == "available"
    excursions = op.get("/api/v1/batches/IN-1").json()["excursions"]
    assert [(e["asset"], e["start_ns"], e["end_ns"]) for e in excursions] == [("trailer-1", T0 + 5 * H, T0 + 6 * H)]

    wait_until(lambda: len(notes) >= 2, what="the DC and store notifications")
    assert sorted(t for t, _ in notes) == ["twin/v1/acme/notifications/dc/dc-1",
                                           "twin/v1/acme/notifications/store/store-7"]
    for _, body in notes:
        assert (body["event"], body["shipment"], body["lots"]) == ("batches.quarantined", "in", ["IN-1", "IN-2"])
    # Nothing else was announced: the next notification is the QA decision's.
    c["qa"].post("/api/v1/batches/IN-1/release", json={**QUINN, "reason": "MKT within limit"}).raise_for_status()
    wait_until(lambda: len(notes) >= 4, what="the release notifications")
    assert len(notes) == 4 and {b["event"] for _, b in notes[2:]} == {"batch.released"}
    listener.loop_stop()
    listener.disconnect()


def test_an_excursion_alert_quarantines_and_an_equipment_alert_does_not(platform):
    p, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "L1"}])

    p.alerts.raise_alert("acme", "trailer-1", "coldchain:door-open-long", "medium", "door open 25 min",
                         {"window": {"start_ns": T0 + H, "end_ns": T0 + 2 * H}})
    p.notifier.drain()
    assert _states(c["viewer"], ["L1"]) == {"L1": "available"}

    alert_id, _ = p.alerts.raise_alert("acme", "trailer-1", f"coldchain:{PROFILE}:heat-total", "high",
                                       "supply_air >= 30 °C for 10 h", {"window": {"start_ns": T0 + H,
                                                                                  "end_ns": T0 + 2 * H}})
    p.notifier.drain()
    batch = c["viewer"].get("/api/v1/batches/L1").json()
    assert batch["state"] == "quarantined"
    assert [(e["alert_id"], e["start_ns"], e["end_ns"]) for e in batch["excursions"]] == [
        (alert_id, T0 + H, T0 + 2 * H)]

    # The rules report the same alert again, longer: the window widens, a released lot stays released.
    c["qa"].post("/api/v1/batches/L1/release", json={**QUINN, "reason": "reviewed"}).raise_for_status()
    assert attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 3 * H, "again", alert_id) == []
    batch = c["viewer"].get("/api/v1/batches/L1").json()
    assert batch["state"] == "released" and batch["excursions"][0]["end_ns"] == T0 + 3 * H


def test_custody_entered_after_the_excursion_still_quarantines(platform):
    p, c, _ = platform
    attach(p).quarantine_for_excursion("acme", "trailer-2", T0 + 2 * H, T0 + 3 * H, "freeze")
    _shipment(c["operator"], "late", [("trailer-2", T0, T0 + 4 * H)], [{"lot": "LATE-1"}])
    _shipment(c["operator"], "later", [("trailer-2", T0 + 4 * H, None)], [{"lot": "LATE-2"}])
    assert _states(c["viewer"], ["LATE-1", "LATE-2"]) == {"LATE-1": "quarantined", "LATE-2": "available"}


def test_qa_release_and_reject_are_signed_and_every_state_is_audited(platform):
    p, c, actors = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}, {"lot": "B"}])
    _shipment(c["operator"], "s2", [("trailer-2", T0, None)], [{"lot": "CALM"}])
    svc = attach(p)
    svc.quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 2 * H, "heat-spike")

    for role in ("viewer", "operator"):
        r = c[role].post("/api/v1/batches/A/release", json={**QUINN, "reason": "fine"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", role
    for body in ({**QUINN, "reason": ""}, {**QUINN, "reason": "   "}, {}, {"reason": "no signature"}):
        assert c["qa"].post("/api/v1/batches/A/release", json=body).status_code == 422, body
    assert c["qa"].post("/api/v1/batches/CALM/release", json={**QUINN, "reason": "x"}).status_code == 409

    # Without re-authentication there is no signature: a wrong password, an unknown login, a person who may not
    # sign (an operator), each refused (403) and audited, the batch unchanged.
    for creds in ({**QUINN, "password": "correct horse battery!"}, {"username": "nobody", "password": "x" * 12},
                  {"username": "olga", "password": "operators sign nothing"}):
        r = c["qa"].post("/api/v1/batches/A/release", json={**creds, "reason": "fine"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", creds
        assert r.json()["title"] == "Signature refused"
    assert _states(c["viewer"], ["A"]) == {"A": "quarantined"}

    r = c["qa"].post("/api/v1/batches/A/release", json={**QUINN, "reason": "MKT 6.2 °C within the 8 °C limit"})
    assert r.status_code == 200, r.text
    first = r.json()["decision"]
    record = first["record"]
    signer = "Quinn Quality (quinn)"
    assert (first["signer"], first["meaning"], first["reason"]) == (signer, "released",
                                                                    "MKT 6.2 °C within the 8 °C limit")
    assert (record["signer"], record["meaning"], record["statement"], record["signed_at"], record["signer_login"]) \
        == (signer, "released", "released", first["signed_at"], "quinn")
    assert record["batch"]["state"] == "quarantined" and record["batch"]["version"] == 1
    assert [e["reason"] for e in record["excursions"]] == ["heat-spike"] and record["previous_signature"] is None
    (key,) = c["viewer"].get("/api/v1/signing-keys").json()["items"]
    body = canonical_json(record)
    assert first["digest"] == hashlib.sha256(body).hexdigest() and len(first["signature"]) == 128
    assert record["key_id"] == first["key_id"] == key["id"] and key["algorithm"] == "ed25519"
    assert verify_record(key["public_key"], record, first["digest"], first["signature"])
    assert not verify_record(key["public_key"], {**record, "reason": "edited later"}, first["digest"],
                             first["signature"])
    # The private key is not in the registry: only the public half, and the key file outside it.
    with p.registry.engine.connect() as conn:
        dumped = "".join(str(row) for t in ("signing_public_keys", "batch_decisions", "users")
                         for row in conn.exec_driver_sql(f"SELECT * FROM {t}"))
    assert "PRIVATE KEY" not in dumped and "correct horse" not in dumped
    with p.registry.session() as s:
        assert s.get(User, ("acme", "quinn")).password_hash.startswith("scrypt$16384$8$1$")
    assert (Path(p.settings.signing_key_dir) / "acme" / f"{key['id']}.pem").read_text().startswith(
        "-----BEGIN PRIVATE KEY-----")
    assert r.json()["batch"]["state"] == "released" and r.json()["batch"]["decisions"][0]["verified"] is True

    assert c["qa"].post("/api/v1/batches/A/release", json={**QUINN, "reason": "again"}).status_code == 409
    assert c["qa"].post("/api/v1/batches/A/reject", json={**QUINN, "reason": "again"}).status_code == 409
    r = c["admin"].post("/api/v1/batches/B/reject", json={**ALICE, "reason": "temperature logger data missing"})
    assert r.status_code == 200 and r.json()["batch"]["state"] == "rejected"

    # A second excursion quarantines the released lot again (not the rejected one); the next signature
    # chains to the first.
    assert svc.quarantine_for_excursion("acme", "trailer-1", T0 + 5 * H, T0 + 6 * H, "heat-total") == ["A"]
    second = c["qa"].post("/api/v1/batches/A/reject", json={**QUINN, "reason": "second excursion"}).json()["decision"]
    assert second["record"]["previous_signature"] == first["signature"]
    assert second["record"]["batch"]["version"] == 3 and len(second["record"]["excursions"]) == 2

    audit = c["admin"].get("/api/v1/audit", params={"limit": 1000}).json()["items"][::-1]
    trail = [(e["action"], (e["before"] or {}).get("state"), (e["after"] or {}).get("state"), e["actor"])
             for e in audit if e["target"] == "batch:A"]
    assert trail == [("batch.create", None, "available", actors["operator"]),
                     ("batch.quarantine", "available", "quarantined", "system:coldchain"),
                     *[("signature.refused", None, None, actors["qa"])] * 3,
                     ("batch.release", "quarantined", "released", signer),
                     ("batch.quarantine", "released", "quarantined", "system:coldchain"),
                     ("batch.reject", "quarantined", "rejected", signer)]
    release = next(e for e in audit if e["action"] == "batch.release")
    assert release["reason"] == "MKT 6.2 °C within the 8 °C limit"
    assert release["after"]["signature"] == first["signature"] and release["after"]["via"] == actors["qa"]


def test_another_tenants_shipments_and_batches_are_not_found(platform):
    _, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}])
    other = c["other"]
    assert other.get("/api/v1/shipments").json()["items"] == []
    for method, path, body in (("get", "/api/v1/shipments/s1", None), ("get", "/api/v1/shipments/s1/report", None),
                               ("get", "/api/v1/shared/shipments/s1", None),
                               ("get", "/api/v1/shared/shipments/s1/report", None),
                               ("get", "/api/v1/batches/A", None),
                               ("post", "/api/v1/shipments/s1/custody", {"asset": "trailer-1", "from": T0 + H}),
                               ("post", "/api/v1/shipments/s1/batches", {"lot": "X", "product": "p", "quantity": 1}),
                               ("put", "/api/v1/shipments/s1/consignee", {"name": "n", "email": "a@b.example"}),
                               ("post", "/api/v1/batches/A/release", {**QUINN, "reason": "mine now"}),
                               ("post", "/api/v1/batches/A/reject", {**QUINN, "reason": "mine now"})):
        r = getattr(other, method)(path, **({"json": body} if body else {}))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", (path, r.text)
    r = c["operator"].post("/api/v1/shipments", json={"profile": PROFILE, "origin_site": "dc-g",
                                                      "destination_site": "store-7"})
    assert r.status_code == 422  # another tenant's site


def test_custody_legs_hand_over_and_never_overlap(platform):
    _, c, _ = platform
    op = c["operator"]
    for body in ({"profile": "no-such-profile"}, {"profile": "/etc/passwd"}, {"origin_site": "nowhere"}):
        r = op.post("/api/v1/shipments", json={"profile": PROFILE, "origin_site": "dc-1",
                                               "destination_site": "store-7", **body})
        assert r.status_code == 422, body
    assert c["viewer"].post("/api/v1/shipments", json={"profile": PROFILE, "origin_site": "dc-1",
                                                       "destination_site": "store-7"}).status_code == 403
    _shipment(op, "s1", [("trailer-1", T0, None)], [{"lot": "A"}])
    assert op.post("/api/v1/shipments", json={"id": "s1", "profile": PROFILE, "origin_site": "dc-1",
                                              "destination_site": "store-7"}).status_code == 409
    leg = op.post("/api/v1/shipments/s1/custody", json={"asset": "trailer-2", "from": T0 + 5 * H})
    assert leg.status_code == 201
    legs = op.get("/api/v1/shipments/s1").json()["legs"]
    assert [(x["asset"], x["from_ns"], x["to_ns"]) for x in legs] == [("trailer-1", T0, T0 + 5 * H),
                                                                     ("trailer-2", T0 + 5 * H, None)]
    for body, status in (({"asset": "coldroom-7", "from": T0 + H, "to": T0 + 2 * H}, 409),
                         ({"asset": "coldroom-7", "from": T0 + 3 * H}, 409),
                         ({"asset": "coldroom-7", "from": T0 - 2 * H, "to": T0 - 3 * H}, 422),
                         ({"asset": "trailer-9", "from": T0 - 2 * H, "to": T0 - H}, 422),
                         ({"asset": "coldroom-7", "from": "yesterday"}, 422)):
        r = op.post("/api/v1/shipments/s1/custody", json=body)
        assert r.status_code == status, (body, r.text)
    before = op.post("/api/v1/shipments/s1/custody", json={"asset": "coldroom-7", "from": T0 - 2 * H, "to": T0})
    assert before.status_code == 201  # an earlier leg that touches the first one is fine
    assert op.post("/api/v1/shipments/s1/batches", json={"lot": "A", "product": "p", "quantity": 1}).status_code == 409
    for sid in ("s2", "s3"):
        _shipment(op, sid, [], [])
    page = op.get("/api/v1/shipments", params={"limit": 2}).json()
    rest = op.get("/api/v1/shipments", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [x["id"] for x in page["items"] + rest["items"]] == ["s1", "s2", "s3"] and rest["next_cursor"] is None


def _write(p: Platform, asset: str, t: np.ndarray, v: np.ndarray) -> None:
    rows = Rows()
    rows.extend_series("acme", asset, "supply_air", t.tolist(), v.tolist(), [0] * t.size)
    p.store.write(rows)


def test_the_report_computes_mkt_from_stored_readings_and_prints_the_chart_and_decisions(platform):
    p, c, _ = platform
    step = 10 * 60 * S
    rng = np.random.default_rng(7)
    t1 = np.arange(T0 - 2 * H, T0 + 12 * H, step, dtype=np.int64)  # trailer-1 logs before and after the leg too
    v1 = np.round(5.0 + rng.normal(0, 0.8, t1.size), 2)
    v1[(t1 >= T0 + 4 * H) & (t1 < T0 + 5 * H)] = 12.5  # the excursion
    v1[t1 >= T0 + 8 * H] = 21.0  # another load's temperature, after the hand-over: not this shipment's
    t2 = np.arange(T0, T0 + 14 * H, step, dtype=np.int64)
    v2 = np.round(4.0 + rng.normal(0, 0.5, t2.size), 2)
    _write(p, "trailer-1", t1, v1)
    _write(p, "trailer-2", t2, v2)
    _shipment(c["operator"], "s1", [("trailer-1", T0, None), ("trailer-2", T0 + 8 * H, None)],
              [{"lot": "WHOLE"}, {"lot": "LATE", "loaded": T0 + 6 * H}, {"lot": "EARLY", "unloaded": T0 + 3 * H}])
    assert attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + 4 * H, T0 + 5 * H, "12.5 °C") == ["WHOLE"]
    reason = "1 h at 12.5 °C: no stability data"
    c["qa"].post("/api/v1/batches/WHOLE/reject", json={**QUINN, "reason": reason}).raise_for_status()

    leg1, leg2 = (t1 >= T0) & (t1 < T0 + 8 * H), t2 >= T0 + 8 * H
    t, v = np.concatenate([t1[leg1], t2[leg2]]), np.concatenate([v1[leg1], v2[leg2]])
    profile = load_profile(PROFILE)
    rep = c["viewer"].get("/api/v1/shipments/s1/report").json()
    assert rep["temperature"]["readings"] == t.size
    assert rep["temperature"]["mkt_c"] == evaluate(t, v, profile).mkt_c == mkt_c(v, hold_durations_ns(t))
    expected = {"WHOLE": np.ones(t.size, bool), "LATE": t >= T0 + 6 * H, "EARLY": t < T0 + 3 * H}
    for b in rep["batches"]:
        keep = expected[b["lot"]]
        assert b["temperature"]["mkt_c"] == evaluate(t[keep], v[keep], profile).mkt_c, b["lot"]
    assert len({b["temperature"]["mkt_c"] for b in rep["batches"]}) == 3
    assert [(x["asset"], x["readings"]) for x in rep["legs"]] == [("trailer-1", leg1.sum()), ("trailer-2", leg2.sum())]
    assert [e["reason"] for e in rep["excursions"]] == ["12.5 °C"]
    signer = "Quinn Quality (quinn)"
    assert [(d["lot"], d["meaning"], d["signer"], d["verified"]) for d in rep["decisions"]] == [
        ("WHOLE", "rejected", signer, True)]
    assert {"shipment.create", "custody.add", "custody.close", "batch.quarantine", "batch.reject"} <= \
        {a["action"] for a in rep["audit"]}

    r = c["viewer"].get("/api/v1/shipments/s1/report", params={"format": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<svg" in page and page.count("<polyline") == 2
    assert reason in page and signer in page
    assert "rejected" in page and rep["decisions"][0]["signature"] in page
    assert f"{rep['temperature']['mkt_c']:.2f} °C" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page and "<link" not in page


def _ppm(data: bytes) -> np.ndarray:
    """A binary PPM (P6, what pdftoppm writes by default) as an (h, w, 3) array."""
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255"
    w, h = int(parts[1]), int(parts[2])
    return np.frombuffer(parts[4][: w * h * 3], np.uint8).reshape(h, w, 3)


def _near(img: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img.astype(int) - rgb).max(axis=2) <= tol).sum())


def test_the_report_as_pdf_opens_and_its_first_page_shows_the_chart_with_the_alarm_boundaries(platform, tmp_path):
    p, c, _ = platform
    step = 10 * 60 * S
    t1 = np.arange(T0, T0 + 12 * H, step, dtype=np.int64)
    v1 = np.round(5.0 + np.sin(np.arange(t1.size) / 6.0), 2)
    v1[(t1 >= T0 + 4 * H) & (t1 < T0 + 5 * H)] = 31.5  # above who-type-1's 30 °C boundary
    _write(p, "trailer-1", t1, v1)
    _shipment(c["operator"], "pdf", [("trailer-1", T0, None)], [{"lot": "P1"}])
    attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + 4 * H, T0 + 5 * H, "31.5 °C")
    c["qa"].post("/api/v1/batches/P1/reject", json={**QUINN, "reason": "1 h at 31.5 °C"}).raise_for_status()

    r = c["viewer"].get("/api/v1/shipments/pdf/report", params={"format": "pdf"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf" and r.content[:5] == b"%PDF-"
    (tmp_path / "report.pdf").write_bytes(r.content)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"], check=True,
                          capture_output=True, text=True).stdout
    for words in ("Shipment pdf: cold-chain record", "Mean kinetic temperature", "Custody", "Quality decisions",
                  "Quinn Quality (quinn)", "rejected: 1 h at 31.5", "Audit trail", "heat-total 30 °C"):
        assert words in text, words
    page = _ppm(subprocess.run(["pdftoppm", "-r", "100", "-f", "1", "-l", "1", str(tmp_path / "report.pdf")],
                               check=True, capture_output=True).stdout)
    assert page.shape[1] > page.shape[0]  # A4 landscape
    assert _near(page, "#1f77b4") > 400  # the trailer's temperature line
    assert _near(page, "#d62728", tol=30) > 1000  # the dashed alarm boundaries, the shaded excursion


def _verify(tmp_path: Path, doc: object, key: str) -> subprocess.CompletedProcess:
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    (tmp_path / "key.pem").write_text(key)
    return subprocess.run([sys.executable, "-m", "twin", "coldchain", "verify", str(tmp_path / "doc.json"),
                           "--key", str(tmp_path / "key.pem")], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_signed_decision_verifies_offline_with_the_public_key_and_one_altered_byte_breaks_it(platform, tmp_path):
    p, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}, {"lot": "B"}])
    attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 2 * H, "heat-spike")
    first = c["qa"].post("/api/v1/batches/A/release", json={**QUINN, "reason": "reviewed"}).json()["decision"]
    (old,) = c["viewer"].get("/api/v1/signing-keys").json()["items"]

    ok = _verify(tmp_path, first, old["public_key"])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("verified  lot A  released  by Quinn Quality (quinn)")
    # One byte of the signed record changed (the batch's version), however the file was edited: not verified.
    altered = json.loads(json.dumps(first))
    altered["record"]["batch"]["version"] = 2
    bad = _verify(tmp_path, altered, old["public_key"])
    assert bad.returncode == 1 and bad.stdout.startswith("NOT VERIFIED  lot A")
    text = json.dumps(first)
    i = text.index('"reason": "reviewed"') + len('"reason": "r')
    assert _verify(tmp_path, json.loads(text[:i] + "E" + text[i + 1:]), old["public_key"]).returncode == 1
    assert _verify(tmp_path, {"nothing": 1}, old["public_key"]).returncode == 2

    # Rotation: the next decision is signed with a new key; the first still verifies with the retired one, and a
    # whole report verifies against the published key list.
    assert c["operator"].post("/api/v1/signing-keys/rotate").status_code == 403
    rotated = c["admin"].post("/api/v1/signing-keys/rotate")
    assert rotated.status_code == 201
    second = c["qa"].post("/api/v1/batches/B/reject", json={**QUINN, "reason": "no data"}).json()["decision"]
    keys = c["viewer"].get("/api/v1/signing-keys").json()
    assert [k["id"] for k in keys["items"]] == [old["id"], rotated.json()["id"]] == [first["key_id"],
                                                                                   second["key_id"]]
    assert keys["items"][0]["retired_ns"] is not None and keys["items"][1]["retired_ns"] is None
    assert _verify(tmp_path, second, old["public_key"]).returncode == 1  # another key
    report = c["viewer"].get("/api/v1/shipments/s1/report").json()
    assert [d["verified"] for d in report["decisions"]] == [True, True]
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    (tmp_path / "doc.json").write_text(json.dumps(report))
    both = subprocess.run([sys.executable, "-m", "twin", "coldchain", "verify", str(tmp_path / "doc.json"), "--key",
                           str(tmp_path / "keys.json")], capture_output=True, text=True, timeout=120)
    assert both.returncode == 0 and both.stdout.count("verified  lot") == 2, both.stdout + both.stderr


GMP = """\
name: gmp-2-8
description: 2-8 degC product released by QA, then by the qualified person
boundaries:
  - {name: warm, above: 8.0, after: 30m, mode: single, severity: high}
approvals: [qa, qp]
"""


def test_a_profile_that_asks_for_qa_then_the_qualified_person_releases_only_after_both_sign(platform, tmp_path):
    p, c, _ = platform
    (tmp_path / "gmp.yaml").write_text(GMP)
    svc = attach(p)
    assert svc.register_profile(tmp_path / "gmp.yaml") == "gmp-2-8"
    create_user(p.registry, "acme", "test", username="petra", full_name="Petra Person", role="qp",
                password="qualified person's")
    r = c["operator"].post("/api/v1/shipments", json={"id": "gmp", "profile": "gmp-2-8", "origin_site": "dc-1",
                                                      "destination_site": "store-7"})
    assert r.status_code == 201, r.text
    c["operator"].post("/api/v1/shipments/gmp/custody", json={"asset": "trailer-1", "from": T0}).raise_for_status()
    for lot in ("G1", "G2"):
        c["operator"].post("/api/v1/shipments/gmp/batches", json={"lot": lot, "product": "vaccine",
                                                                   "quantity": 5}).raise_for_status()
    svc.quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 2 * H, "warm")
    petra = {"username": "petra", "password": "qualified person's"}

    # The qualified person cannot sign first: QA's stage comes before.
    r = c["qa"].post("/api/v1/batches/G1/release", json={**petra, "reason": "fine"})
    assert r.status_code == 403 and "next stage is qa" in r.json()["detail"]
    first = c["qa"].post("/api/v1/batches/G1/release", json={**QUINN, "reason": "data reviewed"})
    assert first.status_code == 200, first.text
    d1 = first.json()["decision"]
    assert (d1["meaning"], d1["record"]["stage"], d1["record"]["final"]) == ("approved", "qa", False)
    assert d1["record"]["statement"] == "approved (qa); release awaits qp"
    assert first.json()["batch"]["state"] == "quarantined"
    # QA cannot sign the qualified person's stage, nor can an admin who already signed one stage sign the next.
    r = c["qa"].post("/api/v1/batches/G1/release", json={**QUINN, "reason": "again"})
    assert r.status_code == 403 and "next stage is qp" in r.json()["detail"]
    c["qa"].post("/api/v1/batches/G2/release", json={**ALICE, "reason": "as admin"}).raise_for_status()
    r = c["qa"].post("/api/v1/batches/G2/release", json={**ALICE, "reason": "as admin again"})
    assert r.status_code == 403 and "signed an earlier stage" in r.json()["detail"]

    final = c["qa"].post("/api/v1/batches/G1/release", json={**petra, "reason": "certified"})
    assert final.status_code == 200, final.text
    d2 = final.json()["decision"]
    assert (d2["meaning"], d2["record"]["stage"], d2["record"]["final"], d2["signer"]) == (
        "released", "qp", True, "Petra Person (petra)")
    assert d2["record"]["previous_signature"] == d1["signature"]
    batch = final.json()["batch"]
    assert batch["state"] == "released" and [d["verified"] for d in batch["decisions"]] == [True, True]
    audit = c["admin"].get("/api/v1/audit", params={"limit": 1000}).json()["items"][::-1]
    assert [(e["action"], e["actor"]) for e in audit if e["target"] == "batch:G1" and e["action"] != "batch.create"
            and e["action"] != "signature.refused"] == [
        ("batch.quarantine", "system:coldchain"), ("batch.approve", "Quinn Quality (quinn)"),
        ("batch.release", "Petra Person (petra)")]


def test_a_consignee_is_checked_and_its_webhook_secret_shown_once(platform):
    _, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}])
    for body, words in (({"name": "n"}, "give an email, a webhook, or both"),
                        ({"name": "n", "email": "not-an-address"}, "is not an e-mail address"),
                        ({"name": "n", "webhook": "http://10.0.0.1/hook"}, "TWIN_WEBHOOK_ALLOW can admit it"),
                        ({"name": "n", "webhook": "ftp://store.example/x"}, "only http and https")):
        r = c["operator"].put("/api/v1/shipments/s1/consignee", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    assert c["viewer"].put("/api/v1/shipments/s1/consignee", json={"name": "n", "email": "a@b.example"}) \
        .status_code == 403
    r = c["operator"].put("/api/v1/shipments/s1/consignee", json={"name": "Store 7", "email": "in@store7.example"})
    assert r.status_code == 200 and len(r.json()["secret"]) >= 40
    assert c["viewer"].get("/api/v1/shipments/s1").json()["consignee"] == {
        "name": "Store 7", "email": "in@store7.example", "webhook": None, "grantee": None}


def test_a_consignee_key_sees_its_shipments_and_nothing_else(platform):
    p, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}])
    _shipment(c["operator"], "s2", [("trailer-2", T0, None)], [{"lot": "B"}])
    r = c["operator"].put("/api/v1/shipments/s1/consignee", json={"name": "Store 7 Co", "email": "in@store7.example",
                                                                   "grantee": "store-7-co"})
    assert r.status_code == 200, r.text
    attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 2 * H, "heat-spike")
    c["qa"].post("/api/v1/batches/A/reject", json={**QUINN, "reason": "1 h too warm"}).raise_for_status()
    _, key = issue_customer_key(p.registry, "acme", "store-7-co", "test")
    _, other_key = issue_customer_key(p.registry, "acme", "store-8-co", "test")
    mine = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    theirs = TestClient(create_app(p), headers={"Authorization": f"Bearer {other_key}"})

    (shown,) = mine.get("/api/v1/shared/shipments").json()["items"]
    assert shown == mine.get("/api/v1/shared/shipments/s1").json()
    assert (shown["id"], [(b["lot"], b["state"]) for b in shown["batches"]]) == ("s1", [("A", "rejected")])
    assert [(d["lot"], d["statement"], d["signer"], d["verified"]) for d in shown["decisions"]] == [
        ("A", "rejected: 1 h too warm", "Quinn Quality (quinn)", True)]
    assert [e["reason"] for e in shown["excursions"]] == ["heat-spike"]
    report = mine.get("/api/v1/shared/shipments/s1/report").json()
    assert report["audit"] == [] and report["decisions"][0]["verified"] is True
    pdf = mine.get("/api/v1/shared/shipments/s1/report", params={"format": "pdf"})
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    for path in ("/api/v1/shared/shipments/s2", "/api/v1/shared/shipments/s2/report", "/api/v1/shared/shipments/no",
                 "/api/v1/shipments/s1", "/api/v1/shipments/s1/report", "/api/v1/batches/A", "/api/v1/shipments"):
        r = mine.get(path)
        assert r.status_code == 404 and r.json()["detail"] == "no such resource", (path, r.text)
    assert theirs.get("/api/v1/shared/shipments").json()["items"] == []
    assert theirs.get("/api/v1/shared/shipments/s1").status_code == 404
    assert c["viewer"].get("/api/v1/shared/shipments").status_code == 404  # the staff's view is the other one


def test_people_who_sign_are_listed_without_secrets_and_a_disabled_one_signs_no_more(platform):
    p, c, _ = platform
    _shipment(c["operator"], "s1", [("trailer-1", T0, None)], [{"lot": "A"}])
    attach(p).quarantine_for_excursion("acme", "trailer-1", T0 + H, T0 + 2 * H, "heat-spike")
    for body in ({"username": "Bad Name", "full_name": "x", "role": "qa", "password": "long enough pass"},
                 {"username": "zed", "full_name": "Zed", "role": "qa", "password": "short"},
                 {"username": "zed", "full_name": "Zed", "role": "root", "password": "long enough pass"}):
        assert c["admin"].post("/api/v1/users", json=body).status_code == 422, body
    r = c["admin"].post("/api/v1/users", json={"username": "zed", "full_name": "Zed Zero", "role": "qa",
                                               "password": "long enough pass"})
    assert r.status_code == 201 and "password" not in r.text and "scrypt" not in r.text
    assert c["admin"].post("/api/v1/users", json={"username": "zed", "full_name": "Z", "role": "qa",
                                                  "password": "long enough pass"}).status_code == 409
    assert c["qa"].get("/api/v1/users").status_code == 403
    listed = c["admin"].get("/api/v1/users").json()["items"]
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("alice", "admin", False), ("olga", "operator", False), ("quinn", "qa", False), ("zed", "qa", False)]
    assert "hash" not in json.dumps(listed)
    r = c["admin"].post("/api/v1/users/disable", json={"username": "zed", "reason": "left the company"})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert c["admin"].post("/api/v1/users/disable", json={"username": "nobody", "reason": "x"}).status_code == 404
    r = c["qa"].post("/api/v1/batches/A/release", json={"username": "zed", "password": "long enough pass",
                                                        "reason": "fine"})
    assert r.status_code == 403 and _states(c["viewer"], ["A"]) == {"A": "quarantined"}
