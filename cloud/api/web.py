"""The operators' web dashboard: static pages (``cloud/web/``) under ``/`` and ``/static``, and the route
only the dashboard needs: ``GET /api/v1/twins``, every asset's status, health, open alerts and last values
in one call, so a fleet of thousands renders from one request instead of one twin each. (The page learns
its role from ``GET /api/v1/me`` and offers only what the role may do.)

The pages are plain HTML and JavaScript modules with no inline script, so they are served with a strict
Content-Security-Policy; everything they load comes from this app (works offline, no CDN).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import func, select
from starlette.responses import Response
from starlette.types import Scope

from cloud.api.auth import Viewer
from cloud.api.deps import Page, assets_query, decode_cursor, encode_cursor
from cloud.platform import Platform
from cloud.registry import Alert, AnomalyRecord, Gateway
from cloud.twin import health_of, status_of

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
# What only the pages need; nosniff, no-referrer (the live WebSocket URL carries the key), DENY framing and
# same-origin opener come on every response from ``cloud.api.security``.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
}
_SEVERITY_ORDER = ("low", "medium", "high", "critical")


class TwinSummary(BaseModel):
    """What the fleet view shows of one asset; the full twin is ``GET /api/v1/twins/{asset}``."""

    asset: str
    name: str
    type: str | None
    site: str | None
    line: str | None
    gateway: str | None
    status: str
    health: float
    open_alerts: int
    worst_severity: str | None
    active_anomalies: int
    last_seen_ns: int | None
    latest: dict[str, float | str | None]


class _WebFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(WEB_HEADERS)
        return response


def install(app: FastAPI, platform: Platform) -> None:
    app.include_router(get_router(platform))
    app.mount("/static", _WebFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=WEB_HEADERS)


def get_router(platform: Platform) -> APIRouter:
    reg = platform.registry
    r = APIRouter(prefix="/api/v1")

    @r.get("/twins", response_model=Page[TwinSummary], tags=["twins"])
    def list_twins(p: Viewer, site: str | None = None, type: str | None = None, gateway: str | None = None,
                   limit: int = Query(1000, ge=1, le=5000), cursor: str | None = None) -> Response:
        """Status, health, open alerts and each point's last value for many assets at once (same status and
        health as the single twin)."""
        after = decode_cursor(cursor)
        with reg.session() as s:
            assets = list(s.scalars(assets_query(p.tenant, site, type, gateway, after).limit(limit + 1)))
            gateways = dict(s.execute(select(Gateway.id, Gateway.state).where(Gateway.tenant == p.tenant)).all())
            severities: dict[str, list[str]] = defaultdict(list)
            for asset, severity in s.execute(select(Alert.asset, Alert.severity).where(
                    Alert.tenant == p.tenant, Alert.state != "resolved")):
                severities[asset].append(severity)
            anomalies = Counter(dict(s.execute(
                select(AnomalyRecord.asset, func.count()).where(AnomalyRecord.tenant == p.tenant,
                                                                AnomalyRecord.end_ns.is_(None))
                .group_by(AnomalyRecord.asset)).all()))
        more = len(assets) > limit
        assets = assets[:limit]
        latest = platform.store.latest_many(p.tenant, [a.id for a in assets])
        items = []
        now = time.time_ns()
        for a in assets:
            points = latest.get(a.id, {})
            last = max((t for t, _ in points.values()), default=None)
            status = status_of(last, gateways.get(a.gateway) if a.gateway else None, now)
            sev = severities.get(a.id, [])
            items.append(TwinSummary(
                asset=a.id, name=a.name or "", type=a.type, site=a.site, line=a.line, gateway=a.gateway,
                status=status, health=health_of(sev, anomalies[a.id], status), open_alerts=len(sev),
                worst_severity=max(sev, key=_severity_rank) if sev else None, active_anomalies=anomalies[a.id],
                last_seen_ns=last, latest={pt: v for pt, (_, v) in sorted(points.items())}))
        page = Page[TwinSummary](items=items, next_cursor=encode_cursor(assets[-1].id) if more else None)
        # Thousands of items validated once and written as they are (FastAPI would validate them again).
        return Response(page.model_dump_json(), media_type="application/json")

    return r


def _severity_rank(severity: str) -> int:
    return _SEVERITY_ORDER.index(severity) if severity in _SEVERITY_ORDER else 1
