"""Wires the cloud together from settings: store, registry and (optionally) an ingest worker.
The API and the CLI both start from here, so there is one place that decides what talks to what."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cloud.ingest import Ingest
from cloud.registry import Registry
from cloud.settings import CloudSettings
from cloud.store import TimeSeriesStore, open_store

log = logging.getLogger("cloud")


@dataclass
class Platform:
    settings: CloudSettings
    store: TimeSeriesStore
    registry: Registry
    ingest: Ingest | None = None
    extra_counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: CloudSettings, with_ingest: bool = False) -> Platform:
        registry = Registry(settings.database_url)
        registry.create_schema()
        if settings.bootstrap_api_key:
            registry.create_api_key(settings.bootstrap_tenant, "admin", "bootstrap", key=settings.bootstrap_api_key)
        store = open_store(settings)
        p = cls(settings, store, registry)
        if with_ingest:
            p.ingest = Ingest(settings, store, registry)
        return p

    def start(self) -> None:
        if self.ingest is not None:
            self.ingest.start()

    def close(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        self.store.close()
        self.registry.engine.dispose()

    def counters(self) -> dict[str, int]:
        out = dict(self.extra_counters)
        if self.ingest is not None:
            out.update({f"ingest_{k}": v for k, v in self.ingest.counters.items()})
        return out
