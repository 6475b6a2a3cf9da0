"""Ingest against real stores: duplicates dropped across restarts and across the pipeline's groups,
sequence gaps reported, bad points dead-lettered — with the registry on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
from sqlalchemy import select

from cloud.ingest import Ingest, _Group, _Msg, decode_telemetry
from cloud.registry import DeadLetter, Gateway
from cloud.settings import CloudSettings
from cloud.store.base import Rows
from cloud.store.influx import _SingleFlight, line_protocol
from models.wire import PointSeries, TelemetryBatch, WireError, encode

S = 1_000_000_000
T0 = 1_767_225_600 * S


def _ingest(registry, store) -> Ingest:
    return Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1"), store, registry)


def _msg(seq: int, values=(1.0, 2.0, 3.0), gateway="gw1", topic=None) -> _Msg:
    b = TelemetryBatch(tenant="acme", gateway=gateway, seq=seq, series=[
        PointSeries(asset="t1", point="supply_air", t_ns=[T0 + (10 * seq + i) * S for i in range(len(values))],
                    values=list(values), quality=[0] * len(values))])
    return _Msg(mid=seq, qos=0, topic=topic or f"twin/v1/acme/{gateway}/telemetry", payload=encode(b, compress=True))


def _count(store) -> int:
    return len(store.query_range("acme", "t1", "supply_air", T0, T0 + 10**6 * S, limit=100_000).t_ns)


def test_duplicates_are_dropped_even_after_a_restart(registry, store):
    ing = _ingest(registry, store)
    ing.process([_msg(0), _msg(1), _msg(1)])
    assert (_count(store), ing.counters["duplicates"], ing.counters["points_written"]) == (6, 1, 6)
    again = _ingest(registry, store)  # a restarted worker: the seen-window is in the registry
    again.process([_msg(0), _msg(2)])
    assert (_count(store), again.counters["duplicates"]) == (9, 1)


def test_sequence_gaps_are_reported_and_closed_by_late_batches(registry, store):
    ing = _ingest(registry, store)
    ing.process([_msg(0), _msg(1), _msg(4)])
    with registry.session() as s:
        gw = s.get(Gateway, ("acme", "gw1"))
        assert (gw.high_seq, gw.missing_seqs) == (4, 2)
    ing.process([_msg(2), _msg(3)])
    with registry.session() as s:
        assert s.get(Gateway, ("acme", "gw1")).missing_seqs == 0
    assert ing.counters["seq_gaps"] == 1


def test_a_point_the_store_rejects_is_dead_lettered_and_the_rest_written(registry, store, influxdb, influx_db):
    # A retention of one hour makes InfluxDB refuse an old sample for good, and keep the others.
    influxdb.query(f"ALTER RETENTION POLICY autogen ON {influx_db} DURATION 1h SHARD DURATION 1h", method="POST")
    now = time.time_ns()
    b = TelemetryBatch(tenant="acme", gateway="gw1", seq=0, series=[
        PointSeries(asset="t1", point="supply_air", t_ns=[now - S, now], values=[1.0, 2.0], quality=[0, 0]),
        PointSeries(asset="t2", point="door", t_ns=[T0], values=[1.0], quality=[0])])
    ing = _ingest(registry, store)
    ing.process([_Msg(1, 0, "twin/v1/acme/gw1/telemetry", encode(b))])
    assert store.query_range("acme", "t1", "supply_air", now - 2 * S, now + 1).values == [1.0, 2.0]
    with registry.session() as s:
        dead = s.scalars(select(DeadLetter)).all()
    assert len(dead) == 1 and dead[0].reason.startswith("t2/door: InfluxDB rejected the write (400)")
    assert "retention" in dead[0].reason
    assert b'"asset":"t2"' in dead[0].payload
    assert ing.counters["dead_letters"] == 1


def test_a_batch_from_the_wrong_topic_is_dead_lettered(registry, store):
    ing = _ingest(registry, store)
    ing.process([_msg(0, topic="twin/v1/acme/gw2/telemetry"), _msg(1)])
    assert _count(store) == 3
    with registry.session() as s:
        assert "payload says acme/gw1, topic says acme/gw2" in s.scalars(select(DeadLetter.reason)).one()


def test_a_batch_still_being_written_is_a_duplicate_for_the_next_group(registry, store):
    # The pipeline prepares the next group while the writer still holds this one: the same batch,
    # redelivered meanwhile, must not be written twice (nor count as a late fill of a gap).
    ing = _ingest(registry, store)
    first, second = _Group(), _Group()
    for m in (_msg(0), _msg(1)):
        ing._add(m, first)
    ing._prepare(first)
    for m in (_msg(1), _msg(2)):
        ing._add(m, second)
    ing._prepare(second)
    ing._commit(first, retry=False)
    ing._commit(second, retry=False)
    assert (_count(store), ing.counters["duplicates"]) == (9, 1)
    with registry.session() as s:
        gw = s.get(Gateway, ("acme", "gw1"))
        assert (gw.high_seq, gw.missing_seqs) == (2, 0)


def test_only_messages_of_the_current_connection_are_acknowledged(registry, store):
    # After a reconnect the broker delivers unacknowledged messages again and may reuse their ids:
    # acknowledging an old copy could acknowledge a different, unwritten message.
    ing = _ingest(registry, store)
    acked = []
    ing._client.ack = lambda mid, qos: acked.append(mid)
    ing._epoch = 2
    old, new = _msg(0), _msg(1)
    old.qos = new.qos = 1
    old.epoch, new.epoch = 1, 2
    ing.process([old, new])
    assert acked == [new.mid]
    assert _count(store) == 6


@pytest.mark.parametrize(("change", "reason"), [
    ({"v": "v9"}, "unsupported schema version 'v9'"),
    ({"series": [{"asset": "a", "point": "p", "t_ns": [1, 2], "values": [1.0], "quality": [0, 0]}]},
     "same length"),
    ({"seq": -1}, "seq"),
])
def test_malformed_batches_are_refused_with_the_reason(change, reason):
    good = {"v": "v1", "kind": "telemetry", "tenant": "acme", "gateway": "gw1", "seq": 0, "series": []}
    with pytest.raises(WireError, match=reason):
        decode_telemetry(json.dumps({**good, **change}).encode())


def test_line_protocol_fast_path_writes_what_the_per_sample_path_writes():
    rows = Rows()
    rows.extend_series("acme", "a b,c=d", "p", [1, 2, 3], [1.5, -0.0, 1e-7], [0, 0, 0])  # regular: fast path
    rows.extend_series("acme", "t1", "p", [1, 2, 3], [1.0, None, math.nan], [0, 2, 1])  # irregular
    rows.extend_series("acme", "t1", "q", [4, 5], [3, 4.25], [1, 1])  # an int among the values
    assert line_protocol(rows).splitlines() == [
        r"telemetry,asset=a\ b\,c\=d,point=p,tenant=acme value=1.5,quality=0i 1",
        r"telemetry,asset=a\ b\,c\=d,point=p,tenant=acme value=-0.0,quality=0i 2",
        r"telemetry,asset=a\ b\,c\=d,point=p,tenant=acme value=1e-07,quality=0i 3",
        "telemetry,asset=t1,point=p,tenant=acme value=1.0,quality=0i 1",
        "telemetry,asset=t1,point=p,tenant=acme quality=2i 2",
        "telemetry,asset=t1,point=p,tenant=acme quality=1i 3",
        "telemetry,asset=t1,point=q,tenant=acme value=3.0,quality=1i 4",
        "telemetry,asset=t1,point=q,tenant=acme value=4.25,quality=1i 5",
    ]


def test_identical_reads_in_flight_share_one_influxdb_round_trip():
    reads = _SingleFlight()
    started, release, calls, answers = threading.Event(), threading.Event(), [], []

    def query() -> list[str]:
        calls.append(1)
        started.set()
        release.wait(5)
        return ["answer"]

    first = threading.Thread(target=lambda: answers.append(reads.do("q", query)))
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: answers.append(reads.do("q", query)))
    second.start()
    deadline = time.monotonic() + 5
    while reads.shared == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    first.join(5)
    second.join(5)
    assert (len(calls), answers) == (1, [["answer"], ["answer"]])
    reads.do("q", query)  # once answered, the same query is asked again
    assert len(calls) == 2
