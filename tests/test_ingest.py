"""Ingest against real stores: duplicates dropped across restarts, sequence gaps reported, bad points
dead-lettered — with the registry on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from cloud.ingest import Ingest, _Msg
from cloud.registry import DeadLetter, Gateway, Registry
from cloud.settings import CloudSettings
from cloud.store.influx import InfluxStore
from models.wire import PointSeries, TelemetryBatch, encode

S = 1_000_000_000
T0 = 1_767_225_600 * S


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")
    reg = Registry(url)
    reg.create_schema()
    yield reg
    reg.engine.dispose()


@pytest.fixture
def store(influxdb, influx_db):
    s = InfluxStore(influxdb.url, "", "-", f"{influx_db}/autogen", influx_db)
    yield s
    s.close()


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
