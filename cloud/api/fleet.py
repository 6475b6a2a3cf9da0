"""Sites, gateways, asset types and assets: the fleet's inventory, scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud.api.auth import Admin, Operator, Viewer
from cloud.api.deps import Page, assets_query, encode_cursor
from cloud.api.params import (
    NAME,
    AssetId,
    Body,
    GatewayFilter,
    GatewayId,
    NameCursor,
    RowCursor,
    SiteFilter,
    TypeFilter,
)
from cloud.api.problems import Problem
from cloud.gateway_config import push_type_change
from cloud.registry import Asset, AssetTypeRecord, DeadLetter, Gateway, Site, Tenant
from models.catalogue import AssetType, builtin_types

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_SITE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def _ref(what: str) -> Any:
    """A site, line, gateway or asset type that a new asset names: no longer than the registry's columns."""
    return Field(None, max_length=64, pattern=NAME, description=what)


class SiteIn(Body):
    id: str = Field(pattern=_SITE_ID)
    name: str = Field("", max_length=200)
    kind: Literal["site", "line"] = "site"
    parent: str | None = Field(None, pattern=_SITE_ID)


class SiteOut(BaseModel):
    """As stored: not checked again against what a new site may be."""

    id: str
    name: str
    kind: Literal["site", "line"]
    parent: str | None


class GatewayOut(BaseModel):
    id: str
    site: str | None
    state: str
    last_seen_ns: int
    config_version: int
    desired_version: int
    high_seq: int
    missing_seqs: int
    epoch: str = Field(description="the outbox epoch it sends from; a new one when its outbox was wiped or replaced")
    epoch_since_ns: int
    clock_offset_ns: int | None = Field(
        description="its clock against the cloud's (sent_ns - arrival, least-delayed batch of the last minute); "
                    "null before a batch said when it was sent")
    future_samples: int = Field(description="samples dead-lettered for being stamped too far ahead")
    counters: dict
    config_report: dict | None


class AssetIn(Body):
    id: str = Field(pattern=_ID)
    type: str | None = _ref("an asset type, built in or the tenant's own")
    gateway: str | None = _ref("the gateway it is behind")
    site: str | None = _ref("a site")
    line: str | None = _ref("a line")
    name: str = Field("", max_length=200)


class AssetTypeIn(AssetType, Body):
    """A tenant's own asset type: the catalogue's shape, with an id the registry can keep."""

    id: str = Field(pattern=_SITE_ID)


class AssetOut(BaseModel):
    id: str
    type: str | None
    gateway: str | None
    site: str | None
    line: str | None
    name: str


class DeadLetterOut(BaseModel):
    id: int
    received_ns: int
    topic: str
    reason: str
    size: int


def get_router(platform) -> APIRouter:
    reg = platform.registry
    r = APIRouter(prefix="/api/v1")

    @r.get("/sites", response_model=Page[SiteOut], tags=["fleet"])
    def list_sites(p: Viewer) -> Page[SiteOut]:
        with reg.session() as s:
            rows = s.scalars(select(Site).where(Site.tenant == p.tenant).order_by(Site.id))
            return Page(items=[SiteOut(id=x.id, name=x.name, kind=x.kind, parent=x.parent) for x in rows])

    @r.post("/sites", response_model=SiteOut, status_code=201, tags=["fleet"])
    def create_site(body: SiteIn, p: Operator) -> SiteOut:
        with reg.session() as s:
            if body.parent and s.get(Site, (p.tenant, body.parent)) is None:
                raise Problem(422, "Invalid request", f"parent: no site {body.parent!r}")
            if s.get(Site, (p.tenant, body.id)) is not None:
                raise Problem(409, "Conflict", f"site {body.id!r} exists")
            s.add(Site(tenant=p.tenant, **body.model_dump()))
            reg.audit(s, p.tenant, p.actor, "site.create", f"site:{body.id}", after=body.model_dump())
        return SiteOut(**body.model_dump())

    @r.get("/gateways", response_model=Page[GatewayOut], tags=["fleet"])
    def list_gateways(p: Viewer) -> Page[GatewayOut]:
        with reg.session() as s:
            rows = s.scalars(select(Gateway).where(Gateway.tenant == p.tenant).order_by(Gateway.id))
            return Page(items=[_gw(g) for g in rows])

    @r.get("/gateways/{gateway}", response_model=GatewayOut, tags=["fleet"])
    def get_gateway(gateway: GatewayId, p: Viewer) -> GatewayOut:
        with reg.session() as s:
            g = s.get(Gateway, (p.tenant, gateway))
            if g is None:
                raise Problem(404, "Not found", f"no gateway {gateway!r}")
            return _gw(g)

    @r.get("/asset-types", tags=["fleet"])
    def list_asset_types(p: Viewer) -> Page[dict[str, Any]]:
        items = [t.model_dump() for t in builtin_types().values()]
        with reg.session() as s:
            own = s.scalars(select(AssetTypeRecord).where(AssetTypeRecord.tenant == p.tenant))
            items += [x.definition for x in own]
        return Page(items=items)

    @r.post("/asset-types", status_code=201, tags=["fleet"])
    def create_asset_type(body: AssetTypeIn, p: Admin) -> dict[str, Any]:
        if body.id in builtin_types():
            raise Problem(409, "Conflict", f"{body.id!r} is a built-in type")
        with reg.session() as s:
            reg.upsert(s, AssetTypeRecord, [{"tenant": p.tenant, "id": body.id, "definition": body.model_dump()}],
                       keys=("tenant", "id"))
            reg.audit(s, p.tenant, p.actor, "asset_type.put", f"asset_type:{body.id}", after=body.model_dump())
        push_type_change(platform, p.tenant, body.id, actor=p.actor)  # gateways running it get the new definition
        return body.model_dump()

    @r.get("/assets", response_model=Page[AssetOut], tags=["fleet"])
    def list_assets(p: Viewer, site: SiteFilter = None, type: TypeFilter = None, gateway: GatewayFilter = None,
                    limit: int = Query(500, ge=1, le=5000), cursor: NameCursor = None) -> Page[AssetOut]:
        with reg.session() as s:
            rows = list(s.scalars(assets_query(p.tenant, site, type, gateway, cursor).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[_asset(a) for a in rows], next_cursor=encode_cursor(rows[-1].id) if more else None)

    @r.post("/assets", response_model=AssetOut, status_code=201, tags=["fleet"])
    def register_asset(body: AssetIn, p: Operator) -> AssetOut:
        """Register an asset (or complete one that ingest discovered from its telemetry)."""
        with reg.session() as s:
            for ref, model, label in ((body.site, Site, "site"), (body.line, Site, "line")):
                if ref and s.get(model, (p.tenant, ref)) is None:
                    raise Problem(422, "Invalid request", f"{label}: no site {ref!r}")
            if body.type and body.type not in builtin_types() and \
                    s.get(AssetTypeRecord, (p.tenant, body.type)) is None:
                raise Problem(422, "Invalid request", f"type: unknown asset type {body.type!r}")
            reg.insert_ignore(s, Tenant, [{"id": p.tenant, "name": p.tenant}])
            a = s.get(Asset, (p.tenant, body.id))
            before = _asset(a).model_dump() if a else None
            if a is None:
                a = Asset(tenant=p.tenant, id=body.id, first_seen_ns=0)
                s.add(a)
            for k, v in body.model_dump(exclude={"id"}).items():
                if v is not None and v != "":
                    setattr(a, k, v)
            s.flush()
            out = _asset(a)
            reg.audit(s, p.tenant, p.actor, "asset.put", f"asset:{body.id}", before=before, after=out.model_dump())
        return out

    @r.get("/assets/{asset}", response_model=AssetOut, tags=["fleet"])
    def get_asset(asset: AssetId, p: Viewer) -> AssetOut:
        with reg.session() as s:
            a = s.get(Asset, (p.tenant, asset))
        if a is None:
            raise Problem(404, "Not found", f"no asset {asset!r}")
        return _asset(a)

    @r.get("/dead-letters", response_model=Page[DeadLetterOut], tags=["ops"])
    def dead_letters(p: Admin, limit: int = Query(100, ge=1, le=1000),
                     cursor: RowCursor = None) -> Page[DeadLetterOut]:
        with reg.session() as s:
            q = select(DeadLetter).where(DeadLetter.tenant == p.tenant)
            if cursor is not None:
                q = q.where(DeadLetter.id < cursor)
            rows = list(s.scalars(q.order_by(DeadLetter.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[DeadLetterOut(id=d.id, received_ns=d.received_ns, topic=d.topic, reason=d.reason,
                                         size=len(d.payload)) for d in rows],
                    next_cursor=encode_cursor(rows[-1].id) if more else None)

    return r


def _gw(g: Gateway) -> GatewayOut:
    return GatewayOut(id=g.id, site=g.site, state=g.state, last_seen_ns=g.last_seen_ns or 0,
                      config_version=g.config_version or 0, desired_version=g.desired_version or 0,
                      high_seq=g.high_seq if g.high_seq is not None else -1, missing_seqs=g.missing_seqs or 0,
                      epoch=g.epoch or "", epoch_since_ns=g.epoch_since_ns or 0, clock_offset_ns=g.clock_offset_ns,
                      future_samples=g.future_samples or 0, counters=g.counters or {}, config_report=g.config_report)


def _asset(a: Asset) -> AssetOut:
    return AssetOut(id=a.id, type=a.type, gateway=a.gateway, site=a.site, line=a.line, name=a.name or "")
