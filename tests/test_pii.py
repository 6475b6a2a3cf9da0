"""Personal data (issue #11, part 4): a driver id sent by a device is stored only as its keyed pseudonym,
never in clear — not in InfluxDB, not in the registry, not in any log — whichever way it arrives; keys
without ``pii:read`` see it masked; an admin finds and erases a subject's data from the clear id.

Two halves. Ingest against real stores (InfluxDB, registry on SQLite and PostgreSQL) for each rule on its
own; then the real chain — sensor → ``twin edge run`` → Mosquitto → ``twin cloud run`` → InfluxDB and
PostgreSQL → API — with three gateways: one with the shared key (pseudonymises at the edge), one without
(drops personal values at the edge), and a third-party one speaking the wire that sends the id in clear
(pseudonymised at ingest). The last test greps every store and log for the clear ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError
from sqlalchemy import MetaData, select
from websockets.sync.client import connect as ws_connect

from cloud.ingest import Ingest, _Msg
from cloud.pii import WITHHELD, Pseudonymiser
from cloud.registry import Asset, AssetTypeRecord, DeadLetter, Registry
from cloud.settings import CloudSettings
from models.pii import masked, pseudonym
from models.wire import GatewayStatus, PointSeries, TelemetryBatch, TextSeries, encode
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S
KEY = b"a-shared-deployment-secret-for-tests"


# -- ingest, rule by rule ---------------------------------------------------------------------------
def _ingest(registry, store, tmp_path: Path, key: bytes | None) -> Ingest:
    key_file = None
    if key is not None:
        key_file = tmp_path / "pii.key"
        key_file.write_bytes(key + b"\n")
    return Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1", pii_key_file=key_file and str(key_file)),
                  store, registry)


def _text_msg(seq: int, text: list[TextSeries], gateway: str = "gw1") -> _Msg:
    b = TelemetryBatch(tenant="acme", gateway=gateway, seq=seq, series=[], text=text)
    return _Msg(mid=seq, qos=0, topic=f"twin/v1/acme/{gateway}/telemetry", payload=encode(b, compress=True))


def _driver(asset: str, values: list[str], t0: int = T0, point: str = "driver_id") -> TextSeries:
    return TextSeries(asset=asset, point=point, t_ns=[t0 + i * S for i in range(len(values))], values=values)


def _typed_asset(registry: Registry, asset: str, type_id: str) -> None:
    registry.ensure_tenant("acme")
    with registry.session() as s:
        registry.insert_ignore(s, Asset, [{"tenant": "acme", "id": asset, "gateway": "gw1", "type": type_id,
                                           "first_seen_ns": 0}])


def test_a_clear_personal_value_is_pseudonymised_at_ingest_and_an_edge_pseudonym_kept(registry, store, tmp_path):
    ing = _ingest(registry, store, tmp_path, KEY)
    edge_made = pseudonym(KEY, "acme", "DRV-1")
    ing.process([_text_msg(0, [_driver("trailer-1", ["DRV-1", edge_made, "DRV-2"])])])
    got = store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 10 * S)
    assert got.values == [edge_made, edge_made, pseudonym(KEY, "acme", "DRV-2")]
    assert (ing.counters["personal_pseudonymised"], ing.counters["personal_kept"],
            ing.counters["personal_dropped"]) == (2, 1, 0)
    assert [(h.asset, h.count) for h in store.find_subject("acme", edge_made)] == [("trailer-1", 2)]


def test_without_a_key_clear_personal_values_are_dropped_and_counted(registry, store, tmp_path):
    ing = _ingest(registry, store, tmp_path, None)
    edge_made = pseudonym(KEY, "acme", "DRV-1")
    ing.process([_text_msg(0, [_driver("trailer-1", ["DRV-1", edge_made, "DRV-2"])])])
    got = store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 10 * S)
    assert (got.t_ns, got.values) == ([T0 + S], [edge_made])
    assert (ing.counters["personal_dropped"], ing.counters["personal_kept"], ing.counters["batches_written"]) == \
        (2, 1, 1)


def test_the_asset_type_decides_what_is_personal_and_unknown_text_counts_as_personal(registry, store, tmp_path):
    definition = {"id": "reefer-x", "name": "Reefer X", "points": {
        "mode": {"unit": "state", "kind": "text"},
        "driver_id": {"unit": "id", "kind": "text", "personal": True}}}
    with registry.session() as s:
        registry.insert_ignore(s, AssetTypeRecord, [{"tenant": "acme", "id": "reefer-x", "definition": definition}])
    _typed_asset(registry, "trailer-1", "reefer-x")
    _typed_asset(registry, "trailer-2", "refrigerated-trailer")
    ing = _ingest(registry, store, tmp_path, KEY)
    ing.process([_text_msg(0, [
        _driver("trailer-1", ["defrost"], point="mode"),  # declared, not personal: as sent
        _driver("trailer-1", ["DRV-1"]),  # declared personal
        _driver("trailer-2", ["Alice"], point="nickname"),  # a point its (built-in) type does not know
        _driver("trailer-9", ["Bob"], point="mode"),  # an asset of unknown type
    ])])
    read = lambda a, p: store.query_text("acme", a, p, T0, T0 + 10 * S).values  # noqa: E731
    assert read("trailer-1", "mode") == ["defrost"]
    assert read("trailer-1", "driver_id") == [pseudonym(KEY, "acme", "DRV-1")]
    assert read("trailer-2", "nickname") == [pseudonym(KEY, "acme", "Alice")]
    assert read("trailer-9", "mode") == [pseudonym(KEY, "acme", "Bob")]


def test_non_personal_text_with_control_characters_is_dead_lettered_not_stored(registry, store, tmp_path):
    definition = {"id": "reefer-x", "name": "Reefer X", "points": {"mode": {"unit": "state", "kind": "text"}}}
    with registry.session() as s:
        registry.insert_ignore(s, AssetTypeRecord, [{"tenant": "acme", "id": "reefer-x", "definition": definition}])
    _typed_asset(registry, "trailer-1", "reefer-x")
    ing = _ingest(registry, store, tmp_path, KEY)
    ing.process([_text_msg(0, [_driver("trailer-1", ["a\nb"], point="mode"), _driver("trailer-1", ["DRV-1"])])])
    assert store.query_text("acme", "trailer-1", "mode", T0, T0 + 10 * S).values == []
    assert store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 10 * S).values == [
        pseudonym(KEY, "acme", "DRV-1")]
    with registry.session() as s:
        reasons = list(s.scalars(select(DeadLetter.reason)))
    assert reasons == ["telemetry: trailer-1/mode: text sample 0 is longer than 1024 characters or holds control "
                       "characters or lone surrogates"]
    assert ing.counters["text_rejected"] == 1


def test_text_that_is_not_valid_unicode_is_refused_and_does_not_stall_ingest(registry, store, tmp_path):
    """JSON may carry a lone surrogate (\\ud800), which has no UTF-8 form: it can be neither hashed nor stored.
    The personal one is dropped (not dead-lettered: it may still be personal), the other dead-lettered."""
    definition = {"id": "reefer-x", "name": "Reefer X", "points": {"mode": {"unit": "state", "kind": "text"}}}
    with registry.session() as s:
        registry.insert_ignore(s, AssetTypeRecord, [{"tenant": "acme", "id": "reefer-x", "definition": definition}])
    _typed_asset(registry, "trailer-1", "reefer-x")
    ing = _ingest(registry, store, tmp_path, KEY)
    raw = {"v": "v1", "kind": "telemetry", "tenant": "acme", "gateway": "gw1", "seq": 0, "series": [], "text": [
        {"asset": "trailer-1", "point": "driver_id", "t_ns": [T0, T0 + S], "values": ["DRV-\ud800", "DRV-2"]},
        {"asset": "trailer-1", "point": "mode", "t_ns": [T0], "values": ["eco\udfff"]}]}
    ing.process([_Msg(1, 0, "twin/v1/acme/gw1/telemetry", json.dumps(raw).encode())])
    assert store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 10 * S).values == [
        pseudonym(KEY, "acme", "DRV-2")]
    assert store.query_text("acme", "trailer-1", "mode", T0, T0 + 10 * S).values == []
    with registry.session() as s:
        (dead,) = s.scalars(select(DeadLetter)).all()
    assert dead.reason.startswith("telemetry: trailer-1/mode: text sample 0 ")
    assert json.loads(dead.payload)["values"] == ["eco\\udfff"]
    assert (ing.counters["text_rejected"], ing.counters["batches_written"]) == (2, 1)


def test_a_dead_letter_keeps_no_clear_personal_value(registry, store, tmp_path):
    ing = _ingest(registry, store, tmp_path, KEY)
    bad_seq = {"v": "v1", "kind": "telemetry", "tenant": "acme", "gateway": "gw1", "seq": -1, "series": [],
               "text": [{"asset": "trailer-1", "point": "driver_id", "t_ns": [T0], "values": ["DRV-1"]}]}
    truncated = json.dumps(bad_seq).encode()[:-20]
    ing.process([_Msg(1, 0, "twin/v1/acme/gw1/telemetry", json.dumps(bad_seq).encode()),
                 _Msg(2, 0, "twin/v1/acme/gw1/telemetry", truncated)])
    with registry.session() as s:
        payloads = [bytes(p) for p in s.scalars(select(DeadLetter.payload).order_by(DeadLetter.id))]
    assert len(payloads) == 2
    assert json.loads(payloads[0])["text"][0]["values"] == [pseudonym(KEY, "acme", "DRV-1")]
    assert payloads[1] == WITHHELD
    assert not any(b"DRV-1" in p for p in payloads)


def test_dead_letter_scrubbing_withholds_what_it_cannot_read():
    scrub = Pseudonymiser(KEY).scrub_payload
    escaped = b'{"v": "v1", "tenant": "acme", "\\u0074ext": [{"values": ["DRV-1", 7]}]}'
    assert json.loads(scrub(escaped))["text"][0]["values"] == [pseudonym(KEY, "acme", "DRV-1"), 7]
    assert scrub(b'{"te\\u0078t": [{"values": ["DRV-1"]}') == WITHHELD  # escaped and unparseable
    assert scrub(zlib.compress(b'{"text": [{"values": ["DRV-1"]}]}')[:-6]) == WITHHELD  # truncated zlib
    assert scrub(b'{"text": "DRV-1"}') == WITHHELD
    assert Pseudonymiser(None).scrub_payload(b'{"text": [{"values": ["DRV-1"]}]}') == \
        b'{"text": [{"values": ["(withheld)"]}]}'
    for kept in (b'{"v": "v1", "series": []}', b"not json at all", b'{"broken": '):
        assert scrub(kept) == kept  # no text points: kept byte for byte, for whoever debugs it


def test_an_unusable_key_file_stops_the_cloud_at_start_naming_it(tmp_path):
    with pytest.raises(ValidationError, match=r"TWIN_PII_KEY_FILE=.*missing\.key: cannot read the key"):
        CloudSettings(pii_key_file=str(tmp_path / "missing.key"))
    (tmp_path / "short.key").write_bytes(b"abc\n")
    with pytest.raises(ValidationError, match="at least 16 bytes"):
        CloudSettings(pii_key_file=str(tmp_path / "short.key"))
    env = {**os.environ, "TWIN_PII_KEY_FILE": str(tmp_path / "missing.key"), "TWIN_MQTT_URL": "mqtt://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "twin", "cloud", "ingest"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert done.returncode == 2
    assert "TWIN_PII_KEY_FILE=" in done.stderr and "cannot read the key" in done.stderr


# -- the real chain ---------------------------------------------------------------------------------
RUN = uuid.uuid4().hex[:8]
JANE = f"Jane-{RUN}"  # badges into trailer-001 (edge with the key) and trailer-002 (third-party gateway)
MAX = f"Max-{RUN}"  # badges into trailer-002 only
OTTO = f"Otto-{RUN}"  # badges into trailer-003, whose gateway has no key
CLEAR_IDS = (JANE, MAX, OTTO)
PN_JANE, PN_MAX = pseudonym(KEY, "acme", JANE), pseudonym(KEY, "acme", MAX)


def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pii-test-{uuid.uuid4().hex[:8]}")
    c.connect(host, int(port))
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("pii")
    db = f"pii_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    key_file = work / "pii.key"
    key_file.write_bytes(KEY + b"\n")
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db,
                         extra_env={"TWIN_PII_KEY_FILE": str(key_file)})
    with_key = EdgeProcess(work / "edge-key", gateway_config(
        work / "edge-key", mosquitto.url, mosquitto.url, gateway="gw-key", assets=["trailer-001"],
        pii_key_file=str(key_file),
        sources=[{"type": "mqtt", "name": "sensors", "link": {"url": mosquitto.url}, "subscriptions": [
            {"topic": "pii-a/+/+", "asset": "{1}", "point": "{2}", "payload": "json"}]}]))
    no_key = EdgeProcess(work / "edge-nokey", gateway_config(
        work / "edge-nokey", mosquitto.url, mosquitto.url, gateway="gw-nokey", assets=["trailer-003"],
        sources=[{"type": "mqtt", "name": "sensors", "link": {"url": mosquitto.url}, "subscriptions": [
            {"topic": "pii-b/+/+", "asset": "{1}", "point": "{2}", "payload": "json"}]}]))
    procs = [cloud, with_key, no_key]
    try:
        cloud.start()
        cloud.wait_ready()
        for edge in (with_key, no_key):
            edge.start()
        for edge in (with_key, no_key):
            edge.wait_log("source sensors: connected")
            edge.wait_log("uplink: connected")
        api = cloud.client()
        keys = {role: api.post("/api/v1/keys", json={"role": role, "name": role}).raise_for_status().json()["key"]
                for role in ("viewer", "operator", "qa")}
        keys["admin"] = cloud.api_key
        # Sensors: the cab's badge reader, a number beside it.
        sensor = [("pii-a/trailer-001/driver_id", json.dumps({"v": JANE, "t": T0}).encode()),
                  ("pii-a/trailer-001/supply_air", json.dumps({"v": 4.5, "t": T0}).encode()),
                  ("pii-b/trailer-003/driver_id", json.dumps({"v": OTTO, "t": T0}).encode()),
                  ("pii-b/trailer-003/supply_air", json.dumps({"v": 3.5, "t": T0}).encode())]
        _publish(mosquitto.url, sensor)
        # A third-party gateway speaking the wire, with no key: ids in clear; and two batches ingest refuses.
        status = GatewayStatus(tenant="acme", gateway="gw-raw", state="online", t_ns=T0,
                               assets={"trailer-002": "refrigerated-trailer"})
        clear = TelemetryBatch(tenant="acme", gateway="gw-raw", seq=0, series=[
            PointSeries(asset="trailer-002", point="supply_air", t_ns=[T0], values=[5.0], quality=[0])],
            text=[TextSeries(asset="trailer-002", point="driver_id", t_ns=[T0 + 60 * S, T0 + 120 * S],
                             values=[JANE, MAX])])
        bad = json.loads(encode(clear))
        bad["seq"] = -1
        _publish(mosquitto.url, [("twin/v1/acme/gw-raw/status", encode(status))])
        wait_until(lambda: any(a["id"] == "trailer-002" and a["type"] == "refrigerated-trailer"
                               for a in api.get("/api/v1/assets").json()["items"]), what="gw-raw's status")
        _publish(mosquitto.url, [("twin/v1/acme/gw-raw/telemetry", encode(clear, compress=True)),
                                 ("twin/v1/acme/gw-raw/telemetry", json.dumps(bad).encode()),
                                 ("twin/v1/acme/gw-raw/telemetry", json.dumps(bad).encode()[:-30])])

        def text(asset: str) -> list:
            r = api.get(f"/api/v1/assets/{asset}/telemetry",
                        params={"point": "driver_id", "start": T0, "end": T0 + 3600 * S})
            return r.json()["values"] if r.status_code == 200 else []

        wait_until(lambda: text("trailer-001") and len(text("trailer-002")) == 2, timeout=30,
                   what="driver ids through the API")
        wait_until(lambda: len(api.get("/api/v1/dead-letters").json()["items"]) == 2, what="two dead letters")
        wait_until(lambda: any(g["id"] == "gw-nokey" and g["counters"].get("personal_dropped") == 1
                               for g in api.get("/api/v1/gateways").json()["items"]),
                   what="gw-nokey reporting the id it dropped")
        yield {"cloud": cloud, "keys": keys, "procs": procs, "influx_db": db, "pg_url": postgres.url_for(db),
               "servers": (mosquitto, influxdb, postgres)}
    finally:
        for p in reversed(procs):
            p.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)


def _as(chain, role: str) -> httpx.Client:
    return chain["cloud"].client(chain["keys"][role])


def _driver_ids(c: httpx.Client, asset: str) -> list:
    r = c.get(f"/api/v1/assets/{asset}/telemetry", params={"point": "driver_id", "start": T0, "end": T0 + 3600 * S})
    return r.raise_for_status().json()["values"]


def test_one_subject_has_one_pseudonym_whichever_side_made_it(chain):
    with _as(chain, "admin") as api:
        assert _driver_ids(api, "trailer-001") == [PN_JANE]  # made by the edge, with the shared key
        assert _driver_ids(api, "trailer-002") == [PN_JANE, PN_MAX]  # arrived in clear, made by ingest
        assert _driver_ids(api, "trailer-003") == []  # the gateway without a key dropped it
        m = chain["cloud"].metrics()
    assert (m["twin_ingest_personal_pseudonymised"], m["twin_ingest_personal_kept"]) == (2, 1)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_without_pii_read_personal_values_are_masked_everywhere(chain, role):
    with _as(chain, role) as api:
        assert _driver_ids(api, "trailer-002") == [masked(PN_JANE), masked(PN_MAX)]
        latest = api.get("/api/v1/assets/trailer-002/latest").raise_for_status().json()
        assert latest["driver_id"] == {"t_ns": T0 + 120 * S, "value": masked(PN_MAX)}
        assert latest["supply_air"]["value"] == 5.0  # numbers are not personal
        twin = api.get("/api/v1/twins/trailer-001").raise_for_status().json()
        assert twin["reported"]["points"]["driver_id"]["value"] == masked(PN_JANE)
        assert PN_JANE[:12] not in json.dumps(twin) and PN_MAX[:12] not in json.dumps(latest)


@pytest.mark.parametrize("role", ["qa", "admin"])
def test_with_pii_read_personal_values_are_pseudonyms(chain, role):
    with _as(chain, role) as api:
        assert _driver_ids(api, "trailer-002") == [PN_JANE, PN_MAX]
        assert api.get("/api/v1/assets/trailer-002/latest").json()["driver_id"]["value"] == PN_MAX
        twin = api.get("/api/v1/twins/trailer-001").raise_for_status().json()
        assert twin["reported"]["points"]["driver_id"] == {"value": PN_JANE, "t_ns": T0}


def test_an_admin_finds_where_a_subject_appears(chain):
    with _as(chain, "admin") as api:
        r = api.post("/api/v1/subjects/find", json={"subject": JANE}).raise_for_status().json()
        assert r == {"pseudonym": PN_JANE, "samples": 2, "where": [
            {"asset": "trailer-001", "point": "driver_id", "count": 1, "first_ns": T0, "last_ns": T0},
            {"asset": "trailer-002", "point": "driver_id", "count": 1, "first_ns": T0 + 60 * S,
             "last_ns": T0 + 60 * S}]}
        assert api.post("/api/v1/subjects/find", json={"subject": PN_JANE}).json()["samples"] == 2
        assert api.post("/api/v1/subjects/find", json={"subject": "nobody"}).json()["where"] == []
        bad = api.post("/api/v1/subjects/find", json={"subject": JANE * 40})
        assert bad.status_code == 422 and JANE not in bad.text  # a refused id is not echoed back
        bad = api.post("/api/v1/subjects/find", content=b'{"subject": "x\\ud800"}',
                       headers={"Content-Type": "application/json"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("body.subject: ")  # never a 500
    for role in ("viewer", "operator", "qa"):
        with _as(chain, role) as api:
            assert api.post("/api/v1/subjects/find", json={"subject": JANE}).status_code == 403
            assert api.post("/api/v1/subjects/erase", json={"subject": JANE}).status_code == 403


def test_erasing_a_subject_deletes_its_data_and_audits_it_without_the_clear_id(chain):
    influxdb = chain["servers"][1]
    with _as(chain, "admin") as api:
        r = api.post("/api/v1/subjects/erase", json={"subject": MAX, "reason": "request DSR-17"})
        assert r.raise_for_status().json() == {"pseudonym": PN_MAX, "samples": 1, "where": [
            {"asset": "trailer-002", "point": "driver_id", "count": 1, "first_ns": T0 + 120 * S,
             "last_ns": T0 + 120 * S}]}
        assert api.post("/api/v1/subjects/find", json={"subject": MAX}).json() == {
            "pseudonym": PN_MAX, "samples": 0, "where": []}
        assert _driver_ids(api, "trailer-002") == [PN_JANE]  # the other subject's data stays
        audit = api.get("/api/v1/audit").raise_for_status().json()["items"]
    erasure = next(a for a in audit if a["action"] == "subject.erase")
    assert (erasure["target"], erasure["reason"], erasure["after"]) == (
        f"subject:{PN_MAX}", "request DSR-17", {"samples": 0, "erased": 1})
    assert MAX not in json.dumps(audit)
    # Gone from InfluxDB's index too, not only from query results.
    tags = influxdb.query('SHOW TAG VALUES FROM "text" WITH KEY = "subject"', db=chain["influx_db"])
    assert PN_MAX not in json.dumps(tags) and PN_JANE in json.dumps(tags)


def test_the_live_websocket_carries_no_text_points(chain, mosquitto):
    """The API's live feed reads the gateways' raw batches, before ingest pseudonymises them: it forwards
    numbers only, so a clear id sent by a gateway without the key never reaches a browser."""
    cloud = chain["cloud"]
    url = cloud.url.replace("http://", "ws://") + f"/api/v1/live?api_key={chain['keys']['admin']}"
    batch = TelemetryBatch(tenant="acme", gateway="gw-raw", seq=1, series=[
        PointSeries(asset="trailer-002", point="supply_air", t_ns=[T0 + 180 * S], values=[6.5], quality=[0])],
        text=[TextSeries(asset="trailer-002", point="driver_id", t_ns=[T0 + 180 * S], values=[JANE])])
    with ws_connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["trailer-002"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        _publish(mosquitto.url, [("twin/v1/acme/gw-raw/telemetry", encode(batch))])
        got = [json.loads(ws.recv(timeout=10))]
        while got[-1].get("point") != "supply_air":
            got.append(json.loads(ws.recv(timeout=10)))
    assert got[-1]["values"] == [6.5]
    assert not [m for m in got if m.get("point") == "driver_id" or JANE in json.dumps(m)]
    with _as(chain, "admin") as api:  # and ingest stored it as the pseudonym
        wait_until(lambda: _driver_ids(api, "trailer-002") == [PN_JANE, PN_JANE], what="the new driver id stored")


def _influx_dump(influxdb, db: str) -> str:
    """Every measurement's every row, the series index and the tag values, as one string."""
    out = []
    measurements = influxdb.query("SHOW MEASUREMENTS", db=db)["results"][0]["series"][0]["values"]
    for (m,) in measurements:
        out.append(influxdb.query(f'SELECT * FROM "{m}"', db=db))
        out.append(influxdb.query(f'SHOW TAG VALUES FROM "{m}" WITH KEY =~ /.*/', db=db))
    out.append(influxdb.query("SHOW SERIES", db=db))
    return json.dumps(out)


def _registry_dump(url: str) -> str:
    """Every row of every table of the registry, bytes included."""
    reg = Registry(url)
    meta = MetaData()
    meta.reflect(reg.engine)
    rows = []
    with reg.engine.connect() as conn:
        for table in meta.sorted_tables:
            rows += [repr(tuple(r)) for r in conn.execute(table.select())]
    reg.engine.dispose()
    assert any(t.name == "dead_letters" for t in meta.sorted_tables) and len(rows) > 10
    return "\n".join(rows)


def _files_containing(root: Path, needles: tuple[str, ...]) -> list[str]:
    found = []
    for f in root.rglob("*"):
        if f.is_file():
            try:
                data = f.read_bytes()
            except OSError:
                continue
            found += [f"{f}: {n}" for n in needles if n.encode() in data]
    return found


def test_the_clear_ids_are_in_no_store_and_no_log(chain):
    mosquitto, influxdb, postgres = chain["servers"]
    influx = _influx_dump(influxdb, chain["influx_db"])
    registry = _registry_dump(chain["pg_url"])
    assert PN_JANE in influx and "pn_" in registry  # the dumps do hold the data, as pseudonyms
    for clear in CLEAR_IDS:
        assert clear not in influx
        assert clear not in registry
    logs = {p.log_path: p.log() for p in chain["procs"]}
    logs |= {s.log_path: s.log_path.read_text(errors="replace") for s in (mosquitto, influxdb, postgres)}
    assert all(logs.values())
    assert [(str(path), c) for path, text in logs.items() for c in CLEAR_IDS if c in text] == []
    # And not in the servers' files on disk: InfluxDB's WAL and shards, PostgreSQL's heap and WAL. The same
    # search finds the pseudonyms there, so it does see what the servers wrote.
    assert _files_containing(influxdb.workdir, CLEAR_IDS) == []
    assert _files_containing(postgres.workdir, CLEAR_IDS) == []
    assert _files_containing(influxdb.workdir, (PN_JANE,)) and _files_containing(postgres.workdir, (PN_MAX,))
