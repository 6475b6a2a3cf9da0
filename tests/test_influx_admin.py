"""``twin influx init`` against the real InfluxDB of the harness (Debian's 1.6.7: the InfluxQL path).

The 2.x path (management API through influxdb-client) has no server here and is not exercised against a
stand-in. What is checked of it: the version routing, and its Flux roll-up task, compiled by the Flux
compiler itself (InfluxData's WebAssembly build, npm package @influxdata/flux-lsp-node, installed into a
temporary directory on first use; a missing node/npm FAILS those tests with what to install).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cloud.influx_admin import (
    ROLLUP_FIELDS,
    InfluxAdminError,
    InitSpec,
    backfill_statement,
    backfill_statements,
    coarse_continuous_query,
    continuous_query,
    flux_coarse_task,
    flux_task,
    format_duration,
    init,
    major_version,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400
FLUX_COMPILER = "@influxdata/flux-lsp-node@0.8.40"
_FLUX_CHECK = """
const {Flux} = require("@influxdata/flux-lsp-node");
const src = require("fs").readFileSync(0, "utf8");
const flux = new Flux(src);
let formatted = null;
try { formatted = flux.format(); } catch (e) { formatted = null; }
process.stdout.write(JSON.stringify({valid: flux.is_valid(), formatted}));
"""


@pytest.fixture(scope="session")
def flux_check(tmp_path_factory):
    """Compile Flux with the Flux compiler (syntax, types, built-in signatures): (valid, formatted source)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed to compile the Flux task: apt-get install -y nodejs npm", pytrace=False)
    where = tmp_path_factory.mktemp("flux")
    out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--prefix", str(where),
                          FLUX_COMPILER], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"npm install {FLUX_COMPILER} failed:\n{out.stderr[-2000:]}", pytrace=False)

    def check(source: str) -> tuple[bool, str | None]:
        run = subprocess.run([node, "-e", _FLUX_CHECK], input=source, cwd=where, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        return result["valid"], result["formatted"]

    return check


def _spec(db: str, **kw) -> InitSpec:
    return InitSpec(org="assettwin", bucket=f"{db}/autogen", database=db, **kw)


def _policies(influxdb, db: str) -> dict[str, tuple[str, bool]]:
    series = influxdb.query(f'SHOW RETENTION POLICIES ON "{db}"')["results"][0]["series"][0]
    return {row[0]: (row[1], row[4]) for row in series["values"]}


def _continuous_queries(influxdb, db: str) -> dict[str, str]:
    series = influxdb.query("SHOW CONTINUOUS QUERIES")["results"][0].get("series", [])
    return {row[0]: row[1] for s in series if s["name"] == db for row in s.get("values") or []}


def test_init_on_1x_sets_retention_rollup_policies_and_continuous_queries(influxdb, influx_db):
    report = init(influxdb.raw_url, "", _spec(influx_db))

    assert report.path == "1.x" and report.server.startswith("InfluxDB 1.")
    assert _policies(influxdb, influx_db) == {"autogen": ("720h0m0s", True), "downsampled_1m": ("9600h0m0s", False),
                                              "downsampled_1h": ("43800h0m0s", False)}
    cqs = _continuous_queries(influxdb, influx_db)
    assert f"INTO {influx_db}.downsampled_1m.telemetry FROM {influx_db}.autogen.telemetry" in cqs["telemetry_1m"]
    assert "RESAMPLE EVERY 1m FOR 2m" in cqs["telemetry_1m"] and "GROUP BY time(1m), *" in cqs["telemetry_1m"]
    # the hourly roll-up is made from the minutes: sums and counts add up, so its mean is exact
    assert f"INTO {influx_db}.downsampled_1h.telemetry FROM {influx_db}.downsampled_1m.telemetry" in cqs["telemetry_1h"]
    assert "sum(value_sum) / sum(value_count) AS value" in cqs["telemetry_1h"]
    assert "RESAMPLE EVERY 1h FOR 2h" in cqs["telemetry_1h"] and "GROUP BY time(1h), *" in cqs["telemetry_1h"]


def test_second_init_changes_nothing_and_says_so(influxdb, influx_db):
    init(influxdb.raw_url, "", _spec(influx_db))
    before = (_policies(influxdb, influx_db), _continuous_queries(influxdb, influx_db))

    again = init(influxdb.raw_url, "", _spec(influx_db))

    assert again.no_op, again.steps
    assert [outcome for outcome, _ in again.steps] == ["unchanged"] * 6
    assert (_policies(influxdb, influx_db), _continuous_queries(influxdb, influx_db)) == before


def test_init_creates_a_missing_database(influxdb):
    db = f"test_{uuid.uuid4().hex[:12]}"
    try:
        report = init(influxdb.raw_url, "", _spec(db))
        assert ("created", f"database {db!r}") in report.steps
        assert set(_policies(influxdb, db)) == {"autogen", "downsampled_1m", "downsampled_1h"}
    finally:
        influxdb.drop_database(db)


def test_init_changes_only_the_retention_that_differs(influxdb, influx_db):
    init(influxdb.raw_url, "", _spec(influx_db))

    report = init(influxdb.raw_url, "", _spec(influx_db, retention_s=10 * DAY))

    assert report.of("changed") == [
        f"retention policy 'autogen' on {influx_db!r} (10d, default), was 30d, default"]
    assert len(report.of("unchanged")) == 5
    assert _policies(influxdb, influx_db)["autogen"] == ("240h0m0s", True)


def test_init_replaces_a_continuous_query_that_does_something_else(influxdb, influx_db):
    init(influxdb.raw_url, "", _spec(influx_db))
    influxdb.query(f'DROP CONTINUOUS QUERY "telemetry_1m" ON "{influx_db}"', method="POST")
    influxdb.query(f'CREATE CONTINUOUS QUERY "telemetry_1m" ON "{influx_db}" BEGIN SELECT last("value") AS "value" '
                   f'INTO "{influx_db}"."downsampled_1m"."telemetry" FROM "{influx_db}"."autogen"."telemetry" '
                   "GROUP BY time(1m), * END", method="POST")

    report = init(influxdb.raw_url, "", _spec(influx_db))

    assert len(report.of("changed")) == 1 and "continuous query" in report.of("changed")[0]
    assert "mean(value) AS value" in _continuous_queries(influxdb, influx_db)["telemetry_1m"]
    assert init(influxdb.raw_url, "", _spec(influx_db)).no_op


def test_rollup_keeps_mean_min_max_and_worst_quality_per_minute(influxdb, influx_db):
    """The continuous query's body, run over a period as a backfill, on samples the way ingest writes them."""
    spec = _spec(influx_db)
    init(influxdb.raw_url, "", spec)
    t0 = int(time.time()) // 3600 * 3600 - 3600  # an hour boundary within the 30-day retention
    lines = [f"telemetry,asset=trailer-001,point=supply_air,tenant=acme value={v},quality={q}i {t0 + i * 10}"
             for i, (v, q) in enumerate([(4.0, 0), (6.0, 0), (5.0, 1), (3.0, 0), (7.0, 0), (5.0, 0)])]
    lines.append(f"telemetry,asset=trailer-001,point=supply_air,tenant=acme value=9.0,quality=2i {t0 + 60}")
    r = httpx.post(f"{influxdb.raw_url}/write", params={"db": influx_db, "rp": "autogen", "precision": "s"},
                   content="\n".join(lines), timeout=10)
    assert r.status_code == 204, r.text

    start, end = (dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (t0, t0 + 120))
    influxdb.query(backfill_statement(spec, start, end), db=influx_db, method="POST")

    body = influxdb.query('SELECT "value", "value_sum", "value_count", "value_min", "value_max", "value_last", '
                          '"quality" FROM "downsampled_1m"."telemetry" '
                          "WHERE tenant = 'acme' AND asset = 'trailer-001' AND point = 'supply_air'", db=influx_db,
                          epoch="s")
    rows = body["results"][0]["series"][0]["values"]
    assert rows == [[t0, 5.0, 30.0, 6, 3.0, 7.0, 5.0, 1], [t0 + 60, 9.0, 9.0, 1, 9.0, 9.0, 9.0, 2]]


def test_hourly_rollup_is_exact_from_the_minutes(influxdb, influx_db):
    """Uneven minutes (1 sample, then 3): the hour's mean is the samples' mean, not the mean of the minutes'."""
    spec = _spec(influx_db)
    init(influxdb.raw_url, "", spec)
    t0 = int(time.time()) // 3600 * 3600 - 7200
    samples = [(t0, 10.0, 0), (t0 + 60, 1.0, 0), (t0 + 70, 2.0, 3), (t0 + 80, 3.0, 0), (t0 + 3000, -4.0, 1)]
    lines = [f"telemetry,asset=a1,point=p,tenant=acme value={v},quality={q}i {t}" for t, v, q in samples]
    r = httpx.post(f"{influxdb.raw_url}/write", params={"db": influx_db, "precision": "s"}, content="\n".join(lines),
                   timeout=10)
    assert r.status_code == 204, r.text
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (t0, t0 + 3600))
    for q in backfill_statements(spec, start, end):
        influxdb.query(q, db=influx_db, method="POST")

    body = influxdb.query('SELECT "value", "value_sum", "value_count", "value_min", "value_max", "value_last", '
                          '"quality" FROM "downsampled_1h"."telemetry"', db=influx_db, epoch="s")
    assert body["results"][0]["series"][0]["values"] == [[t0, 12.0 / 5, 12.0, 5, -4.0, 10.0, -4.0, 3]]


def test_twin_influx_init_prints_the_path_it_took_and_a_no_op(influxdb, influx_db):
    env = {**os.environ, "TWIN_INFLUX_URL": influxdb.raw_url, "TWIN_INFLUX_DATABASE": influx_db,
           "TWIN_INFLUX_BUCKET": f"{influx_db}/autogen", "TWIN_INFLUX_TOKEN": ""}
    cmd = [sys.executable, "-m", "twin", "influx", "init", "--retention", "14d", "--downsample-retention", "2y"]

    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 2 and "2y" in first.stderr  # years are not a unit: said, not guessed

    cmd[-1] = "104w"
    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert "InfluxDB 1.6" in first.stdout and "1.x path" in first.stdout and "InfluxQL" in first.stdout
    assert re.search(r"created\s+retention policy 'downsampled_1m' .*\(104w\)", first.stdout)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout and "created" not in second.stdout
    assert _policies(influxdb, influx_db)["autogen"] == ("336h0m0s", True)


def test_init_names_an_unreachable_server():
    with pytest.raises(InfluxAdminError, match=re.escape("unreachable at http://127.0.0.1:9")):
        init("http://127.0.0.1:9", "", _spec("assettwin"))


@pytest.mark.parametrize(("header", "major"), [("1.6.7~rc0", 1), ("1.8.10", 1), ("v2.7.10", 2), ("2.7.1", 2),
                                               ("3.0.1", 3)])
def test_the_path_follows_the_version_that_ping_reports(header, major):
    assert major_version(header) == major


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * DAY), ("400d", 400 * DAY), ("12h", 43_200),
                                               ("1w2d", 9 * DAY), ("90m", 5400), ("0", 0), ("inf", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "2y", "1 d", "d", "-1d"])
def test_a_duration_without_a_known_unit_is_refused(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations_are_written_the_way_influxd_prints_them():
    assert [format_duration(s) for s in (60, 120, 3600, DAY, 14 * DAY, 400 * DAY, 90)] == \
        ["1m", "2m", "1h", "1d", "2w", "400d", "90s"]


def test_a_bucket_outside_the_queried_database_is_refused():
    with pytest.raises(ValueError, match="not in database 'assettwin'"):
        InitSpec(bucket="other/autogen", database="assettwin")


def test_both_rollups_write_the_same_fields():
    """1.x (continuous query) and 2.x (Flux task) roll-ups must be readable by the same queries."""
    spec = InitSpec()
    cq_fields = set(re.findall(r'AS "(\w+)"', continuous_query(spec)))
    flux = flux_task(spec)
    task_fields = {"value", "quality"} | set(re.findall(r'set\(key: "_field", value: "(\w+)"\)', flux))
    assert cq_fields == task_fields == set(ROLLUP_FIELDS)
    assert 'from(bucket: "assettwin/autogen")' in flux and 'to(bucket: "assettwin/downsampled_1m"' in flux
    assert "every: 1m" in flux and "range(start: -2m)" in flux


def test_both_coarse_rollups_write_the_same_fields_from_the_fine_one():
    spec = InitSpec()
    assert set(re.findall(r'AS "(\w+)"', coarse_continuous_query(spec))) == set(ROLLUP_FIELDS)
    flux = flux_coarse_task(spec)
    task_fields = set(re.findall(r'r\._field == "(\w+)"', flux)) | {"value"}  # the mean: sum over count
    assert task_fields == set(ROLLUP_FIELDS)
    assert 'from(bucket: "assettwin/downsampled_1m")' in flux and 'to(bucket: "assettwin/downsampled_1h"' in flux
    assert "every: 1h" in flux and "range(start: -2h)" in flux and "r.value_sum / float(v: r.value_count)" in flux


def test_a_coarse_window_that_is_not_made_of_whole_fine_windows_is_refused():
    with pytest.raises(ValueError, match="multiple of the roll-up window"):
        InitSpec(rollup_every_s=60, coarse_every_s=90)
    assert InitSpec(coarse_every_s=0).coarse_policy is None  # no coarse roll-up at all


def test_rollup_task_compiles_as_flux(flux_check):
    valid, _ = flux_check(flux_task(InitSpec()))
    assert valid
    valid, _ = flux_check(flux_coarse_task(InitSpec()))
    assert valid


def test_rollup_task_is_written_in_the_flux_formatters_layout(flux_check):
    """A server that stores tasks formatted must not make a re-run of init look like a change."""
    for spec in (InitSpec(), InitSpec(org="acme", bucket="fleet/raw", database="fleet", rollup_every_s=300)):
        for source in (flux_task(spec), flux_coarse_task(spec)):
            assert flux_check(source) == (True, source)


def test_the_flux_compiler_rejects_a_broken_task(flux_check):
    """The check is not a no-op: a misspelt function, or an argument of the wrong type, fails it."""
    source = flux_task(InitSpec())
    assert flux_check(source.replace("aggregateWindow(", "aggregateWindw(", 1))[0] is False
    assert flux_check(source.replace('timeSrc: "_start"', "timeSrc: 1", 1))[0] is False


def test_twin_influx_backfill_rolls_up_a_past_period(influxdb, influx_db):
    init(influxdb.raw_url, "", _spec(influx_db))
    t0 = int(time.time()) // 3600 * 3600 - 7200
    lines = [f"telemetry,asset=a1,point=p{i % 2},tenant=acme value={i}.0,quality=0i {t0 + i * 20}" for i in range(12)]
    r = httpx.post(f"{influxdb.raw_url}/write", params={"db": influx_db, "precision": "s"}, content="\n".join(lines),
                   timeout=10)
    assert r.status_code == 204, r.text
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (t0, t0 + 3600))
    env = {**os.environ, "TWIN_INFLUX_URL": influxdb.raw_url, "TWIN_INFLUX_DATABASE": influx_db,
           "TWIN_INFLUX_BUCKET": f"{influx_db}/autogen", "TWIN_INFLUX_TOKEN": ""}

    out = subprocess.run([sys.executable, "-m", "twin", "influx", "backfill", "--start", start, "--end", end],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert f"rolled up 8 points into {influx_db}/downsampled_1m" in out.stdout  # 4 minutes x 2 points
    assert f"rolled up 2 points into {influx_db}/downsampled_1h" in out.stdout  # 1 hour x 2 points
    body = influxdb.query('SELECT count("value") FROM "downsampled_1m"."telemetry"', db=influx_db)
    assert body["results"][0]["series"][0]["values"][0][1] == 8
    body = influxdb.query('SELECT sum("value_count") FROM "downsampled_1h"."telemetry" GROUP BY "point"', db=influx_db)
    assert [s["values"][0][1] for s in body["results"][0]["series"]] == [6, 6]
