"""Where rules run: in each ingest worker, on what that worker wrote. With ingest partitioned by gateway,
every asset's data — and so its rule state (excursion counters, trends) — lives with exactly one worker,
so N workers raise the same alerts as one would on the same input.

- An edge alarm (a local rule fired on the gateway) becomes an alert at once, with the gateway's evidence.
- Cold-chain rules re-assess each refrigerated trailer that received data over its recent history every
  ``interval_s`` (late data after an outage included: its alarms are marked ``detected_late``).
- Predictive maintenance re-fits each rotating machine's vibration trend that received data, on the same
  cycle, and opens (or refreshes the evidence of) its maintenance alert.
"""

from __future__ import annotations

import logging
import threading
import time

from cloud.registry import Asset
from cloud.rules import local, maintenance
from cloud.rules.coldchain.profiles import load_profile
from cloud.rules.coldchain.reefer import assess_trailer, load_samples, raise_alarms
from models.wire import AlarmEvent, TelemetryBatch

log = logging.getLogger("cloud.rules")
NS = 1_000_000_000
REEFER = "refrigerated-trailer"
MACHINE = "rotating-machine"


class RuleRunner:
    def __init__(self, platform, *, interval_s: float = 60.0, window_s: float = 24 * 3600,
                 profile: str = "who-30-day-refrigerator") -> None:
        self.platform = platform
        self.interval_s = interval_s
        self.window_s = window_s
        self.profile = load_profile(profile)
        self._dirty: set[tuple[str, str]] = set()
        self._types: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counters = {"rules_alerts_raised": 0, "rules_assessments": 0}
        self._thread = threading.Thread(target=self._run, name="rules", daemon=True)

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
        return self._types[key]

    # -- ingest hooks (writer thread) -------------------------------------------------------------
    def on_events(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, AlarmEvent):
                _, new = local.alert_from_alarm(self.platform.alerts, ev, self._type(ev.tenant, ev.asset))
                self.counters["rules_alerts_raised"] += int(new)

    def on_written(self, batches: list[TelemetryBatch]) -> None:
        with self._lock:
            self._dirty.update((b.tenant, s.asset) for b in batches for s in b.series)

    # -- periodic assessments ---------------------------------------------------------------------
    def assess_now(self) -> int:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        now = time.time_ns()
        raised = 0
        for tenant, asset in sorted(dirty):
            kind = self._type(tenant, asset)
            if kind == MACHINE:
                raised += self._assess_machine(tenant, asset)
                continue
            if kind != REEFER:
                continue
            samples = load_samples(self.platform.store, tenant, asset, now - int(self.window_s * NS), now + 1)
            if "supply_air" not in samples:
                continue
            out = assess_trailer(samples, self.profile, now_ns=now)
            self.counters["rules_assessments"] += 1
            raised += sum(new for _, new in raise_alarms(self.platform.alerts, tenant, asset, out.alarms))
        self.counters["rules_alerts_raised"] += raised
        return raised

    def _assess_machine(self, tenant: str, asset: str) -> int:
        alert = maintenance.machine_alert(self.platform.store, tenant, asset)
        self.counters["rules_assessments"] += 1
        if alert is None:
            return 0
        _, new = self.platform.alerts.raise_alert(tenant, **alert)
        return int(new)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.assess_now()
            except Exception:  # a rule bug must not stop the next assessment
                log.exception("rules: assessment failed")
