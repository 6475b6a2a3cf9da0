"""InfluxDB store: writes through ``influxdb-client`` (the v2 write API of InfluxDB 1.8+, 2.x, 3.x and
Cloud), reads with InfluxQL over ``/query`` (served by all of them; 2.x needs the v1 database
mapping that ``twin influx init`` creates).

Text points go to measurement ``text`` (string field ``value``); a personal one also has its pseudonym as
the ``subject`` tag, so erasing a subject is ``DROP SERIES ... WHERE subject = ...`` (1.x) or a predicate
delete (2.x), both of which select by tag, never by field value.

Writes are synchronous on purpose: ingest acknowledges an MQTT message only after its samples are
durably in InfluxDB, so the write must have returned.

Roll-ups (``twin influx init``): retention policies (1.x) or buckets (2.x) named ``downsampled_<window>`` in the
same database, made by the database (continuous queries, tasks) from data that arrives in time. Samples that land
more than ``LATE_SLACK_NS`` after their time are marked, right after they are written, in measurement
``rollup_pending`` of the raw data (time: the coarsest roll-up window they touch; tags tenant, asset; field
``arrived``); ``maintain`` rolls those windows up again from raw data, then records how far it got in
``rollup_progress``. Both measurements expire with the raw data, which is when the windows could no longer be
recomputed anyway. The retention of each resolution is read from ``SHOW RETENTION POLICIES``.

It is one module, over 500 lines, on purpose: writing, reading across raw data and roll-ups, and marking
late data for the roll-up job share one client, one layout and one set of InfluxQL helpers.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import zlib
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import Any

import httpx
from influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from urllib3.exceptions import HTTPError as Urllib3Error

from cloud.store.base import (
    Agg,
    Rows,
    Series,
    StoreRejected,
    StoreUnavailable,
    SubjectHit,
    TextRows,
    TextSeries,
    TimeSeriesStore,
)
from cloud.store.rollup import DAY_NS, LATE_SLACK_NS, RAW_FOREVER, Resolution, duration_name, rollup_window_ns

MEASUREMENT = "telemetry"
TEXT_MEASUREMENT = "text"
_FIELD_ESCAPE = str.maketrans({'"': r'\"', "\\": "\\\\"})
_TAG_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\\": "\\\\"})
_MAX_CACHED_KEYS = 200_000
# Up to this many assets a latest_many query names them; beyond, it reads the tenant's series and keeps the
# wanted ones (an OR of thousands of tag matches costs InfluxDB more than the extra series).
_NAMED_ASSETS_MAX = 50
PENDING = "rollup_pending"
PROGRESS = "rollup_progress"
RESOLUTIONS_TTL_S = 60.0
"""How long the retention policies read from the server are trusted (a changed retention shows within it)."""
PROGRESS_MARGIN_NS = 120 * 1_000_000_000
"""``maintain`` records it has seen marks up to this long before it started: a mark stamped just before may
land just after it looked (a write takes up to its timeout), and clocks of workers differ a little."""
BACKFILL_SPAN_NS = DAY_NS
"""At most this much of one asset is rolled up in one query, so a long replay is many small queries."""
_ROLLUP_AGG = {"mean": 'sum("value_sum"), sum("value_count"), mean("value")', "min": 'min("value_min")',
               "max": 'max("value_max")', "last": 'last("value_last")', "count": 'sum("value_count")'}
log = logging.getLogger("cloud.store.influx")


def _tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def _ql_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_duration_ns(text: str) -> int:
    """``SHOW RETENTION POLICIES`` durations (Go syntax: ``720h0m0s``; ``0s``: forever) -> ns."""
    units = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", str(text)))


def _mean(total: float | None, count: int | None, mean: float | None = None) -> float | None:
    """A window's mean from its sum and count; ``mean`` for roll-up rows written before sums and counts were."""
    if count is None:
        return mean
    return total / count if count and total is not None else None


def _rollup_line(key: str, t: int, total: float | None, count: int | None, lo: float | None, hi: float | None,
                 last: float | None, quality: int | None) -> str | None:
    """One roll-up row in line protocol, with the fields and types of the database's own roll-up."""
    fields = []
    if count:
        fields += [f"value={float(total) / count!r}", f"value_sum={float(total)!r}"]
    if count is not None:
        fields.append(f"value_count={int(count)}i")
    fields += [f"{name}={float(v)!r}" for name, v in (("value_min", lo), ("value_max", hi), ("value_last", last))
               if v is not None]
    if quality is not None:
        fields.append(f"quality={int(quality)}i")
    return f"{key} {','.join(fields)} {int(t)}" if fields else None


def _pred_str(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def series_key(tenant: str, asset: str, point: str) -> str:
    return f"{MEASUREMENT},asset={_tag(asset)},point={_tag(point)},tenant={_tag(tenant)}"


def _text_lines(r: TextRows) -> str:
    subject_tag = ""
    key = f"{TEXT_MEASUREMENT},asset={_tag(r.asset)},point={_tag(r.point)}"
    lines = []
    for t, v in zip(r.t_ns, r.values, strict=True):
        if r.personal:  # the value is the subject's pseudonym: a tag too, so erasure can select it
            subject_tag = f",subject={_tag(v)}"
        lines.append(f'{key}{subject_tag},tenant={_tag(r.tenant)} value="{v.translate(_FIELD_ESCAPE)}" {int(t)}')
    return "\n".join(lines)


def line_protocol(rows: Rows, keys: dict[tuple[str, str, str], str] | None = None) -> str:
    """The line-protocol body of ``rows``: one line per sample; a missing or non-finite value is written as
    quality only; a sample's full status code, when it has one, as the field ``status``. ``keys`` caches series keys
    across calls.

    Built a series at a time with C-level loops (``map`` over ``repr``/``str`` and string concatenation)
    when the series is regular — every value a finite float, one quality — which is what sensors send:
    about 0.6 µs a sample instead of 0.9 µs for an f-string per sample. Anything else takes the per-sample
    path.
    """
    keys = {} if keys is None else keys
    chunks = []
    for s in rows.series:
        k = (s.tenant, s.asset, s.point)
        key = keys.get(k)
        if key is None:
            if len(keys) >= _MAX_CACHED_KEYS:
                keys.clear()
            key = keys[k] = series_key(*k)
        values, t_ns, quality = s.values, s.t_ns, s.quality
        if not len(t_ns):
            continue
        q0 = quality[0]
        # A sum that is finite means every value is (an overflow only sends a series down the slow path).
        if (not s.status and list(quality).count(q0) == len(quality) and None not in values
                and math.isfinite(sum(values))):
            pre = f"{key} value="
            mid = f",quality={int(q0)}i "
            chunks.append(pre + (f"\n{pre}").join(map(add, map(add, map(repr, map(float, values)), repeat(mid)),
                                                      map(str, t_ns))))
            continue
        lines = []
        for t, v, q, c in zip(t_ns, values, quality, s.status or [0] * len(t_ns), strict=True):
            st = f",status={int(c)}i" if c else ""
            if v is None or not math.isfinite(v):
                lines.append(f"{key} quality={int(q)}i{st} {int(t)}")
            else:
                lines.append(f"{key} value={float(v)!r},quality={int(q)}i{st} {int(t)}")
        chunks.append("\n".join(lines))
    chunks.extend(_text_lines(r) for r in rows.text if len(r.t_ns))
    return "\n".join(chunks)


class _SingleFlight:
    """Identical queries that overlap in time share one round trip to InfluxDB: the second caller waits
    for the first one's answer instead of asking again. A dashboard open on many screens sends the same
    query at once; InfluxDB would compute it once per screen. The answer may predate the joining request
    by at most one query's duration. Callers get the same objects: they must not change them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list] = {}  # query -> [done event, result, error]
        self.shared = 0

    def do(self, key: str, fn):
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = [threading.Event(), None, None]
            else:
                self.shared += 1
        if leader:
            try:
                call[1] = fn()
            except Exception as exc:
                call[2] = exc
            finally:
                with self._lock:
                    del self._calls[key]
                call[0].set()
        else:
            call[0].wait()
        if call[2] is not None:
            raise call[2]
        return call[1]


@dataclass(frozen=True)
class EncodedWrite:
    """A write ready to send: the (maybe gzip-compressed) line-protocol body; ``oldest_ns``: its oldest sample,
    to tell at once whether it lands too late for the database's roll-up (then ``rows`` says where)."""

    body: bytes
    points: int
    gzip: bool
    rows: Rows | None = None
    oldest_ns: int | None = None


class InfluxStore(TimeSeriesStore):
    def __init__(self, url: str, token: str, org: str, bucket: str, database: str,
                 timeout_s: float = 30.0, gzip_level: int = 1) -> None:
        """``gzip_level``: compression of write bodies, 0 for none. Level 1 shrinks line protocol ~14x at
        ~0.25 µs a sample; influxdb-client's own gzip (level 9) costs ~3 µs a sample for little more."""
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        self.database = database
        self.gzip_level = gzip_level
        self._client = InfluxDBClient(url=self.url, token=token or "unused", org=org,
                                      timeout=int(timeout_s * 1000), enable_gzip=False)
        # The v2 write endpoint through influxdb-client's own service, so the body can be compressed here
        # (at a chosen level, off the writing thread) and sent as it is.
        self._writes = WriteService(self._client.api_client)
        self._keys: dict[tuple[str, str, str], str] = {}
        self._keys_lock = threading.Lock()
        headers = {"Authorization": f"Token {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self._reads = _SingleFlight()
        self.raw_policy = bucket.partition("/")[2] or "autogen"
        self._resolutions: tuple[Resolution, ...] | None = None
        self._resolutions_at = 0.0
        self._policies: dict[Resolution, str] = {}
        self._marks_done: dict[tuple[str, str, int], int] = {}  # marks ``maintain`` did, not yet behind its progress

    def prepare(self, rows: Rows) -> EncodedWrite:
        with self._keys_lock:
            body = line_protocol(rows, self._keys).encode()
        oldest = min((min(s.t_ns) for s in rows.series if len(s.t_ns)), default=None)
        if self.gzip_level > 0:
            c = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)  # wbits 31: the gzip format
            return EncodedWrite(c.compress(body) + c.flush(), len(rows), True, rows, oldest)
        return EncodedWrite(body, len(rows), False, rows, oldest)

    def _post(self, bucket: str, body: bytes, gzip: bool = False) -> None:
        try:
            self._writes.post_write(org=self.org, bucket=bucket, body=body, precision="ns",
                                    content_type="text/plain; charset=utf-8",
                                    **({"content_encoding": "gzip"} if gzip else {}))
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 404, 429):
                raise StoreRejected(f"InfluxDB rejected the write ({exc.status}): {exc.body or exc.reason}") \
                    from None
            raise StoreUnavailable(f"InfluxDB write failed ({exc.status}): {exc.reason}") from None
        except (Urllib3Error, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None

    def write_prepared(self, prepared: EncodedWrite) -> None:
        if not prepared.points:
            return
        try:
            self._post(self.bucket, prepared.body, prepared.gzip)
        except StoreRejected:  # a partial write: what was written may still be late (a replay beyond retention)
            self._mark_late(prepared)
            raise
        self._mark_late(prepared)

    def _mark_late(self, prepared: EncodedWrite) -> None:
        """Mark the roll-up windows that samples landing now are too late for (see the module docstring)."""
        landed = time.time_ns()
        late_before = landed - LATE_SLACK_NS
        if prepared.rows is None or prepared.oldest_ns is None or prepared.oldest_ns >= late_before:
            return
        res = self.resolutions()
        if len(res) < 2:
            return  # no roll-up to keep up to date
        window = max(r.every_ns for r in res)
        kept_from = res[0].kept_from(landed)
        marks: set[tuple[str, str, int]] = set()
        for s in prepared.rows.series:
            if len(s.t_ns) and min(s.t_ns) < late_before:
                marks.update((s.tenant, s.asset, t // window * window) for t in s.t_ns if t < late_before)
        lines = [f"{PENDING},asset={_tag(a)},tenant={_tag(tn)} arrived={landed}i {w}"
                 for tn, a, w in sorted(marks) if kept_from is None or w >= kept_from]
        if not lines:
            return
        try:
            self._post(self.bucket, "\n".join(lines).encode())
        except StoreRejected as exc:  # the samples are written: have the whole write retried, never dropped
            raise StoreUnavailable(f"could not mark late samples for the roll-up: {exc}") from None

    def write(self, rows: Rows) -> None:
        self.write_prepared(self.prepare(rows))

    # -- reads --------------------------------------------------------------------------------
    def _query(self, q: str) -> list[dict]:
        return self._reads.do(q, lambda: self._query_once(q))

    def _query_once(self, q: str) -> list[dict]:
        try:
            r = self._http.get("/query", params={"db": self.database, "q": q, "epoch": "ns"})
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None
        if r.status_code >= 500:
            raise StoreUnavailable(f"InfluxDB query failed ({r.status_code})")
        body = r.json()
        results = body.get("results", [{}])
        err = body.get("error") or results[0].get("error")
        if err:
            raise ValueError(f"InfluxQL error: {err}")
        return results[0].get("series", [])

    def _where(self, tenant: str, asset: str, point: str | None, start_ns: int, end_ns: int) -> str:
        w = f"tenant = {_ql_str(tenant)} AND asset = {_ql_str(asset)}"
        if point is not None:
            w += f" AND point = {_ql_str(point)}"
        return f"{w} AND time >= {int(start_ns)} AND time < {int(end_ns)}"

    def query_range(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        q = (f'SELECT value, quality, "status" FROM {MEASUREMENT} '
             f"WHERE {self._where(tenant, asset, point, start_ns, end_ns)} ORDER BY time ASC LIMIT {int(limit)}")
        series = self._query(q)
        if not series:
            return Series([], [], [])
        vals = series[0]["values"]
        status = [int(r[3]) if len(r) > 3 and r[3] is not None else 0 for r in vals]
        return Series([r[0] for r in vals], [r[1] for r in vals],
                      [int(r[2]) if r[2] is not None else 0 for r in vals], status=status if any(status) else None)

    def query_window(self, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        every_us = max(1, int(every_ns) // 1000)
        q = (f"SELECT {agg}(value) FROM {MEASUREMENT} WHERE {self._where(tenant, asset, point, start_ns, end_ns)}"
             f" GROUP BY time({every_us}u) fill(none)")
        series = self._query(q)
        if not series:
            return Series([], [])
        vals = series[0]["values"]
        return Series([r[0] for r in vals], [r[1] for r in vals])

    # -- resolutions and roll-ups -----------------------------------------------------------------
    def resolutions(self) -> tuple[Resolution, ...]:
        """Raw (the bucket's policy) and every ``downsampled_<window>`` policy of the database, with their
        retention; read again after ``RESOLUTIONS_TTL_S``. A server that cannot list them has raw data only."""
        if self._resolutions is not None and time.monotonic() - self._resolutions_at < RESOLUTIONS_TTL_S:
            return self._resolutions
        try:
            series = self._query_once(f"SHOW RETENTION POLICIES ON {_ql_ident(self.database)}")
        except ValueError as exc:
            log.warning("InfluxDB lists no retention policies (%s): reads use raw data only", exc)
            series = []
        except StoreUnavailable:
            if self._resolutions is not None:
                return self._resolutions
            raise
        raw, rollups, policies = RAW_FOREVER, [], {}
        for ser in series:
            cols = ser.get("columns") or []
            for row in ser.get("values") or []:
                rec = dict(zip(cols, row, strict=False))
                name, keep = str(rec.get("name", "")), _go_duration_ns(rec.get("duration", "0s"))
                if name == self.raw_policy:
                    raw = Resolution("raw", 0, keep)
                elif (every := rollup_window_ns(name)) is not None:
                    r = Resolution(duration_name(every), every, keep)
                    rollups.append(r)
                    policies[r] = name
        rollups.sort(key=lambda r: r.every_ns)
        coarsest = rollups[-1].every_ns if rollups else 0
        rollups = [r for r in rollups if coarsest % r.every_ns == 0]  # windows that nest; others are not ours
        self._policies = policies
        self._resolutions, self._resolutions_at = (raw, *rollups), time.monotonic()
        return self._resolutions

    def _rollup_from(self, resolution: Resolution) -> str:
        self.resolutions()
        policy = self._policies.get(resolution)
        if policy is None:
            raise ValueError(f"no roll-up {resolution.name} in database {self.database!r}")
        return f"{_ql_ident(policy)}.{_ql_ident(MEASUREMENT)}"

    def query_rollup_range(self, resolution, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        q = (f'SELECT "value_sum", "value_count", "value", "quality" FROM {self._rollup_from(resolution)} '
             f"WHERE {self._where(tenant, asset, point, start_ns, end_ns)} ORDER BY time ASC LIMIT {int(limit)}")
        series = self._query(q)
        if not series:
            return Series([], [], [])
        vals = series[0]["values"]
        return Series([r[0] for r in vals], [_mean(r[1], r[2], r[3]) for r in vals],
                      [int(r[4]) if r[4] is not None else 0 for r in vals])

    def query_rollup_window(self, resolution, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        every_us = max(1, int(every_ns) // 1000)
        q = (f"SELECT {_ROLLUP_AGG[agg]} FROM {self._rollup_from(resolution)} "
             f"WHERE {self._where(tenant, asset, point, start_ns, end_ns)} GROUP BY time({every_us}u) fill(none)")
        series = self._query(q)
        t_out: list[int] = []
        v_out: list[float | None] = []
        for r in series[0]["values"] if series else []:
            v = _mean(r[1], r[2], r[3]) if agg == "mean" else r[1]
            if v is None or (agg == "count" and v == 0):
                continue  # a window of samples without values: raw data has no window there either
            t_out.append(r[0])
            v_out.append(v)
        return Series(t_out, v_out)

    def maintain(self, now_ns: int | None = None) -> dict[str, int]:
        """Roll up again the windows that late samples touched since the last run (``rollup_pending``), from raw
        data, every roll-up from the one below it; then record the progress. Idempotent: a window rolled up
        twice is the same window."""
        res = self.resolutions()
        rollups = [r for r in res if not r.raw]
        if not rollups:
            return {}
        started = time.time_ns()
        now = started if now_ns is None else now_ns
        kept_from = res[0].kept_from(now)
        since = f" AND time >= {int(kept_from)}" if kept_from is not None else ""
        done = self._query_once(f'SELECT last("done") FROM {_ql_ident(PROGRESS)} WHERE time > 0{since}')
        seen = int(done[0]["values"][0][1]) if done else 0
        marks = self._query_once(f'SELECT "arrived" FROM {_ql_ident(PENDING)} WHERE "arrived" > {seen}{since} '
                                 'GROUP BY "tenant", "asset"')
        window = rollups[-1].every_ns
        counts = {"rollup_marks": 0, "rollup_queries": 0, "rollup_rows": 0}
        recent = {k: a for k, a in self._marks_done.items() if a > seen}  # marks within the margin, done here
        for ser in marks:
            tenant, asset = ser["tags"]["tenant"], ser["tags"]["asset"]
            todo = {int(t): int(a) for t, a in ser["values"] if recent.get((tenant, asset, int(t))) != int(a)}
            if not todo:
                continue
            recent.update({(tenant, asset, t): a for t, a in todo.items()})
            starts = sorted(todo)
            counts["rollup_marks"] += len(starts)
            run_start = prev = starts[0]
            for w in [*starts[1:], None]:
                if w is not None and w == prev + window and w + window - run_start <= max(window, BACKFILL_SPAN_NS):
                    prev = w
                    continue
                for n in self._roll_up(tenant, asset, run_start, prev + window, rollups):
                    counts["rollup_queries"] += 1
                    counts["rollup_rows"] += n
                if w is not None:
                    run_start = prev = w
        done_ns = max(seen, started - PROGRESS_MARGIN_NS)
        self._post(self.bucket, f"{PROGRESS} done={done_ns}i {started}".encode())
        self._marks_done = {k: a for k, a in recent.items() if a > done_ns}
        return counts

    def _roll_up(self, tenant: str, asset: str, start_ns: int, end_ns: int, rollups: list[Resolution]):
        """Each roll-up of one asset over [start, end) (whole windows of all of them), finest first; yields the
        rows written per roll-up."""
        where = (f"tenant = {_ql_str(tenant)} AND asset = {_ql_str(asset)} AND time >= {int(start_ns)} "
                 f"AND time < {int(end_ns)}")
        source = f"{_ql_ident(self.raw_policy)}.{_ql_ident(MEASUREMENT)}"
        fields = 'sum("value"), count("value"), min("value"), max("value"), last("value"), max("quality")'
        for r in rollups:
            q = (f"SELECT {fields} FROM {source} WHERE {where} GROUP BY time({r.every_ns // 1000}u), \"point\" "
                 "fill(none)")
            lines = []
            for ser in self._query_once(q):
                key = series_key(tenant, asset, ser["tags"]["point"])
                lines += [line for row in ser["values"] if (line := _rollup_line(key, *row)) is not None]
            if lines:
                self._post(f"{self.database}/{self._policies[r]}", "\n".join(lines).encode())
            yield len(lines)
            source = self._rollup_from(r)  # the next roll-up is made from this one, as the database does
            fields = ('sum("value_sum"), sum("value_count"), min("value_min"), max("value_max"), '
                      'last("value_last"), max("quality")')

    def latest(self, tenant, asset) -> dict[str, tuple[int, float | None]]:
        return self._latest(MEASUREMENT, tenant, asset)

    def _latest(self, measurement: str, tenant: str, asset: str) -> dict[str, tuple[int, Any]]:
        # Newest first and LIMIT 1 per point: the engine can stop at the first sample of each series,
        # where ``last(value)`` reduces every series whole. Selecting only ``value`` skips samples that
        # have none, as ``last`` does.
        q = (f"SELECT value FROM {measurement} WHERE tenant = {_ql_str(tenant)} AND asset = {_ql_str(asset)} "
             "GROUP BY point ORDER BY time DESC LIMIT 1")
        return {s["tags"]["point"]: (s["values"][0][0], s["values"][0][1]) for s in self._query(q)}

    def latest_many(self, tenant, assets) -> dict[str, dict[str, tuple[int, float | None]]]:
        wanted = set(assets)
        if not wanted:
            return {}
        where = f"tenant = {_ql_str(tenant)}"
        if len(wanted) <= _NAMED_ASSETS_MAX:  # a page of a big fleet: name them rather than read the whole tenant
            where += " AND (" + " OR ".join(f"asset = {_ql_str(a)}" for a in sorted(wanted)) + ")"
        q = f"SELECT value FROM {MEASUREMENT} WHERE {where} GROUP BY asset, point ORDER BY time DESC LIMIT 1"
        out: dict[str, dict[str, tuple[int, float | None]]] = {}
        for ser in self._query(q):
            asset = ser["tags"]["asset"]
            if asset in wanted:
                t, v = ser["values"][0][:2]
                out.setdefault(asset, {})[ser["tags"]["point"]] = (t, v)
        return out

    def query_text(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> TextSeries:
        q = (f"SELECT value FROM {TEXT_MEASUREMENT} WHERE {self._where(tenant, asset, point, start_ns, end_ns)}"
             f" ORDER BY time ASC LIMIT {int(limit)}")
        series = self._query(q)
        if not series:
            return TextSeries([], [])
        vals = series[0]["values"]
        return TextSeries([r[0] for r in vals], [r[1] for r in vals])

    def latest_text(self, tenant, asset) -> dict[str, tuple[int, str]]:
        return self._latest(TEXT_MEASUREMENT, tenant, asset)

    def _subject_where(self, tenant: str, subject: str) -> str:
        return f"tenant = {_ql_str(tenant)} AND subject = {_ql_str(subject)}"

    def find_subject(self, tenant, subject) -> list[SubjectHit]:
        where = self._subject_where(tenant, subject)
        stats: dict[tuple[str, str], list[int]] = {}
        # Selectors without a time grouping answer the selected sample's own time: first and last seen.
        for i, fn in enumerate(("count", "first", "last")):
            q = f"SELECT {fn}(value) FROM {TEXT_MEASUREMENT} WHERE {where} GROUP BY asset, point"
            for ser in self._query_once(q):
                k = (ser["tags"]["asset"], ser["tags"]["point"])
                t, v = ser["values"][0][0], ser["values"][0][1]
                stats.setdefault(k, [0, 0, 0])[i] = int(v) if fn == "count" else int(t)
        return [SubjectHit(a, p, n, first, last) for (a, p), (n, first, last) in sorted(stats.items())]

    def erase_subject(self, tenant, subject) -> int:
        n = sum(h.count for h in self.find_subject(tenant, subject))
        if n == 0:
            return 0
        q = f"DROP SERIES FROM {TEXT_MEASUREMENT} WHERE {self._subject_where(tenant, subject)}"
        try:
            r = self._http.post("/query", params={"db": self.database}, data={"q": q})
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            err = r.status_code >= 300 or body.get("error") or (body.get("results") or [{}])[0].get("error")
            if err:
                # InfluxDB 2.x answers InfluxQL reads only: its delete API takes a tag predicate instead.
                r = self._http.post("/api/v2/delete", params={"org": self.org, "bucket": self.bucket}, json={
                    "start": "1677-09-21T00:12:43.145224194Z", "stop": "2262-04-11T23:47:16.854775806Z",
                    "predicate": f'_measurement="{TEXT_MEASUREMENT}" AND tenant="{_pred_str(tenant)}" '
                                 f'AND subject="{_pred_str(subject)}"'})
                if r.status_code >= 300:
                    raise StoreUnavailable(f"InfluxDB could not erase the subject ({r.status_code}): {err}")
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None
        return n

    def erase_asset(self, tenant, asset) -> int:
        """``DROP SERIES`` with no ``FROM``: every measurement (raw, text, late marks) in every retention policy
        (the roll-ups); InfluxDB 2.x's delete API takes the same tags as a predicate."""
        where = f"tenant = {_ql_str(tenant)} AND asset = {_ql_str(asset)}"
        n = sum(int(ser["values"][0][1]) for m in (MEASUREMENT, TEXT_MEASUREMENT)
                for ser in self._query_once(f"SELECT count(value) FROM {m} WHERE {where}"))
        try:
            r = self._http.post("/query", params={"db": self.database}, data={"q": f"DROP SERIES WHERE {where}"})
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            err = r.status_code >= 300 or body.get("error") or (body.get("results") or [{}])[0].get("error")
            if err:
                r = self._http.post("/api/v2/delete", params={"org": self.org, "bucket": self.bucket}, json={
                    "start": "1677-09-21T00:12:43.145224194Z", "stop": "2262-04-11T23:47:16.854775806Z",
                    "predicate": f'tenant="{_pred_str(tenant)}" AND asset="{_pred_str(asset)}"'})
                if r.status_code >= 300:
                    raise StoreUnavailable(f"InfluxDB could not erase the asset ({r.status_code}): {err}")
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None
        return n

    def close(self) -> None:
        self._client.close()
        self._http.close()
