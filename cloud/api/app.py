"""The FastAPI application: ``/api/v1`` for operators and scripts, ``/health`` and ``/metrics``.

Routes only translate HTTP into calls on the platform's store and registry; every query is scoped to
the caller's tenant, so an asset of another tenant is simply not found (404).
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select

from cloud.api import problems
from cloud.api.auth import Admin, Principal, Viewer
from cloud.api.problems import Problem
from cloud.api.timeparse import parse_duration, parse_time
from cloud.platform import Platform
from cloud.registry import AlarmRecord, AnomalyRecord, Asset, DeadLetter, Gateway
from cloud.store import StoreUnavailable

HOUR_NS = 3_600_000_000_000
MAX_LIMIT = 100_000


class AssetOut(BaseModel):
    id: str
    type: str | None
    gateway: str | None
    site: str | None


class TelemetryOut(BaseModel):
    asset: str
    point: str
    start_ns: int
    end_ns: int
    every_ns: int | None = None
    agg: str | None = None
    t_ns: list[int]
    values: list[float | None]
    quality: list[int] | None = None
    next_cursor: str | None = None


class AnomalyOut(BaseModel):
    event_id: str
    gateway: str
    asset: str
    point: str
    start_ns: int
    end_ns: int | None
    peak_score: float
    peak_value: float | None
    detectors: list[str]


class AlarmOut(BaseModel):
    event_id: str
    gateway: str
    asset: str
    rule: str
    severity: str
    start_ns: int
    evidence: dict


class GatewayOut(BaseModel):
    id: str
    state: str
    last_seen_ns: int
    config_version: int
    high_seq: int
    missing_seqs: int
    counters: dict


class DeadLetterOut(BaseModel):
    id: int
    received_ns: int
    topic: str
    reason: str
    size: int


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="assettwin", version="0.1.0", openapi_url="/openapi.json",
                  description="Asset twin platform: fleet telemetry, anomalies and alarms.")
    app.state.platform = platform
    problems.install(app)

    def _asset(p: Principal, asset: str) -> Asset:
        with platform.registry.session() as s:
            row = s.get(Asset, (p.tenant, asset))
        if row is None:
            raise Problem(404, "Not found", f"no asset {asset!r}")
        return row

    @app.get("/health", tags=["ops"])
    def health() -> dict:
        ingest = platform.ingest
        return {"status": "ok", "store": platform.settings.store,
                "ingest": None if ingest is None else ("connected" if ingest.connected.is_set() else "connecting")}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    def metrics(_: Viewer) -> str:
        lines = []
        for k, v in sorted(platform.counters().items()):
            lines += [f"# TYPE twin_{k} counter", f"twin_{k} {v}"]
        return "\n".join(lines) + "\n"

    @app.get("/api/v1/assets", response_model=list[AssetOut], tags=["assets"])
    def list_assets(p: Viewer, limit: int = Query(1000, ge=1, le=10_000)) -> list[AssetOut]:
        with platform.registry.session() as s:
            rows = s.scalars(select(Asset).where(Asset.tenant == p.tenant).order_by(Asset.id).limit(limit))
            return [AssetOut(id=r.id, type=r.type, gateway=r.gateway, site=r.site) for r in rows]

    @app.get("/api/v1/assets/{asset}", response_model=AssetOut, tags=["assets"])
    def get_asset(asset: str, p: Viewer) -> AssetOut:
        r = _asset(p, asset)
        return AssetOut(id=r.id, type=r.type, gateway=r.gateway, site=r.site)

    @app.get("/api/v1/assets/{asset}/telemetry", response_model=TelemetryOut, tags=["telemetry"])
    def telemetry(
        asset: str, p: Viewer,
        point: str = Query(..., min_length=1, max_length=128),
        start: str | None = Query(None, description="ns since epoch or ISO 8601; default end - 1h"),
        end: str | None = Query(None, description="ns since epoch or ISO 8601 (exclusive); default now"),
        every: str | None = Query(None, description="window, e.g. 1m: aggregate server-side"),
        agg: Literal["mean", "min", "max", "last", "count"] = "mean",
        limit: int = Query(10_000, ge=1, le=MAX_LIMIT),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> TelemetryOut:
        _asset(p, asset)
        end_ns = parse_time(end, "end", time.time_ns())
        start_ns = parse_time(start, "start", end_ns - HOUR_NS)
        if cursor is not None:
            start_ns = parse_time(cursor, "cursor", start_ns)
        if end_ns <= start_ns:
            raise Problem(422, "Invalid request", "end must be after start")
        store = platform.store
        if every:
            every_ns = parse_duration(every, "every")
            if (end_ns - start_ns) // every_ns > MAX_LIMIT:
                raise Problem(422, "Invalid request", f"more than {MAX_LIMIT} windows: widen 'every'")
            ser = store.query_window(p.tenant, asset, point, start_ns, end_ns, every_ns, agg)
            return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, every_ns=every_ns,
                                agg=agg, t_ns=ser.t_ns, values=ser.values)
        ser = store.query_range(p.tenant, asset, point, start_ns, end_ns, limit)
        nxt = str(ser.t_ns[-1] + 1) if len(ser.t_ns) == limit else None
        return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, t_ns=ser.t_ns,
                            values=ser.values, quality=ser.quality, next_cursor=nxt)

    @app.get("/api/v1/assets/{asset}/latest", tags=["telemetry"])
    def latest(asset: str, p: Viewer) -> dict[str, dict]:
        _asset(p, asset)
        return {pt: {"t_ns": t, "value": v} for pt, (t, v) in platform.store.latest(p.tenant, asset).items()}

    @app.get("/api/v1/assets/{asset}/anomalies", response_model=list[AnomalyOut], tags=["anomalies"])
    def anomalies(asset: str, p: Viewer, start: str | None = None, end: str | None = None,
                  limit: int = Query(1000, ge=1, le=10_000)) -> list[AnomalyOut]:
        _asset(p, asset)
        start_ns, end_ns = parse_time(start, "start", 0), parse_time(end, "end", 2**63 - 1)
        with platform.registry.session() as s:
            q = (select(AnomalyRecord).where(AnomalyRecord.tenant == p.tenant, AnomalyRecord.asset == asset,
                                             AnomalyRecord.start_ns >= start_ns, AnomalyRecord.start_ns < end_ns)
                 .order_by(AnomalyRecord.start_ns).limit(limit))
            return [AnomalyOut.model_validate(r, from_attributes=True) for r in s.scalars(q)]

    @app.get("/api/v1/assets/{asset}/alarms", response_model=list[AlarmOut], tags=["anomalies"])
    def alarms(asset: str, p: Viewer, limit: int = Query(1000, ge=1, le=10_000)) -> list[AlarmOut]:
        _asset(p, asset)
        with platform.registry.session() as s:
            q = (select(AlarmRecord).where(AlarmRecord.tenant == p.tenant, AlarmRecord.asset == asset)
                 .order_by(AlarmRecord.start_ns).limit(limit))
            return [AlarmOut.model_validate(r, from_attributes=True) for r in s.scalars(q)]

    @app.get("/api/v1/gateways", response_model=list[GatewayOut], tags=["gateways"])
    def gateways(p: Viewer) -> list[GatewayOut]:
        with platform.registry.session() as s:
            q = select(Gateway).where(Gateway.tenant == p.tenant).order_by(Gateway.id)
            return [GatewayOut.model_validate(r, from_attributes=True) for r in s.scalars(q)]

    @app.get("/api/v1/dead-letters", response_model=list[DeadLetterOut], tags=["ops"])
    def dead_letters(p: Admin,
                     limit: int = Query(100, ge=1, le=1000)) -> list[DeadLetterOut]:
        with platform.registry.session() as s:
            q = (select(DeadLetter).where(DeadLetter.tenant == p.tenant)
                 .order_by(DeadLetter.id.desc()).limit(limit))
            return [DeadLetterOut(id=d.id, received_ns=d.received_ns, topic=d.topic, reason=d.reason,
                                  size=len(d.payload)) for d in s.scalars(q)]

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable):
        return problems.response(503, "Store unavailable", str(exc), request)

    return app
