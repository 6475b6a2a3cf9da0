"""Where rules run: in each ingest worker, on what that worker wrote. With ingest partitioned by gateway,
every asset's data — and so its rule state (excursion counters, trends) — lives with exactly one worker,
so N workers raise the same alerts as one would on the same input.

- An edge alarm (a local rule fired on the gateway) becomes an alert at once, with the gateway's evidence.
- Cold-chain rules re-assess each refrigerated trailer that received data over its recent history every
  ``interval_s`` (late data after an outage included: its alarms are marked ``detected_late``).
- Predictive maintenance re-fits each rotating machine's vibration trend that received data, on the same
  cycle, and opens (or refreshes the evidence of) its maintenance alert.
- A trailer whose compressor stopped while it should be cooling gets its calibrated thermal twin run
  forward: "excursion expected in N min" is one open alert, refreshed while the forecast still crosses
  the profile's limit and resolved when it no longer does or the real excursion begins.
- Gateway status messages (birth, last will) are remembered as offline intervals, so a trailer that
  fell silent and came back warm is told apart as a power loss.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from cloud.registry import Alert, Asset
from cloud.rules import local, maintenance
from cloud.rules.coldchain.profiles import Profile, load_profile
from cloud.rules.coldchain.reefer import (
    PREDICTED_RULE,
    ReeferRuleSettings,
    assess_trailer,
    cooling_stopped,
    load_samples,
    predict_excursion,
    profile_limit_c,
    raise_alarms,
)
from cloud.rules.coldchain.reefer import SOURCE as COLDCHAIN_SOURCE
from models.wire import AlarmEvent, GatewayStatus, TelemetryBatch

log = logging.getLogger("cloud.rules")
NS = 1_000_000_000
REEFER = "refrigerated-trailer"
MACHINE = "rotating-machine"
RULES_ACTOR = "rules:coldchain"
OFFLINE_KEEP_S = 7 * 24 * 3600
EDGE_SLACK_S = 1800
"""Data starting this close after the look-back window's start is taken to continue before it."""


class RuleRunner:
    def __init__(self, platform, *, interval_s: float = 60.0, window_s: float = 24 * 3600,
                 profile: str | Profile = "who-30-day-refrigerator",
                 settings: ReeferRuleSettings | None = None) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self.window_s = window_s
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.settings = settings or ReeferRuleSettings()
        self.limit_c = profile_limit_c(self.profile, self.settings.forecast_limit_c)
        self._dirty: set[tuple[str, str]] = set()
        self._types: dict[tuple[str, str], str | None] = {}
        self._gateways: dict[tuple[str, str], str | None] = {}
        self._offline: dict[tuple[str, str], list[list[int | None]]] = {}
        self._late: dict[tuple[str, str, str, int], bool] = {}
        self._predicted: set[tuple[str, str]] | None = None  # open predictive alerts (loaded once)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counters = {"rules_alerts_raised": 0, "rules_assessments": 0, "rules_forecasts": 0,
                         "rules_alerts_resolved": 0, "rules_forecast_failures": 0}
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
            self._gateways[key] = a.gateway if a else None
        return self._types[key]

    def offline_intervals(self, tenant: str, gateway: str | None) -> list[tuple[int, int | None]] | None:
        """When the gateway was offline (end None: still is), as its status messages said; None if this
        worker never heard its status."""
        with self._lock:
            spans = self._offline.get((tenant, gateway or ""))
            return None if spans is None else [(int(a or 0), b) for a, b in spans]

    # -- ingest hooks (writer thread) -------------------------------------------------------------
    def on_events(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, AlarmEvent):
                _, new = local.alert_from_alarm(self.platform.alerts, ev, self._type(ev.tenant, ev.asset))
                self.counters["rules_alerts_raised"] += int(new)

    def on_written(self, batches: list[TelemetryBatch]) -> None:
        with self._lock:
            self._dirty.update((b.tenant, s.asset) for b in batches for s in b.series)
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
        """Assess every trailer that received data since the last call; ``now_ns`` is when the data is
        judged available (default: the wall clock; a replay passes its simulated time)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        now = now_ns or time.time_ns()
        raised = 0
        for tenant, asset in sorted(dirty):
            kind = self._type(tenant, asset)
            if kind == MACHINE:
                raised += self._assess_machine(tenant, asset)
                continue
            if kind != REEFER:
                continue
            since = now - int(self.window_s * NS)
            samples = load_samples(self.platform.store, tenant, asset, since, now + 1)
            if "supply_air" not in samples:
                continue
            offline = self.offline_intervals(tenant, self._gateways.get((tenant, asset)))
            # what an auditor's recomputation needs (cloud.rules.explain): the data read, and the rules applied
            assessed = {"as_of_ns": now, "from_ns": since, "offline": offline,
                        "profile": self.profile.model_dump(mode="json"), "settings": self.settings.model_dump()}
            out = assess_trailer(samples, self.profile, self.settings, now_ns=now, offline=offline)
            self.counters["rules_assessments"] += 1
            # An episode that began at the first sample looked at, when the data reaches back to the window's
            # edge, was seen whole by an earlier assessment; cut off there it would be a different, shorter
            # one. (A trailer whose data begins inside the window has nothing earlier: its episodes stand.)
            first = min(int(series.t_ns[0]) for series in samples.values())
            cut = first if first - (now - int(self.window_s * NS)) < EDGE_SLACK_S * NS else None
            alarms = [a for a in out.alarms if cut is None or a.evidence["window"]["start_ns"] > cut]
            predicted = self._predict(tenant, asset, samples, now)
            if predicted is not None:
                alarms = [*alarms, predicted]
            for a in alarms:  # late or not is decided when an episode is first found, not at each re-assessment
                key = (tenant, asset, a.rule, a.evidence["window"]["start_ns"])
                a.evidence["detected_late"] = self._late.setdefault(key, a.evidence["detected_late"])
                a.evidence.update(source=COLDCHAIN_SOURCE, assessment=assessed)
            raised += sum(new for _, new in raise_alarms(self.platform.alerts, tenant, asset, alarms))
        self.counters["rules_alerts_raised"] += raised
        forget = now - int(2 * self.window_s * NS)
        self._late = {k: v for k, v in self._late.items() if k[3] >= forget}
        return raised

    def _predict(self, tenant: str, asset: str, samples: dict, now_ns: int):
        """The predictive alert for a trailer whose cooling stopped, or None — resolving an open one then."""
        stop = cooling_stopped(samples, self.limit_c, self.settings, now_ns=now_ns)
        alarm = None
        if stop is not None:
            from cloud.simulate import SimulationError, thermal_model  # scipy only for trailers that need it

            self.counters["rules_forecasts"] += 1
            try:
                model, _ = thermal_model(self.platform, tenant, asset, stop.last_ns)
            except SimulationError as exc:
                self.counters["rules_forecast_failures"] += 1
                log.warning("rules: no forecast for %s/%s: %s", tenant, asset, exc)
            else:
                alarm = predict_excursion(samples, model, stop, self.limit_c, self.settings)
        if self._predicted is None:  # one query per worker, not one per trailer and assessment
            with self.platform.registry.session() as s:
                self._predicted = {(t, a) for t, a in s.execute(select(Alert.tenant, Alert.asset).where(
                    Alert.rule == PREDICTED_RULE, Alert.state != "resolved"))}
        if alarm is not None:
            self._predicted.add((tenant, asset))
        elif (tenant, asset) in self._predicted:
            why = "the real excursion began" if self._product_at_limit(samples) else \
                "the forecast no longer reaches the limit"
            self._resolve(tenant, asset, PREDICTED_RULE, why)
            self._predicted.discard((tenant, asset))
        return alarm

    def _product_at_limit(self, samples: dict) -> bool:
        series = samples.get(self.settings.product_point)
        return bool(series is not None and len(series.values) and series.values[-1] is not None
                    and series.values[-1] >= self.limit_c)

    def _resolve(self, tenant: str, asset: str, rule: str, note: str) -> None:
        with self.platform.registry.session() as s:
            ids = s.scalars(select(Alert.id).where(Alert.tenant == tenant, Alert.dedup_key == f"{asset}:{rule}",
                                                   Alert.state != "resolved")).all()
        for alert_id in ids:
            self.platform.alerts.transition(tenant, alert_id, "resolved", RULES_ACTOR, note)
            self.counters["rules_alerts_resolved"] += 1

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
