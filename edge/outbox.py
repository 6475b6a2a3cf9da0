"""The outbox: every message is on disk before it is sent, and leaves only when the cloud has written it.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives ``kill -9`` and power loss.
Telemetry batches get the gateway's sequence number inside the same transaction that stores them,
so a sequence number is never reused after a crash and gaps mean thinning, not loss. Events get a
number of their own the same way. Both count within the outbox's *epoch*, a random id made when the
outbox is created: a wiped or replaced outbox starts again at 0 as a new producer, which the cloud tells
apart from a replay of the old one.

A row is deleted when the cloud says it is durably written (``commit``, from ``models.wire.Committed``),
not on the broker's PUBACK: a broker that crashes loses what it acknowledged since its last save. Rows
stored before epochs existed (no sequence column) still leave on PUBACK (``ack``).

Bounded by bytes: when the payloads exceed ``max_bytes``, the oldest telemetry is dropped first
(thinned) and counted; alarms and anomaly events are never dropped.

A full disk does not stop the agent. Telemetry that cannot be stored is counted (``unstored_*``) and
refused until the filesystem has room again; events still go in, into space held back for them: a
reserve file of ``reserve_bytes`` beside the database, released when an event finds the disk full and
made again when space returns. An event that cannot be stored even then waits in memory (bounded) and is
stored with the next one that can be.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge.outbox")

PRIORITY_EVENT = 0
PRIORITY_TELEMETRY = 1
RESERVE_BYTES = 1024 * 1024
"""Held back for events on a full disk: ~1,000 alarms in a row."""
MAX_HELD_EVENTS = 10_000
"""Events kept in memory while not even the reserve holds them; beyond, the oldest are dropped and counted."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    priority: int
    seq: int | None = None
    """Its number in the outbox's epoch (telemetry and events count apart); None: stored before epochs."""


def _disk_full(exc: BaseException) -> bool:
    """SQLite could not write for want of space: SQLITE_FULL, or an I/O error (a filesystem that delays
    allocation reports ENOSPC at fsync, which SQLite words as a disk I/O error)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or "disk is full" in str(exc)


class Outbox:
    def __init__(self, path: Path | str, max_bytes: int = 256 * 1024 * 1024,
                 reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._reserve = self.path.with_name(self.path.name + ".reserve")
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
                                              ('thinned_samples', 0), ('next_event_seq', 0),
                                              ('unstored_batches', 0), ('unstored_samples', 0);
            CREATE TABLE IF NOT EXISTS identity (epoch TEXT NOT NULL);
            """
        )
        if "seq" not in {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}:
            self._db.execute("ALTER TABLE outbox ADD COLUMN seq INTEGER")  # an outbox from before epochs
        if "created_ns" not in {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}:
            self._db.execute("ALTER TABLE outbox ADD COLUMN created_ns INTEGER")  # an outbox from before its age
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_seq ON outbox (priority, seq)")
        self.epoch = self._epoch()
        self._bytes = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]
        self._full = False
        self._unstored = [0, 0]  # batches, samples refused since the last time they could be counted on disk
        self._held: collections.deque[tuple[str, bytes | Callable[[int], bytes]]] = collections.deque()
        self._counts = {"events_dropped": 0, "disk_full_episodes": 0}
        if not self._make_reserve():
            log.warning("outbox: no room for the %d-byte event reserve beside %s", reserve_bytes, self.path)

    def _epoch(self) -> str:
        row = self._db.execute("SELECT epoch FROM identity").fetchone()
        if row:
            return row[0]
        epoch = secrets.token_hex(8)
        with self._db:  # a new epoch counts from 0 (an outbox from before epochs restarts its sequence too)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO identity VALUES (?)", (epoch,))
            self._db.execute("UPDATE meta SET value = 0 WHERE key IN ('next_seq', 'next_event_seq')")
        log.info("outbox %s: new epoch %s", self.path, epoch)
        return epoch

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    # -- writing ---------------------------------------------------------------------------------
    def put_telemetry(self, topic: str, n_samples: int, encode: Callable[[int], bytes]) -> int | None:
        """Store one batch; ``encode(seq)`` builds the payload with the sequence number given to it. None when
        the disk is full: the batch is counted as not stored."""
        with self._lock:
            self._store_held()
            if self._full and not self._room_again():
                self._unstored[0] += 1
                self._unstored[1] += n_samples
                return None
            try:
                seq = self._insert_telemetry(topic, n_samples, encode)
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
                self._unstored[0] += 1
                self._unstored[1] += n_samples
                self._disk_is_full(exc)
                return None
            self._unstored = [0, 0]  # counted in the meta table by the insert
            if self._full:
                self._full = False
                log.warning("outbox: space again on %s; telemetry is stored again (%d batches, %d samples could "
                            "not be)", self.path.parent, *self._unstored_total())
            return seq

    def _insert_telemetry(self, topic: str, n_samples: int, encode: Callable[[int], bytes]) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("next_seq")
            payload = encode(seq)
            self._db.execute(
                "INSERT INTO outbox (priority, topic, n_samples, payload, seq, created_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (PRIORITY_TELEMETRY, topic, n_samples, payload, seq, time.time_ns()),
            )
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            if self._unstored[0]:  # what a full disk refused, counted for good now that it can be
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'unstored_batches'",
                                 (self._unstored[0],))
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'unstored_samples'",
                                 (self._unstored[1],))
            self._bytes += len(payload)
            if self._bytes > self.max_bytes:
                self._thin()
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return seq

    def put_event(self, topic: str, payload: bytes | Callable[[int], bytes]) -> None:
        """Store an event; ``payload(seq)`` builds it with the event number given to it (bytes: no number, it
        leaves on PUBACK). On a full disk it goes into the reserve, or waits in memory for room."""
        with self._lock:
            self._held.append((topic, payload))
            if len(self._held) > MAX_HELD_EVENTS:
                self._held.popleft()
                self._counts["events_dropped"] += 1
            self._store_held()

    def _store_held(self) -> None:
        while self._held:
            topic, payload = self._held[0]
            try:
                self._insert_event(topic, payload)
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
                self._disk_is_full(exc)
                if not self._release_reserve():
                    return  # not even the reserve: it waits in memory
                continue
            self._held.popleft()

    def _insert_event(self, topic: str, payload: bytes | Callable[[int], bytes]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seq = None
            if callable(payload):
                seq = self._meta("next_event_seq")
                payload = payload(seq)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_event_seq'", (seq + 1,))
            self._db.execute("INSERT INTO outbox (priority, topic, payload, seq, created_ns) VALUES (?, ?, ?, ?, ?)",
                             (PRIORITY_EVENT, topic, payload, seq, time.time_ns()))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._bytes += len(payload)

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back already (a full disk at COMMIT)
            self._db.execute("ROLLBACK")
        self._bytes = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]

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

    # -- a full disk -----------------------------------------------------------------------------
    def _disk_is_full(self, exc: BaseException) -> None:
        if not self._full:
            self._full = True
            self._counts["disk_full_episodes"] += 1
            log.error("outbox: cannot write to %s (%s); telemetry is counted and not stored until there is room "
                      "again, events go into the reserve", self.path.parent, exc)

    def _free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _room_again(self) -> bool:
        """Whether telemetry may be stored again: the reserve is back in place, and as much again is free on the
        filesystem or inside the database (rows the cloud committed leave pages SQLite reuses without growing)."""
        try:
            if not self._reserve.exists() and self._free_bytes() < self.reserve_bytes + 65536:
                return False
            if not self._make_reserve():
                return False
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            reusable = self._db.execute("PRAGMA freelist_count").fetchone()[0] * page
            return self._free_bytes() + reusable >= self.reserve_bytes
        except (OSError, sqlite3.Error):
            return False

    def _make_reserve(self) -> bool:
        try:
            if self._reserve.exists() and self._reserve.stat().st_size >= self.reserve_bytes:
                return True
            with open(self._reserve, "wb") as f:
                chunk = b"\0" * 65536
                for _ in range(0, self.reserve_bytes, len(chunk)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            self._reserve.unlink(missing_ok=True)
            return False

    def _release_reserve(self) -> bool:
        """Give the reserve's space to SQLite; False if there was none left to give."""
        if not self._reserve.exists():
            return False
        self._reserve.unlink()
        log.warning("outbox: disk full; the event reserve is released for events")
        return True

    # -- sending ---------------------------------------------------------------------------------
    def pending(self, limit: int, skip: set[int] | frozenset[int] = frozenset()) -> list[OutboxRow]:
        """Oldest first, events ahead of telemetry (an alarm should not wait behind a backlog);
        ``skip`` holds the rows already in flight."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, topic, payload, priority, seq FROM outbox ORDER BY priority, id LIMIT ?",
                (limit + len(skip),),
            )
            rows = [OutboxRow(*r) for r in cur if r[0] not in skip]
            return rows[:limit]

    def pending_after(self, limit: int, after_event: int, after_telemetry: int) -> list[OutboxRow]:
        """Like ``pending``, from past the last row handed out of each kind (ids only grow within a kind)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, topic, payload, priority, seq FROM outbox WHERE (priority = ? AND id > ?) "
                "OR (priority = ? AND id > ?) ORDER BY priority, id LIMIT ?",
                (PRIORITY_EVENT, after_event, PRIORITY_TELEMETRY, after_telemetry, limit),
            )
            return [OutboxRow(*r) for r in cur]

    def rows(self, ids: Iterable[int]) -> list[OutboxRow]:
        """These rows, those still stored, in send order."""
        ids = list(ids)
        out: list[OutboxRow] = []
        with self._lock:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                out += [OutboxRow(*r) for r in self._db.execute(
                    f"SELECT id, topic, payload, priority, seq FROM outbox WHERE id IN ({','.join('?' * len(part))})",
                    part)]
        return sorted(out, key=lambda r: (r.priority, r.id))

    def ack(self, row_id: int) -> None:
        """Delete a row the broker acknowledged (rows stored before epochs)."""
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,))
                row = cur.fetchone()
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
                return  # kept, and sent again later: the cloud drops the duplicate
            if row:
                self._bytes -= row[0]

    def commit(self, epoch: str, telemetry: Iterable[int], events: Iterable[int]) -> list[int]:
        """Delete what the cloud says it has durably written (sequences of ``epoch``); the ids deleted. Another
        epoch's news (an outbox that was here before) concern nothing stored here."""
        if epoch != self.epoch:
            return []
        gone: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for priority, seqs in ((PRIORITY_TELEMETRY, list(telemetry)), (PRIORITY_EVENT, list(events))):
                    for i in range(0, len(seqs), 500):
                        part = seqs[i:i + 500]
                        for row_id, size in self._db.execute(
                                f"DELETE FROM outbox WHERE priority = ? AND seq IN ({','.join('?' * len(part))}) "
                                "RETURNING id, LENGTH(payload)", (priority, *part)).fetchall():
                            gone.append(row_id)
                            self._bytes -= size
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                if not _disk_full(exc):
                    raise
                return []  # kept, and sent again later: the cloud drops the duplicates and says so again
        return gone

    # -- health ----------------------------------------------------------------------------------
    def _unstored_total(self) -> tuple[int, int]:
        return (self._meta("unstored_batches") + self._unstored[0], self._meta("unstored_samples") + self._unstored[1])

    def oldest_ns(self) -> int | None:
        """When the oldest batch still waiting for the cloud's commit was put here (None: empty, or it predates
        the column): the outbox's age, the first sign of a link that delivers nothing."""
        with self._lock:
            row = self._db.execute("SELECT created_ns FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else row[0]

    def stats(self) -> dict[str, int]:
        with self._lock:
            depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            batches, samples = self._unstored_total()
            return {
                "outbox_depth": depth,
                "outbox_bytes": self._bytes,
                "next_seq": self._meta("next_seq"),
                "thinned_batches": self._meta("thinned_batches"),
                "thinned_samples": self._meta("thinned_samples"),
                "disk_full": int(self._full),
                "unstored_batches": batches,
                "unstored_samples": samples,
                "events_waiting_for_disk": len(self._held),
                **self._counts,
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()
