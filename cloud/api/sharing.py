"""Sharing scopes over HTTP (``cloud.sharing``): a tenant's admins share assets with an outside organisation (a
grantee: a charterer, a customer) and issue it ``customer`` keys; a customer key reads its shared assets' health,
open alerts and predicted maintenance dates under ``/api/v1/shared``, and nothing else (every other route answers
it 404, as it answers an asset of another tenant; ``cloud.api.auth``).

What a grantee sees is said here, field by field: no telemetry, no evidence (raw values), no gateway, no twin
model beyond its predicted maintenance dates, no alert ids or rules to act on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud import sharing
from cloud.api.auth import Admin, Customer
from cloud.api.deps import Page, encode_cursor
from cloud.api.params import NAME, AssetId, Body, cursor_of
from cloud.api.problems import Problem
from cloud.people import people_of
from cloud.registry import Alert
from cloud.twin import NotFound

Grantee = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME,
                              description="an outside organisation's id (a charterer, a customer)")]
_Id = Annotated[str, Field(strict=True, min_length=1, max_length=128, pattern=NAME)]
ShareCursor = Annotated[tuple[_Id, _Id] | None, cursor_of(tuple[_Id, _Id])]
"""After this (grantee, asset)."""
AssetCursor = Annotated[_Id | None, cursor_of(_Id)]


class ShareOut(BaseModel):
    grantee: str
    asset: str
    created_ns: int
    created_by: str


class CustomerKeyIn(Body):
    name: str = Field("", max_length=200, pattern=NAME.replace("]+$", "]*$"))


class CustomerKeyOut(BaseModel):
    id: str
    key: str = Field(description="shown in this response only; the platform keeps its hash")
    role: str
    grantee: str
    name: str


class Maintenance(BaseModel):
    """A predicted maintenance date: from the asset's trends (``trend``) or from an open alert (``alert``)."""

    what: str
    at_ns: int
    at: str | None = None
    interval_ns: list[int | None] | None = None
    source: str


class SharedAlert(BaseModel):
    severity: str
    state: str
    title: str
    classification: str | None = None
    opened_ns: int
    last_seen_ns: int


class SharedAsset(BaseModel):
    id: str
    name: str
    type: str | None
    status: str = Field(description="online, stale or offline")
    health: float = Field(description="1.0 is healthy")
    open_alerts: int
    next_maintenance: Maintenance | None = None


class SharedAssetDetail(BaseModel):
    id: str
    name: str
    type: str | None
    status: str
    health: float
    last_seen_ns: int | None
    open_alerts: list[SharedAlert]
    predicted_maintenance: list[Maintenance]


def _maintenance(model: dict[str, Any], alerts: list[Alert]) -> list[Maintenance]:
    """The trends' dates (the twin model's ``maintenance``, kept by the asset's pack) and the open alerts'
    ``maintenance_due``, soonest first, each date once."""
    out: dict[tuple[str, int], Maintenance] = {}
    items = [(m, "trend") for m in (model.get("maintenance") or {}).values() if isinstance(m, dict)]
    items += [(a.evidence.get("maintenance_due"), "alert") for a in alerts if isinstance(a.evidence, dict)]
    for m, source in items:
        if isinstance(m, dict) and isinstance(m.get("at_ns"), int) and isinstance(m.get("what"), str):
            out.setdefault((m["what"], m["at_ns"]), Maintenance(what=m["what"], at_ns=m["at_ns"], at=m.get("at"),
                                                                 interval_ns=m.get("interval_ns"), source=source))
    return sorted(out.values(), key=lambda m: m.at_ns)


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    reg, twins = platform.registry, platform.twins

    # -- the tenant's admins -------------------------------------------------------------------------------

    @r.get("/shares", response_model=Page[ShareOut], tags=["sharing"])
    def list_shares(p: Admin, grantee: Annotated[str | None, Query(max_length=64, pattern=NAME.replace("]+$", "]*$"),
                                                                   description="only this grantee's")] = None,
                    limit: int = Query(100, ge=1, le=1000), cursor: ShareCursor = None) -> Page[ShareOut]:
        rows = sharing.shares(reg, p.tenant, grantee or None, cursor, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[ShareOut(**x) for x in rows],
                    next_cursor=encode_cursor([rows[-1]["grantee"], rows[-1]["asset"]]) if more else None)

    @r.put("/shares/{grantee}/assets/{asset}", response_model=ShareOut, tags=["sharing"])
    def share_asset(grantee: Grantee, asset: AssetId, p: Admin, response: Response) -> ShareOut:
        """Share an asset with a grantee (again: no change). Its customer keys see it at once."""
        try:
            row, new = sharing.share(reg, p.tenant, grantee, asset, p.actor)
        except LookupError:
            raise Problem(404, "Not found", f"no asset {asset!r}") from None
        response.status_code = 201 if new else 200
        return ShareOut(**row)

    @r.delete("/shares/{grantee}/assets/{asset}", status_code=204, tags=["sharing"])
    def unshare_asset(grantee: Grantee, asset: AssetId, p: Admin) -> Response:
        if not sharing.unshare(reg, p.tenant, grantee, asset, p.actor):
            raise Problem(404, "Not found", f"asset {asset!r} is not shared with {grantee!r}")
        return Response(status_code=204)

    @r.post("/shares/{grantee}/keys", status_code=201, response_model=CustomerKeyOut, tags=["sharing"])
    def create_customer_key(grantee: Grantee, p: Admin, body: CustomerKeyIn | None = None) -> CustomerKeyOut:
        """A ``customer`` key for the grantee: it reads the assets shared with the grantee and nothing else.
        Listed and revoked with the tenant's other keys (``/api/v1/keys``). A grantee is known to the tenant once
        an asset is shared with it, or a person consented to it (a carer's or guardian's organisation,
        ``cloud.people``): before that, 404."""
        if not sharing.shares(reg, p.tenant, grantee, limit=1) and not people_of(reg, p.tenant, grantee):
            raise Problem(404, "Not found", f"nothing is shared with {grantee!r}: share an asset first")
        name = body.name if body else ""
        key_id, key = sharing.issue_customer_key(reg, p.tenant, grantee, p.actor, name)
        return CustomerKeyOut(id=key_id, key=key, role=sharing.CUSTOMER, grantee=grantee, name=name)

    # -- a grantee's view ----------------------------------------------------------------------------------

    def _open_alerts(tenant: str, asset: str) -> list[Alert]:
        with reg.session() as s:
            return list(s.scalars(select(Alert).where(Alert.tenant == tenant, Alert.asset == asset,
                                                      Alert.state != "resolved").order_by(Alert.opened_ns)))

    @r.get("/shared/assets", response_model=Page[SharedAsset], tags=["shared"])
    def list_shared(p: Customer, limit: int = Query(100, ge=1, le=500),
                    cursor: AssetCursor = None) -> Page[SharedAsset]:
        """The assets shared with the key's organisation: each one's health, open alerts and next maintenance."""
        assert p.grantee is not None
        rows = sharing.shared_assets(reg, p.tenant, p.grantee, cursor, limit + 1)
        more = len(rows) > limit
        items = []
        for a in rows[:limit]:
            st = twins.state(p.tenant, a.id)
            alerts = _open_alerts(p.tenant, a.id)
            due = _maintenance(st.model, alerts)
            items.append(SharedAsset(id=a.id, name=a.name or a.id, type=a.type, status=st.status, health=st.health,
                                     open_alerts=len(alerts), next_maintenance=due[0] if due else None))
        return Page(items=items, next_cursor=encode_cursor(rows[limit - 1].id) if more else None)

    @r.get("/shared/assets/{asset}", response_model=SharedAssetDetail, tags=["shared"])
    def get_shared(asset: AssetId, p: Customer) -> SharedAssetDetail:
        assert p.grantee is not None
        a = sharing.shared_asset(reg, p.tenant, p.grantee, asset)
        if a is None:
            raise Problem(404, "Not found", f"no asset {asset!r}")  # not shared, or no such asset: the same answer
        try:
            st = twins.state(p.tenant, asset)
        except NotFound:
            raise Problem(404, "Not found", f"no asset {asset!r}") from None
        alerts = _open_alerts(p.tenant, asset)
        return SharedAssetDetail(
            id=a.id, name=a.name or a.id, type=a.type, status=st.status, health=st.health,
            last_seen_ns=st.reported.get("last_seen_ns"),
            open_alerts=[SharedAlert(severity=x.severity, state=x.state, title=x.title,
                                     classification=(x.evidence or {}).get("classification"), opened_ns=x.opened_ns,
                                     last_seen_ns=x.last_seen_ns) for x in alerts],
            predicted_maintenance=_maintenance(st.model, alerts))

    return r
