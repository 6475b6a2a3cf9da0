"""Each asset's last values kept in memory in front of a store, because every twin read and every fleet
page asks for them and InfluxDB answers ``latest`` by visiting each series (~100 ms for 1,000 assets).

What this process writes through the cache updates it at once (ingest in the same process: always
current). What other processes write (more ingest workers, another replica) shows up when an entry is
older than ``ttl_s`` and is read again from the store. Entries are merged newest-sample-wins, so a read
racing a write never loses the write: an entry exists (empty, not yet loaded) before its store read starts,
and writes land in it from then on.

Only what the store durably accepted is cached: a write updates the cache after the store returned.
Erasing a subject drops the tenant's text values.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from cloud.store.base import Agg, Rows, Series, SubjectHit, TextSeries, TimeSeriesStore

_MAX_ENTRIES = 200_000


class _Entry:
    __slots__ = ("points", "points_read", "text", "text_read")

    def __init__(self) -> None:
        self.points: dict[str, tuple[int, float | None]] = {}
        self.text: dict[str, tuple[int, str]] = {}
        self.points_read: float | None = None  # monotonic time its last store read started; None: never
        self.text_read: float | None = None


def _merge(into: dict[str, tuple[int, Any]], point: str, t_ns: int, value: Any) -> None:
    have = into.get(point)
    if have is None or t_ns >= have[0]:
        into[point] = (int(t_ns), value)


def _last_value(t_ns: Sequence[int], values: Sequence[float | None]) -> tuple[int, float] | None:
    """The newest sample that has a finite value (what ``latest`` answers), or None."""
    best: tuple[int, float] | None = None
    for t, v in zip(t_ns, values, strict=True):
        if v is not None and math.isfinite(v) and (best is None or t >= best[0]):
            best = (int(t), float(v))
    return best


class LatestCache(TimeSeriesStore):
    """A ``TimeSeriesStore`` that answers ``latest``, ``latest_text`` and ``latest_many`` from memory."""

    def __init__(self, store: TimeSeriesStore, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._erasures = 0  # a text read that overlapped an erasure must not put an erased value back

    # -- writes: through to the store, then into the entries that exist ----------------------------------
    def write(self, rows: Rows) -> None:
        self.store.write(rows)
        self._written(rows)

    def prepare(self, rows: Rows) -> tuple[Rows, Any]:
        return rows, self.store.prepare(rows)

    def write_prepared(self, prepared: tuple[Rows, Any]) -> None:
        rows, inner = prepared
        self.store.write_prepared(inner)
        self._written(rows)

    def _written(self, rows: Rows) -> None:
        entries = self._entries
        if not entries:  # a process that only writes (an ingest worker) keeps nothing
            return
        with self._lock:
            for s in rows.series:
                e = entries.get((s.tenant, s.asset))
                if e is not None and (last := _last_value(s.t_ns, s.values)) is not None:
                    _merge(e.points, s.point, *last)
            for tr in rows.text:
                e = entries.get((tr.tenant, tr.asset))
                if e is not None and len(tr.t_ns):
                    i = max(range(len(tr.t_ns)), key=tr.t_ns.__getitem__)
                    _merge(e.text, tr.point, tr.t_ns[i], tr.values[i])

    # -- latest values ------------------------------------------------------------------------------------
    def _read(self, tenant: str, assets: list[str], text: bool) -> list[_Entry]:
        """The assets' entries, reading from the store those never read or read more than ``ttl_s`` ago."""
        now = time.monotonic()
        attr = "text_read" if text else "points_read"
        with self._lock:
            erasures = self._erasures
            if len(self._entries) + len(assets) > _MAX_ENTRIES:
                self._entries.clear()
            entries = [self._entries.setdefault((tenant, a), _Entry()) for a in assets]
            stale = [a for a, e in zip(assets, entries, strict=True)
                     if getattr(e, attr) is None or now - getattr(e, attr) > self.ttl_s]
        if not stale:
            return entries
        if text:
            found = {a: self.store.latest_text(tenant, a) for a in stale}
        elif len(stale) == 1:
            found = {stale[0]: self.store.latest(tenant, stale[0])}
        else:
            found = self.store.latest_many(tenant, stale)
        with self._lock:
            if text and erasures != self._erasures:
                return entries
            stale_set = set(stale)
            for e, a in zip(entries, assets, strict=True):
                if a in stale_set:
                    for p, (t, v) in found.get(a, {}).items():
                        _merge(e.text if text else e.points, p, t, v)
                    setattr(e, attr, now)
        return entries

    def latest(self, tenant: str, asset: str) -> dict[str, tuple[int, float | None]]:
        (e,) = self._read(tenant, [asset], text=False)
        with self._lock:
            return dict(e.points)

    def latest_text(self, tenant: str, asset: str) -> dict[str, tuple[int, str]]:
        (e,) = self._read(tenant, [asset], text=True)
        with self._lock:
            return dict(e.text)

    def latest_many(self, tenant: str, assets: Sequence[str]) -> dict[str, dict[str, tuple[int, float | None]]]:
        assets = list(dict.fromkeys(assets))
        entries = self._read(tenant, assets, text=False)
        with self._lock:
            return {a: dict(e.points) for a, e in zip(assets, entries, strict=True) if e.points}

    # -- everything else: the store's own ---------------------------------------------------------------
    def query_range(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        return self.store.query_range(tenant, asset, point, start_ns, end_ns, limit)

    def query_window(self, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        return self.store.query_window(tenant, asset, point, start_ns, end_ns, every_ns, agg)

    def query_text(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> TextSeries:
        return self.store.query_text(tenant, asset, point, start_ns, end_ns, limit)

    def find_subject(self, tenant: str, subject: str) -> list[SubjectHit]:
        return self.store.find_subject(tenant, subject)

    def erase_subject(self, tenant: str, subject: str) -> int:
        try:
            return self.store.erase_subject(tenant, subject)
        finally:
            with self._lock:  # the erased pseudonym may be some asset's last text value: forget them all
                self._erasures += 1
                for (t, _), e in self._entries.items():
                    if t == tenant:
                        e.text.clear()
                        e.text_read = None

    def close(self) -> None:
        self.store.close()
