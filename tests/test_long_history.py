"""Long history (issue 26): an asset's whole history answers from the API and the dashboard, from the roll-ups
once raw data has expired, and data replayed days late is rolled up too.

On the real InfluxDB 1.6.7, a server of this module's own whose retention service looks every second (the
harness's looks every 30 minutes), so a raw retention shortened during a test expires while it runs; and on the
embedded store, which answers the same contract. History is 40 days of one point every 10 minutes (5,760
samples), valued in halves so that every sum is exact in floating point and means compare exactly.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.api.app import create_app
from cloud.housekeeping import Housekeeping
from cloud.influx_admin import InitSpec, backfill_statements, init
from cloud.platform import Platform
from cloud.settings import CloudSettings
from cloud.store import Rows
from cloud.store.embedded import EmbeddedStore
from cloud.store.influx import InfluxStore
from cloud.store.rollup import DAY_NS, HOUR_NS, MINUTE_NS, Resolution, plan
from models.wire import T_NS_MAX, T_NS_MIN
from tests import test_web
from tests.harness.processes import wait_until
from tests.harness.servers import InfluxServer, free_port

browser = test_web.browser  # the dashboard tests' Chromium (a module fixture)
S = 1_000_000_000
TENANT, ASSET, POINT = "acme", "trailer-001", "supply_air"
Sample = tuple[int, float, int]


# -- the history and what it should read as ----------------------------------------------------------------------
def history(now_ns: int, days: int = 40, step_s: int = 600) -> list[Sample]:
    """``days`` days of one sample every ``step_s`` until ten minutes ago, a saw-tooth on a rising trend (half a
    degree a day); now and then a bad quality."""
    step = step_s * S
    t0 = (now_ns - 10 * MINUTE_NS) // step * step - days * DAY_NS
    return [(t0 + i * step, (i % 13) * 0.5 - 2.0 + (i * step // DAY_NS) * 0.5, 2 if i % 97 == 0 else 0)
            for i in range(days * DAY_NS // step)]


def windows(samples: list[Sample], every: int, agg: str, start: int = -(2**62), end: int = 2**62):
    """What raw samples answer for windows of ``every``: (window starts, values)."""
    by: dict[int, list[float]] = {}
    for t, v, _ in samples:
        if start <= t < end:
            by.setdefault(t // every * every, []).append(v)
    fn = {"mean": lambda vs: sum(vs) / len(vs), "min": min, "max": max, "count": len, "last": lambda vs: vs[-1]}[agg]
    return sorted(by), [fn(by[w]) for w in sorted(by)]


def write_by_day(store, samples: list[Sample], tenant: str = TENANT, asset: str = ASSET, point: str = POINT) -> None:
    """As a gateway replays its outbox: one write per day of samples."""
    days: dict[int, list[Sample]] = {}
    for s in samples:
        days.setdefault(s[0] // DAY_NS, []).append(s)
    for day in sorted(days):
        rows = Rows()
        rows.extend_series(tenant, asset, point, *map(list, zip(*days[day], strict=True)))
        store.write(rows)


# -- InfluxDB with a retention service that looks every second ---------------------------------------------------
@pytest.fixture(scope="module")
def influxd() -> Iterator[InfluxServer]:
    server = InfluxServer(extra_config='[retention]\n  enabled = true\n  check-interval = "1s"\n')
    server.start()
    yield server
    server.close()


@pytest.fixture
def db(influxd) -> Iterator[str]:
    name = f"hist_{uuid.uuid4().hex[:10]}"
    influxd.create_database(name)
    yield name
    influxd.drop_database(name)


def _spec(db: str, **kw) -> InitSpec:
    return InitSpec(bucket=f"{db}/autogen", database=db, **kw)


def _settings(tmp_path: Path, influxd: InfluxServer, db: str, **kw) -> CloudSettings:
    return CloudSettings(database_url=f"sqlite:///{tmp_path / 'registry.sqlite'}", store="influx",
                         influx_url=influxd.url, influx_bucket=f"{db}/autogen", influx_database=db, **kw)


def _count(influxd: InfluxServer, db: str, q: str) -> int:
    series = influxd.query(q, db=db)["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def _roll_up_and_expire(influxd: InfluxServer, db: str, tmp_path: Path, samples: list[Sample]) -> None:
    """Write the history the way ingest does (too late for the continuous queries: marked), let the platform's
    housekeeping roll it up, then shorten the raw retention to one day and wait until the retention service has
    dropped what is older."""
    init(influxd.raw_url, "", _spec(db, retention_s=41 * 86_400))  # raw long enough to take the history in
    writer = Platform.open(_settings(tmp_path, influxd, db, housekeeping_interval_s=0.2))
    try:
        write_by_day(writer.store, samples)
        housekeeping = Housekeeping(writer.store, writer.registry, writer.settings)
        housekeeping.start()
        try:
            wait_until(lambda: _count(influxd, db, 'SELECT sum("value_count") FROM "downsampled_1h"."telemetry"')
                       == len(samples), timeout=60, what="the hourly roll-up of the whole history")
        finally:
            housekeeping.stop()
        # each hour the replay touched, rolled up once
        assert housekeeping.counters["rollup_marks"] == len({t // HOUR_NS for t, _, _ in samples})
        assert housekeeping.counters["housekeeping_failures"] == 0
    finally:
        writer.close()
    init(influxd.raw_url, "", _spec(db, retention_s=86_400))
    kept_from = (time.time_ns() - DAY_NS) // DAY_NS * DAY_NS  # shards are a day long: the newest stay
    wait_until(lambda: _count(influxd, db, 'SELECT count("value") FROM "autogen"."telemetry"')
               <= sum(1 for t, _, _ in samples if t >= kept_from), timeout=30, what="the raw retention to expire")


def test_forty_days_read_back_through_the_api_come_from_the_rollups_beyond_raw_retention(influxd, db, tmp_path):
    now = time.time_ns()
    samples = history(now)
    _roll_up_and_expire(influxd, db, tmp_path, samples)
    raw_left = _count(influxd, db, 'SELECT count("value") FROM "autogen"."telemetry"')
    assert raw_left < 2 * 144 < len(samples) == 5760  # 38 of the 40 days exist only in the roll-ups now
    start = samples[0][0] // DAY_NS * DAY_NS

    api_side = Platform.open(_settings(tmp_path, influxd, db))  # the API's process, as after the expiry
    try:
        key = api_side.registry.create_api_key(TENANT, "admin", "auditor")
        client = TestClient(create_app(api_side), headers={"Authorization": f"Bearer {key}"})
        assert client.post("/api/v1/assets", json={"id": ASSET, "type": "refrigerated-trailer"}).status_code == 201
        end = time.time_ns()
        raw_from = api_side.store.resolutions()[0].kept_from(time.time_ns())
        assert api_side.store.resolutions()[0].keep_ns == DAY_NS

        for agg in ("mean", "min", "max", "count", "last"):
            r = client.get(f"/api/v1/assets/{ASSET}/telemetry", params={
                "point": POINT, "start": start, "end": end, "every": "1d", "agg": agg})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["t_ns"], body["values"]) == windows(samples, DAY_NS, agg), agg
            assert body["resolution"] == "1h"
            old, recent = body["sources"][0], body["sources"][-1]  # beyond raw retention the hourly roll-up, then
            assert (old["resolution"], old["every_ns"]) == ("1h", DAY_NS)  # (within an hour after midnight the
            assert recent["resolution"] == "raw" and recent["start_ns"] >= raw_from  # minutes for yesterday) raw
            assert all(s["exact"] for s in body["sources"]) and (old["start_ns"], recent["end_ns"]) == (start, end)
            assert all(a["end_ns"] == b["start_ns"] for a, b in itertools.pairwise(body["sources"]))

        r = client.get(f"/api/v1/assets/{ASSET}/telemetry", params={"point": POINT, "start": start, "end": end})
        body = r.json()  # no window asked for: samples where raw is kept, the minutes' windows beyond
        assert body["t_ns"] == [t for t, _, _ in samples]  # one sample per minute: each window is that sample
        assert body["values"] == [v for _, v, _ in samples]
        assert body["quality"] == [q for _, _, q in samples]
        assert body["resolution"] == "1m" and [s["resolution"] for s in body["sources"]] == ["1m", "raw"]
        assert body["sources"][0]["every_ns"] == MINUTE_NS and body["sources"][1]["every_ns"] is None
    finally:
        api_side.close()


def test_a_replay_three_days_late_is_rolled_up_by_the_platform(influxd, db, tmp_path):
    init(influxd.raw_url, "", _spec(db))
    platform = Platform.open(_settings(tmp_path, influxd, db, housekeeping_interval_s=0.2))
    try:
        key = platform.registry.create_api_key(TENANT, "viewer", "engineer")
        client = TestClient(create_app(platform), headers={"Authorization": f"Bearer {key}"})
        admin = platform.registry.create_api_key(TENANT, "admin", "ops")
        assert client.post("/api/v1/assets", json={"id": ASSET, "type": "refrigerated-trailer"},
                           headers={"Authorization": f"Bearer {admin}"}).status_code == 201
        now = time.time_ns()
        live = [(now - 20 * S + i * S, 4.0, 0) for i in range(10)]  # in time: the continuous queries' job
        write_by_day(platform.store, live)
        assert _count(influxd, db, 'SELECT count("arrived") FROM "rollup_pending"') == 0

        outage = (now // HOUR_NS - 72) * HOUR_NS  # three days ago: 6 hours the gateway could not send
        replay = [(outage + i * 60 * S, float(i % 9), 1 if i == 5 else 0) for i in range(6 * 60)]
        write_by_day(platform.store, replay)
        assert _count(influxd, db, 'SELECT count("arrived") FROM "rollup_pending"') == 6
        # Counted over the replayed hours only: the continuous queries roll the live samples up as well, when
        # their minute (or hour) comes round during the test (CI once counted 370 minutes).
        hours = f"WHERE time >= {outage} AND time < {outage + 6 * HOUR_NS}"
        assert _count(influxd, db, f'SELECT count("value_count") FROM "downsampled_1h"."telemetry" {hours}') == 0

        platform.housekeeping = Housekeeping(platform.store, platform.registry, platform.settings)
        platform.housekeeping.start()
        wait_until(lambda: _count(influxd, db, f'SELECT sum("value_count") FROM "downsampled_1h"."telemetry" {hours}')
                   == 360, timeout=120, what="the replayed hours in the hourly roll-up")
        assert _count(influxd, db, f'SELECT sum("value_count") FROM "downsampled_1m"."telemetry" {hours}') == 360

        r = client.get(f"/api/v1/assets/{ASSET}/telemetry", params={
            "point": POINT, "start": outage - DAY_NS, "end": outage + DAY_NS, "every": "1h", "agg": "mean"})
        body = r.json()
        assert body["resolution"] == "1h" and [s["resolution"] for s in body["sources"]] == ["1h"]
        assert (body["t_ns"], body["values"]) == windows(replay, HOUR_NS, "mean")
        assert platform.counters()["rollup_marks"] == 6
    finally:
        platform.close()


def test_the_platforms_rollup_writes_what_the_continuous_query_writes(influxd, db, tmp_path):
    """The same raw data rolled up by the continuous queries' statements (SELECT … INTO) in one database and by the
    platform's backfill in another gives the same rows, fields and types, minute and hour."""
    other = f"{db}_cq"
    influxd.create_database(other)
    try:
        now = time.time_ns()
        t0 = (now // HOUR_NS - 30) * HOUR_NS
        samples = [(t0 + i * 7 * S, (i % 11) * 0.25, i % 3) for i in range(2000)]  # several per minute
        for name in (db, other):
            init(influxd.raw_url, "", _spec(name))
            store = InfluxStore(influxd.url, "", "-", f"{name}/autogen", name)
            write_by_day(store, samples)
            if name == db:
                assert store.maintain()["rollup_rows"] > 0
            else:
                for q in backfill_statements(_spec(name), "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"):
                    influxd.query(q, db=name, method="POST")
            store.close()
        for rp, rows in (("downsampled_1m", 2000 * 7 // 60 + 1), ("downsampled_1h", 4)):
            q = f'SELECT * FROM "{rp}"."telemetry"'
            mine, theirs = (influxd.query(q, db=name)["results"][0]["series"][0] for name in (db, other))
            assert mine == theirs and len(mine["values"]) == rows
            fields = [influxd.query(f'SHOW FIELD KEYS FROM "{rp}"."telemetry"', db=name) for name in (db, other)]
            assert fields[0] == fields[1]
    finally:
        influxd.drop_database(other)


def test_an_upgrade_rolls_the_minutes_history_up_into_the_new_hourly_rollup(influxd, db):
    """A database set up before the hourly roll-up, its minutes written by the old continuous query (mean, min,
    max and quality only): the next ``init`` adds the hourly roll-up with that history in it, so a year's view
    still finds the past. Old minutes give the mean of their means; minutes with sums and counts, exact values."""
    influxd.query(f'CREATE RETENTION POLICY "downsampled_1m" ON "{db}" DURATION 400d REPLICATION 1', method="POST")
    hour = (time.time_ns() // DAY_NS - 20) * DAY_NS + 6 * HOUR_NS  # twenty days ago: 21 days up to today
    old = [f"telemetry,asset={ASSET},point={POINT},tenant={TENANT} value={m % 7}.5,value_min={m % 7},"
           f"value_max={m % 7 + 1},quality={m % 2}i {hour + m * MINUTE_NS}" for m in range(120)]
    r = httpx.post(f"{influxd.raw_url}/write", params={"db": db, "rp": "downsampled_1m"}, content="\n".join(old),
                   timeout=10)
    assert r.status_code == 204, r.text

    report = init(influxd.raw_url, "", _spec(db))

    assert report.of("created")[-1] == "downsampled_1h rolled up from the downsampled_1m history (21 days)"
    store = InfluxStore(influxd.url, "", "-", f"{db}/autogen", db)
    try:
        means = [(m % 7) + 0.5 for m in range(120)]
        for agg, expected in (("mean", [sum(means[:60]) / 60, sum(means[60:]) / 60]),
                              ("min", [0.0, 0.0]), ("max", [7.0, 7.0]), ("last", [means[59], means[119]])):
            ser = store.read_windows(TENANT, ASSET, POINT, hour, hour + 2 * HOUR_NS, HOUR_NS, agg)
            assert (ser.t_ns, ser.values) == ([hour, hour + HOUR_NS], expected), agg
            assert [s.resolution.name for s in ser.spans] == ["1h"]
        assert init(influxd.raw_url, "", _spec(db)).no_op  # once: a second run rolls nothing up again
    finally:
        store.close()


def test_a_windowed_read_takes_the_coarsest_rollup_that_is_exact_and_raw_where_it_is_not(influxd, db, tmp_path):
    now = time.time_ns()
    samples = history(now, days=3, step_s=120)
    init(influxd.raw_url, "", _spec(db))
    store = InfluxStore(influxd.url, "", "-", f"{db}/autogen", db)
    try:
        write_by_day(store, samples)
        store.maintain()
        start, end = samples[0][0], now
        for every, source in ((DAY_NS, "1h"), (HOUR_NS, "1h"), (30 * MINUTE_NS, "1m"), (10 * S, "raw")):
            for agg in ("mean", "min", "max", "count", "last"):
                ser = store.read_windows(TENANT, ASSET, POINT, start, end, every, agg)
                assert (ser.t_ns, ser.values) == windows(samples, every, agg), (every, agg)
                assert ser.spans[0].resolution.name == source and ser.spans[-1].resolution.raw
    finally:
        store.close()


# -- the same contract on the embedded store ---------------------------------------------------------------------
def test_the_embedded_store_answers_from_its_rollups_beyond_its_raw_retention(tmp_path):
    now = time.time_ns()
    samples = history(now)
    path = tmp_path / "ts.sqlite"
    store = EmbeddedStore(path)  # raw kept forever while the history is written (in one go, as a replay)
    write_by_day(store, samples)
    store.close()
    store = EmbeddedStore(path, raw_keep_ns=DAY_NS)  # then a short raw retention
    done = store.maintain()
    kept_from = (now - DAY_NS) // HOUR_NS * HOUR_NS
    assert done["expired_raw"] == sum(1 for t, _, _ in samples if t < kept_from) > 5000
    assert store.query_range(TENANT, ASSET, POINT, 0, kept_from).t_ns == []
    for agg in ("mean", "min", "max", "count", "last"):
        ser = store.read_windows(TENANT, ASSET, POINT, samples[0][0], now, DAY_NS, agg)
        assert (ser.t_ns, ser.values) == windows(samples, DAY_NS, agg), agg
        assert (ser.spans[0].resolution.name, ser.spans[-1].resolution.name) == ("1h", "raw")
    ser = store.read(TENANT, ASSET, POINT, samples[0][0], now)
    assert (ser.t_ns, ser.values, ser.quality) == tuple(list(c) for c in zip(*samples, strict=True))
    assert [s.resolution.name for s in ser.spans] == ["1m", "raw"]
    late = (now - 3 * DAY_NS) // MINUTE_NS * MINUTE_NS + 30 * S  # beyond the raw retention: refused, as by InfluxDB
    rows = Rows()
    rows.extend_series(TENANT, ASSET, POINT, [late, now - S], [99.0, 1.0], [0, 0])
    with pytest.raises(ValueError, match="1 samples older than the raw retention"):
        store.write(rows)
    assert store.read_windows(TENANT, ASSET, POINT, late - MINUTE_NS, late + MINUTE_NS, MINUTE_NS, "max").values \
        != [99.0]
    store.close()


def test_a_late_sample_updates_the_embedded_rollups_in_its_write(tmp_path):
    store = EmbeddedStore(tmp_path / "ts.sqlite")
    now = time.time_ns()
    hour = (now // HOUR_NS - 72) * HOUR_NS
    samples = [(hour + i * 30 * S, float(i), 0) for i in range(120)]
    write_by_day(store, samples[::2])
    write_by_day(store, samples[1::2])  # the other half, later
    ser = store.read_windows(TENANT, ASSET, POINT, hour, hour + HOUR_NS, HOUR_NS, "mean")
    assert (ser.values, ser.spans[0].resolution.name) == ([59.5], "1h")
    assert store.read_windows(TENANT, ASSET, POINT, hour, hour + HOUR_NS, HOUR_NS, "last").values == [119.0]
    store.close()


def test_an_embedded_store_from_before_rollups_rolls_up_what_it_holds_when_opened(tmp_path):
    now = time.time_ns()
    samples = history(now, days=3, step_s=300)
    path = tmp_path / "ts.sqlite"
    store = EmbeddedStore(path)
    write_by_day(store, samples)
    store.close()
    with sqlite3.connect(path) as con:  # as a demo's file was before this release
        con.execute("DROP TABLE rollup")

    store = EmbeddedStore(path)

    ser = store.read_windows(TENANT, ASSET, POINT, samples[0][0], now, HOUR_NS, "mean")
    assert ser.spans[0].resolution.name == "1h"
    assert (ser.t_ns, ser.values) == windows(samples, HOUR_NS, "mean")
    store.close()


# -- which resolution answers which stretch -----------------------------------------------------------------------
RAW30 = Resolution("raw", 0, 30 * DAY_NS)
M400 = Resolution("1m", MINUTE_NS, 400 * DAY_NS)
H5Y = Resolution("1h", HOUR_NS, 1825 * DAY_NS)
NOW = 20_000 * DAY_NS + 12 * HOUR_NS + 34 * MINUTE_NS


def _plan(start_days: float, every: int | None, resolutions=(RAW30, M400, H5Y)):
    return [(s.resolution.name, s.every_ns, s.start_ns, s.end_ns)
            for s in plan(resolutions, NOW - int(start_days * DAY_NS), NOW, NOW, every)]


def test_raw_reads_take_raw_samples_while_kept_then_the_finest_rollup_then_the_coarsest():
    spans = _plan(1000, None)
    assert [(name, every) for name, every, _, _ in spans] == [("1h", HOUR_NS), ("1m", MINUTE_NS), ("raw", 0)]
    (_, _, _, h_end), (_, _, m_start, m_end), (_, _, raw_start, raw_end) = spans
    assert h_end == m_start == -(-(NOW - 400 * DAY_NS) // HOUR_NS) * HOUR_NS  # cut on the hour, on the finer side
    assert m_end == raw_start == -(-(NOW - 30 * DAY_NS) // HOUR_NS) * HOUR_NS and raw_end == NOW
    assert _plan(10, None) == [("raw", 0, NOW - 10 * DAY_NS, NOW)]


def test_windowed_reads_take_the_coarsest_exact_rollup_and_raw_for_the_unsettled_end():
    assert [n for n, *_ in _plan(7, DAY_NS)] == ["1h", "raw"]  # today's window: the hourly roll-up is not final
    assert _plan(7, DAY_NS)[0][3] == NOW // DAY_NS * DAY_NS
    assert [n for n, *_ in _plan(7, 30 * MINUTE_NS)] == ["1m", "raw"]
    assert [n for n, *_ in _plan(7, 10 * S)] == ["raw"]  # no roll-up answers 10 s windows: raw while kept
    (older, newer) = _plan(60, 10 * S)  # beyond raw retention 10 s windows come from the minutes, and say so
    assert older[:2] == ("1m", MINUTE_NS) and newer[:2] == ("raw", 10 * S)
    assert [n for n, *_ in _plan(2000, DAY_NS)] == ["1h", "raw"]  # older than every retention: longest kept


def test_a_store_without_rollups_reads_raw_everywhere():
    assert _plan(1000, DAY_NS, (RAW30,)) == [("raw", DAY_NS, NOW - 1000 * DAY_NS, NOW)]
    assert _plan(1000, None, ()) == [("raw", 0, NOW - 1000 * DAY_NS, NOW)]


@settings(max_examples=500, deadline=None)
@given(start=st.integers(T_NS_MIN, T_NS_MAX - 1), length=st.integers(1, 2**64), now=st.integers(0, 2**62),
       every=st.none() | st.integers(1, 36_500 * DAY_NS), raw_keep=st.sampled_from([0, DAY_NS, 30 * DAY_NS]),
       rollups=st.sampled_from([(), (M400,), (M400, H5Y), (Resolution("1m", MINUTE_NS, 0), H5Y)]))
def test_any_plan_covers_the_range_once_in_order_and_cuts_only_between_whole_windows(start, length, now, every,
                                                                                     raw_keep, rollups):
    end = min(start + length, T_NS_MAX)
    resolutions = (Resolution("raw", 0, raw_keep), *rollups)
    spans = plan(resolutions, start, end, now, every)
    assert spans[0].start_ns == start and spans[-1].end_ns == end
    for a, b in itertools.pairwise(spans):
        assert a.end_ns == b.start_ns and (a.resolution, a.every_ns) != (b.resolution, b.every_ns)
        assert a.end_ns % max([every or 1, *(r.every_ns for r in rollups)]) == 0  # no window of the answer is cut
    for sp in spans:
        assert sp.start_ns < sp.end_ns and sp.resolution in resolutions
        if every is None:  # samples: raw ones are exact, a roll-up's windows are not
            assert (sp.every_ns, sp.exact) == (sp.resolution.every_ns, sp.resolution.raw)
        elif sp.resolution.raw or every % sp.resolution.every_ns == 0:
            assert (sp.every_ns, sp.exact) == (every, True)
        else:  # no resolution there answers such windows: the finest one's, coarser or not aligned, and said so
            assert (sp.every_ns, sp.exact) == (max(every, sp.resolution.every_ns), False)


def test_hostile_windows_and_ranges_over_rollups_are_answered_or_refused_never_a_server_error(influxd, db, tmp_path):
    init(influxd.raw_url, "", _spec(db))
    p = Platform.open(_settings(tmp_path, influxd, db))
    try:
        key = p.registry.create_api_key(TENANT, "admin", "ops")
        client = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
        assert client.post("/api/v1/assets", json={"id": ASSET, "type": "refrigerated-trailer"}).status_code == 201
        write_by_day(p.store, history(time.time_ns(), days=2))
        p.store.maintain()
        statuses = {}
        for start in (str(T_NS_MIN), "0", "1970-01-01T00:00:00Z", str(time.time_ns() - 3 * DAY_NS)):
            for every in (None, "1ms", "7m", "90s", "1h", "36500d", "0s", "1y", "-1h"):
                for agg in ("mean", "last", "count", "median"):
                    params = {"point": POINT, "start": start, "end": str(T_NS_MAX), "agg": agg,
                              **({"every": every} if every else {})}
                    r = client.get(f"/api/v1/assets/{ASSET}/telemetry", params=params)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    assert r.status_code in (200, 422), (params, r.text)
                    if r.status_code == 200:
                        body = r.json()
                        assert body["sources"][0]["start_ns"] == body["start_ns"]
                        assert body["sources"][-1]["end_ns"] == body["end_ns"]
                    else:
                        assert r.headers["content-type"].startswith("application/problem+json")
        assert statuses[200] > 10 and statuses[422] > 10
    finally:
        p.close()


# -- the platform runs it ----------------------------------------------------------------------------------------
def test_the_ingest_worker_of_partition_0_runs_housekeeping_and_counts_it(tmp_path, mosquitto, influxd, db):
    init(influxd.raw_url, "", _spec(db))
    for partition, expected in ((1, False), (0, True)):
        settings = _settings(tmp_path, influxd, db, mqtt_url=mosquitto.url, housekeeping_interval_s=0.2,
                             ingest_partition=partition, ingest_partitions=2,
                             ingest_client_id=f"hk-{partition}-{db}")
        p = Platform.open(settings, with_ingest=True)
        p.start()
        try:
            assert (p.housekeeping is not None) is expected
            if expected:
                wait_until(lambda p=p: p.counters()["housekeeping_runs"] >= 2, what="two housekeeping passes")
                key = p.registry.create_api_key(TENANT, "viewer", "ops")
                metrics = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"}).get("/metrics").text
                assert "twin_housekeeping_runs_total " in metrics and "twin_pruned_dead_letters_total 0.0" in metrics
                assert p.counters()["housekeeping_failures"] == 0
        finally:
            p.close()


def test_a_layout_without_a_coarse_rollup_reads_raw_and_the_minutes(influxd, db):
    report = init(influxd.raw_url, "", _spec(db, coarse_every_s=0))
    assert len(report.steps) == 4  # database, raw policy, minute policy, its continuous query
    store = InfluxStore(influxd.url, "", "-", f"{db}/autogen", db)
    assert [(r.name, r.keep_ns) for r in store.resolutions()] == [("raw", 30 * DAY_NS), ("1m", 400 * DAY_NS)]
    store.close()


# -- the dashboard -----------------------------------------------------------------------------------------------
def test_the_dashboards_longest_view_draws_the_whole_history_from_the_rollups(influxd, db, tmp_path, browser):
    now = time.time_ns()
    samples = history(now)
    _roll_up_and_expire(influxd, db, tmp_path, samples)
    platform = Platform.open(_settings(tmp_path, influxd, db))
    server = uvicorn.Server(uvicorn.Config(create_app(platform), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="history-api", daemon=True)
    thread.start()
    tab = None
    try:
        wait_until(lambda: server.started, what="the API")
        key = platform.registry.create_api_key(TENANT, "viewer", "auditor")
        admin = platform.registry.create_api_key(TENANT, "admin", "ops")
        url = f"http://127.0.0.1:{server.config.port}"
        assert httpx.post(f"{url}/api/v1/assets", json={"id": ASSET, "type": "refrigerated-trailer"},
                          headers={"Authorization": f"Bearer {admin}"}).status_code == 201
        tab = test_web.Page(browser, SimpleNamespace(url=url), key)
        page = tab.open(f"asset/{ASSET}")
        chart = f'.chart[data-point="{POINT}"]'
        page.wait_for_selector(f"{chart} canvas")
        longest = max(int(b.get_attribute("data-span")) for b in page.locator(".toolbar button[data-span]").all())
        assert longest == 365 * 86_400
        page.click(f'button[data-span="{longest}"]')
        days, _ = windows(samples, DAY_NS, "mean")
        wait_until(lambda: page.get_attribute(chart, "data-points") == str(len(days)), what="a year's chart drawn")
        assert page.get_attribute(chart, "data-resolution") == "1h"  # the days raw data no longer holds
        assert int(page.get_attribute(chart, "data-first-t")) == days[0]  # 40 days back: the whole history
        assert int(page.get_attribute(chart, "data-last-t")) == days[-1]
        assert int(page.get_attribute(chart, "data-span-s")) == longest
        assert "1h roll-up" in page.inner_text("#history-resolution")
        tab.shot("asset-history-1y")
    finally:
        if tab is not None:
            tab.close()
        server.should_exit = True
        thread.join(10)
        platform.close()
