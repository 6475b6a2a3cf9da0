"""The FastAPI application: ``/api/v1`` for operators and scripts, ``/health`` and ``/metrics``.

Routes only translate HTTP into calls on the platform (stores, registry, twins, alerts); every query is
scoped to the caller's tenant, so a resource of another tenant is simply not found (404).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from cloud.api import (
    alerts,
    baseline,
    commands,
    data,
    fleet,
    keys,
    live,
    machines,
    notifications,
    people,
    problems,
    security,
    sharing,
    shipments,
    simulate,
    subjects,
    twins,
)
from cloud.api.auth import Viewer
from cloud.metrics import exposition, platform_registry
from cloud.platform import Platform
from cloud.store import StoreUnavailable


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="assettwin", version="0.1.0", openapi_url="/openapi.json",
                  description="Asset twin platform: fleet inventory, telemetry, twins, anomalies and alerts.")
    app.state.platform = platform
    app.state.key_cache = security.KeyCache(platform.settings.api_key_cache_s)
    # Open live sockets' keys are checked as often as a cached key is trusted (not in a busy loop when it is 0).
    app.state.revocations = live.Revocations(platform.registry, max(0.5, platform.settings.api_key_cache_s))
    problems.install(app)
    security.install(app, platform.settings)
    for module in (fleet, data, twins, alerts, keys, simulate, baseline, shipments, subjects, sharing, live,
                   commands, machines, people, notifications):
        app.include_router(module.get_router(platform))
    try:  # the web dashboard, when its module is present
        from cloud.api import web
    except ImportError:
        web = None
    if web is not None:
        web.install(app, platform)

    @app.get("/health", tags=["ops"])
    def health() -> dict:
        ingest, link = platform.ingest, platform.link
        return {"status": "ok", "store": platform.settings.store,
                "ingest": None if ingest is None else ("connected" if ingest.connected.is_set() else "connecting"),
                "broker": None if link is None else ("connected" if link.connected.is_set() else "connecting")}

    registry = platform_registry(platform.counters)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    def metrics(_: Viewer) -> Response:
        """Prometheus text exposition (cloud/metrics.py): counters, gauges, latency histograms."""
        body, ctype = exposition(registry)
        return Response(body, media_type=ctype)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable):
        return problems.response(503, "Store unavailable", str(exc), request)

    return app
