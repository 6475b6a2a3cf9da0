"""Proof that the harness fixtures are the real servers: round trips with exact values, and outages."""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.harness import HarnessError, InfluxServer, MosquittoServer, PostgresServer
from tests.harness.servers import find_binary

T0 = 1_700_000_000_123_456_789  # ns; sub-microsecond digits prove no precision is lost on the way


def test_missing_binary_says_what_to_install() -> None:
    with pytest.raises(HarnessError, match="apt-get install -y mosquitto influxdb postgresql"):
        find_binary("no-such-server-binary", "/nonexistent")


# --- MQTT -------------------------------------------------------------------------------------------


@contextmanager
def mqtt_client(
    broker: MosquittoServer,
    client_id: str,
    *,
    clean: bool = True,
    session_expiry: int = 0,
    protocol: int = mqtt.MQTTv5,
) -> Iterator[tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]]:
    """A connected client (network loop in a thread) and the queue its messages land in.

    ``clean``/``session_expiry`` map to MQTT v5 Clean Start + Session Expiry Interval, or to v3.1.1's
    clean session flag (``session_expiry`` is then unused).
    """
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected = threading.Event()
    v5 = protocol == mqtt.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        **({} if v5 else {"clean_session": clean}),
    )
    client.on_connect = lambda *_: connected.set()
    client.on_message = lambda _c, _u, msg: received.put(msg)
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        client.connect(broker.host, broker.port, clean_start=clean, properties=props)
    else:
        client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(5), "no CONNACK"
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> None:
    acked = threading.Event()
    client.on_subscribe = lambda *_: acked.set()
    client.subscribe(topic, qos=1)
    assert acked.wait(5), "no SUBACK"


def test_mosquitto_qos1_roundtrip(mosquitto: MosquittoServer) -> None:
    payload = b'{"asset":"pump-7","t":21.5}\x00\xff'
    with mqtt_client(mosquitto, "rt-sub") as (sub, received), mqtt_client(mosquitto, "rt-pub") as (pub, _):
        subscribe(sub, "harness/rt/#")
        pub.publish("harness/rt/pump-7", payload, qos=1).wait_for_publish(5)
        msg = received.get(timeout=5)
    assert (msg.topic, msg.payload, msg.qos) == ("harness/rt/pump-7", payload, 1)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883


def test_mosquitto_restart_keeps_port_and_persisted_session(mosquitto: MosquittoServer) -> None:
    """An outage: a persistent session's queued QoS 1 message survives the broker restart.

    MQTT v3.1.1 on purpose: Mosquitto 2.0.11 does NOT restore MQTT v5 sessions (Session Expiry
    Interval > 0) from its persistence file after a restart; v3.1.1 clean_session=False sessions it does.
    """
    port, url = mosquitto.port, mosquitto.url
    v311 = {"protocol": mqtt.MQTTv311}
    with mqtt_client(mosquitto, "persist-sub", clean=False, **v311) as (sub, _):
        subscribe(sub, "harness/persist")
    with mqtt_client(mosquitto, "persist-pub") as (pub, _):  # subscriber offline: the broker queues it
        pub.publish("harness/persist", b"queued-before-outage", qos=1).wait_for_publish(5)

    mosquitto.restart()

    assert (mosquitto.port, mosquitto.url) == (port, url)
    with mqtt_client(mosquitto, "persist-sub", clean=False, **v311) as (_, received):
        msg = received.get(timeout=5)
    assert (msg.topic, msg.payload) == ("harness/persist", b"queued-before-outage")


def test_mosquitto_queues_beyond_default_limit(mosquitto: MosquittoServer) -> None:
    """max_queued_messages 0: 1500 messages to an offline subscriber (default limit 1000) all arrive."""
    with mqtt_client(mosquitto, "burst-sub", session_expiry=60) as (sub, _):
        subscribe(sub, "harness/burst")
    with mqtt_client(mosquitto, "burst-pub") as (pub, _):
        infos = [pub.publish("harness/burst", str(i).encode(), qos=1) for i in range(1500)]
        for info in infos:
            info.wait_for_publish(10)
    with mqtt_client(mosquitto, "burst-sub", clean=False, session_expiry=60) as (_, received):
        payloads = [received.get(timeout=10).payload for _ in range(1500)]
    assert payloads == [str(i).encode() for i in range(1500)]


# --- InfluxDB ---------------------------------------------------------------------------------------


def influx_client(influxdb: InfluxServer, **kwargs: object) -> InfluxDBClient:
    return InfluxDBClient(url=influxdb.url, token="x", org="-", timeout=5_000, **kwargs)


def select(influxdb: InfluxServer, db: str, q: str) -> list[list[object]]:
    """Rows of one InfluxQL query on influxd itself (epoch=ns), bypassing the front."""
    result = influxdb.query(q, db=db)["results"][0]
    return result["series"][0]["values"] if "series" in result else []


def test_influx_v2_write_exact_roundtrip(influxdb: InfluxServer, influx_db: str) -> None:
    rows_in = [("pump-7", 0.125, 3), ("pump-7", 1.5, 4), ("fan-2", -2.0, 5)]
    points = [
        Point("vibration").tag("asset", asset).field("rms", rms).field("count", count).time(T0 + i, WritePrecision.NS)
        for i, (asset, rms, count) in enumerate(rows_in)
    ]
    with influx_client(influxdb) as client:
        client.write_api(write_options=SYNCHRONOUS).write(f"{influx_db}/autogen", record=points)

    rows = select(influxdb, influx_db, 'SELECT "asset", "rms", "count" FROM "vibration" ORDER BY time')
    assert rows == [[T0, "pump-7", 0.125, 3], [T0 + 1, "pump-7", 1.5, 4], [T0 + 2, "fan-2", -2.0, 5]]
    # The same data read through the front's /query proxy.
    params = {"db": influx_db, "q": "SELECT count(rms) FROM vibration", "epoch": "ns"}
    resp = httpx.get(f"{influxdb.url}/query", params=params)
    assert resp.json()["results"][0]["series"][0]["values"] == [[0, 3]]


def test_influx_gzip_write_and_ms_precision(influxdb: InfluxServer, influx_db: str) -> None:
    ms = T0 // 1_000_000
    with influx_client(influxdb, enable_gzip=True) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            influx_db,
            record=[f"temp,room=cold-1 c=-18.5 {ms}", f"temp,room=cold-1 c=-18.25 {ms + 1}"],
            write_precision=WritePrecision.MS,
        )
    rows = select(influxdb, influx_db, "SELECT room, c FROM temp ORDER BY time")
    assert rows == [[ms * 1_000_000, "cold-1", -18.5], [(ms + 1) * 1_000_000, "cold-1", -18.25]]

    # A hand-made gzip body: had the front dropped Content-Encoding, influxd would reject it with 400.
    resp = httpx.post(
        f"{influxdb.url}/api/v2/write",
        params={"bucket": influx_db, "precision": "s"},
        content=gzip.compress(b"temp,room=cold-2 c=4 1700000000"),
        headers={"Content-Encoding": "gzip"},
    )
    assert resp.status_code == 204
    rows = select(influxdb, influx_db, "SELECT c FROM temp WHERE room = 'cold-2'")
    assert rows == [[1_700_000_000 * 10**9, 4]]


def test_influx_front_relays_errors_and_proxies(influxdb: InfluxServer, influx_db: str) -> None:
    with influx_client(influxdb) as client, pytest.raises(ApiException) as exc_info:
        client.write_api(write_options=SYNCHRONOUS).write(influx_db, record="not line protocol")
    assert exc_info.value.status == 400
    assert "unable to parse" in exc_info.value.body

    missing = httpx.post(f"{influxdb.url}/api/v2/write", params={"bucket": "no_such_db"}, content=b"m v=1 1")
    assert missing.status_code == 404
    ping = httpx.get(f"{influxdb.url}/ping")
    assert ping.status_code == 204
    assert ping.headers["X-Influxdb-Version"].startswith("1.")


def test_influx_front_concurrent_writes(influxdb: InfluxServer, influx_db: str) -> None:
    with influx_client(influxdb) as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)

        def write(worker: int) -> None:
            for i in range(10):
                write_api.write(influx_db, record=f"load,w={worker} i={i}i {T0 + worker * 100 + i}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
    assert select(influxdb, influx_db, "SELECT count(i) FROM load") == [[0, 80]]


def test_influx_outage_and_recovery(influxdb: InfluxServer, influx_db: str) -> None:
    port, url = influxdb.port, influxdb.url
    with influx_client(influxdb) as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)
        write_api.write(influx_db, record=f"m v=1 {T0}")

        influxdb.stop()
        try:
            with pytest.raises(ApiException) as exc_info:
                write_api.write(influx_db, record=f"m v=2 {T0 + 1}")
            assert exc_info.value.status == 503
        finally:
            influxdb.start()

        assert (influxdb.port, influxdb.url) == (port, url)
        write_api.write(influx_db, record=f"m v=3 {T0 + 2}")
    assert select(influxdb, influx_db, "SELECT v FROM m ORDER BY time") == [[T0, 1], [T0 + 2, 3]]


# --- PostgreSQL -------------------------------------------------------------------------------------


def test_postgres_sqlalchemy_roundtrip(pg_db: str) -> None:
    engine = sa.create_engine(pg_db)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE asset (id text PRIMARY KEY, kind text, kw numeric(6,2))"))
            conn.execute(
                sa.text("INSERT INTO asset VALUES (:id, :kind, :kw)"),
                [{"id": "pump-7", "kind": "pump", "kw": 7.5}, {"id": "fan-2", "kind": "fän", "kw": 0.25}],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, kind, kw::text FROM asset ORDER BY id")).all()
            server = conn.execute(sa.text("SELECT current_database(), inet_server_port()")).one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("fan-2", "fän", "0.25"), ("pump-7", "pump", "7.50")]
    url = sa.make_url(pg_db)
    assert server == (url.database, url.port)


def test_postgres_default_database_and_restart(postgres: PostgresServer) -> None:
    assert postgres.url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/assettwin"
    engine = sa.create_engine(postgres.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS harness_restart"))
            conn.execute(sa.text("CREATE TABLE harness_restart (n int)"))
            conn.execute(sa.text("INSERT INTO harness_restart VALUES (42)"))
        engine.dispose()  # pooled connections would not survive the restart anyway
        port = postgres.port
        postgres.restart()
        assert postgres.port == port
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM harness_restart")).scalars().all() == [42]
    finally:
        engine.dispose()
