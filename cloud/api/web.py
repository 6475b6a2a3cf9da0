"""The operators' web dashboard: static pages (``cloud/web/``) under ``/`` and ``/static``, and the route
only the dashboard needs: ``GET /api/v1/twins``, every asset's status, health, open alerts and last values
in one call, so a fleet of thousands renders from one request instead of one twin each. (The page learns
its role from ``GET /api/v1/me`` and offers only what the role may do.)

The pages are plain HTML and JavaScript modules with no inline script, so they are served with a strict
Content-Security-Policy; everything they load comes from this app (works offline, no CDN).

The files are read once, at start, and served from memory (one write each, gzipped when the browser takes
it). The page links them under ``/static/v-<hash of all files>/``, so a browser keeps them for a year and
asks nothing on its next visit (relative imports inherit the prefix; a new release is a new hash); plain
``/static/<file>`` still answers, revalidated every time. No build step: the modules are the sources.

Each pack's panel (``cloud/packs/<kind>/panel.js``) is served with them at ``/static/packs/<type id>/panel.js``,
under the same version, and ``GET /api/v1/packs`` tells the page which kinds have a panel and a what-if.

A process that serves the dashboard and runs ingest (``twin cloud run``) has its latest-values cache hold
every asset (``LatestCache.hold_all``), so a first fleet page never waits for the store's ``latest`` query.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from starlette.responses import Response

from cloud.api.auth import Viewer
from cloud.api.deps import Page, assets_query, encode_cursor
from cloud.api.params import GatewayFilter, NameCursor, SiteFilter, TypeFilter
from cloud.packs import PACKS
from cloud.people import PERSON_TYPE
from cloud.platform import Platform
from cloud.registry import Alert, AnomalyRecord, Asset, Gateway
from cloud.store.latest import LatestCache
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
IMMUTABLE = "public, max-age=31536000, immutable"
_GZIP_MIN_BYTES = 1024
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


@dataclass(frozen=True)
class _WebFile:
    body: bytes
    gzipped: bytes | None  # None: not worth it (small, or already compressed)
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, name: str) -> _WebFile:
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith(("javascript", "json", "+xml")):
            media_type += "; charset=utf-8"
        z = gzip.compress(body, 9, mtime=0) if len(body) >= _GZIP_MIN_BYTES else None
        return cls(body, z if z and len(z) < len(body) else None, media_type,
                   '"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    def response(self, request: Request, cache_control: str) -> Response:
        headers = {**WEB_HEADERS, "Cache-Control": cache_control, "ETag": self.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if self.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            return Response(self.gzipped, media_type=self.media_type, headers={**headers, "Content-Encoding": "gzip"})
        return Response(self.body, media_type=self.media_type, headers=headers)


def _read_web(root: Path, extra: dict[str, Path] | None = None) -> tuple[_WebFile, dict[str, _WebFile], str]:
    """index.html (its ``/static/`` links versioned), every other file by path (and ``extra``'s, by the path
    given), and the version."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    files.update({name: path.read_bytes() for name, path in sorted((extra or {}).items())})
    digest = hashlib.sha256()
    for name, body in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    version = "v-" + digest.hexdigest()[:12]
    index = files.pop("index.html").replace(b'"/static/', f'"/static/{version}/'.encode())
    return _WebFile.of(index, "index.html"), {n: _WebFile.of(b, n) for n, b in files.items()}, version


def install(app: FastAPI, platform: Platform) -> None:
    app.include_router(get_router(platform))
    # keyed as the static route receives a path: decoded (the listing gives it quoted)
    index, files, version = _read_web(WEB_DIR, {f"packs/{t}/panel.js": panel for t, pack in PACKS.items()
                                                if (panel := pack.panel()) is not None})
    if platform.ingest is not None and isinstance(platform.store, LatestCache):
        # This process's ingest writes through the cache: it can hold every asset's last values, so the first
        # fleet page of thousands is answered from memory (ingest-only workers and API-only processes do not).
        platform.store.hold_all(lambda: _assets_by_tenant(platform))

    @app.api_route("/static/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(path: str, request: Request) -> Response:  # from memory: no thread needed
        cache_control = WEB_HEADERS["Cache-Control"]
        first, _, rest = path.partition("/")
        if first.startswith("v-") and rest:  # a versioned link; an older version's gets today's file, revalidated
            path, cache_control = rest, (IMMUTABLE if first == version else cache_control)
        f = files.get(path)
        if f is None:
            return Response("Not Found", status_code=404, media_type="text/plain", headers=WEB_HEADERS)
        return f.response(request, cache_control)

    @app.get("/", include_in_schema=False)
    async def index_page(request: Request) -> Response:
        return index.response(request, WEB_HEADERS["Cache-Control"])


def panel_path(type_id: str) -> str:
    """Where a pack's panel is under ``/static/``, as a URL path (the type id one segment, quoted)."""
    return f"packs/{quote(type_id, safe='')}/panel.js"


class PackOut(BaseModel):
    type: str
    panel: str | None = Field(description="its dashboard panel, under /static/ (an ES module)")
    what_if: dict[str, Any] | None = Field(description="the JSON schema of its what-if question "
                                                       "(POST /api/v1/assets/{id}/simulate); null: none")
    sources: list[str] = Field(description="the evidence sources of the alerts its rules raise")


def _assets_by_tenant(platform: Platform) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with platform.registry.session() as s:
        for tenant, asset in s.execute(select(Asset.tenant, Asset.id)):
            out.setdefault(tenant, []).append(asset)
    return out


def get_router(platform: Platform) -> APIRouter:
    reg = platform.registry
    r = APIRouter(prefix="/api/v1")

    @r.get("/packs", response_model=Page[PackOut], tags=["twins"])
    def list_packs(_: Viewer) -> Page[PackOut]:
        """What each kind of asset this server knows means to the dashboard: its panel and its what-if."""
        return Page(items=[PackOut(type=t, panel=panel_path(t) if pack.panel() else None,
                                   what_if=pack.question.model_json_schema() if pack.question else None,
                                   sources=list(pack.sources)) for t, pack in sorted(PACKS.items())])

    @r.get("/twins", response_model=Page[TwinSummary], tags=["twins"])
    def list_twins(request: Request, p: Viewer, site: SiteFilter = None, type: TypeFilter = None,
                   gateway: GatewayFilter = None, limit: int = Query(1000, ge=1, le=5000),
                   cursor: NameCursor = None) -> Response:
        """Status, health, open alerts and each point's last value for many assets at once (same status and
        health as the single twin)."""
        with reg.session() as s:
            assets = list(s.scalars(assets_query(p.tenant, site, type, gateway, cursor).limit(limit + 1)))
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
                last_seen_ns=last, latest={pt: v for pt, (_, v) in sorted(points.items())}
                if a.type != PERSON_TYPE else {}))  # a person's values are read through consent
        page = Page[TwinSummary](items=items, next_cursor=encode_cursor(assets[-1].id) if more else None)
        # Thousands of items validated once and written as they are (FastAPI would validate them again); gzipped
        # when the client takes it: 1,000 twins are ~300 kB of JSON, ~50 kB gzipped (level 1: ~2 ms).
        body = page.model_dump_json().encode()
        if len(body) >= _GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
            return Response(gzip.compress(body, 1, mtime=0), media_type="application/json",
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(body, media_type="application/json", headers={"Vary": "Accept-Encoding"})

    return r


def _severity_rank(severity: str) -> int:
    return _SEVERITY_ORDER.index(severity) if severity in _SEVERITY_ORDER else 1
