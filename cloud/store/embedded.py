"""Embedded time-series store on SQLite: the demo's InfluxDB, with the same contract and schema.

One row per sample keyed by (tenant, asset, point, t_ns) — a rewrite of the same sample replaces it,
exactly like InfluxDB, so replays after an outage are idempotent here too. Text points have their own
table; a personal one keeps its pseudonym in ``subject`` so a subject's rows can be found and erased, and
``secure_delete`` overwrites erased rows in the file rather than leaving them in free pages.

Roll-ups (table ``rollup``, one row per window of each resolution: count, sum, min, max, last, worst quality) are
made here, by the store, in the transaction that writes the samples: SQLite has no continuous queries, and a
sample that arrives days late updates its windows like any other. Retention is applied by ``maintain`` (the
platform's housekeeping), on boundaries of the coarsest roll-up window, so a window's raw samples are either all
there or all gone, and a late sample older than the raw retention is refused (``StoreRejected``) as InfluxDB
refuses it: rolling up the part of a window that is left would spoil the roll-up.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cloud.store.base import (
    Agg,
    Rows,
    Series,
    StoreRejected,
    StoreUnavailable,
    SubjectHit,
    TextSeries,
    TimeSeriesStore,
)
from cloud.store.rollup import DAY_NS, HOUR_NS, MINUTE_NS, Resolution

_AGG_SQL = {"mean": "AVG(value)", "min": "MIN(value)", "max": "MAX(value)", "count": "COUNT(value)"}
_ROLLUP_AGG_SQL = {"mean": "SUM(total), SUM(n)", "min": "MIN(lo)", "max": "MAX(hi)", "count": "SUM(n)"}
DEFAULT_ROLLUPS = (Resolution("1m", MINUTE_NS, 400 * DAY_NS), Resolution("1h", HOUR_NS, 0))


def _window(column: str, every_ns: int) -> str:
    """The start of the epoch-aligned window holding ``column`` (floored, also before 1970)."""
    e = int(every_ns)
    return f"({column} - (({column} % {e}) + {e}) % {e})"


class EmbeddedStore(TimeSeriesStore):
    def __init__(self, path: str | Path, raw_keep_ns: int = 0,
                 rollups: Sequence[Resolution] = DEFAULT_ROLLUPS) -> None:
        """``raw_keep_ns``: how long raw samples (and text) are kept, 0: forever; ``rollups``: finest first, each
        window dividing the next, with their own retention."""
        self.path = str(path)
        self.rollups = tuple(rollups)
        for fine, coarse in zip(self.rollups, self.rollups[1:], strict=False):
            if coarse.every_ns % fine.every_ns:
                raise ValueError(f"roll-up {coarse.name} is not made of whole {fine.name} windows")
        self._resolutions = (Resolution("raw", 0, int(raw_keep_ns)), *self.rollups)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: with WAL, NORMAL fsyncs only at checkpoints, so samples ingest has acknowledged to
        # the broker (and the gateway then deleted) could roll back on power loss. FULL fsyncs the WAL at every
        # commit, and ingest commits one batch per write, so it is one fsync per batch.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS telemetry (
                 tenant TEXT NOT NULL, asset TEXT NOT NULL, point TEXT NOT NULL, t_ns INTEGER NOT NULL,
                 value REAL, quality INTEGER NOT NULL, status INTEGER,
                 PRIMARY KEY (tenant, asset, point, t_ns)) WITHOUT ROWID"""
        )
        if "status" not in {r[1] for r in self._db.execute("PRAGMA table_info(telemetry)")}:  # a store from before
            self._db.execute("ALTER TABLE telemetry ADD COLUMN status INTEGER")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS text (
                 tenant TEXT NOT NULL, asset TEXT NOT NULL, point TEXT NOT NULL, t_ns INTEGER NOT NULL,
                 value TEXT NOT NULL, subject TEXT,
                 PRIMARY KEY (tenant, asset, point, t_ns)) WITHOUT ROWID"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS text_subject ON text (tenant, subject) WHERE subject IS NOT NULL")
        new = not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rollup'").fetchone()
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS rollup (
                 every_ns INTEGER NOT NULL, tenant TEXT NOT NULL, asset TEXT NOT NULL, point TEXT NOT NULL,
                 t_ns INTEGER NOT NULL, n INTEGER NOT NULL, total REAL, lo REAL, hi REAL, last REAL,
                 quality INTEGER NOT NULL,
                 PRIMARY KEY (every_ns, tenant, asset, point, t_ns)) WITHOUT ROWID"""
        )
        if new:  # a store from before roll-ups: roll up what it holds, once
            with self._lock:
                self._db.execute("BEGIN")
                for tenant, asset, point, lo, hi in self._db.execute(
                        "SELECT tenant, asset, point, MIN(t_ns), MAX(t_ns) FROM telemetry "
                        "GROUP BY tenant, asset, point").fetchall():
                    self._roll_up(tenant, asset, point, lo, hi)
                self._db.execute("COMMIT")

    def resolutions(self) -> tuple[Resolution, ...]:
        return self._resolutions

    def _cutoff(self, keep_ns: int, now_ns: int) -> int | None:
        """Where a retention of ``keep_ns`` ends, on a boundary of the coarsest roll-up window."""
        if keep_ns == 0:
            return None
        step = self.rollups[-1].every_ns if self.rollups else 1
        return (now_ns - keep_ns) // step * step

    def write(self, rows: Rows) -> None:
        cutoff = self._cutoff(self._resolutions[0].keep_ns, time.time_ns())
        data = [(s.tenant, s.asset, s.point, t, None if v is None or not math.isfinite(v) else v, q, c or None)
                for s in rows.series
                for t, v, q, c in zip(s.t_ns, s.values, s.quality, s.status or [0] * len(s.t_ns), strict=True)
                if cutoff is None or t >= cutoff]
        text = [(r.tenant, r.asset, r.point, t, v, v if r.personal else None)
                for r in rows.text for t, v in zip(r.t_ns, r.values, strict=True) if cutoff is None or t >= cutoff]
        touched = [(s.tenant, s.asset, s.point, min(kept), max(kept)) for s in rows.series
                   if len(kept := s.t_ns if cutoff is None else [t for t in s.t_ns if t >= cutoff])]
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO telemetry (tenant, asset, point, t_ns, value, quality, "
                                     "status) VALUES (?, ?, ?, ?, ?, ?, ?)", data)
                self._db.executemany("INSERT OR REPLACE INTO text VALUES (?, ?, ?, ?, ?, ?)", text)
                for series in touched:
                    self._roll_up(*series)
                self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None
        if (refused := len(rows) - len(data) - len(text)) > 0:
            raise StoreRejected(f"{refused} samples older than the raw retention were not written")

    def _roll_up(self, tenant: str, asset: str, point: str, first_ns: int, last_ns: int) -> None:
        """Recompute, in the caller's transaction, every roll-up window of one series that holds a time in
        [first, last]: each roll-up from the one below it (raw samples for the finest)."""
        source, count, total, lo, hi, last, prev = "telemetry", "COUNT(value)", "SUM(value)", "MIN(value)", \
            "MAX(value)", "value", None
        for r in self.rollups:
            g = r.every_ns
            a, b = first_ns // g * g, last_ns // g * g + g
            match = "tenant=? AND asset=? AND point=? AND t_ns >= ? AND t_ns < ?"
            src_where = match if prev is None else f"every_ns={prev} AND {match}"
            self._db.execute(
                f"INSERT OR REPLACE INTO rollup (every_ns, tenant, asset, point, t_ns, n, total, lo, hi, last, "
                f"quality) SELECT {g}, tenant, asset, point, {_window('t_ns', g)} AS w, {count}, {total}, {lo}, "
                f"{hi}, NULL, MAX(quality) FROM {source} WHERE {src_where} GROUP BY w",
                (tenant, asset, point, a, b))
            self._db.execute(
                f"UPDATE rollup SET last = (SELECT s.{last} FROM {source} s WHERE "
                f"{'' if prev is None else f's.every_ns={prev} AND '}s.tenant=rollup.tenant AND "
                f"s.asset=rollup.asset AND s.point=rollup.point AND s.t_ns >= rollup.t_ns AND "
                f"s.t_ns < rollup.t_ns + {g} AND s.{last} IS NOT NULL ORDER BY s.t_ns DESC LIMIT 1) "
                f"WHERE every_ns={g} AND {match}", (tenant, asset, point, a, b))
            source, count, total, lo, hi, last, prev = "rollup", "SUM(n)", "SUM(total)", "MIN(lo)", "MAX(hi)", \
                "last", g

    def maintain(self, now_ns: int | None = None) -> dict[str, int]:
        """Apply the retention of raw data (numbers and text) and of each roll-up."""
        now = time.time_ns() if now_ns is None else now_ns
        counts = {"expired_raw": 0, "expired_rollup": 0}
        try:
            with self._lock:
                self._db.execute("BEGIN")
                if (cut := self._cutoff(self._resolutions[0].keep_ns, now)) is not None:
                    counts["expired_raw"] += self._db.execute("DELETE FROM telemetry WHERE t_ns < ?", (cut,)).rowcount
                    counts["expired_raw"] += self._db.execute("DELETE FROM text WHERE t_ns < ?", (cut,)).rowcount
                for r in self.rollups:
                    if (cut := self._cutoff(r.keep_ns, now)) is not None:
                        counts["expired_rollup"] += self._db.execute(
                            "DELETE FROM rollup WHERE every_ns = ? AND t_ns < ?", (r.every_ns, cut)).rowcount
                self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None
        return counts

    def query_rollup_range(self, resolution, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        rows = self._select(
            "SELECT t_ns, total, n, quality FROM rollup WHERE every_ns=? AND tenant=? AND asset=? AND point=? "
            "AND t_ns >= ? AND t_ns < ? ORDER BY t_ns LIMIT ?",
            (resolution.every_ns, tenant, asset, point, start_ns, end_ns, limit))
        return Series([r[0] for r in rows], [r[1] / r[2] if r[2] else None for r in rows], [r[3] for r in rows])

    def query_rollup_window(self, resolution, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        where = "every_ns=? AND tenant=? AND asset=? AND point=? AND t_ns >= ? AND t_ns < ?"
        args = (resolution.every_ns, tenant, asset, point, start_ns, end_ns)
        w = _window("t_ns", every_ns)
        if agg == "last":
            rows = self._select(
                f"SELECT {w} AS w, last FROM rollup r1 WHERE {where} AND last IS NOT NULL AND t_ns = (SELECT "
                "MAX(t_ns) FROM rollup r2 WHERE r2.every_ns=r1.every_ns AND r2.tenant=r1.tenant AND "
                f"r2.asset=r1.asset AND r2.point=r1.point AND r2.last IS NOT NULL AND {_window('r2.t_ns', every_ns)}"
                f" = {_window('r1.t_ns', every_ns)} AND r2.t_ns >= ? AND r2.t_ns < ?) ORDER BY w",
                (*args, start_ns, end_ns))
            return Series([r[0] for r in rows], [r[1] for r in rows])
        rows = self._select(f"SELECT {w} AS w, {_ROLLUP_AGG_SQL[agg]} FROM rollup WHERE {where} GROUP BY w "
                            "HAVING SUM(n) > 0 ORDER BY w", args)
        if agg == "mean":
            return Series([r[0] for r in rows], [r[1] / r[2] for r in rows])
        return Series([r[0] for r in rows], [r[1] for r in rows])

    def _select(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def query_range(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        rows = self._select(
            "SELECT t_ns, value, quality, status FROM telemetry WHERE tenant=? AND asset=? AND point=? "
            "AND t_ns >= ? AND t_ns < ? ORDER BY t_ns LIMIT ?",
            (tenant, asset, point, start_ns, end_ns, limit))
        status = [r[3] or 0 for r in rows]
        return Series([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                      status=status if any(status) else None)

    def query_window(self, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        where = "tenant=? AND asset=? AND point=? AND t_ns >= ? AND t_ns < ?"
        args = (tenant, asset, point, start_ns, end_ns)
        if agg == "last":
            sql = (f"SELECT (t_ns / {int(every_ns)}) * {int(every_ns)} AS w, value FROM telemetry t1 "
                   f"WHERE {where} AND value IS NOT NULL AND t_ns = (SELECT MAX(t_ns) FROM telemetry t2 "
                   "WHERE t2.tenant=t1.tenant AND t2.asset=t1.asset AND t2.point=t1.point "
                   f"AND t2.value IS NOT NULL AND t2.t_ns / {int(every_ns)} = t1.t_ns / {int(every_ns)} "
                   "AND t2.t_ns >= ? AND t2.t_ns < ?) ORDER BY w")
            rows = self._select(sql, (*args, start_ns, end_ns))
        else:
            sql = (f"SELECT (t_ns / {int(every_ns)}) * {int(every_ns)} AS w, {_AGG_SQL[agg]} FROM telemetry "
                   f"WHERE {where} AND value IS NOT NULL GROUP BY w ORDER BY w")
            rows = self._select(sql, args)
        return Series([r[0] for r in rows], [r[1] for r in rows])

    def latest(self, tenant, asset) -> dict[str, tuple[int, float | None]]:
        rows = self._select(
            "SELECT point, t_ns, value FROM telemetry t1 WHERE tenant=? AND asset=? AND value IS NOT NULL "
            "AND t_ns = (SELECT MAX(t_ns) FROM telemetry t2 WHERE t2.tenant=t1.tenant AND t2.asset=t1.asset "
            "AND t2.point=t1.point AND t2.value IS NOT NULL)", (tenant, asset))
        return {p: (t, v) for p, t, v in rows}

    def latest_many(self, tenant, assets) -> dict[str, dict[str, tuple[int, float | None]]]:
        wanted = set(assets)
        if not wanted:
            return {}
        # The tenant's last samples in one statement (the primary key orders it); the page's assets kept.
        rows = self._select(
            "SELECT asset, point, t_ns, value FROM telemetry t1 WHERE tenant=? AND value IS NOT NULL "
            "AND t_ns = (SELECT MAX(t_ns) FROM telemetry t2 WHERE t2.tenant=t1.tenant AND t2.asset=t1.asset "
            "AND t2.point=t1.point AND t2.value IS NOT NULL)", (tenant,))
        out: dict[str, dict[str, tuple[int, float | None]]] = {}
        for a, p, t, v in rows:
            if a in wanted:
                out.setdefault(a, {})[p] = (t, v)
        return out

    def query_text(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> TextSeries:
        rows = self._select(
            "SELECT t_ns, value FROM text WHERE tenant=? AND asset=? AND point=? AND t_ns >= ? AND t_ns < ? "
            "ORDER BY t_ns LIMIT ?", (tenant, asset, point, start_ns, end_ns, limit))
        return TextSeries([r[0] for r in rows], [r[1] for r in rows])

    def latest_text(self, tenant, asset) -> dict[str, tuple[int, str]]:
        rows = self._select(
            "SELECT point, MAX(t_ns), value FROM text WHERE tenant=? AND asset=? GROUP BY point", (tenant, asset))
        return {p: (t, v) for p, t, v in rows}

    def find_subject(self, tenant, subject) -> list[SubjectHit]:
        rows = self._select(
            "SELECT asset, point, COUNT(*), MIN(t_ns), MAX(t_ns) FROM text WHERE tenant=? AND subject=? "
            "GROUP BY asset, point ORDER BY asset, point", (tenant, subject))
        return [SubjectHit(*r) for r in rows]

    def erase_subject(self, tenant, subject) -> int:
        try:
            with self._lock:
                n = self._db.execute("DELETE FROM text WHERE tenant=? AND subject=?", (tenant, subject)).rowcount
                # The WAL still holds the deleted pages' old images until a checkpoint copies it back.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None
        return n

    def erase_asset(self, tenant, asset) -> int:
        try:
            with self._lock:
                n = self._db.execute("DELETE FROM telemetry WHERE tenant=? AND asset=?", (tenant, asset)).rowcount
                n += self._db.execute("DELETE FROM text WHERE tenant=? AND asset=?", (tenant, asset)).rowcount
                self._db.execute("DELETE FROM rollup WHERE tenant=? AND asset=?", (tenant, asset))
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None
        return n

    def close(self) -> None:
        with self._lock:
            self._db.close()
