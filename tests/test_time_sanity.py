"""Time sanity in the cloud: samples stamped further ahead of their arrival than TWIN_INGEST_FUTURE_TOLERANCE_S
are not written as data but dead-lettered with the reason and counted; each gateway's clock offset is kept and
shown; late and future samples never move ``/latest``."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from sqlalchemy import select

from cloud.ingest import Ingest, _Msg
from cloud.registry import DeadLetter, Gateway
from cloud.settings import CloudSettings
from cloud.store.base import Rows
from cloud.store.latest import LatestCache
from models import topics
from models.wire import Committed, PointSeries, TelemetryBatch, TextSeries, decode, encode
from tests.harness.processes import CloudProcess, wait_until

S = 1_000_000_000
YEAR_NS = 365 * 24 * 3600 * S


def _msg(b: TelemetryBatch, arrival_ns: int) -> _Msg:
    return _Msg(mid=b.seq, qos=0, topic=f"twin/v1/{b.tenant}/{b.gateway}/telemetry", payload=encode(b),
                arrival_ns=arrival_ns)


def test_future_samples_are_taken_out_of_their_batch_into_one_dead_letter_naming_the_tolerance(registry, store):
    ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1", ingest_future_tolerance_s=60), store, registry)
    now = time.time_ns()
    b = TelemetryBatch(tenant="acme", gateway="gw1", epoch="e1", seq=0, sent_ns=now, series=[
        PointSeries(asset="t1", point="supply_air", t_ns=[now - S, now + 59 * S, now + 61 * S, now + YEAR_NS],
                    values=[4.0, 4.5, 5.0, 99.0], quality=[0, 0, 0, 0]),
        PointSeries(asset="t1", point="door", t_ns=[now - S], values=[0.0], quality=[0])],
        text=[TextSeries(asset="t1", point="state", t_ns=[now + 2 * YEAR_NS, now], values=["later", "now"])])
    ing.process([_msg(b, now)])
    assert store.query_range("acme", "t1", "supply_air", now - 2 * S, now + 2 * YEAR_NS).values == [4.0, 4.5]
    assert store.query_range("acme", "t1", "door", now - 2 * S, now).values == [0.0]
    assert (ing.counters["future_samples"], ing.counters["points_written"]) == (3, 3)
    with registry.session() as s:
        (dead,) = s.scalars(select(DeadLetter).where(DeadLetter.reason.like("%TOLERANCE%"))).all()
        gw = s.get(Gateway, ("acme", "gw1"))
    assert dead.reason == ("telemetry: 3 sample(s) stamped more than TWIN_INGEST_FUTURE_TOLERANCE_S=60 s ahead of "
                           "their arrival (up to 730.0 days ahead): t1/supply_air, t1/state")
    refused = json.loads(dead.payload)
    assert [(x["point"], x["t_ns"]) for x in refused["series"]] == [("supply_air", [now + 61 * S, now + YEAR_NS])]
    assert [(x["point"], x["t_ns"]) for x in refused["text"]] == [("state", [now + 2 * YEAR_NS])]
    assert (gw.future_samples, gw.high_seq) == (3, 0)  # the batch itself is written: its sequence counts


def test_a_gateway_clock_offset_is_the_least_delayed_batch_of_the_last_minute(registry, store):
    ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1"), store, registry)
    now = time.time_ns()
    sent = [now + 30 * S - 2 * S, now + 30 * S - 5 * S, now + 30 * S - 600 * S]  # 30 s fast; queued 2, 5, 600 s
    ing.process([_msg(TelemetryBatch(tenant="acme", gateway="gw1", seq=i, sent_ns=t, series=[]), now)
                 for i, t in enumerate(sent)])
    with registry.session() as s:
        assert s.get(Gateway, ("acme", "gw1")).clock_offset_ns == 28 * S


def test_latest_values_ignore_future_samples_in_the_store_and_late_ones_written(store):
    now = time.time_ns()
    old = Rows()
    old.extend_series("acme", "t1", "supply_air", [now - 10 * S], [4.0], [0])
    old.extend_series("acme", "t1", "ambient", [now - 20 * S, now + YEAR_NS], [20.0, 30.0], [0, 0])  # from before
    store.write(old)
    cache = LatestCache(store, ttl_s=60, future_tolerance_s=300)
    # A point whose newest stored sample is a year ahead is left out rather than pinned to it (the store answers
    # only each point's newest sample, so the one before is not known here).
    assert cache.latest("acme", "t1") == {"supply_air": (now - 10 * S, 4.0)}
    late = Rows()
    late.extend_series("acme", "t1", "supply_air", [now - 60 * S], [7.0], [0])
    cache.write(late)
    assert cache.latest("acme", "t1") == {"supply_air": (now - 10 * S, 4.0)}
    ahead = Rows()
    ahead.extend_series("acme", "t1", "supply_air", [now + 3600 * S], [50.0], [0])  # a clock gone wrong
    cache.write(ahead)
    assert cache.latest("acme", "t1") == {"supply_air": (now - 10 * S, 4.0)}


def test_future_stamped_samples_are_dead_lettered_counted_and_leave_latest_unchanged(tmp_path, mosquitto, influxdb,
                                                                                     postgres):
    db = f"ts_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    gw = f"gw-{uuid.uuid4().hex[:6]}"
    cloud = CloudProcess(tmp_path, mosquitto.url, postgres.url_for(db), influxdb.url, db,
                         extra_env={"TWIN_INGEST_FUTURE_TOLERANCE_S": "60"})
    committed: list[Committed] = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, *_: cl.subscribe(topics.committed("acme", gw), qos=1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda cl, u, m: committed.append(decode(m.payload, Committed))
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    assert ready.wait(10)

    def send(seq: int, series: list[PointSeries]) -> None:
        b = TelemetryBatch(tenant="acme", gateway=gw, epoch="e1", seq=seq, sent_ns=time.time_ns() + 30 * S,
                           series=series)  # the gateway's clock is 30 s fast
        c.publish(topics.telemetry("acme", gw), encode(b, compress=True), qos=1).wait_for_publish(10)

    def latest() -> dict:
        with cloud.client() as api:
            r = api.get("/api/v1/assets/trailer-9/latest")
        return r.json() if r.status_code == 200 else {}

    try:
        cloud.start()
        cloud.wait_ready()
        now = time.time_ns()
        send(0, [PointSeries(asset="trailer-9", point="supply_air", t_ns=[now - 10 * S, now - 5 * S],
                             values=[4.0, 4.5], quality=[0, 0])])
        before = wait_until(latest, what="the first values")
        assert before == {"supply_air": {"t_ns": now - 5 * S, "value": 4.5}}
        send(1, [PointSeries(asset="trailer-9", point="supply_air",
                             t_ns=[now - 60 * S, now + 120 * S, now + YEAR_NS], values=[7.0, 98.0, 99.0],
                             quality=[0, 0, 0]),
                 PointSeries(asset="trailer-9", point="return_air", t_ns=[now + 24 * 3600 * S], values=[6.0],
                             quality=[0])])
        wait_until(lambda: [x.telemetry for x in committed] == [[0], [1]], what="both batches committed")
        assert latest() == before  # neither the late sample nor the future ones moved it
        with cloud.client() as api:
            dead = api.get("/api/v1/dead-letters").json()["items"]
            gws = {g["id"]: g for g in api.get("/api/v1/gateways").json()["items"]}
            stored = api.get("/api/v1/assets/trailer-9/telemetry",
                             params={"point": "supply_air", "start": now - 100 * S, "end": now + 2 * YEAR_NS}).json()
        assert [d["reason"] for d in dead] == [
            "telemetry: 3 sample(s) stamped more than TWIN_INGEST_FUTURE_TOLERANCE_S=60 s ahead of their arrival "
            "(up to 365.0 days ahead): trailer-9/supply_air, trailer-9/return_air"]
        assert (stored["t_ns"], stored["values"]) == ([now - 60 * S, now - 10 * S, now - 5 * S], [7.0, 4.0, 4.5])
        assert gws[gw]["future_samples"] == 3
        assert 29 * S < gws[gw]["clock_offset_ns"] <= 30 * S  # 30 s fast, less the trip through the broker
        assert cloud.metrics()["twin_ingest_future_samples"] == 3
    finally:
        c.disconnect()
        c.loop_stop()
        cloud.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)
