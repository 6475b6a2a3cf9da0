"""Acknowledged means written, end to end: a gateway deletes a batch when ingest says it is durably written
(``models.wire.Committed`` on the gateway's ``committed`` topic), not on the broker's PUBACK, so a broker that
crashes with acknowledged messages in memory loses nothing: the gateway sends them again and ingest drops what
it already has by (gateway, epoch, seq)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from cloud.ingest import Ingest, _Msg
from cloud.settings import CloudSettings
from edge.agent import EdgeAgent
from edge.config import parse_config
from models import topics
from models.wire import (
    AlarmEvent,
    Committed,
    GatewayStatus,
    PointSeries,
    TelemetryBatch,
    decode,
    decode_event,
    encode,
)
from simulators.devices import Reading, publish_readings
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S


class Recorder:
    """An MQTT client that records what arrives on some topics and can publish (a stand-in for neither end:
    it only watches the wire, and says ``Committed`` where a test plays ingest's part)."""

    def __init__(self, url: str, *filters: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters]) if filters else ready.set()
        self.c.on_subscribe = lambda *_: ready.set()
        self.c.on_message = lambda c, u, m: self._add(m.topic, m.payload)
        self.c.connect(host, int(port))
        self.c.loop_start()
        assert ready.wait(10)

    def _add(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if topic is None or t == topic]

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# -- the gateway: kept until committed ----------------------------------------------------------------------

@pytest.fixture
def agent(tmp_path, mosquitto):
    cfg = parse_config(gateway_config(tmp_path, mosquitto.url, mosquitto.url, gateway=f"gw-{uuid.uuid4().hex[:8]}"))
    a = EdgeAgent(cfg)
    a.start()
    wait_until(lambda: a.uplink.connected, what="uplink connected")
    yield a
    a.shutdown(flush_s=0)


def _ticks(agent: EdgeAgent, n: int) -> None:
    for i in range(n):
        agent.sink("trailer-001", "supply_air", T0 + i * S, 4.0 + i * 0.25, 0)
        agent.tick()


def _seqs(rec: Recorder, topic: str) -> list[int]:
    return [decode(p, TelemetryBatch).seq for p in rec.payloads(topic)]


def test_a_batch_leaves_the_outbox_only_when_the_cloud_says_it_is_written(agent, mosquitto):
    gw = agent.cfg.gateway
    rec = Recorder(mosquitto.url, topics.telemetry("acme", gw))
    _ticks(agent, 4)
    wait_until(lambda: _seqs(rec, topics.telemetry("acme", gw)) == [0, 1, 2, 3], what="4 batches on the wire")
    wait_until(lambda: agent.uplink.stats["awaiting_commit"] == 4, what="4 batches acknowledged by the broker")
    batch = decode(rec.payloads()[0], TelemetryBatch)
    assert batch.epoch == agent.outbox.epoch and len(batch.epoch) == 16
    assert agent.outbox.stats()["outbox_depth"] == 4  # the broker's PUBACK deletes nothing

    committed = topics.committed("acme", gw)
    rec.publish(committed, encode(Committed(epoch="0123456789abcdef", telemetry=[0, 1, 2, 3])))  # another outbox's
    wait_until(lambda: agent.uplink.stats["commits_other_epoch"] == 1, what="the other epoch's commit")
    assert agent.outbox.stats()["outbox_depth"] == 4
    rec.publish(committed, encode(Committed(epoch=agent.outbox.epoch, telemetry=[1, 2])))
    wait_until(lambda: agent.outbox.stats()["outbox_depth"] == 2, what="two rows committed")
    rec.publish(committed, encode(Committed(epoch=agent.outbox.epoch, telemetry=[0, 3])))
    wait_until(lambda: agent.outbox.stats()["outbox_depth"] == 0, what="all rows committed")
    assert agent.uplink.stats["rows_committed"] == 4
    assert _seqs(rec, topics.telemetry("acme", gw)) == [0, 1, 2, 3]  # nothing was sent twice
    rec.close()


def test_events_are_numbered_in_the_epoch_and_kept_until_committed(agent, mosquitto):
    gw = agent.cfg.gateway
    rec = Recorder(mosquitto.url, topics.events("acme", gw))
    for i in range(100):  # supply air above 8 degC for 990 s of sample time: the local rule fires once
        agent.sink("trailer-001", "supply_air", T0 + i * 10 * S, 9.5, 0)
    agent.tick()
    alarms = wait_until(lambda: [e for e in map(decode_event, rec.payloads()) if isinstance(e, AlarmEvent)],
                        what="the alarm")
    events = [decode_event(p) for p in rec.payloads()]
    assert sorted(e.seq for e in events) == list(range(len(events)))  # anomalies and alarms: one count
    assert {e.epoch for e in events} == {agent.outbox.epoch} and [a.rule for a in alarms] == ["supply-air-high"]
    depth = agent.outbox.stats()["outbox_depth"]
    rec.publish(topics.committed("acme", gw), encode(Committed(epoch=agent.outbox.epoch, events=[alarms[0].seq])))
    wait_until(lambda: agent.outbox.stats()["outbox_depth"] == depth - 1, what="the alarm committed")
    rec.close()


def test_rows_whose_commit_was_lost_are_sent_again_once_later_rows_are_committed(agent, mosquitto):
    gw = agent.cfg.gateway
    agent.uplink.commit_grace_s = 0.5
    tel = topics.telemetry("acme", gw)
    rec = Recorder(mosquitto.url, tel)
    _ticks(agent, 6)
    wait_until(lambda: agent.uplink.stats["awaiting_commit"] == 6, what="6 batches acknowledged by the broker")
    rec.publish(topics.committed("acme", gw), encode(Committed(epoch=agent.outbox.epoch, telemetry=[3, 4, 5])))
    wait_until(lambda: _seqs(rec, tel) == [0, 1, 2, 3, 4, 5, 0, 1, 2], what="rows 0-2 sent again")
    rec.publish(topics.committed("acme", gw), encode(Committed(epoch=agent.outbox.epoch, telemetry=[0, 1, 2])))
    wait_until(lambda: agent.outbox.stats()["outbox_depth"] == 0, what="all rows committed")
    assert agent.uplink.stats["rows_resent"] == 3
    rec.close()


# -- the cloud: says what it wrote, and again for what it had ------------------------------------------------

def _batch(seq: int, epoch: str = "e1") -> _Msg:
    b = TelemetryBatch(tenant="acme", gateway="gw1", epoch=epoch, seq=seq, series=[
        PointSeries(asset="t1", point="supply_air", t_ns=[T0 + seq * S], values=[4.0], quality=[0])])
    return _Msg(mid=seq, qos=0, topic="twin/v1/acme/gw1/telemetry", payload=encode(b))


def test_ingest_says_what_it_wrote_and_says_it_again_for_a_duplicate(registry, store):
    ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1"), store, registry)
    said: list[tuple[str, Committed]] = []
    ing._client.publish = lambda topic, payload, qos: said.append((topic, decode(payload, Committed)))
    alarm = AlarmEvent(tenant="acme", gateway="gw1", event_id="gw1:t1:hot:1", asset="t1", rule="hot", start_ns=T0,
                       epoch="e1", seq=7)
    ing.process([_batch(0), _batch(1), _Msg(9, 0, "twin/v1/acme/gw1/events", encode(alarm))])
    ing.process([_batch(1), _batch(2)])  # 1 again: a gateway that did not hear the first answer
    ing.process([_batch(5, epoch="")])  # a gateway from before epochs deletes on PUBACK: nothing to say
    assert [(t, c.epoch, c.telemetry, c.events) for t, c in said] == [
        ("twin/v1/acme/gw1/committed", "e1", [0, 1], [7]),
        ("twin/v1/acme/gw1/committed", "e1", [1, 2], []),
    ]
    assert ing.counters["duplicates"] == 1 and ing.counters["points_written"] == 4


# -- through a broker crash ---------------------------------------------------------------------------------

ASSET, POINTS = "trailer-001", ("supply_air", "return_air", "ambient")
WARM, PER_POINT = 10, 200


def _value(p: int, i: int) -> float:
    return ((p * 13 + i) % 400) * 0.25  # exact in binary: sums are exact checksums


@pytest.fixture
def brokers():
    site, cloud = MosquittoServer(), MosquittoServer()  # the cloud broker saves only on a clean stop
    site.start()
    cloud.start()
    yield site, cloud
    site.close()
    cloud.close()


def _crash(broker: MosquittoServer) -> None:
    """SIGKILL: no save, so what the broker held in memory since it started is gone."""
    proc = broker._proc
    assert proc is not None
    proc.kill()
    proc.wait(10)
    broker._proc = None


def _last_seq(edge: EdgeProcess) -> int:
    """The last sequence number the agent's outbox gave out."""
    with sqlite3.connect(edge.config_path.parent / "outbox.sqlite") as db:
        return db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0] - 1


def test_mosquitto_killed_while_ingest_is_paused_loses_nothing(tmp_path, brokers, influxdb, postgres):
    site, cloud_broker = brokers
    db = f"ack_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    # One message in flight to ingest: while it is paused, everything else waits in the broker's memory.
    cloud = CloudProcess(tmp_path, cloud_broker.url, postgres.url_for(db), influxdb.url, db,
                         extra_env={"TWIN_INGEST_MAX_INFLIGHT": "1"})
    edge = EdgeProcess(tmp_path / "edge", gateway_config(tmp_path / "edge", cloud_broker.url, site.url))
    status = topics.status("acme", "gw-e2e")

    def stored() -> dict[str, tuple[int, float]]:
        res = influxdb.query("SELECT count(value), sum(value) FROM telemetry GROUP BY point", db=db)
        return {s["tags"]["point"]: (s["values"][0][1], s["values"][0][2])
                for s in res["results"][0].get("series", [])}

    def counters(rec: Recorder) -> dict[str, int]:
        last = [decode(p, GatewayStatus) for p in rec.payloads() if p]
        return last[-1].counters if last else {}

    try:
        cloud.start()
        cloud.wait_ready()
        edge.start()
        edge.wait_log("source sensors: connected")
        publish_readings(site.url, [Reading(ASSET, p, T0 + i * S, _value(k, i)) for i in range(WARM)
                                    for k, p in enumerate(POINTS)])
        wait_until(lambda: sum(c for c, _ in stored().values()) == WARM * len(POINTS), what="the warm-up stored")

        os.kill(cloud.proc.pid, signal.SIGSTOP)  # ingest paused: nothing is written, nothing committed
        watch = Recorder(cloud_broker.url, status)
        report = publish_readings(site.url, [Reading(ASSET, p, T0 + i * S, _value(k, i))
                                             for i in range(WARM, PER_POINT) for k, p in enumerate(POINTS)],
                                  rate=600)
        assert report.acked == (PER_POINT - WARM) * len(POINTS)
        # Every sample taken in, and every row still in the outbox acknowledged by the broker, not committed.
        wait_until(lambda: (c := counters(watch)).get("samples_in") == PER_POINT * len(POINTS)
                   and c["outbox_depth"] > 0 and c["awaiting_commit"] == c["outbox_depth"], timeout=30,
                   what="the broker to hold every batch of the pause")
        held = counters(watch)["outbox_depth"]
        watch.close()

        _crash(cloud_broker)
        cloud_broker.start()  # same port, same persistence directory, which holds nothing of the above
        os.kill(cloud.proc.pid, signal.SIGCONT)

        expected = {p: (PER_POINT, sum(_value(k, i) for i in range(PER_POINT))) for k, p in enumerate(POINTS)}
        wait_until(lambda: stored() == expected, timeout=120, interval=0.5, what=f"all samples stored: {expected}")
        watch = Recorder(cloud_broker.url, status)
        wait_until(lambda: counters(watch).get("outbox_depth") == 0, timeout=60, what="the outbox emptied by commits")
        assert counters(watch)["rows_resent"] >= held  # what the crashed broker had acknowledged went again
        watch.close()
        assert stored() == expected  # nothing lost, nothing written twice
        with cloud.client() as api:
            gw = next(g for g in api.get("/api/v1/gateways").json()["items"] if g["id"] == "gw-e2e")
        assert (gw["missing_seqs"], gw["high_seq"]) == (0, _last_seq(edge))
        assert cloud.metrics()["twin_ingest_dead_letters"] == 0
    finally:
        if cloud.proc is not None:
            os.kill(cloud.proc.pid, signal.SIGCONT)
        edge.stop()
        cloud.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)
