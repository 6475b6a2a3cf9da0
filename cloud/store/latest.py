"""Each asset's last values kept in memory in front of a store, because every twin read and every fleet
page asks for them and InfluxDB answers ``latest`` by visiting each series (~100 ms for 1,000 assets).

What this process writes through the cache updates it at once (ingest in the same process: always
current). What other processes write (more ingest workers, another replica) shows up once an entry older
than ``ttl_s`` has been read again from the store: in the background while the entry is at most five TTLs
old (the answer meanwhile is the entry as it was), before answering when it is older. Entries are merged
newest-sample-wins, so a read racing a write never loses the write: an entry exists (empty, not yet read)
before its store read starts, and writes land in it from then on.

Only what the store durably accepted is cached: a write updates the cache after the store returned.
Erasing a subject drops the tenant's text values.

Late and future samples never move a last value: a write replaces a point's entry only with a newer sample, and
with ``future_tolerance_s`` a sample stamped further ahead of the wall clock than that is never a last value,
whether written through the cache or found in the store (ingest dead-letters such samples; the store may hold
some from before it did, and one stamped a year ahead would otherwise be the answer for a year). A point whose
newest stored sample lies beyond is left out until a sample within arrives: the store answers each point's newest
sample only, not the one before it.

A process that serves the dashboard and whose ingest writes through the cache (``twin cloud run``) also
*holds* every asset (``hold_all``): a sweep reads every tenant's last values at start and again every
``sweep_s``, and from the first sweep on this process's writes create the entries of assets it did not
hold yet (such an asset had no value when the sweep read its tenant, so what ingest writes is all there
is). A first fleet page of thousands then never waits for the store, even after an idle hour: entries are
answered from memory up to ``2 * sweep_s`` old (read in the background once older than ``ttl_s``, as
usual), so values that *other* processes write are at most that old on a first read; what this process
writes is current.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cloud.store.base import Agg, Rows, Series, SubjectHit, TextSeries, TimeSeriesStore
from cloud.store.rollup import Resolution

_MAX_ENTRIES = 200_000
_SERVE_STALE_TTLS = 5  # an entry up to this many TTLs old is answered while it is refreshed; older, read first
_SWEEP_S = 30.0  # a holding cache reads every tenant's last values this often (one store query per tenant)
log = logging.getLogger(__name__)


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


def _last_value(t_ns: Sequence[int], values: Sequence[float | None], horizon: int) -> tuple[int, float] | None:
    """The newest sample, not after ``horizon``, that has a finite value (what ``latest`` answers), or None."""
    best: tuple[int, float] | None = None
    for t, v in zip(t_ns, values, strict=True):
        if v is not None and math.isfinite(v) and t <= horizon and (best is None or t >= best[0]):
            best = (int(t), float(v))
    return best


_NO_HORIZON = 2**63


class LatestCache(TimeSeriesStore):
    """A ``TimeSeriesStore`` that answers ``latest``, ``latest_text`` and ``latest_many`` from memory."""

    def __init__(self, store: TimeSeriesStore, ttl_s: float, clock=time.monotonic,
                 future_tolerance_s: float | None = None, wall_clock=time.time_ns) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._future_ns = None if future_tolerance_s is None else int(future_tolerance_s * 1e9)
        self._wall = wall_clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._erasures = 0  # a text read that overlapped an erasure must not put an erased value back
        self._pending: set[tuple[str, str, bool]] = set()  # (tenant, asset, text) being refreshed in the background
        self._executor: ThreadPoolExecutor | None = None
        # Holding every asset (``hold_all``): the start of the last completed sweep, None until one completed.
        self._held_since: float | None = None
        self._sweep_s = _SWEEP_S
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

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

    def _horizon(self) -> int:
        """The newest time a last value may have: later is a clock gone wrong, not the asset's present."""
        return _NO_HORIZON if self._future_ns is None else self._wall() + self._future_ns

    def _written(self, rows: Rows) -> None:
        entries = self._entries
        held = self._held_since
        if not entries and held is None:  # a process that only writes (an ingest worker) keeps nothing
            return
        horizon = self._horizon()
        with self._lock:
            for tenant, asset, point, t_ns, values, *_ in rows.series:
                e = entries.get((tenant, asset))
                if e is None:
                    if held is None or len(entries) >= _MAX_ENTRIES:
                        continue
                    # Held: the last sweep found no value of this asset, so this write is its newest value.
                    e = entries[(tenant, asset)] = _Entry()
                    e.points_read = held
                if len(t_ns) == 1:  # most series of a tick: one sample, no loop (this runs in ingest's write)
                    v = values[0]
                    if v is None or not math.isfinite(v) or t_ns[0] > horizon:
                        continue
                    t, v = int(t_ns[0]), float(v)
                elif (last := _last_value(t_ns, values, horizon)) is not None:
                    t, v = last
                else:
                    continue
                have = e.points.get(point)
                if have is None or t >= have[0]:
                    e.points[point] = (t, v)
            for tr in rows.text:
                e = entries.get((tr.tenant, tr.asset))
                ok = [i for i, t in enumerate(tr.t_ns) if t <= horizon] if e is not None else []
                if ok:
                    i = max(ok, key=tr.t_ns.__getitem__)
                    _merge(e.text, tr.point, tr.t_ns[i], tr.values[i])  # type: ignore[union-attr]

    # -- latest values ------------------------------------------------------------------------------------
    def _read(self, tenant: str, assets: list[str], text: bool) -> list[_Entry]:
        """The assets' entries. Never read, or read more than ``5 * ttl_s`` ago: read from the store now.
        Read more than ``ttl_s`` ago: answered as they are while a background read refreshes them, so a busy
        asset does not put a store round trip into every ``ttl_s``-th request."""
        now = self._clock()
        attr = "text_read" if text else "points_read"
        stale_s = _SERVE_STALE_TTLS * self.ttl_s
        if not text and self._held_since is not None:  # swept every sweep_s: an entry is never older than two
            stale_s = max(stale_s, 2 * self._sweep_s)
        with self._lock:
            erasures = self._erasures
            if len(self._entries) + len(assets) > _MAX_ENTRIES:
                self._entries.clear()
                self._held_since = None  # no longer every asset: the next sweep holds them again
            entries = [self._entries.setdefault((tenant, a), _Entry()) for a in assets]
            now_ = [a for a, e in zip(assets, entries, strict=True)
                    if getattr(e, attr) is None or now - getattr(e, attr) > stale_s]
            first = set(now_)
            soon = [a for a, e in zip(assets, entries, strict=True) if a not in first and
                    now - getattr(e, attr) > self.ttl_s and (tenant, a, text) not in self._pending]
            self._pending.update((tenant, a, text) for a in soon)
        if soon:
            self._background().submit(self._refresh_later, tenant, soon, text)
        if now_:
            self._refresh(tenant, now_, text, erasures, now)
        return entries

    def _refresh(self, tenant: str, assets: list[str], text: bool, erasures: int, started: float) -> None:
        if text:
            found = {a: self.store.latest_text(tenant, a) for a in assets}
        elif len(assets) == 1:
            found = {assets[0]: self.store.latest(tenant, assets[0])}
        else:
            found = self.store.latest_many(tenant, assets)
        horizon = self._horizon()
        with self._lock:
            if text and erasures != self._erasures:
                return
            for a in assets:
                e = self._entries.get((tenant, a))
                if e is None:  # cleared meanwhile: the next read reads it again
                    continue
                for p, (t, v) in found.get(a, {}).items():
                    if t <= horizon:
                        _merge(e.text if text else e.points, p, t, v)
                setattr(e, "text_read" if text else "points_read", started)

    def _refresh_later(self, tenant: str, assets: list[str], text: bool) -> None:
        try:
            with self._lock:
                erasures = self._erasures
            self._refresh(tenant, assets, text, erasures, self._clock())
        except Exception as exc:  # the store is away: the entries stay as they are, the next read tries again
            log.warning("latest values of %d assets not refreshed: %s", len(assets), exc)
        finally:
            with self._lock:
                self._pending.difference_update((tenant, a, text) for a in assets)

    def _background(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="latest-refresh")
            return self._executor

    # -- holding every asset ------------------------------------------------------------------------------
    def hold_all(self, assets_by_tenant: Callable[[], dict[str, list[str]]], sweep_s: float = _SWEEP_S) -> None:
        """Read every tenant's last values now and every ``sweep_s`` (a thread of its own), and from the first
        completed sweep on create entries from this process's writes. ``assets_by_tenant``: the registry's
        assets; the assets the cache already holds are swept with them. For a process whose ingest writes
        through this cache: a process that does not write would only learn new assets at the next sweep.
        Once per cache: a second call changes nothing."""
        if self._sweeper is not None:
            return
        self._sweep_s = sweep_s
        self._sweeper = threading.Thread(target=self._sweep_forever, args=(assets_by_tenant,), daemon=True,
                                         name="latest-sweep")
        self._sweeper.start()

    def _sweep_forever(self, assets_by_tenant: Callable[[], dict[str, list[str]]]) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self._sweep(assets_by_tenant(), started)
            except Exception as exc:  # the store or the registry is away: the next sweep tries again
                log.warning("latest values not swept: %s", exc)
            self._stop.wait(self._sweep_s)

    def _sweep(self, assets_by_tenant: dict[str, list[str]], started: float) -> None:
        with self._lock:
            erasures = self._erasures
            if sum(map(len, assets_by_tenant.values())) > _MAX_ENTRIES:
                log.warning("latest values: more than %d assets, not all held", _MAX_ENTRIES)
                return
            wanted = {t: dict.fromkeys(a) for t, a in assets_by_tenant.items()}
            for tenant, asset in self._entries:
                wanted.setdefault(tenant, {})[asset] = None
            for tenant, assets in wanted.items():
                for a in assets:
                    self._entries.setdefault((tenant, a), _Entry())
        for tenant, assets in wanted.items():
            if self._stop.is_set():
                return
            if assets:
                self._refresh(tenant, list(assets), False, erasures, started)
        with self._lock:
            self._held_since = started

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

    def resolutions(self) -> tuple[Resolution, ...]:
        return self.store.resolutions()

    def query_rollup_range(self, resolution, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        return self.store.query_rollup_range(resolution, tenant, asset, point, start_ns, end_ns, limit)

    def query_rollup_window(self, resolution, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        return self.store.query_rollup_window(resolution, tenant, asset, point, start_ns, end_ns, every_ns, agg)

    def maintain(self, now_ns: int | None = None) -> dict[str, int]:
        return self.store.maintain(now_ns)

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

    def erase_asset(self, tenant: str, asset: str) -> int:
        try:
            return self.store.erase_asset(tenant, asset)
        finally:
            with self._lock:
                self._erasures += 1
                self._entries.pop((tenant, asset), None)

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(30)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()
