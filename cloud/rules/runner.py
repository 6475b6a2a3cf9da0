"""Where rules run: in each ingest worker, on what that worker wrote. With ingest partitioned by gateway,
every asset's data — and so its rule state (excursion counters, trends) — lives with exactly one worker,
so N workers raise the same alerts as one would on the same input.

The runner only schedules: what a kind of asset's rules are is its pack's (``cloud.packs``).

- An edge alarm (a local rule fired on the gateway) becomes an alert at once, with the gateway's evidence.
- Every ``interval_s``, each asset that received data is assessed by the pack of its type over its recent
  history (late data after an outage included); the runner raises or refreshes the alerts the pack found and
  resolves those it says the data no longer supports.
- Gateway status messages (birth, last will) are remembered as offline intervals and lent to the packs, so a
  trailer that fell silent and came back warm is told apart as a power loss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from cloud.packs import PACKS, Pack, pack_for
from cloud.registry import Alert, Asset
from cloud.rules import local
from models.wire import AlarmEvent, AnomalyEvent, GatewayStatus, TelemetryBatch

log = logging.getLogger("cloud.rules")
NS = 1_000_000_000
OFFLINE_KEEP_S = 7 * 24 * 3600


class RuleRunner:
    """``options`` go to the packs by name (the trailer pack reads ``profile`` and ``reefer_settings``)."""

    def __init__(self, platform, *, interval_s: float = 60.0, window_s: float = 24 * 3600, **options: Any) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self.window_s = window_s
        self.options: Mapping[str, Any] = options
        self._dirty: set[tuple[str, str]] = set()
        self._written_from: dict[tuple[str, str], int] = {}  # earliest sample time written since the last cycle
        self._assessing_from: dict[tuple[str, str], int] = {}
        self._types: dict[tuple[str, str], str | None] = {}
        self._gateways: dict[tuple[str, str], str | None] = {}
        self._offline: dict[tuple[str, str], list[list[int | None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counters = {"rules_alerts_raised": 0, "rules_assessments": 0, "rules_alerts_resolved": 0,
                         "rules_errors": 0}
        self._failing: set[tuple[str, str]] = set()
        self._took: dict[tuple[str, str], float] = {}  # seconds each asset's last assessment took
        self._packs: dict[str, Pack] = {}
        for type_id in PACKS:  # now, so a bad option (an unknown profile) stops start-up
            self._pack(type_id)
        self._thread = threading.Thread(target=self._run, name="rules", daemon=True)

    def _pack(self, type_id: str | None) -> Pack | None:
        """This runner's instance of the type's pack (its rule state lives there), or None: no rules."""
        pack = self._packs.get(type_id) if type_id else None
        if pack is None and (cls := pack_for(type_id)) is not None:
            for name in cls.counter_names:
                self.counters.setdefault(name, 0)
            pack = self._packs[cls.type_id] = cls(self.platform, self)
        return pack

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _type(self, tenant: str, asset: str) -> str | None:
        key = (tenant, asset)
        if self._types.get(key) is None:
            with self.platform.registry.session() as s:
                a = s.get(Asset, key)
            self._types[key] = a.type if a else None
            self._gateways[key] = a.gateway if a else None
        return self._types[key]

    def offline_intervals(self, tenant: str, gateway: str | None) -> list[tuple[int, int | None]] | None:
        """When the gateway was offline (end None: still is), as its status messages said; None if this
        worker never heard its status."""
        with self._lock:
            spans = self._offline.get((tenant, gateway or ""))
            return None if spans is None else [(int(a or 0), b) for a, b in spans]

    def written_from(self, tenant: str, asset: str) -> int | None:
        """The earliest sample time among what was written for ``asset`` since the previous cycle
        (``RuleContext``): a pack reads back at least to there, however old, so data from an outage longer
        than its look-back is judged when it arrives."""
        return self._assessing_from.get((tenant, asset))

    def asset_offline(self, tenant: str, asset: str) -> list[tuple[int, int | None]] | None:
        """When the gateway that speaks for ``asset`` was offline (``RuleContext`` for the packs)."""
        return self.offline_intervals(tenant, self._gateways.get((tenant, asset)))

    # -- ingest hooks (writer thread) -------------------------------------------------------------
    def on_events(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, AlarmEvent):
                with self.platform.registry.session() as s:  # a tenant's type may have changed: read each time
                    definition = local.type_definition(s, ev.tenant, self._type(ev.tenant, ev.asset))
                _, new = local.alert_from_alarm(self.platform.alerts, ev, definition)
                self.counters["rules_alerts_raised"] += int(new)
            elif isinstance(ev, AnomalyEvent):
                _, new = local.alert_from_anomaly(self.platform.alerts, ev)
                self.counters["rules_alerts_raised"] += int(new)

    def on_written(self, batches: list[TelemetryBatch]) -> None:
        with self._lock:
            self._dirty.update((b.tenant, s.asset) for b in batches for s in b.series)
            for b in batches:  # late data of any age (an outage of days) must be read back to where it starts
                for ser in b.series:
                    if ser.t_ns:
                        key, first = (b.tenant, ser.asset), min(ser.t_ns)
                        self._written_from[key] = min(self._written_from.get(key, first), first)
            for b in batches:  # which gateway's status speaks for the asset
                for ser in b.series:
                    self._gateways.setdefault((b.tenant, ser.asset), b.gateway)

    def on_status(self, statuses: list[GatewayStatus]) -> None:
        """Birth and last-will messages become offline intervals (kept a week)."""
        with self._lock:
            for st in sorted(statuses, key=lambda x: x.t_ns):
                spans = self._offline.setdefault((st.tenant, st.gateway), [])
                at = st.t_ns or time.time_ns()
                if st.state == "offline" and not (spans and spans[-1][1] is None):
                    spans.append([at, None])
                elif st.state == "online" and spans and spans[-1][1] is None:
                    spans[-1][1] = max(at, int(spans[-1][0] or 0))
                horizon = at - OFFLINE_KEEP_S * NS
                spans[:] = [sp for sp in spans if sp[1] is None or sp[1] >= horizon]

    # -- periodic assessments ---------------------------------------------------------------------
    def assess_now(self, now_ns: int | None = None) -> int:
        """Assess every asset that received data since the last call, by its type's pack; ``now_ns`` is when the
        data is judged available (default: the wall clock; a replay passes its simulated time). The number of
        alerts newly opened."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            self._assessing_from, self._written_from = self._written_from, {}
        now = now_ns or time.time_ns()
        raised = 0
        # Quickest first: a trailer's excursion forecast must not wait behind an engine's first RUL backfill (a
        # week of cycles: ~35 s for three of them on a loaded demo, past the forecast's lead). Never assessed: last.
        for tenant, asset in sorted(dirty, key=lambda k: (self._took.get(k, float("inf")), k)):
            try:
                t0 = time.monotonic()
                raised += self._assess(tenant, asset, now)
                self._took[(tenant, asset)] = time.monotonic() - t0
                self._failing.discard((tenant, asset))
            except Exception:  # one asset's failure (a bug, a locked database) is retried, and spares the others
                self.counters["rules_errors"] += 1
                if (tenant, asset) not in self._failing:
                    self._failing.add((tenant, asset))
                    log.exception("rules: assessing %s/%s failed; retried each cycle until it succeeds", tenant,
                                  asset)
                with self._lock:  # judged again next cycle, from where this cycle's data started
                    self._dirty.add((tenant, asset))
                    since = self._assessing_from.get((tenant, asset))
                    if since is not None:
                        self._written_from[(tenant, asset)] = min(self._written_from.get((tenant, asset), since),
                                                                  since)
        self.counters["rules_alerts_raised"] += raised
        return raised

    def _assess(self, tenant: str, asset: str, now: int) -> int:
        """One asset by its type's pack: its resolutions, then its alarms; the number of alerts newly opened."""
        pack = self._pack(self._type(tenant, asset))
        if pack is None:
            return 0
        out = pack.assess(tenant, asset, now)
        if out is None:
            return 0
        self.counters["rules_assessments"] += 1
        for rule, why in out.resolved:
            self._resolve(tenant, asset, rule, why, actor=f"rules:{pack.type_id}")
        raised = 0
        for a in out.alarms:
            _, new = self.platform.alerts.raise_alert(tenant, asset, a.rule, a.severity, a.title, a.evidence,
                                                      at_ns=a.at_ns)
            raised += int(new)
        return raised

    def _resolve(self, tenant: str, asset: str, rule: str, note: str, actor: str) -> None:
        with self.platform.registry.session() as s:
            ids = s.scalars(select(Alert.id).where(Alert.tenant == tenant, Alert.dedup_key == f"{asset}:{rule}",
                                                   Alert.state != "resolved")).all()
        for alert_id in ids:
            self.platform.alerts.transition(tenant, alert_id, "resolved", actor, note)
            self.counters["rules_alerts_resolved"] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.assess_now()
            except Exception:  # a rule bug must not stop the next assessment
                log.exception("rules: assessment failed")
