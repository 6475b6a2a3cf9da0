"""InfluxDB set-up for the platform (``twin influx init``): what the time series need before the first write.

It owns the storage layout around measurement ``telemetry``: the raw data with its retention, a
1-minute roll-up kept longer and a 1-hour roll-up kept longest (per window: mean as ``value``, plus
``value_sum``, ``value_count``, ``value_min``, ``value_max``, ``value_last`` and the worst ``quality``; sums and
counts make coarser windows exact), and the InfluxQL names the platform and Grafana read through ``/query``:
database ``assettwin``, retention policies ``autogen`` (raw, the default), ``downsampled_1m`` and
``downsampled_1h``. The API reads raw data while it is kept and the roll-ups beyond (``cloud/store/rollup.py``).

Two servers, two paths, chosen from the ``X-Influxdb-Version`` header of ``/ping``:

- InfluxDB 2.x (and Cloud): the management API through ``influxdb-client``: organisation, buckets with
  retention rules, the DBRP (v1) mappings without which InfluxQL ``/query`` finds no database, a Flux
  task per roll-up, and two scoped tokens (ingest: write, and the roll-ups its housekeeping backfills;
  read-only: API and Grafana).
- InfluxDB 1.x (Debian ships 1.6.7; 1.8 adds the v2 write API but no management API): InfluxQL
  ``CREATE DATABASE``, ``CREATE/ALTER RETENTION POLICY`` and a ``CONTINUOUS QUERY`` per roll-up (the hourly
  one made from the minutes). 1.x has no tokens: its users are managed with ``CREATE USER``/``GRANT``, which
  this does not touch.

Every step looks before it acts, so running it again changes nothing and says so. The database's roll-ups
cover data that arrives up to a window late; what a gateway replays after a longer outage is rolled up by
the platform (ingest marks the windows it touched, housekeeping rolls them up again: ``InfluxStore.maintain``),
and ``twin influx backfill`` does it by hand for a period on 1.x.

It is one module, over 500 lines, on purpose: the 1.x and 2.x paths create the same layout (names,
retention, roll-ups) and read best side by side; split, each half would restate the other's names.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx
from influxdb_client import (
    Authorization,
    BucketRetentionRules,
    DBRPCreate,
    DBRPsService,
    InfluxDBClient,
    Permission,
    PermissionResource,
    TaskCreateRequest,
    TaskUpdateRequest,
)
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from cloud.store.influx import MEASUREMENT
from cloud.store.rollup import LATE_WINDOWS
from cloud.store.rollup import ROLLUP_FIELDS as ROLLUP_FIELDS  # ``value`` is the mean: raw queries read roll-ups

RAW_FIELDS = ("value", "quality")
"""Fields of measurement ``telemetry`` as ingest writes them."""
TASK_NAME = "assettwin telemetry rollup"
COARSE_TASK_NAME = "assettwin telemetry rollup (coarse)"
INGEST_TOKEN = "assettwin ingest: write raw telemetry"
READ_TOKEN = "assettwin read-only: API and Grafana"

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class InfluxAdminError(RuntimeError):
    """The server refused or could not be reached; the message says what to fix."""


# -- durations -------------------------------------------------------------------------------------
def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``1w2d``, ``90m`` → seconds; ``0``, ``inf`` or ``infinite`` → 0 (keep forever)."""
    t = text.strip().lower()
    if t in ("0", "inf", "infinite", "forever"):
        return 0
    parts = re.findall(r"(\d+)([smhdw])", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30d, 12h, 1w, 90m (or 0 / inf for no expiry)")
    return sum(int(n) * _UNITS_S[u] for n, u in parts)


def format_duration(seconds: int) -> str:
    """An InfluxQL duration literal, in the largest unit that divides it, as influxd prints it back."""
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS_S[unit] == 0:
            return f"{seconds // _UNITS_S[unit]}{unit}"
    return f"{seconds}s"


def _go_duration_s(text: str) -> int:
    """influxd's ``SHOW RETENTION POLICIES`` durations (Go syntax: ``720h0m0s``) → seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))


def shard_duration_s(retention_s: int) -> int:
    """InfluxDB's own rule for the shard group duration of a retention period (1h, 1d or 7d)."""
    if retention_s == 0 or retention_s > 180 * 86_400:
        return 7 * 86_400
    return 3600 if retention_s < 2 * 86_400 else 86_400


# -- what to create ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitSpec:
    """The layout, in the platform's settings' terms: the write bucket ``db/rp`` and the InfluxQL database."""

    org: str = "assettwin"
    bucket: str = "assettwin/autogen"
    database: str = "assettwin"
    retention_s: int = 30 * 86_400
    rollup_retention_s: int = 400 * 86_400
    rollup_every_s: int = 60
    coarse_retention_s: int = 1825 * 86_400
    coarse_every_s: int = 3600
    """The coarse roll-up, made from the fine one: its window (0: none) and how long it is kept."""

    def __post_init__(self) -> None:
        db, _, rp = self.bucket.partition("/")
        if not db or "/" in rp:
            raise ValueError(f"bucket {self.bucket!r}: expected 'database/retention-policy', e.g. assettwin/autogen")
        if db != self.database:
            raise ValueError(f"bucket {self.bucket!r} is not in database {self.database!r}: InfluxQL reads "
                             "would not find what ingest writes (set --bucket to '<database>/<policy>')")
        if self.rollup_every_s < 1:
            raise ValueError("the roll-up window must be at least 1 s")
        if self.rollup_policy == self.raw_policy:
            raise ValueError(f"retention policy {self.raw_policy!r} is reserved for the roll-up")
        if self.coarse_every_s and (self.coarse_every_s <= self.rollup_every_s
                                    or self.coarse_every_s % self.rollup_every_s):
            raise ValueError(f"the coarse roll-up window ({format_duration(self.coarse_every_s)}) must be a "
                             f"multiple of the roll-up window ({format_duration(self.rollup_every_s)}), and longer")

    @property
    def raw_policy(self) -> str:
        return self.bucket.partition("/")[2] or "autogen"

    @property
    def rollup_policy(self) -> str:
        return f"downsampled_{format_duration(self.rollup_every_s)}"

    @property
    def rollup_bucket(self) -> str:
        return f"{self.database}/{self.rollup_policy}"

    @property
    def coarse_policy(self) -> str | None:
        return f"downsampled_{format_duration(self.coarse_every_s)}" if self.coarse_every_s else None

    @property
    def coarse_bucket(self) -> str | None:
        return f"{self.database}/{self.coarse_policy}" if self.coarse_every_s else None


Outcome = Literal["created", "changed", "unchanged"]


@dataclass
class InitReport:
    server: str
    path: Literal["1.x", "2.x"]
    steps: list[tuple[Outcome, str]] = field(default_factory=list)
    """What each step found or did, in order."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Tokens created by this run (description → token); InfluxDB shows a token only when it is made."""

    def add(self, outcome: Outcome, what: str) -> None:
        self.steps.append((outcome, what))

    def of(self, outcome: Outcome) -> list[str]:
        return [what for o, what in self.steps if o == outcome]

    @property
    def no_op(self) -> bool:
        return all(o == "unchanged" for o, _ in self.steps)


def _ql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ql_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rp_measurement(spec: InitSpec, policy: str) -> str:
    return f"{_ql_ident(spec.database)}.{_ql_ident(policy)}.{_ql_ident(MEASUREMENT)}"


def rollup_select(spec: InitSpec, where: str = "") -> str:
    """The InfluxQL ``SELECT … INTO`` behind the roll-up: the continuous query's body, and a backfill."""
    return (f'SELECT mean("value") AS "value", sum("value") AS "value_sum", count("value") AS "value_count", '
            f'min("value") AS "value_min", max("value") AS "value_max", last("value") AS "value_last", '
            f'max("quality") AS "quality" INTO {_rp_measurement(spec, spec.rollup_policy)} '
            f'FROM {_rp_measurement(spec, spec.raw_policy)}{f" WHERE {where}" if where else ""} '
            f"GROUP BY time({format_duration(spec.rollup_every_s)}), *")


def coarse_select(spec: InitSpec, where: str = "") -> str:
    """The coarse roll-up made from the fine one: sums and counts add up, so its mean is exact."""
    if spec.coarse_policy is None:
        raise ValueError("this layout has no coarse roll-up")
    return (f'SELECT sum("value_sum") / sum("value_count") AS "value", sum("value_sum") AS "value_sum", '
            f'sum("value_count") AS "value_count", min("value_min") AS "value_min", '
            f'max("value_max") AS "value_max", last("value_last") AS "value_last", max("quality") AS "quality" '
            f'INTO {_rp_measurement(spec, spec.coarse_policy)} FROM {_rp_measurement(spec, spec.rollup_policy)}'
            f'{f" WHERE {where}" if where else ""} GROUP BY time({format_duration(spec.coarse_every_s)}), *')


def legacy_coarse_select(spec: InitSpec, where: str) -> str:
    """The coarse roll-up of fine rows written before sums and counts were kept (``value`` their mean only)."""
    if spec.coarse_policy is None:
        raise ValueError("this layout has no coarse roll-up")
    return (f'SELECT mean("value") AS "value", min("value_min") AS "value_min", max("value_max") AS "value_max", '
            f'last("value") AS "value_last", max("quality") AS "quality" '
            f'INTO {_rp_measurement(spec, spec.coarse_policy)} FROM {_rp_measurement(spec, spec.rollup_policy)} '
            f'WHERE {where} GROUP BY time({format_duration(spec.coarse_every_s)}), *')


def continuous_query_name(spec: InitSpec, every_s: int | None = None) -> str:
    return f"{MEASUREMENT}_{format_duration(every_s or spec.rollup_every_s)}"


def _cq(spec: InitSpec, every_s: int, body: str) -> str:
    every, span = format_duration(every_s), format_duration(every_s * LATE_WINDOWS)
    return (f"CREATE CONTINUOUS QUERY {_ql_ident(continuous_query_name(spec, every_s))} ON "
            f"{_ql_ident(spec.database)} RESAMPLE EVERY {every} FOR {span} BEGIN {body} END")


def continuous_query(spec: InitSpec) -> str:
    return _cq(spec, spec.rollup_every_s, rollup_select(spec))


def coarse_continuous_query(spec: InitSpec) -> str:
    """Runs at the end of each coarse window over the last two: the second run sees every fine window."""
    return _cq(spec, spec.coarse_every_s, coarse_select(spec))


def backfill_statement(spec: InitSpec, start: str, end: str) -> str:
    """Recompute the roll-up for a period (RFC 3339 times), e.g. after gateways replayed an outage."""
    return rollup_select(spec, f"time >= {_ql_str(start)} AND time < {_ql_str(end)}")


def backfill_statements(spec: InitSpec, start: str, end: str) -> list[str]:
    """Every roll-up for a period, finest first (the coarse one is made from the fine one)."""
    where = f"time >= {_ql_str(start)} AND time < {_ql_str(end)}"
    return [rollup_select(spec, where), *([coarse_select(spec, where)] if spec.coarse_policy else [])]


def _flux_str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flux_task(spec: InitSpec) -> str:
    """The 2.x roll-up task: the same windows, fields and lateness allowance as the 1.x continuous query.

    Written in the Flux formatter's own layout, so that a server which stores the task formatted still
    compares equal and a re-run of ``init`` changes nothing.
    """
    every = format_duration(spec.rollup_every_s)
    span = format_duration(spec.rollup_every_s * LATE_WINDOWS)
    to = f"    |> to(bucket: {_flux_str(spec.rollup_bucket)}, org: {_flux_str(spec.org)})"

    def rollup(source: str, fn: str, field_name: str | None = None) -> list[str]:
        lines = [source, f'    |> aggregateWindow(every: {every}, fn: {fn}, createEmpty: false, timeSrc: "_start")']
        if field_name:
            lines.append(f'    |> set(key: "_field", value: {_flux_str(field_name)})')
        return [*lines, to]

    return "\n".join([
        f"option task = {{name: {_flux_str(TASK_NAME)}, every: {every}, offset: 15s}}",
        "",
        "raw =",
        f"    from(bucket: {_flux_str(spec.bucket)})",
        f"        |> range(start: -{span})",
        f"        |> filter(fn: (r) => r._measurement == {_flux_str(MEASUREMENT)})",
        'values = raw |> filter(fn: (r) => r._field == "value")',
        'qualities = raw |> filter(fn: (r) => r._field == "quality")',
        "",
        *rollup("values", "mean"),
        *rollup("values", "sum", "value_sum"),
        *rollup("values", "count", "value_count"),
        *rollup("values", "min", "value_min"),
        *rollup("values", "max", "value_max"),
        *rollup("values", "last", "value_last"),
        *rollup("qualities", "max"),
        "",
    ])


def flux_coarse_task(spec: InitSpec) -> str:
    """The 2.x coarse roll-up task, made from the fine roll-up like the 1.x continuous query: sums, counts, the
    mean as their ratio, extremes, the last value and the worst quality. Runs a minute into each window, after
    the fine task rolled up the window's last minute, over the last two windows."""
    if spec.coarse_bucket is None:
        raise ValueError("this layout has no coarse roll-up")
    every = format_duration(spec.coarse_every_s)
    span = format_duration(spec.coarse_every_s * LATE_WINDOWS)
    to = f"    |> to(bucket: {_flux_str(spec.coarse_bucket)}, org: {_flux_str(spec.org)})"
    window = f'    |> aggregateWindow(every: {every}, fn: {{fn}}, createEmpty: false, timeSrc: "_start")'

    def rollup(field_name: str, fn: str) -> list[str]:
        return ["minutes", f"    |> filter(fn: (r) => r._field == {_flux_str(field_name)})",
                window.format(fn=fn), to]

    return "\n".join([
        f"option task = {{name: {_flux_str(COARSE_TASK_NAME)}, every: {every}, offset: 1m}}",
        "",
        "minutes =",
        f"    from(bucket: {_flux_str(spec.rollup_bucket)})",
        f"        |> range(start: -{span})",
        f"        |> filter(fn: (r) => r._measurement == {_flux_str(MEASUREMENT)})",
        "sums =",
        "    minutes",
        '        |> filter(fn: (r) => r._field == "value_sum" or r._field == "value_count")',
        f'        |> aggregateWindow(every: {every}, fn: sum, createEmpty: false, timeSrc: "_start")',
        "",
        f"sums {to.strip()}",
        "sums",
        '    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        '    |> filter(fn: (r) => r.value_count > 0)',
        '    |> map(fn: (r) => ({r with _field: "value", _value: r.value_sum / float(v: r.value_count)}))',
        '    |> drop(columns: ["value_sum", "value_count"])',
        to,
        *rollup("value_min", "min"),
        *rollup("value_max", "max"),
        *rollup("value_last", "last"),
        *rollup("quality", "max"),
        "",
    ])


# -- which server ----------------------------------------------------------------------------------
def server_version(url: str, timeout_s: float = 10.0) -> str:
    """The ``X-Influxdb-Version`` that ``/ping`` answers with (1.x, 2.x and 3.x all send it)."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/ping", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise InfluxAdminError(f"InfluxDB unreachable at {url}: {exc}") from None
    version = r.headers.get("X-Influxdb-Version", "")
    if r.status_code >= 400 or not version:
        raise InfluxAdminError(f"{url}/ping answered HTTP {r.status_code} without X-Influxdb-Version: "
                               "is this an InfluxDB server?")
    return version


def major_version(version: str) -> int:
    """``1.6.7~rc0`` → 1, ``v2.7.10`` → 2, ``3.0.1`` → 3."""
    m = re.match(r"v?(\d+)\.", version.strip())
    if not m:
        raise InfluxAdminError(f"cannot tell the InfluxDB version from {version!r}")
    return int(m.group(1))


def init(url: str, token: str, spec: InitSpec, *, tokens: bool = True, timeout_s: float = 30.0) -> InitReport:
    """Create (or confirm) the layout on the server at ``url``; the report says which path ran and what changed."""
    version = server_version(url, timeout_s)
    major = major_version(version)
    if major == 1:
        return _V1(url, token, timeout_s).init(spec, InitReport(f"InfluxDB {version}", "1.x"))
    if major == 2:
        if not token:
            raise InfluxAdminError("InfluxDB 2.x needs an operator or all-access token (--token or TWIN_INFLUX_TOKEN)")
        return _V2(url, token, spec.org, timeout_s).init(spec, InitReport(f"InfluxDB {version}", "2.x"), tokens)
    raise InfluxAdminError(f"InfluxDB {version} at {url}: only 1.x and 2.x are set up by this command; on 3.x "
                           f"create database {spec.database!r} with its own retention period instead")


# -- InfluxDB 1.x: InfluxQL ------------------------------------------------------------------------
class _V1:
    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        user, sep, password = token.partition(":")
        auth = (user, password) if sep else None  # 1.x: "user:password"; a bare token goes in the header (1.8+)
        headers = {"Authorization": f"Token {token}"} if token and not sep else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, auth=auth, headers=headers)

    def query(self, q: str, *, write: bool = False) -> list[dict]:
        try:
            r = self._http.request("POST" if write else "GET", "/query", params={"q": q, "epoch": "ns"})
        except httpx.HTTPError as exc:
            raise InfluxAdminError(f"InfluxDB unreachable at {self.url}: {exc}") from None
        body = r.json() if r.content else {}
        results = body.get("results") or [{}]
        err = body.get("error") or results[0].get("error")
        if r.status_code >= 400 or err:
            raise InfluxAdminError(f"InfluxDB refused {q!r}: HTTP {r.status_code} {err or r.text}")
        return results[0].get("series", [])

    def init(self, spec: InitSpec, report: InitReport) -> InitReport:
        try:
            self._database(spec, report)
            self._policy(spec, report, spec.raw_policy, spec.retention_s, default=True)
            self._policy(spec, report, spec.rollup_policy, spec.rollup_retention_s, default=False)
            self._continuous_query(spec, report, continuous_query_name(spec), continuous_query(spec),
                                   f"{spec.raw_policy} → {spec.rollup_policy}")
            if spec.coarse_policy is not None:
                added = self._policy(spec, report, spec.coarse_policy, spec.coarse_retention_s, default=False)
                self._continuous_query(spec, report, continuous_query_name(spec, spec.coarse_every_s),
                                       coarse_continuous_query(spec), f"{spec.rollup_policy} → {spec.coarse_policy}")
                if added == "created":
                    self._coarse_from_history(spec, report)
        finally:
            self._http.close()
        return report

    def _database(self, spec: InitSpec, report: InitReport) -> None:
        what = f"database {spec.database!r}"
        names = {row[0] for s in self.query("SHOW DATABASES") for row in s.get("values") or []}
        if spec.database in names:
            report.add("unchanged", what)
            return
        self.query(f"CREATE DATABASE {_ql_ident(spec.database)}", write=True)
        report.add("created", what)

    def _policy(self, spec: InitSpec, report: InitReport, name: str, retention_s: int, *,
                default: bool) -> Outcome:
        keep = format_duration(retention_s) if retention_s else "INF"
        what = f"retention policy {name!r} on {spec.database!r} ({keep}{', default' if default else ''})"
        rows = {row[0]: row for s in self.query(f"SHOW RETENTION POLICIES ON {_ql_ident(spec.database)}")
                for row in s.get("values") or []}
        duration = f"DURATION {keep} SHARD DURATION {format_duration(shard_duration_s(retention_s))}"
        target = f"{_ql_ident(name)} ON {_ql_ident(spec.database)}"
        row = rows.get(name)  # name, duration, shardGroupDuration, replicaN, default
        if row is None:
            self.query(f"CREATE RETENTION POLICY {target} DURATION {keep} REPLICATION 1 SHARD DURATION "
                       f"{format_duration(shard_duration_s(retention_s))}{' DEFAULT' if default else ''}", write=True)
            report.add("created", what)
            return "created"
        if _go_duration_s(row[1]) != retention_s or (default and not row[4]):
            self.query(f"ALTER RETENTION POLICY {target} {duration}{' DEFAULT' if default else ''}", write=True)
            was = format_duration(_go_duration_s(row[1])) if _go_duration_s(row[1]) else "INF"
            report.add("changed", f"{what}, was {was}{', default' if row[4] else ''}")
            return "changed"
        report.add("unchanged", what)
        return "unchanged"

    def _coarse_from_history(self, spec: InitSpec, report: InitReport) -> None:
        """A coarse roll-up added beside a fine one that already holds history (an upgrade): roll that history
        up too, a day at a time, or reads of the past would find the coarse roll-up empty. Fine rows from before
        sums and counts were kept give their coarse windows the mean of the minutes' means, the extremes, the
        last minute's mean and the worst quality (``legacy_coarse_select``); newer rows the exact values."""
        assert spec.coarse_policy is not None
        fine = _rp_measurement(spec, spec.rollup_policy)
        first = self.query(f'SELECT first("value_max") FROM {fine}')
        if not first:
            return
        day = 86_400 * 1_000_000_000
        start, now, days = int(first[0]["values"][0][0]) // day * day, time.time_ns(), 0
        for a in range(start, now, day):
            where = f"time >= {a} AND time < {a + day}"
            self.query(legacy_coarse_select(spec, where), write=True)
            self.query(coarse_select(spec, where), write=True)
            days += 1
        report.add("created", f"{spec.coarse_policy} rolled up from the {spec.rollup_policy} history ({days} days)")

    def _continuous_query(self, spec: InitSpec, report: InitReport, name: str, wanted: str, route: str) -> None:
        what = f"continuous query {name!r} on {spec.database!r} ({route})"
        existing = {row[0]: row[1] for s in self.query("SHOW CONTINUOUS QUERIES") if s.get("name") == spec.database
                    for row in s.get("values") or []}
        if name not in existing:
            self.query(wanted, write=True)
            report.add("created", what)
        elif _canonical_ql(existing[name]) != _canonical_ql(wanted):
            # A continuous query cannot be altered: replace it.
            self.query(f"DROP CONTINUOUS QUERY {_ql_ident(name)} ON {_ql_ident(spec.database)}", write=True)
            self.query(wanted, write=True)
            report.add("changed", f"{what}: its query was different")
        else:
            report.add("unchanged", what)


def _canonical_ql(q: str) -> str:
    """influxd prints a statement back without the quotes it does not need; compare without any."""
    return re.sub(r"\s+", " ", q.replace('"', "")).strip()


# -- InfluxDB 2.x: the management API --------------------------------------------------------------
class _V2:
    def __init__(self, url: str, token: str, org: str, timeout_s: float) -> None:
        self.url = url
        self.client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000))

    def init(self, spec: InitSpec, report: InitReport, tokens: bool) -> InitReport:
        try:
            org_id = self._org(spec, report)
            raw = self._bucket(spec.bucket, spec.retention_s, org_id, report)
            rollup = self._bucket(spec.rollup_bucket, spec.rollup_retention_s, org_id, report)
            self._dbrp(spec.database, spec.raw_policy, raw.id, org_id, report, default=True)
            self._dbrp(spec.database, spec.rollup_policy, rollup.id, org_id, report, default=False)
            self._task(TASK_NAME, flux_task(spec), f"{spec.bucket} → {spec.rollup_bucket}", spec.rollup_every_s,
                       org_id, report)
            rollups = [rollup.id]
            if spec.coarse_bucket is not None and spec.coarse_policy is not None:
                coarse = self._bucket(spec.coarse_bucket, spec.coarse_retention_s, org_id, report)
                self._dbrp(spec.database, spec.coarse_policy, coarse.id, org_id, report, default=False)
                self._task(COARSE_TASK_NAME, flux_coarse_task(spec), f"{spec.rollup_bucket} → {spec.coarse_bucket}",
                           spec.coarse_every_s, org_id, report)
                rollups.append(coarse.id)
            if tokens:  # ingest's housekeeping reads and writes the roll-ups to backfill late data
                self._token(INGEST_TOKEN, org_id, report, [("write", raw.id), ("read", raw.id),
                                                           *[(a, b) for b in rollups for a in ("write", "read")]])
                self._token(READ_TOKEN, org_id, report, [("read", raw.id), *[("read", b) for b in rollups]])
        except ApiException as exc:
            raise InfluxAdminError(f"InfluxDB at {self.url} refused a management call: HTTP {exc.status} "
                                   f"{exc.body or exc.reason} (the token must be an operator or all-access token)"
                                   ) from None
        except InfluxDBError as exc:
            raise InfluxAdminError(f"InfluxDB at {self.url}: {exc}") from None
        except (Urllib3Error, OSError) as exc:
            raise InfluxAdminError(f"InfluxDB unreachable at {self.url}: {exc}") from None
        finally:
            self.client.close()
        return report

    def _org(self, spec: InitSpec, report: InitReport) -> str:
        api = self.client.organizations_api()
        try:
            orgs = api.find_organizations(org=spec.org)
        except ApiException as exc:
            if exc.status != 404:  # 2.x answers 404 for an unknown organisation name
                raise
            orgs = []
        if orgs:
            report.add("unchanged", f"organization {spec.org!r}")
            return orgs[0].id
        org = api.create_organization(name=spec.org)
        report.add("created", f"organization {spec.org!r}")
        return org.id

    def _bucket(self, name: str, retention_s: int, org_id: str, report: InitReport):
        api = self.client.buckets_api()
        rules = [BucketRetentionRules(type="expire", every_seconds=retention_s)] if retention_s else []
        what = f"bucket {name!r} ({format_duration(retention_s) if retention_s else 'INF'})"
        found = api.find_buckets(name=name, org_id=org_id).buckets
        if not found:
            bucket = api.create_bucket(bucket_name=name, retention_rules=rules, org=org_id,
                                       description="assettwin telemetry (twin influx init)")
            report.add("created", what)
            return bucket
        bucket = found[0]
        current = next((r.every_seconds for r in bucket.retention_rules or [] if r.type == "expire"), 0)
        if current != retention_s:
            bucket.retention_rules = rules
            bucket = api.update_bucket(bucket=bucket)
            report.add("changed", f"{what}, was {format_duration(current) if current else 'INF'}")
        else:
            report.add("unchanged", what)
        return bucket

    def _dbrp(self, db: str, rp: str, bucket_id: str, org_id: str, report: InitReport, *, default: bool) -> None:
        api = DBRPsService(self.client.api_client)
        what = f"v1 mapping {db}/{rp} → bucket {bucket_id}{' (default)' if default else ''}"
        # Buckets named "db/rp" get a virtual mapping of their own; a physical one is what can be the default.
        mappings = [m for m in api.get_dbr_ps(org_id=org_id, db=db, rp=rp).content or [] if not m.virtual]
        if mappings and mappings[0].bucket_id == bucket_id and bool(mappings[0].default) == default:
            report.add("unchanged", what)
            return
        for m in mappings:
            api.delete_dbrpid(m.id, org_id=org_id)
        api.post_dbrp(DBRPCreate(org_id=org_id, bucket_id=bucket_id, database=db, retention_policy=rp,
                                 default=default))
        report.add("changed" if mappings else "created", what)

    def _task(self, name: str, flux: str, route: str, every_s: int, org_id: str, report: InitReport) -> None:
        api = self.client.tasks_api()
        what = f"task {name!r} ({route} every {format_duration(every_s)})"
        found = api.find_tasks(name=name, org_id=org_id)
        if not found:
            api.create_task(task_create_request=TaskCreateRequest(
                flux=flux, org_id=org_id, status="active", description="assettwin roll-up (twin influx init)"))
            report.add("created", what)
        elif found[0].flux != flux:
            api.update_task_request(found[0].id, TaskUpdateRequest(flux=flux, status="active"))
            report.add("changed", f"{what}: its Flux was different")
        else:
            report.add("unchanged", what)

    def _token(self, description: str, org_id: str, report: InitReport, grants: list[tuple[str, str]]) -> None:
        api = self.client.authorizations_api()
        what = f"token {description!r}"
        if any(a.description == description for a in api.find_authorizations(org_id=org_id) or []):
            report.add("unchanged", f"{what} (not shown again)")
            return
        permissions = [Permission(action=action, resource=PermissionResource(type="buckets", id=bucket_id,
                                                                             org_id=org_id))
                       for action, bucket_id in grants]
        auth = api.create_authorization(authorization=Authorization(org_id=org_id, permissions=permissions,
                                                                    description=description))
        report.add("created", what)
        report.tokens[description] = auth.token
