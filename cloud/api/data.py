"""Time series and what the edge found in them: telemetry (raw or windowed), latest values, anomalies,
local-rule alarms. Text points read like numeric ones (values are strings); personal ones are masked for
keys without ``pii:read``."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud.api.auth import Principal, Viewer
from cloud.api.deps import Page, decode_cursor, encode_cursor
from cloud.api.problems import Problem
from cloud.api.timeparse import parse_duration, parse_time
from cloud.pii import mask_value
from cloud.registry import AlarmRecord, AnomalyRecord

HOUR_NS = 3_600_000_000_000
MAX_LIMIT = 100_000


class TelemetryOut(BaseModel):
    asset: str
    point: str
    start_ns: int
    end_ns: int
    every_ns: int | None = None
    agg: str | None = None
    t_ns: list[int]
    values: list[float | str | None] = Field(description="numbers, or strings for a text point")
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


def get_router(platform) -> APIRouter:
    reg, store = platform.registry, platform.store
    r = APIRouter(prefix="/api/v1")

    def known(p: Principal, asset: str) -> None:
        if not platform.twins.exists(p.tenant, asset):
            raise Problem(404, "Not found", f"no asset {asset!r}")

    @r.get("/assets/{asset}/telemetry", response_model=TelemetryOut, tags=["telemetry"])
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
        known(p, asset)
        end_ns = parse_time(end, "end", time.time_ns())
        start_ns = parse_time(start, "start", end_ns - HOUR_NS)
        if cursor is not None:
            start_ns = parse_time(cursor, "cursor", start_ns)
        if end_ns <= start_ns:
            raise Problem(422, "Invalid request", "end must be after start")
        if every:
            every_ns = parse_duration(every, "every")
            if (end_ns - start_ns) // every_ns > MAX_LIMIT:
                raise Problem(422, "Invalid request", f"more than {MAX_LIMIT} windows: widen 'every'")
            ser = store.query_window(p.tenant, asset, point, start_ns, end_ns, every_ns, agg)
            return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, every_ns=every_ns,
                                agg=agg, t_ns=ser.t_ns, values=ser.values)
        ser = store.query_range(p.tenant, asset, point, start_ns, end_ns, limit)
        if not ser.t_ns and (text := store.query_text(p.tenant, asset, point, start_ns, end_ns, limit)).t_ns:
            values = text.values if p.pii_read else [mask_value(v) for v in text.values]
            nxt = str(text.t_ns[-1] + 1) if len(text.t_ns) == limit else None
            return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, t_ns=text.t_ns,
                                values=values, next_cursor=nxt)
        nxt = str(ser.t_ns[-1] + 1) if len(ser.t_ns) == limit else None
        return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, t_ns=ser.t_ns,
                            values=ser.values, quality=ser.quality, next_cursor=nxt)

    @r.get("/assets/{asset}/latest", tags=["telemetry"])
    def latest(asset: str, p: Viewer) -> dict[str, dict]:
        known(p, asset)
        out = {pt: {"t_ns": t, "value": v} for pt, (t, v) in store.latest(p.tenant, asset).items()}
        for pt, (t, v) in store.latest_text(p.tenant, asset).items():
            out[pt] = {"t_ns": t, "value": v if p.pii_read else mask_value(v)}
        return out

    @r.get("/assets/{asset}/anomalies", response_model=Page[AnomalyOut], tags=["anomalies"])
    def anomalies(asset: str, p: Viewer, start: str | None = None, end: str | None = None,
                  limit: int = Query(1000, ge=1, le=10_000), cursor: str | None = None) -> Page[AnomalyOut]:
        known(p, asset)
        start_ns, end_ns = parse_time(start, "start", 0), parse_time(end, "end", 2**63 - 1)
        after = decode_cursor(cursor)
        with reg.session() as s:
            q = select(AnomalyRecord).where(AnomalyRecord.tenant == p.tenant, AnomalyRecord.asset == asset,
                                            AnomalyRecord.start_ns >= start_ns, AnomalyRecord.start_ns < end_ns)
            if after is not None:
                q = q.where((AnomalyRecord.start_ns > after[0]) |
                            ((AnomalyRecord.start_ns == after[0]) & (AnomalyRecord.event_id > after[1])))
            rows = list(s.scalars(q.order_by(AnomalyRecord.start_ns, AnomalyRecord.event_id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[AnomalyOut.model_validate(x, from_attributes=True) for x in rows],
                    next_cursor=encode_cursor([rows[-1].start_ns, rows[-1].event_id]) if more else None)

    @r.get("/assets/{asset}/alarms", response_model=Page[AlarmOut], tags=["anomalies"])
    def alarms(asset: str, p: Viewer, limit: int = Query(1000, ge=1, le=10_000)) -> Page[AlarmOut]:
        known(p, asset)
        with reg.session() as s:
            q = (select(AlarmRecord).where(AlarmRecord.tenant == p.tenant, AlarmRecord.asset == asset)
                 .order_by(AlarmRecord.start_ns).limit(limit))
            return Page(items=[AlarmOut.model_validate(x, from_attributes=True) for x in s.scalars(q)])

    return r
