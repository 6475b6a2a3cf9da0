"""Scheduled upkeep of what grows with time, so a platform that runs for years stays the size of its retention.

Two jobs on one thread:

- the store's (``TimeSeriesStore.maintain``), every ``TWIN_HOUSEKEEPING_INTERVAL_S``: InfluxDB rolls up what
  arrives in time by itself; what a gateway replays days later was marked by ingest and is rolled up here. The
  embedded store applies its retention here;
- the registry's, every ``TWIN_RETENTION_INTERVAL_S``: tables that grow with traffic lose their rows older than
  their retention (``TWIN_RETENTION_*_DAYS``, 0 keeps them): dead letters, anomaly events, edge alarms, and
  resolved alerts that no excursion refers to (an excursion is shipment evidence). The audit log is kept: it is
  the record of who did what, exported, never pruned here.

It runs in one process of a deployment, the ingest worker of partition 0 (``Platform.open``); both jobs are
idempotent, so a second one (shared subscriptions: every worker is partition 0) only repeats work. Deletes go in
batches, oldest first, so a large backlog never holds a long transaction. What it did is counted
(``housekeeping_*``, ``rollup_*``, ``expired_*``, ``pruned_*`` in ``/metrics``) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import and_, delete, exists, func, select, tuple_

from cloud.registry import AlarmRecord, AnomalyRecord, DeadLetter, Excursion, Registry
from cloud.registry import Alert as AlertRecord
from cloud.settings import CloudSettings
from cloud.store import TimeSeriesStore

log = logging.getLogger("cloud.housekeeping")
DAY_NS = 86_400 * 1_000_000_000
BATCH = 5000
"""Rows deleted per statement."""
PRUNED = ("dead_letters", "anomalies", "edge_alarms", "resolved_alerts")
"""The registry tables with a retention, as ``prune_registry`` and the settings name them."""


def _older(s, table: str, cutoff: int, batch: int) -> list:
    """Up to ``batch`` keys of rows of ``table`` older than ``cutoff``, oldest first where the table says."""
    if table == "dead_letters":
        q = select(DeadLetter.id).where(DeadLetter.received_ns < cutoff).order_by(DeadLetter.id)
    elif table == "anomalies":  # by when the event ended; one never closed by when it began
        q = select(AnomalyRecord.tenant, AnomalyRecord.event_id).where(
            func.coalesce(AnomalyRecord.end_ns, AnomalyRecord.start_ns) < cutoff)
    elif table == "edge_alarms":
        q = select(AlarmRecord.tenant, AlarmRecord.event_id).where(AlarmRecord.start_ns < cutoff)
    elif table == "resolved_alerts":
        cited = exists().where(and_(Excursion.tenant == AlertRecord.tenant, Excursion.alert_id == AlertRecord.id))
        q = select(AlertRecord.id).where(AlertRecord.state == "resolved", AlertRecord.resolved_ns < cutoff, ~cited)
    else:
        raise ValueError(f"no retention for registry table {table!r}")
    return list(s.execute(q.limit(batch)).all())


def _delete(s, table: str, keys: list) -> int:
    if table == "dead_letters":
        stmt = delete(DeadLetter).where(DeadLetter.id.in_([k[0] for k in keys]))
    elif table == "resolved_alerts":
        stmt = delete(AlertRecord).where(AlertRecord.id.in_([k[0] for k in keys]))
    else:
        model = AnomalyRecord if table == "anomalies" else AlarmRecord
        stmt = delete(model).where(tuple_(model.tenant, model.event_id).in_([tuple(k) for k in keys]))
    return s.execute(stmt.execution_options(synchronize_session=False)).rowcount or 0


def prune_registry(registry: Registry, keep_days: Mapping[str, float], now_ns: int | None = None,
                   batch: int = BATCH) -> dict[str, int]:
    """Delete rows of the tables in ``keep_days`` older than their retention in days (0: keep them); how many,
    per table. Each batch is its own transaction."""
    now = time.time_ns() if now_ns is None else now_ns
    pruned: dict[str, int] = {}
    for table, days in keep_days.items():
        pruned[table] = 0
        if days <= 0:
            continue
        cutoff = now - int(days * DAY_NS)
        while True:
            with registry.session() as s:
                keys = _older(s, table, cutoff, batch)
                if keys:
                    pruned[table] += _delete(s, table, keys)
            if len(keys) < batch:
                break
    return pruned


def registry_retention(settings: CloudSettings) -> dict[str, float]:
    """Each pruned table's retention in days, from the settings."""
    return {t: float(getattr(settings, f"retention_{t}_days")) for t in PRUNED}


class Housekeeping:
    """The two jobs on a thread of their own; ``run_store``/``run_registry`` run one pass now."""

    def __init__(self, store: TimeSeriesStore, registry: Registry, settings: CloudSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.registry = store, registry
        self.interval_s = settings.housekeeping_interval_s
        self.retention_interval_s = settings.retention_interval_s
        self.keep_days = registry_retention(settings)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters: dict[str, int] = {
            "housekeeping_runs": 0, "housekeeping_failures": 0, "rollup_marks": 0, "rollup_queries": 0,
            "rollup_rows": 0, "expired_raw": 0, "expired_rollup": 0, **{f"pruned_{t}": 0 for t in PRUNED}}

    def run_store(self, now_ns: int | None = None) -> dict[str, int]:
        done = self.store.maintain(now_ns)
        for k, v in done.items():
            self.counters[k] = self.counters.get(k, 0) + v
        if any(done.values()):
            log.info("store upkeep %s", " ".join(f"{k}={v}" for k, v in sorted(done.items())))
        return done

    def run_registry(self, now_ns: int | None = None) -> dict[str, int]:
        pruned = prune_registry(self.registry, self.keep_days, now_ns)
        for t, n in pruned.items():
            self.counters[f"pruned_{t}"] += n
        if any(pruned.values()):
            log.info("registry retention %s", " ".join(f"pruned_{t}={n}" for t, n in sorted(pruned.items())))
        return pruned

    def start(self) -> None:
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None

    def _loop(self) -> None:
        registry_due = self._clock()  # prune once at start, then every retention interval
        while not self._stop.is_set():
            jobs: list[tuple[str, Callable[[], object]]] = [("store", self.run_store)]
            if self._clock() >= registry_due:
                registry_due = self._clock() + self.retention_interval_s
                jobs.append(("registry", self.run_registry))
            for name, job in jobs:
                try:
                    job()
                except Exception as exc:  # a pass that failed is retried at the next one; the thread lives on
                    self.counters["housekeeping_failures"] += 1
                    log.warning("housekeeping: %s upkeep failed (%s: %s); retrying in %.0f s", name,
                                type(exc).__name__, exc, self.interval_s)
            self.counters["housekeeping_runs"] += 1
            self._stop.wait(self.interval_s)
