"""Wires the cloud together from settings: store, registry, twins, alerts, and optionally an ingest
worker and the API's own MQTT link. The API and the CLI both start from here, so there is one place
that decides what talks to what."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from cloud.alerts import AlertService, Notifier
from cloud.commands import CommandService
from cloud.housekeeping import Housekeeping
from cloud.ingest import Ingest
from cloud.link import CloudLink
from cloud.live import LiveHub
from cloud.machines import SnapshotSink
from cloud.packs import load_pack_dirs
from cloud.registry import Gateway, Registry
from cloud.rules.runner import RuleRunner
from cloud.settings import CloudSettings
from cloud.store import TimeSeriesStore, open_store
from cloud.twin import TwinService
from models import topics
from models.wire import ReportedConfig, WireError, decode

log = logging.getLogger("cloud")


@dataclass
class Platform:
    settings: CloudSettings
    store: TimeSeriesStore
    registry: Registry
    twins: TwinService
    alerts: AlertService
    notifier: Notifier
    live: LiveHub
    ingest: Ingest | None = None
    link: CloudLink | None = None
    rules: RuleRunner | None = None
    housekeeping: Housekeeping | None = None
    commands: CommandService | None = None
    snapshots: SnapshotSink | None = None
    extra_counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: CloudSettings, with_ingest: bool = False, with_link: bool = False) -> Platform:
        load_pack_dirs(settings.pack_dirs)  # before anything asks what a kind of asset means
        registry = Registry(settings.database_url)
        registry.create_schema()
        if settings.bootstrap_api_key:
            registry.create_api_key(settings.bootstrap_tenant, "admin", "bootstrap", key=settings.bootstrap_api_key)
        store = open_store(settings)
        live = LiveHub()
        link = None
        commands = CommandService(registry, lambda t, b, retain: link is not None and link.publish(t, b, retain=retain),
                                  live.on_command)
        snapshots = SnapshotSink(registry)
        if with_link:
            link = CloudLink(settings, {
                topics.ingest_filter("telemetry", shared=False): live.on_telemetry,
                topics.ingest_filter("config/reported", shared=False): lambda t, p: _on_reported(registry, t, p),
                topics.ingest_filter("commands/reported", shared=False): commands.on_report,
                topics.ingest_filter("snapshots", shared=False): snapshots,
            })
        notifier = Notifier(registry, publish=(lambda t, b: link.publish(t, b)) if link else None,
                            settings=settings)
        alerts = AlertService(registry, notifier)
        p = cls(settings, store, registry, TwinService(registry, store), alerts, notifier, live, link=link,
                commands=commands, snapshots=snapshots)
        notifier.listeners.append(live.on_alert)
        from cloud.shipments import attach

        attach(p)  # excursion alerts quarantine the batches on board, in whichever process raised them
        if with_ingest:
            p.rules = RuleRunner(p, interval_s=settings.rules_interval_s, profile=settings.coldchain_profile)
            engine: type[Ingest] = Ingest
            if settings.ingest_engine == "nats":
                from cloud.ingest_nats import NatsIngest

                engine = NatsIngest
            p.ingest = engine(settings, store, registry, on_written=p.rules.on_written, on_events=p.rules.on_events,
                              on_status=p.rules.on_status)
            if settings.ingest_partition == 0:  # one process of a deployment: roll-up backfill and retention
                p.housekeeping = Housekeeping(store, registry, settings)
        return p

    def start(self) -> None:
        if self.link is not None:
            self.link.start()
            if self.commands is not None:
                self.commands.start()  # expires what nobody confirmed in time; only where gateways can be reached
        if self.ingest is not None:
            self.ingest.start()
        if self.rules is not None:
            self.rules.start()
        if self.housekeeping is not None:
            self.housekeeping.start()

    def close(self) -> None:
        if self.housekeeping is not None:
            self.housekeeping.stop()
        if self.rules is not None:
            self.rules.stop()
        if self.ingest is not None:
            self.ingest.stop()
        self.notifier.close()  # after the rules (their last alerts are handed on), before the link they use
        if self.commands is not None:
            self.commands.stop()
        if self.link is not None:
            self.link.stop()
        self.store.close()
        self.registry.engine.dispose()

    def counters(self) -> dict[str, int]:
        out = dict(self.extra_counters)
        if self.ingest is not None:
            out.update({f"ingest_{k}": v for k, v in self.ingest.counters.items()})
        out.update(self.notifier.counters)
        if self.rules is not None:
            out.update(self.rules.counters)
        if self.housekeeping is not None:
            out.update(self.housekeeping.counters)
        out.update(self.live.counters)
        if self.link is not None and self.snapshots is not None:
            out.update(self.snapshots.counters)
        return out


def _on_reported(registry: Registry, topic: str, payload: bytes) -> None:
    """A gateway says what it did with a desired configuration: keep it; an applied version closes the loop."""
    try:
        parts = topics.parse(topic)
        rep = decode(payload, ReportedConfig)
    except (ValueError, WireError) as exc:
        log.warning("bad config report on %s: %s", topic, exc)
        return
    with registry.session() as s:
        gw = s.get(Gateway, (parts.tenant, parts.gateway))
        if gw is None:
            return
        gw.config_report = {**rep.model_dump(exclude={"v", "kind"}), "received_ns": time.time_ns()}
        if rep.applied and rep.version > (gw.config_version or 0):
            gw.config_version = rep.version
