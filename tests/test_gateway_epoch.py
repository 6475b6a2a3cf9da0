"""Producer identity: a gateway's outbox has an epoch, made with it, and sequence numbers count within it. A
wiped or replaced outbox starts again at 0 under a new epoch, which the cloud records and does not mistake for a
replay; what the cloud remembers to drop duplicates is one bounded row per (gateway, epoch), not a row per
batch, and old epochs are forgotten."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, text, update

from cloud.ingest import EPOCHS_PER_GATEWAY, SEQ_WINDOW, Ingest, _Msg
from cloud.registry import MIGRATIONS, Gateway, IngestEpoch, Registry
from cloud.settings import CloudSettings
from models.wire import TelemetryBatch, encode
from simulators.devices import Reading, publish_readings
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S
DAY_NS = 24 * 3600 * S


def _ingest(registry, store) -> Ingest:
    return Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1"), store, registry)


def _empty(seq: int, epoch: str, gateway: str = "gw1") -> _Msg:
    """A batch with no samples: what is tested here is only which sequences count as written."""
    b = TelemetryBatch(tenant="acme", gateway=gateway, epoch=epoch, seq=seq, series=[])
    return _Msg(mid=seq, qos=0, topic=f"twin/v1/acme/{gateway}/telemetry", payload=encode(b))


def _epochs(registry) -> dict[str, IngestEpoch]:
    with registry.session() as s:
        return {r.epoch: r for r in s.scalars(select(IngestEpoch).where(IngestEpoch.gateway == "gw1"))}


def _gateway(registry, gw: str = "gw1") -> Gateway:
    with registry.session() as s:
        return s.get(Gateway, ("acme", gw))


def test_dedup_state_is_one_bounded_row_per_epoch_and_a_new_epoch_starts_again_at_zero(registry, store):
    ing = _ingest(registry, store)
    for lo in range(0, 5000, 500):
        ing.process([_empty(q, "a") for q in range(lo, lo + 500)])
    rows = _epochs(registry)
    assert list(rows) == ["a"] and (rows["a"].high_seq, len(rows["a"].window), rows["a"].missing) == (4999, 512, 0)
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(IngestEpoch)) == 1

    ing.process([_empty(q, "a") for q in range(5000 - SEQ_WINDOW, 5000)])  # the whole window again
    assert (ing.counters["duplicates"], ing.counters["batches_written"]) == (SEQ_WINDOW, 5000)
    ing.process([_empty(5000 - SEQ_WINDOW - 1, "a")])  # older than the window knows: written again, and said
    assert (ing.counters["seq_below_window"], ing.counters["batches_written"]) == (1, 5001)

    ing.process([_empty(q, "b") for q in range(10)])  # the outbox was wiped: 0 again, a new producer
    assert (ing.counters["duplicates"], ing.counters["batches_written"], ing.counters["new_epochs"]) == (
        SEQ_WINDOW, 5011, 2)
    gw = _gateway(registry)
    assert (gw.epoch, gw.high_seq, gw.missing_seqs) == ("b", 9, 0) and gw.epoch_since_ns > 0
    assert sorted(_epochs(registry)) == ["a", "b"]
    ing.process([_empty(5000, "a")])  # the old outbox's last batch, still queued in the broker: its own window
    assert ing.counters["duplicates"] == SEQ_WINDOW and _gateway(registry).epoch == "b"


def test_gaps_are_counted_per_epoch_and_closed_by_late_batches(registry, store):
    ing = _ingest(registry, store)
    ing.process([_empty(q, "a") for q in (0, 1, 5)])
    ing.process([_empty(q, "b") for q in (0, 3)])
    gw = _gateway(registry)
    assert (gw.epoch, gw.high_seq, gw.missing_seqs) == ("b", 3, 3 + 2)
    ing.process([_empty(q, "a") for q in (2, 3, 4)] + [_empty(q, "b") for q in (1, 2)])
    assert (_gateway(registry).missing_seqs, ing.counters["seq_gaps"]) == (0, 2)


def test_epochs_not_heard_from_are_forgotten_and_at_most_a_few_are_kept(registry, store):
    ing = _ingest(registry, store)
    ing.process([_empty(0, "old")])
    ing.process([_empty(0, "current")])
    with registry.session() as s:  # "old" was last heard from 8 days ago (retention: 7)
        s.execute(update(IngestEpoch).where(IngestEpoch.epoch == "old")
                  .values(last_seen_ns=time.time_ns() - 8 * DAY_NS))
    ing.process([_empty(1, "current")])
    assert sorted(_epochs(registry)) == ["current"]
    for i in range(12):  # a gateway inventing epochs cannot grow the registry
        ing.process([_empty(0, f"e{i:02d}")])
    kept = _epochs(registry)
    assert len(kept) == EPOCHS_PER_GATEWAY and "e11" in kept and _gateway(registry).epoch == "e11"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")


def test_migration_keeps_what_ingest_seen_knew_as_the_window_of_gateways_without_epochs(url, tmp_path, store):
    reg = Registry(url)
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with reg.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with reg.engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES ('acme', 'acme')"))
        conn.execute(text("INSERT INTO gateways (tenant, id, state, last_seen_ns, config_version, counters, high_seq, "
                          "missing_seqs, desired_version) VALUES ('acme', 'gw1', 'online', 0, 0, '{}', 9000, 1, 0)"))
        seen = [q for q in range(9001) if q != 8990]  # 8990 never arrived
        conn.execute(text("INSERT INTO ingest_seen (tenant, gateway, seq) VALUES ('acme', 'gw1', :q)"),
                     [{"q": q} for q in seen])
    reg.create_schema()  # to the newest revision
    (row,) = _epochs(reg).values()
    assert (row.epoch, row.high_seq, row.missing) == ("", 9000, 1)
    ing = _ingest(reg, store)
    ing.process([_empty(q, "") for q in (8999, 9000, 8990, 9001)])  # replays, the late one, the next one
    assert (ing.counters["duplicates"], ing.counters["batches_written"]) == (2, 2)
    assert (_gateway(reg).high_seq, _gateway(reg).missing_seqs) == (9001, 0)
    with reg.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
        back = {q for (q,) in conn.execute(text("SELECT seq FROM ingest_seen WHERE gateway = 'gw1'"))}
    assert back == set(range(9002 - SEQ_WINDOW, 9002))
    reg.engine.dispose()


# -- the real agent, its outbox deleted between two runs ----------------------------------------------------

POINTS = ("supply_air", "return_air", "ambient")
PER_RUN = 150


def _value(p: int, i: int) -> float:
    return ((p * 11 + i) % 300) * 0.25  # exact in binary: sums are exact checksums


def _outbox(edge: EdgeProcess) -> Path:
    return edge.config_path.parent / "outbox.sqlite"


def _read(path: Path, sql: str):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchone()[0]


@pytest.fixture
def brokers():
    site, cloud = MosquittoServer(), MosquittoServer()
    site.start()
    cloud.start()
    yield site, cloud
    site.close()
    cloud.close()


def test_an_outbox_deleted_between_two_runs_of_the_agent_loses_nothing_of_the_second_run(
        tmp_path, brokers, influxdb, postgres):
    site, cloud_broker = brokers
    db = f"ep_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    cloud = CloudProcess(tmp_path, cloud_broker.url, postgres.url_for(db), influxdb.url, db)
    config = gateway_config(tmp_path / "edge", cloud_broker.url, site.url)

    def stored() -> dict[str, tuple[int, float]]:
        res = influxdb.query("SELECT count(value), sum(value) FROM telemetry GROUP BY point", db=db)
        return {s["tags"]["point"]: (s["values"][0][1], s["values"][0][2])
                for s in res["results"][0].get("series", [])}

    def run(first: int) -> tuple[str, int]:
        """One run of `twin edge run`: PER_RUN samples per point from sample ``first``; its epoch and last seq."""
        edge = EdgeProcess(tmp_path / "edge", config)
        edge.start()
        try:
            edge.wait_log("source sensors: connected")
            publish_readings(site.url, [Reading("trailer-001", p, T0 + i * S, _value(k, i))
                                        for i in range(first, first + PER_RUN) for k, p in enumerate(POINTS)])
            want = first + PER_RUN
            wait_until(lambda: all(c == want for c, _ in stored().values()) and len(stored()) == len(POINTS),
                       timeout=60, what=f"{want} samples per point stored")
            wait_until(lambda: _read(_outbox(edge), "SELECT COUNT(*) FROM outbox") == 0, what="every row committed")
            return (_read(_outbox(edge), "SELECT epoch FROM identity"),
                    _read(_outbox(edge), "SELECT value FROM meta WHERE key = 'next_seq'") - 1)
        finally:
            assert edge.stop() == 0

    try:
        cloud.start()
        cloud.wait_ready()
        first_epoch, _ = run(0)
        for f in (tmp_path / "edge").glob("outbox.sqlite*"):  # a new SD card: the outbox is gone
            f.unlink()
        second_epoch, second_high = run(PER_RUN)
        assert first_epoch != second_epoch
        expected = {p: (2 * PER_RUN, sum(_value(k, i) for i in range(2 * PER_RUN))) for k, p in enumerate(POINTS)}
        assert stored() == expected
        with cloud.client() as api:
            gw = next(g for g in api.get("/api/v1/gateways").json()["items"] if g["id"] == "gw-e2e")
        assert (gw["epoch"], gw["high_seq"], gw["missing_seqs"]) == (second_epoch, second_high, 0)
        m = cloud.metrics()
        assert (m["twin_ingest_new_epochs"], m["twin_ingest_dead_letters"]) == (2, 0)
    finally:
        cloud.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)
