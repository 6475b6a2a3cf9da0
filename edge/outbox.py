"""The outbox: every message is on disk before it is sent, and leaves only when the broker has it.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives ``kill -9`` and power loss.
Telemetry batches get the gateway's sequence number inside the same transaction that stores them,
so a sequence number is never reused after a crash and gaps mean thinning, not loss.

Bounded by bytes: when the payloads exceed ``max_bytes``, the oldest telemetry is dropped first
(thinned) and counted; alarms and anomaly events are never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PRIORITY_EVENT = 0
PRIORITY_TELEMETRY = 1


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    priority: int


class Outbox:
    def __init__(self, path: Path | str, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                priority INTEGER NOT NULL,
                topic TEXT NOT NULL,
                n_samples INTEGER NOT NULL DEFAULT 0,
                payload BLOB NOT NULL
            );
            CREATE INDEX IF NOT EXISTS outbox_send_order ON outbox (priority, id);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT OR IGNORE INTO meta VALUES ('next_seq', 0), ('thinned_batches', 0),
                                              ('thinned_samples', 0);
            """
        )
        self._bytes = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def put_telemetry(self, topic: str, n_samples: int, encode: Callable[[int], bytes]) -> int:
        """Store one batch; ``encode(seq)`` builds the payload with the sequence number given to it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta("next_seq")
                payload = encode(seq)
                self._db.execute(
                    "INSERT INTO outbox (priority, topic, n_samples, payload) VALUES (?, ?, ?, ?)",
                    (PRIORITY_TELEMETRY, topic, n_samples, payload),
                )
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
                self._bytes += len(payload)
                if self._bytes > self.max_bytes:
                    self._thin()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._bytes = self._db.execute(
                    "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]
                raise
            return seq

    def put_event(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (priority, topic, payload) VALUES (?, ?, ?)",
                (PRIORITY_EVENT, topic, payload),
            )
            self._bytes += len(payload)

    def _thin(self) -> None:
        """Drop the oldest telemetry until under the bound (inside the caller's transaction)."""
        rows = self._db.execute(
            "SELECT id, n_samples, LENGTH(payload) FROM outbox WHERE priority = ? ORDER BY id",
            (PRIORITY_TELEMETRY,),
        )
        drop, samples = [], 0
        for row_id, n, size in rows:
            if self._bytes <= self.max_bytes:
                break
            drop.append((row_id,))
            samples += n
            self._bytes -= size
        self._db.executemany("DELETE FROM outbox WHERE id = ?", drop)
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'thinned_batches'", (len(drop),))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'thinned_samples'", (samples,))

    def pending(self, limit: int, skip: set[int] | frozenset[int] = frozenset()) -> list[OutboxRow]:
        """Oldest first, events ahead of telemetry (an alarm should not wait behind a backlog);
        ``skip`` holds the rows already in flight."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, topic, payload, priority FROM outbox ORDER BY priority, id LIMIT ?",
                (limit + len(skip),),
            )
            rows = [OutboxRow(*r) for r in cur if r[0] not in skip]
            return rows[:limit]

    def ack(self, row_id: int) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,))
            row = cur.fetchone()
            if row:
                self._bytes -= row[0]

    def stats(self) -> dict[str, int]:
        with self._lock:
            depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            return {
                "outbox_depth": depth,
                "outbox_bytes": self._bytes,
                "next_seq": self._meta("next_seq"),
                "thinned_batches": self._meta("thinned_batches"),
                "thinned_samples": self._meta("thinned_samples"),
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()
