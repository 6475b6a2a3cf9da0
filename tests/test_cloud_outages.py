"""Cloud-side failures through real processes and real servers: InfluxDB down for half a minute (past the
ingest's 10 s retry ceiling, so retries at the ceiling happen) while the gateways keep sending, and an ingest
worker killed with SIGKILL mid-stream. In both cases InfluxDB ends up holding every sample exactly once, checked
by count and checksum per series.

The stream is published straight to the cloud broker as gateways would (``TelemetryBatch`` at QoS 1, one
sequence per gateway), so what is tested is the cloud alone: ``twin cloud run`` → ingest → InfluxDB
(through the test front) and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from models import topics
from models.wire import PointSeries, TelemetryBatch, encode
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, wait_until

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
STEP_NS = 10_000_000  # 100 Hz per series
POINTS = ("supply_air", "return_air", "door", "compressor_current")
OUTAGE_S = 30


class Stream:
    """Gateways sending telemetry at a steady rate; remembers what the broker acknowledged.

    Every value is a multiple of 0.25, so sums are exact in binary and serve as checksums.
    """

    def __init__(self, broker: MosquittoServer, gateways: int = 2, assets_per_gateway: int = 3,
                 samples: int = 25, rate_hz: float = 20.0, tenant: str = "acme") -> None:
        self.tenant = tenant
        self.gateways = [f"gw-{g}" for g in range(gateways)]
        self.assets = {gw: [f"{gw}-trailer-{a}" for a in range(assets_per_gateway)] for gw in self.gateways}
        self.samples, self.period = samples, 1.0 / rate_hz
        self.sent_batches = 0
        self.expected: dict[tuple[str, str], list[float]] = {}  # (asset, point) -> [count, sum]
        self._seq = dict.fromkeys(self.gateways, 0)
        self._stop = threading.Event()
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stream-{uuid.uuid4().hex[:6]}",
                                   protocol=mqtt.MQTTv5)
        self._client.max_inflight_messages_set(100)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def _batch(self, gw: str) -> TelemetryBatch:
        seq = self._seq[gw]
        self._seq[gw] += 1
        series = []
        for a, asset in enumerate(self.assets[gw]):
            for p, point in enumerate(POINTS):
                k0 = seq * self.samples
                values = [((k0 + i + 7 * a + 3 * p) % 1000) * 0.25 for i in range(self.samples)]
                series.append(PointSeries(asset=asset, point=point, t_ns=[T0 + (k0 + i) * STEP_NS
                                                                          for i in range(self.samples)],
                                          values=values, quality=[0] * self.samples))
                c = self.expected.setdefault((asset, point), [0, 0.0])
                c[0] += len(values)
                c[1] += sum(values)
        return TelemetryBatch(tenant=self.tenant, gateway=gw, seq=seq, sent_ns=time.time_ns(), series=series)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            for gw in self.gateways:
                payload = encode(self._batch(gw), compress=True)
                self._infos.append(self._client.publish(topics.telemetry(self.tenant, gw), payload, qos=1))
                self.sent_batches += 1
            next_t += self.period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait until the broker acknowledged every batch (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        for info in self._infos:
            info.wait_for_publish(30)
        assert all(i.is_published() for i in self._infos), "the broker did not acknowledge every batch"
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def n_samples(self) -> int:
        return sum(int(c) for c, _ in self.expected.values())


class BrokerStore:
    """Mosquitto's own count of messages it holds (``$SYS/broker/store/messages/count``): messages
    queued for, or in flight to, a persistent session stay in it until that session acknowledges them."""

    def __init__(self, broker: MosquittoServer) -> None:
        self.count = -1
        self._c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._c.on_connect = lambda c, *_: c.subscribe("$SYS/broker/store/messages/count")
        self._c.on_message = lambda _c, _u, m: setattr(self, "count", int(m.payload))
        self._c.connect(broker.host, broker.port)
        self._c.loop_start()

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@pytest.fixture
def broker() -> Iterator[MosquittoServer]:
    """A broker of our own: no other test's persistent ingest session can take or hold our messages."""
    b = MosquittoServer(extra_config=["sys_interval 1"])
    b.start()
    yield b
    b.close()


@pytest.fixture
def cloud(tmp_path, broker, influxdb, influx_db, pg_db) -> Iterator[CloudProcess]:
    c = CloudProcess(tmp_path, broker.url, pg_db, influxdb.url, influx_db)
    c.start()
    c.wait_ready()
    yield c
    c.stop()


def _stored(influxdb, db: str) -> dict[tuple[str, str], tuple[int, float]]:
    res = influxdb.query("SELECT count(value), sum(value) FROM telemetry WHERE tenant = 'acme' "
                         "GROUP BY asset, point", db=db)
    return {(s["tags"]["asset"], s["tags"]["point"]): (s["values"][0][1], s["values"][0][2])
            for s in res["results"][0].get("series", [])}


def _assert_exactly_once(influxdb, db: str, stream: Stream, cloud: CloudProcess) -> None:
    n = stream.n_samples
    wait_until(lambda: sum(c for c, _ in _stored(influxdb, db).values()) >= n, timeout=120, interval=0.5,
               what=f"{n} samples in InfluxDB")
    time.sleep(1.0)  # anything still in flight would now show up as an excess
    assert _stored(influxdb, db) == {k: (int(c), s) for k, (c, s) in stream.expected.items()}
    with cloud.client() as api:
        gws = {gw: api.get(f"/api/v1/gateways/{gw}").raise_for_status().json() for gw in stream.gateways}
    assert {gw: gws[gw]["high_seq"] + 1 for gw in stream.gateways} == stream._seq
    assert all(gws[gw]["missing_seqs"] == 0 for gw in stream.gateways)
    assert cloud.metrics()["twin_ingest_dead_letters"] == 0


def _points_in(influxdb, db: str) -> int:
    return sum(c for c, _ in _stored(influxdb, db).values())


def test_influxdb_down_for_half_a_minute_loses_and_duplicates_nothing(cloud, broker, influxdb, influx_db):
    stream = Stream(broker).start()
    store = BrokerStore(broker)
    try:
        wait_until(lambda: _points_in(influxdb, influx_db) > 0, what="the first samples in InfluxDB")
        influxdb.stop()
        down_at, sent_before = time.monotonic(), stream.sent_batches
        time.sleep(5)
        early = cloud.metrics()
        time.sleep(OUTAGE_S - 10)
        late = cloud.metrics()
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        sent_during, held = stream.sent_batches - sent_before, store.count
        influxdb.start()
        time.sleep(2)  # the stream goes on a little after the outage
        stream.stop()
        _assert_exactly_once(influxdb, influx_db, stream, cloud)
        m = cloud.metrics()
    finally:
        stream.stop()
        store.close()
    assert m["twin_ingest_store_retries"] > 0
    # While InfluxDB was down nothing was acknowledged: the broker held (at least) what the gateways sent
    # during the outage, and ingest counted nothing as written.
    assert held >= 0.9 * sent_during, f"broker held {held} messages, {sent_during} were sent during the outage"
    assert late["twin_ingest_batches_written"] == early["twin_ingest_batches_written"]
    assert late["twin_ingest_store_retries"] > early["twin_ingest_store_retries"]
    assert m["twin_ingest_batches_written"] > late["twin_ingest_batches_written"]


def test_an_ingest_worker_killed_mid_stream_loses_nothing(cloud, broker, influxdb, influx_db):
    stream = Stream(broker, samples=50, rate_hz=50.0).start()
    try:
        wait_until(lambda: _points_in(influxdb, influx_db) > 20_000, what="the stream flowing into InfluxDB")
        for _ in range(2):  # killed twice: mid-write is likely once at least
            cloud.kill()
            time.sleep(0.5)
            cloud.start()
            cloud.wait_ready()
            time.sleep(1.0)
        stream.stop()
        _assert_exactly_once(influxdb, influx_db, stream, cloud)
    finally:
        stream.stop()
