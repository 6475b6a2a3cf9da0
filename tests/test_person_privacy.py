"""A personal health twin, private by design (issue 22): the real chain — simulated wearables → home hub
(``twin edge run``) → Mosquitto → ``twin cloud run`` → InfluxDB and PostgreSQL → API — with three people.

Each person is enrolled with a name and birth date, which go only into the identity vault (encrypted, the key in
a file outside the database); their devices speak under the subject id. Consents say who sees whom: Lily's
parents see Lily, Noah's see Noah, the school nurse sees both children's glucose only; the clinic sees Lily and
Noah, not Mia. The tests read as the issue's done-when lines: a carer key sees exactly its people, every read is
audited and break-glass needs a reason, the clear identities are in no InfluxDB series, no registry table but the
vault, no log line and no metric; erasure leaves nothing.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import MetaData, select
from websockets.sync.client import connect as ws_connect

from cloud.registry import AuditEntry, DeadLetter, Registry
from cloud.sharing import issue_customer_key
from simulators.person import publish, simulate_people
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

S = 10**9
DAY = 86_400 * S
PEOPLE = {"lily": {"name": "Lily Wattleford", "birth_date": "2017-03-14"},
          "noah": {"name": "Noah Quillsby", "birth_date": "2016-11-02"},
          "mia": {"name": "Mia Thornbury", "birth_date": "1984-07-21"}}
CLEAR = tuple(v for p in PEOPLE.values() for v in p.values())


@pytest.fixture(scope="module")
def world(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("person")
    db = f"person_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    key_file = work / "vault.key"
    key_file.write_text(bytes(range(32)).hex())
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db,
                         extra_env={"TWIN_VAULT_KEY_FILE": str(key_file), "TWIN_RULES_INTERVAL_S": "1"})
    procs = [cloud]
    try:
        cloud.start()
        cloud.wait_ready()
        admin = cloud.client()
        subj = {who: admin.post("/api/v1/people", json={"identity": ident, "gateway": "gw-home"})
                .raise_for_status().json()["subject"] for who, ident in PEOPLE.items()}
        config = gateway_config(work / "hub", mosquitto.url, mosquitto.url, gateway="gw-home", sources=[
            {"type": "mqtt", "name": "hub", "link": {"url": mosquitto.url}, "subscriptions": [
                {"topic": "hub/+/+", "asset": "{1}", "point": "{2}", "payload": "json", "value_path": "v",
                 "ts_path": "t", "ts_unit": "ns"}]}])
        config["assets"] = [{"id": s, "type": "person"} for s in subj.values()]
        hub = EdgeProcess(work / "hub", config)
        procs.append(hub)
        hub.start()
        hub.wait_log("source hub: connected")
        hub.wait_log("uplink: connected")
        now = time.time_ns()
        start = (now - 2 * DAY) // (300 * S) * (300 * S)
        run = simulate_people(3, days=2, seed=5, start_ns=start)
        run.subjects = [subj[w] for w in PEOPLE]
        publish(run, mosquitto.url)
        expected = {s: int((run.cgm[k] == run.cgm[k]).sum()) for k, s in enumerate(run.subjects)}
        for who, grantees in (("lily", ["family-lily", "clinic"]), ("noah", ["family-noah", "clinic"]),
                              ("mia", ["family-mia"])):
            for g in grantees:
                admin.post(f"/api/v1/people/{subj[who]}/consents", json={"grantee": g}).raise_for_status()
        for who, since in (("lily", start), ("noah", start + DAY)):  # Noah's parents: from yesterday on only
            admin.post(f"/api/v1/people/{subj[who]}/consents",
                       json={"grantee": "school-nurse", "points": ["glucose"], "from_ns": since}).raise_for_status()
        reg = Registry(postgres.url_for(db))
        keys = {g: admin.post(f"/api/v1/shares/{g}/keys", json={"name": g}).raise_for_status().json()["key"]
                for g in ("family-lily", "family-noah", "school-nurse")}
        assert admin.post("/api/v1/shares/family-nobody/keys").status_code == 404  # no one consented to it
        keys["family-nobody"] = issue_customer_key(reg, "acme", "family-nobody", "test")[1]
        keys |= {role: admin.post("/api/v1/keys", json={"role": role, "name": role}).raise_for_status()
                 .json()["key"] for role in ("viewer", "qa")}
        keys["admin"] = cloud.api_key

        def stored(s: str) -> int:
            r = admin.post(f"/api/v1/people/{s}/read", json={"reason": "test: waiting for the data",
                                                               "start_ns": start - DAY, "end_ns": now + DAY,
                                                               "break_glass": True})
            return len(r.json()["values"]) if r.status_code == 200 else -1

        wait_until(lambda: all(stored(s) == n for s, n in expected.items()), timeout=60,
                   what="every CGM reading stored")
        yield {"cloud": cloud, "hub": hub, "subj": subj, "keys": keys, "reg": reg, "db": db,
               "pg_url": postgres.url_for(db), "servers": (mosquitto, influxdb, postgres), "start": start,
               "procs": procs}
        reg.engine.dispose()
    finally:
        for p in reversed(procs):
            p.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)


def _as(world, who: str) -> httpx.Client:
    return world["cloud"].client(world["keys"][who])


def test_a_carer_key_sees_exactly_its_people(world):
    subj = world["subj"]
    for grantee, mine in (("family-lily", ["lily"]), ("family-noah", ["noah"]), ("school-nurse", ["lily", "noah"]),
                          ("family-nobody", [])):
        with _as(world, grantee) as c:
            listed = [p["subject"] for p in c.get("/api/v1/shared/people").json()["items"]]
            assert listed == sorted(subj[w] for w in mine), grantee
            for who, s in subj.items():
                r = c.get(f"/api/v1/shared/people/{s}/report")
                assert r.status_code == (200 if who in mine else 404), (grantee, who, r.text)
            assert c.get("/api/v1/people").status_code == 404  # the staff routes do not exist for it
            assert c.post(f"/api/v1/people/{subj['lily']}/report", json={"reason": "x" * 20}).status_code == 404
    with _as(world, "family-lily") as c:
        rep = c.get(f"/api/v1/shared/people/{subj['lily']}/report").json()
    assert rep["points"] == ["glucose", "bolus", "carbs", "heart_rate"]
    assert rep["metrics"]["overall"]["readings"] > 400 and 0 <= rep["metrics"]["overall"]["tir_pct"] <= 100
    assert len(rep["agp"]["percentiles"]["50"]) == 96
    with _as(world, "school-nurse") as c:  # glucose only (the forecast runs on glucose alone), from when consented
        noah = c.get(f"/api/v1/shared/people/{subj['noah']}/report").json()
    assert noah["points"] == ["glucose"] and noah["start_ns"] == world["start"] + DAY
    assert 200 < noah["metrics"]["overall"]["readings"] <= 288  # one day of readings, not two


def test_every_read_is_audited_and_break_glass_needs_pii_read_and_a_reason(world):
    subj = world["subj"]
    body = {"reason": "clinic review of the last two weeks"}
    with _as(world, "viewer") as c:
        assert c.post(f"/api/v1/people/{subj['lily']}/report", json=body).status_code == 200
        denied = c.post(f"/api/v1/people/{subj['mia']}/report", json=body)  # the clinic holds no consent for Mia
        assert denied.status_code == 403 and denied.json()["title"] == "Consent required"
        assert c.post(f"/api/v1/people/{subj['mia']}/report", json={**body, "break_glass": True}).status_code == 403
    with _as(world, "qa") as c:
        short = c.post(f"/api/v1/people/{subj['mia']}/report", json={"reason": "urgent", "break_glass": True})
        assert short.status_code == 403
        ok = c.post(f"/api/v1/people/{subj['mia']}/report",
                    json={"reason": "ambulance call: unconscious, CGM history needed", "break_glass": True})
        assert ok.status_code == 200
    with world["reg"].session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.target.in_([f"subject:{subj['mia']}",
                                                                         f"subject:{subj['lily']}"]))).all()
    glass = [r for r in rows if r.action == "person.read.break_glass" and r.reason.startswith("ambulance")]
    assert len(glass) == 1 and "(qa)" in glass[0].actor and glass[0].target == f"subject:{subj['mia']}"
    review = [r for r in rows if r.action == "person.read" and r.reason == body["reason"]]
    assert len(review) == 1 and "(viewer)" in review[0].actor
    assert review[0].after["points"] == ["glucose", "bolus", "carbs", "heart_rate"]
    carer = [r for r in rows if r.action == "person.read" and (r.after or {}).get("grantee") == "family-lily"]
    assert carer and all(r.reason == "care" for r in carer)


def test_an_identity_is_read_only_with_pii_read_and_audited(world):
    lily = world["subj"]["lily"]
    with _as(world, "viewer") as c:
        assert c.post(f"/api/v1/people/{lily}/identity", json={"reason": "who is it"}).status_code == 403
    with _as(world, "qa") as c:
        r = c.post(f"/api/v1/people/{lily}/identity", json={"reason": "calling the family back"})
    assert r.status_code == 200 and r.json()["identity"] == PEOPLE["lily"]
    with world["reg"].session() as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "person.identity.read",
                                                 AuditEntry.reason == "calling the family back")) is not None


def _influx_dump(influxdb, db: str) -> str:
    out = []
    for (m,) in influxdb.query("SHOW MEASUREMENTS", db=db)["results"][0]["series"][0]["values"]:
        out.append(influxdb.query(f'SELECT * FROM "{m}"', db=db))
        out.append(influxdb.query(f'SHOW TAG VALUES FROM "{m}" WITH KEY =~ /.*/', db=db))
    out.append(influxdb.query("SHOW SERIES", db=db))
    return json.dumps(out)


def _registry_rows(url: str) -> dict[str, str]:
    reg = Registry(url)
    meta = MetaData()
    meta.reflect(reg.engine)
    with reg.engine.connect() as conn:
        rows = {t.name: "\n".join(repr(tuple(r)) for r in conn.execute(t.select())) for t in meta.sorted_tables}
    reg.engine.dispose()
    return rows


def test_a_dead_letter_keeps_no_persons_values(world):
    """A refused batch of Lily's readings (a negative sequence number) is dead-lettered with its glucose
    withheld; a trailer's numbers in the same kind of letter are kept (they are nobody's)."""
    lily = world["subj"]["lily"]
    bad = {"schema": 1, "tenant": "acme", "gateway": "gw-home", "seq": -1, "series": [
        {"asset": lily, "point": "glucose", "t_ns": [world["start"]], "values": [123.456], "quality": [0]},
        {"asset": "trailer-xyz", "point": "supply_air", "t_ns": [world["start"]], "values": [4.321], "quality": [0]}]}
    host, port = world["servers"][0].url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"person-test-{uuid.uuid4().hex[:8]}")
    c.connect(host, int(port))
    c.loop_start()
    c.publish("twin/v1/acme/gw-home/telemetry", json.dumps(bad).encode(), qos=1).wait_for_publish(timeout=10)
    c.loop_stop()
    c.disconnect()
    def letters() -> list[bytes]:
        with world["reg"].session() as s:
            return [d.payload for d in s.scalars(select(DeadLetter)) if b"4.321" in d.payload]

    [payload] = wait_until(letters, what="the dead letter")
    assert b"123.456" not in payload and lily.encode() in payload


def test_the_clear_identity_is_in_no_series_no_table_but_the_vault_no_log_and_no_metric(world):
    mosquitto, influxdb, postgres = world["servers"]
    lily = world["subj"]["lily"]
    influx = _influx_dump(influxdb, world["db"])
    tables = _registry_rows(world["pg_url"])
    assert lily in influx and lily in tables["assets"]  # the dumps do hold the data, under the subject id
    assert tables["identity_vault"].count("acme") == 3
    with world["cloud"].client() as c:
        metrics = c.get("/metrics").text
    logs = {str(p.log_path): p.log() for p in world["procs"]}
    logs |= {str(s.log_path): s.log_path.read_text(errors="replace") for s in (mosquitto, influxdb, postgres)}
    for clear in CLEAR:
        assert clear not in influx
        assert [t for t, text in tables.items() if clear in text] == []  # the vault too holds it only encrypted
        assert clear not in metrics
        assert [p for p, text in logs.items() if clear in text] == []


def test_the_asset_routes_do_not_bypass_consent(world):
    lily = world["subj"]["lily"]
    with _as(world, "admin") as c:
        for path in (f"/api/v1/assets/{lily}/telemetry?point=glucose", f"/api/v1/assets/{lily}/latest"):
            r = c.get(path)
            assert r.status_code == 403 and r.json()["title"] == "Consent required", path
        twin = c.get(f"/api/v1/twins/{lily}").json()
        [listed] = [t for t in c.get("/api/v1/twins", params={"type": "person"}).json()["items"] if t["asset"] == lily]
    assert listed["latest"] == {} and listed["last_seen_ns"] is not None
    assert twin["type"] == "person" and twin["reported"]["points"]["glucose"]["value"] is None
    url = world["cloud"].url.replace("http", "ws") + f"/api/v1/live?api_key={world['keys']['admin']}"
    with ws_connect(url) as ws:  # the live socket streams no person: it names what it subscribed
        ws.send(json.dumps({"subscribe": [lily, "trailer-001"]}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "subscribed", "assets": ["trailer-001"]}


def test_erasure_leaves_nothing_behind(world):
    influxdb = world["servers"][1]
    noah = world["subj"]["noah"]
    world["hub"].stop()  # the family's hub is unenrolled first: it would announce the subject again
    with world["cloud"].client() as c:
        r = c.post(f"/api/v1/people/{noah}/erase", json={"reason": "GDPR art. 17 request #41"})
        assert r.status_code == 200, r.text
        erased = r.json()["erased"]
        assert erased["samples"] > 1000 and erased["vault"] == 1 and erased["consents"] == 3 and erased["asset"] == 1
        assert c.post(f"/api/v1/people/{noah}/identity", json={"reason": "after erasure"}).status_code == 404
    with _as(world, "family-noah") as c:
        assert c.get("/api/v1/shared/people").json()["items"] == []
    assert noah not in _influx_dump(influxdb, world["db"])
    left = {t: rows for t, rows in _registry_rows(world["pg_url"]).items() if noah in rows}
    assert set(left) == {"audit_log"}  # the trail that it was read and erased, under the subject id only
    with world["reg"].session() as s:
        last = s.scalars(select(AuditEntry).where(AuditEntry.target == f"subject:{noah}")
                         .order_by(AuditEntry.id.desc())).first()
    assert last.action == "person.erase" and last.reason == "GDPR art. 17 request #41"

