"""Embedded time-series store on SQLite: the demo's InfluxDB, with the same contract and schema.

One row per sample keyed by (tenant, asset, point, t_ns) — a rewrite of the same sample replaces it,
exactly like InfluxDB, so replays after an outage are idempotent here too. Text points have their own
table; a personal one keeps its pseudonym in ``subject`` so a subject's rows can be found and erased, and
``secure_delete`` overwrites erased rows in the file rather than leaving them in free pages.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

from cloud.store.base import Agg, Rows, Series, StoreUnavailable, SubjectHit, TextSeries, TimeSeriesStore

_AGG_SQL = {"mean": "AVG(value)", "min": "MIN(value)", "max": "MAX(value)", "count": "COUNT(value)"}


class EmbeddedStore(TimeSeriesStore):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
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
                 value REAL, quality INTEGER NOT NULL,
                 PRIMARY KEY (tenant, asset, point, t_ns)) WITHOUT ROWID"""
        )
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS text (
                 tenant TEXT NOT NULL, asset TEXT NOT NULL, point TEXT NOT NULL, t_ns INTEGER NOT NULL,
                 value TEXT NOT NULL, subject TEXT,
                 PRIMARY KEY (tenant, asset, point, t_ns)) WITHOUT ROWID"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS text_subject ON text (tenant, subject) WHERE subject IS NOT NULL")

    def write(self, rows: Rows) -> None:
        data = [(tenant, asset, point, t, None if v is None or not math.isfinite(v) else v, q)
                for tenant, asset, point, t, v, q in rows.samples()]
        text = [(r.tenant, r.asset, r.point, t, v, v if r.personal else None)
                for r in rows.text for t, v in zip(r.t_ns, r.values, strict=True)]
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO telemetry VALUES (?, ?, ?, ?, ?, ?)", data)
                self._db.executemany("INSERT OR REPLACE INTO text VALUES (?, ?, ?, ?, ?, ?)", text)
                self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise StoreUnavailable(f"embedded store {self.path}: {exc}") from None

    def _select(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def query_range(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        rows = self._select(
            "SELECT t_ns, value, quality FROM telemetry WHERE tenant=? AND asset=? AND point=? "
            "AND t_ns >= ? AND t_ns < ? ORDER BY t_ns LIMIT ?",
            (tenant, asset, point, start_ns, end_ns, limit))
        return Series([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

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

    def close(self) -> None:
        with self._lock:
            self._db.close()
