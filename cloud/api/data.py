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
from cloud.api.deps import Page, encode_cursor
from cloud.api.params import AssetId, End, Point, Start, TimeCursor, TimeEventCursor, Window, invalid
from cloud.api.problems import Problem
from cloud.people import PERSON_TYPE
from cloud.pii import mask_value
from cloud.registry import AlarmRecord, AnomalyRecord, Asset
from cloud.store.rollup import Span
from models.wire import T_NS_MAX, T_NS_MIN

HOUR_NS = 3_600_000_000_000
MAX_LIMIT = 100_000


class SourceOut(BaseModel):
    """Which resolution a stretch of the answer was read from."""

    start_ns: int
    end_ns: int
    resolution: str = Field(description="raw, or the roll-up window the values come from (1m, 1h, ...)")
    every_ns: int | None = Field(None, description="the window each value there stands for; none: samples")
    exact: bool = Field(description="the values are what raw samples would answer for what was asked: windows "
                                    "made of whole roll-up windows are; a roll-up's windows standing for samples, "
                                    "or for windows they do not divide, are not")


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
    status: list[int] | None = Field(None, description="raw samples' full status codes from their source (OPC-UA's "
                                     "32-bit StatusCode, e.g. 2156658688 = 0x808C0000 BadSensorFailure; 0: none beyond "
                                     "the quality), where any sample has one")
    next_cursor: str | None = None
    resolution: str = Field("raw", description="the coarsest resolution in this answer: raw where raw samples are "
                                               "still kept, a roll-up (1m, 1h, ...) beyond; see sources")
    sources: list[SourceOut] = Field(default_factory=list, description="which resolution served which stretch")


def _sources(spans: list[Span], start_ns: int, end_ns: int) -> tuple[str, list[SourceOut]]:
    """The answer's resolution (its coarsest) and its stretches, as the store planned them."""
    if not spans:
        return "raw", [SourceOut(start_ns=start_ns, end_ns=end_ns, resolution="raw", exact=True)]
    out = [SourceOut(start_ns=sp.start_ns, end_ns=sp.end_ns, resolution=sp.resolution.name,
                     every_ns=sp.every_ns or None, exact=sp.exact) for sp in spans]
    return max(spans, key=lambda sp: sp.resolution.every_ns).resolution.name, out


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
        with reg.session() as s:
            if s.scalar(select(Asset.type).where(Asset.tenant == p.tenant, Asset.id == asset)) == PERSON_TYPE:
                raise Problem(403, "Consent required", f"{asset!r} is a person: their data is read through "
                              "POST /api/v1/people/{id}/report or /read, consented and audited")

    @r.get("/assets/{asset}/telemetry", response_model=TelemetryOut, tags=["telemetry"])
    def telemetry(
        asset: AssetId, p: Viewer, point: Point, start: Start = None, end: End = None, every: Window = None,
        agg: Literal["mean", "min", "max", "last", "count"] = "mean",
        limit: int = Query(10_000, ge=1, le=MAX_LIMIT), cursor: TimeCursor = None,
    ) -> TelemetryOut:
        """Samples from ``start`` (default ``end`` - 1 h) to ``end`` (default now), or windows of ``every``: raw
        while raw samples are kept, roll-ups beyond; windows from the coarsest roll-up that answers them exactly.
        ``resolution`` and ``sources`` say where each stretch came from."""
        known(p, asset)
        end_ns = time.time_ns() if end is None else end
        start_ns = max(T_NS_MIN, end_ns - HOUR_NS) if start is None else start
        if end_ns <= start_ns:
            invalid("end", f"must be after start ({start_ns} ns)")
        if cursor is not None:  # a page's next_cursor: at most end (the page before ended just before it)
            start_ns = min(max(start_ns, cursor), end_ns)
        if every is not None:
            if (end_ns - start_ns) // every > MAX_LIMIT:
                invalid("every", f"more than {MAX_LIMIT} windows from start to end: widen it")
            ser = store.read_windows(p.tenant, asset, point, start_ns, end_ns, every, agg)
            resolution, sources = _sources(ser.spans, start_ns, end_ns)
            return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, every_ns=every,
                                agg=agg, t_ns=ser.t_ns, values=ser.values, resolution=resolution, sources=sources)
        ser = store.read(p.tenant, asset, point, start_ns, end_ns, limit)
        if not ser.t_ns and (text := store.query_text(p.tenant, asset, point, start_ns, end_ns, limit)).t_ns:
            values = text.values if p.pii_read else [mask_value(v) for v in text.values]
            nxt = str(text.t_ns[-1] + 1) if len(text.t_ns) == limit else None
            return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, t_ns=text.t_ns,
                                values=values, next_cursor=nxt, sources=_sources([], start_ns, end_ns)[1])
        nxt = str(ser.t_ns[-1] + 1) if len(ser.t_ns) == limit else None
        resolution, sources = _sources(ser.spans, start_ns, end_ns)
        return TelemetryOut(asset=asset, point=point, start_ns=start_ns, end_ns=end_ns, t_ns=ser.t_ns,
                            values=ser.values, quality=ser.quality, status=ser.status, next_cursor=nxt,
                            resolution=resolution, sources=sources)

    @r.get("/assets/{asset}/latest", tags=["telemetry"])
    def latest(asset: AssetId, p: Viewer) -> dict[str, dict]:
        known(p, asset)
        out = {pt: {"t_ns": t, "value": v} for pt, (t, v) in store.latest(p.tenant, asset).items()}
        for pt, (t, v) in store.latest_text(p.tenant, asset).items():
            out[pt] = {"t_ns": t, "value": v if p.pii_read else mask_value(v)}
        return out

    @r.get("/assets/{asset}/anomalies", response_model=Page[AnomalyOut], tags=["anomalies"])
    def anomalies(asset: AssetId, p: Viewer, start: Start = None, end: End = None,
                  limit: int = Query(1000, ge=1, le=10_000), cursor: TimeEventCursor = None) -> Page[AnomalyOut]:
        known(p, asset)
        start_ns, end_ns, after = T_NS_MIN if start is None else start, T_NS_MAX + 1 if end is None else end, cursor
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
    def alarms(asset: AssetId, p: Viewer, limit: int = Query(1000, ge=1, le=10_000)) -> Page[AlarmOut]:
        known(p, asset)
        with reg.session() as s:
            q = (select(AlarmRecord).where(AlarmRecord.tenant == p.tenant, AlarmRecord.asset == asset)
                 .order_by(AlarmRecord.start_ns).limit(limit))
            return Page(items=[AlarmOut.model_validate(x, from_attributes=True) for x in s.scalars(q)])

    return r
