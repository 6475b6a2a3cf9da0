"""One contract, two stores: InfluxDB (real server) and the embedded SQLite store give the same answers."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from cloud.store import Rows
from cloud.store.embedded import EmbeddedStore
from cloud.store.influx import InfluxStore
from cloud.store.latest import LatestCache
from tests.harness.processes import wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S  # a minute boundary


@pytest.fixture(params=["embedded", "influx", "influx+latest-cache"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "ts.sqlite")
    else:
        db = request.getfixturevalue("influx_db")
        influx = request.getfixturevalue("influxdb")
        s = InfluxStore(influx.url, "", "-", f"{db}/autogen", db)
        if request.param.endswith("latest-cache"):  # what the platform uses: the same contract in front of it
            s = LatestCache(s, ttl_s=60)
    yield s
    s.close()


def _rows() -> Rows:
    r = Rows()
    r.extend_series("acme", "trailer-1", "supply_air", [T0 + i * S for i in range(120)],
                    [float(i) for i in range(120)], [0] * 120)
    # same timestamp on another point: both must survive
    r.extend_series("acme", "trailer-1", "return_air", [T0, T0 + 30 * S], [7.5, None], [0, 2])
    r.extend_series("other", "trailer-1", "supply_air", [T0], [99.0], [0])
    r.extend_series("acme", "a b,c=d", "p t", [T0], [1.25], [1])  # characters that need escaping
    return r


def test_range_returns_exact_samples_in_order(store):
    store.write(_rows())
    s = store.query_range("acme", "trailer-1", "supply_air", T0, T0 + 10 * S)
    assert s.t_ns == [T0 + i * S for i in range(10)]
    assert s.values == [float(i) for i in range(10)]
    assert s.quality == [0] * 10
    assert store.query_range("acme", "trailer-1", "supply_air", T0, T0 + 120 * S, limit=7).t_ns[-1] == T0 + 6 * S


def test_missing_values_keep_their_quality_and_same_timestamps_survive(store):
    store.write(_rows())
    s = store.query_range("acme", "trailer-1", "return_air", T0, T0 + 60 * S)
    assert (s.t_ns, s.values, s.quality) == ([T0, T0 + 30 * S], [7.5, None], [0, 2])
    assert store.query_range("acme", "trailer-1", "supply_air", T0, T0 + 1).values == [0.0]
    assert store.query_range("acme", "a b,c=d", "p t", T0, T0 + 1).values == [1.25]


def test_full_status_codes_are_kept_beside_the_quality(store):
    """A source's 32-bit status code per sample (OPC-UA: UncertainLastUsableValue, BadSensorFailure, Good with its
    LimitHigh bit; 0 = plain Good) is stored and read back, raw and through ``read``; a series without one has None."""
    codes = [0x40900000, 0x808C0000, 0, 0x00000200]
    r = _rows()
    r.extend_series("acme", "trailer-1", "ambient", [T0 + i * S for i in range(4)], [4.5, None, 4.75, 5.0],
                    [1, 2, 0, 0], codes)
    store.write(r)
    s = store.query_range("acme", "trailer-1", "ambient", T0, T0 + 10 * S)
    assert (s.values, s.quality, s.status) == ([4.5, None, 4.75, 5.0], [1, 2, 0, 0], codes)
    assert store.read("acme", "trailer-1", "ambient", T0, T0 + 10 * S, now_ns=T0 + 60 * S).status == codes
    assert store.query_range("acme", "trailer-1", "supply_air", T0, T0 + 10 * S).status is None
    assert store.query_range("acme", "trailer-1", "ambient", T0 + 2 * S, T0 + 3 * S).status is None  # Good alone


def test_an_embedded_store_from_before_status_codes_gains_their_column(tmp_path):
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE telemetry (tenant TEXT NOT NULL, asset TEXT NOT NULL, point TEXT NOT NULL, "
               "t_ns INTEGER NOT NULL, value REAL, quality INTEGER NOT NULL, "
               "PRIMARY KEY (tenant, asset, point, t_ns)) WITHOUT ROWID")
    db.execute("INSERT INTO telemetry VALUES ('acme', 'a', 'p', ?, 1.5, 0)", (T0,))
    db.commit()
    db.close()
    s = EmbeddedStore(tmp_path / "old.sqlite")
    r = Rows()
    r.extend_series("acme", "a", "p", [T0 + S], [None], [2], [0x808C0000])
    s.write(r)
    got = s.query_range("acme", "a", "p", T0, T0 + 2 * S)
    assert (got.values, got.quality, got.status) == ([1.5, None], [0, 2], [0, 0x808C0000])
    s.close()


def test_tenants_do_not_see_each_other(store):
    store.write(_rows())
    assert store.query_range("other", "trailer-1", "supply_air", T0, T0 + 120 * S).values == [99.0]
    assert store.query_range("nobody", "trailer-1", "supply_air", T0, T0 + 120 * S).t_ns == []


@pytest.mark.parametrize(("agg", "expected"), [
    ("mean", [29.5, 89.5]), ("min", [0.0, 60.0]), ("max", [59.0, 119.0]), ("last", [59.0, 119.0]),
    ("count", [60, 60]),
])
def test_windows_aggregate_per_minute(store, agg, expected):
    store.write(_rows())
    s = store.query_window("acme", "trailer-1", "supply_air", T0, T0 + 120 * S, 60 * S, agg)
    assert s.t_ns == [T0, T0 + 60 * S]
    assert s.values == expected


def test_rewriting_a_sample_replaces_it(store):
    store.write(_rows())
    r = Rows()
    r.extend_series("acme", "trailer-1", "supply_air", [T0], [0.0], [0])
    store.write(r)
    assert store.query_range("acme", "trailer-1", "supply_air", T0, T0 + 120 * S).t_ns.__len__() == 120


def test_latest_gives_each_points_last_value(store):
    store.write(_rows())
    assert store.latest("acme", "trailer-1") == {"supply_air": (T0 + 119 * S, 119.0), "return_air": (T0, 7.5)}


def test_latest_many_gives_each_assets_last_values_in_one_call(store):
    store.write(_rows())
    want = {"trailer-1": {"supply_air": (T0 + 119 * S, 119.0), "return_air": (T0, 7.5)}, "a b,c=d": {"p t": (T0, 1.25)}}
    assert store.latest_many("acme", ["trailer-1", "a b,c=d", "nobody"]) == want  # no data: left out
    # a long list (InfluxDB reads the tenant's series rather than naming them all) answers the same
    many = [f"asset-{i}" for i in range(60)] + ["a b,c=d", "trailer-1"]
    assert store.latest_many("acme", many) == want
    assert store.latest_many("other", many) == {"trailer-1": {"supply_air": (T0, 99.0)}}
    assert store.latest_many("acme", []) == {}


PN_A = "pn_" + "a" * 32
PN_B = "pn_" + "b" * 32


def _text_rows() -> Rows:
    r = Rows()
    r.extend_text("acme", "trailer-1", "driver_id", [T0, T0 + 60 * S, T0 + 120 * S], [PN_A, PN_B, PN_A], personal=True)
    r.extend_text("acme", "trailer-2", "driver_id", [T0 + 5 * S], [PN_A], personal=True)
    r.extend_text("acme", "trailer-1", "mode", [T0, T0 + 1], ['defrost "eco" \\ 2', "cool, door=open"])
    r.extend_text("other", "trailer-1", "driver_id", [T0], [PN_A], personal=True)
    return r


def test_text_points_read_back_in_order_beside_numbers(store):
    store.write(_rows())
    store.write(_text_rows())
    s = store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 200 * S)
    assert (s.t_ns, s.values) == ([T0, T0 + 60 * S, T0 + 120 * S], [PN_A, PN_B, PN_A])
    assert store.query_text("acme", "trailer-1", "mode", T0, T0 + S).values == ['defrost "eco" \\ 2', "cool, door=open"]
    assert store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 200 * S, limit=2).t_ns == [T0, T0 + 60 * S]
    assert store.latest_text("acme", "trailer-1") == {"driver_id": (T0 + 120 * S, PN_A),
                                                      "mode": (T0 + 1, "cool, door=open")}
    # text never leaks into the numeric reads
    assert store.latest("acme", "trailer-1") == {"supply_air": (T0 + 119 * S, 119.0), "return_air": (T0, 7.5)}
    assert store.query_range("acme", "trailer-1", "driver_id", T0, T0 + 200 * S).t_ns == []


def test_a_subject_is_found_by_pseudonym_within_its_tenant(store):
    store.write(_text_rows())
    hits = store.find_subject("acme", PN_A)
    assert [(h.asset, h.point, h.count, h.first_ns, h.last_ns) for h in hits] == [
        ("trailer-1", "driver_id", 2, T0, T0 + 120 * S), ("trailer-2", "driver_id", 1, T0 + 5 * S, T0 + 5 * S)]
    assert store.find_subject("nobody", PN_A) == []
    assert store.find_subject("acme", "pn_" + "c" * 32) == []


def test_erasing_a_subject_deletes_only_its_samples(store):
    store.write(_text_rows())
    assert store.erase_subject("acme", PN_A) == 3
    assert store.find_subject("acme", PN_A) == []
    assert store.query_text("acme", "trailer-1", "driver_id", T0, T0 + 200 * S).values == [PN_B]
    assert store.query_text("acme", "trailer-2", "driver_id", T0, T0 + 200 * S).values == []
    assert len(store.query_text("acme", "trailer-1", "mode", T0, T0 + S).values) == 2  # not personal: kept
    assert store.query_text("other", "trailer-1", "driver_id", T0, T0 + S).values == [PN_A]  # another tenant's
    assert store.erase_subject("acme", PN_A) == 0


# -- the latest-values cache (cloud/store/latest.py): two stores on one file are two processes ------------------
def _one(asset: str, point: str, t_ns: int, value: float | None) -> Rows:
    r = Rows()
    r.extend_series("acme", asset, point, [t_ns], [value], [0])
    return r


def test_latest_cache_sees_its_own_writes_at_once_and_others_after_its_ttl(tmp_path):
    other = EmbeddedStore(tmp_path / "ts.sqlite")  # another process writing the same store
    cached = LatestCache(EmbeddedStore(tmp_path / "ts.sqlite"), ttl_s=3600)
    other.write(_one("trailer-1", "supply_air", T0, 4.0))
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0, 4.0)}
    cached.write(_one("trailer-1", "supply_air", T0 + S, 4.5))
    cached.write(_one("trailer-1", "door", T0 + S, None))  # no value: not a latest value
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0 + S, 4.5)}
    other.write(_one("trailer-1", "supply_air", T0 + 2 * S, 5.0))
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0 + S, 4.5)}  # within the TTL: from memory
    cached.write(_one("trailer-1", "supply_air", T0 - S, 1.0))  # a late sample never replaces a newer one
    assert cached.latest_many("acme", ["trailer-1"]) == {"trailer-1": {"supply_air": (T0 + S, 4.5)}}
    fresh = LatestCache(cached.store, ttl_s=0)  # an expired TTL: read again, and merged with what it had
    assert fresh.latest("acme", "trailer-1") == {"supply_air": (T0 + 2 * S, 5.0)}
    other.close()
    cached.close()


def test_latest_cache_refreshes_a_recent_entry_in_the_background_and_an_old_one_first(tmp_path):
    class GatedStore(EmbeddedStore):
        gate = threading.Event()

        def latest(self, tenant, asset):
            self.gate.wait(10)
            return super().latest(tenant, asset)

    other = EmbeddedStore(tmp_path / "ts.sqlite")
    now = [0.0]
    inner = GatedStore(tmp_path / "ts.sqlite")
    inner.gate.set()
    cached = LatestCache(inner, ttl_s=1.0, clock=lambda: now[0])
    other.write(_one("trailer-1", "supply_air", T0, 4.0))
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0, 4.0)}
    other.write(_one("trailer-1", "supply_air", T0 + S, 5.0))
    now[0] = 2.0  # past the TTL, within five: answered as it was while the store read waits behind the answer
    inner.gate.clear()
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0, 4.0)}
    inner.gate.set()
    wait_until(lambda: cached.latest("acme", "trailer-1") == {"supply_air": (T0 + S, 5.0)}, timeout=10,
               what="the background refresh")
    other.write(_one("trailer-1", "supply_air", T0 + 2 * S, 6.0))
    now[0] = 60.0  # long unread: read before answering
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0 + 2 * S, 6.0)}
    other.close()
    cached.close()


def test_latest_cache_forgets_text_values_when_a_subject_is_erased(tmp_path):
    cached = LatestCache(EmbeddedStore(tmp_path / "ts.sqlite"), ttl_s=3600)
    cached.write(_text_rows())
    assert cached.latest_text("acme", "trailer-2") == {"driver_id": (T0 + 5 * S, PN_A)}
    cached.write(_text_rows())  # a rewrite of what it holds
    assert cached.erase_subject("acme", PN_A) == 3
    assert cached.latest_text("acme", "trailer-2") == {}
    assert cached.latest_text("acme", "trailer-1") == {"driver_id": (T0 + 60 * S, PN_B),
                                                       "mode": (T0 + 1, "cool, door=open")}
    cached.close()


def test_a_holding_latest_cache_answers_first_reads_from_memory_and_learns_new_assets_from_its_writes(tmp_path):
    class CountingStore(EmbeddedStore):
        reads = 0

        def latest(self, tenant, asset):
            CountingStore.reads += 1
            return super().latest(tenant, asset)

        def latest_many(self, tenant, assets):
            CountingStore.reads += 1
            return super().latest_many(tenant, assets)

    other = EmbeddedStore(tmp_path / "ts.sqlite")  # another process writing the same store
    other.write(_one("trailer-1", "supply_air", T0, 4.0))
    other.write(_one("trailer-2", "supply_air", T0, 3.0))
    now = [0.0]
    cached = LatestCache(CountingStore(tmp_path / "ts.sqlite"), ttl_s=1.0, clock=lambda: now[0])
    cached.hold_all(lambda: {"acme": ["trailer-1", "trailer-2"]}, sweep_s=3600)
    wait_until(lambda: cached._held_since is not None, timeout=10, what="the first sweep")
    assert CountingStore.reads == 1  # one store query for the tenant
    cached.write(_one("trailer-3", "supply_air", T0 + S, 5.5))  # an asset the sweep did not know: held from its write
    now[0] = 50.0  # past five TTLs but within two sweeps: from memory, refreshed in the background
    assert cached.latest_many("acme", ["trailer-1", "trailer-2", "trailer-3"]) == {
        "trailer-1": {"supply_air": (T0, 4.0)}, "trailer-2": {"supply_air": (T0, 3.0)},
        "trailer-3": {"supply_air": (T0 + S, 5.5)}}
    wait_until(lambda: CountingStore.reads == 2, timeout=10, what="the background refresh")
    other.write(_one("trailer-1", "supply_air", T0 + 2 * S, 6.0))
    now[0] = 8000.0  # no sweep for longer than two sweeps (7,200 s): read before answering, as an unheld cache would
    assert cached.latest("acme", "trailer-1") == {"supply_air": (T0 + 2 * S, 6.0)}
    assert CountingStore.reads == 3
    cached.hold_all(lambda: {}, sweep_s=1)  # once per cache: a second call changes nothing
    cached.close()
    assert cached._sweeper is not None and not cached._sweeper.is_alive()
    other.close()
