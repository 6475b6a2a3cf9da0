"""Shipments, custody legs and batches; QA release and reject (signed by a person re-entering their password);
the people who sign and the published public keys their signatures verify with; the cold-chain report (JSON, HTML,
PDF).

Routes only translate HTTP into :class:`cloud.shipments.ShipmentService` calls. Building the router also
attaches the service to the platform's alert notifier, so an opened cold-chain excursion alert quarantines
the batches that were in that container.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import Field, field_validator

from cloud.api.auth import Admin, Customer, Operator, Principal, Viewer, require
from cloud.api.deps import Page, encode_cursor
from cloud.api.params import NAME, Body, Lot, NameCursor, ShipmentId, TimeNs
from cloud.api.problems import Problem
from cloud.shipments import DEFAULT_POINT, ShipmentConflict, ShipmentInvalid, SignatureRefused, attach, create_user
from cloud.shipments.people import disable_user, list_users
from models.wire import Name

QA = Annotated[Principal, Depends(require("qa"))]
"""Quality assurance (or admin): may release or reject a quarantined batch."""

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_LOT = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class ShipmentIn(Body):
    id: str | None = Field(None, pattern=_ID, description="chosen by the server when absent")
    profile: str = Field(description="a shipped cold-chain profile, e.g. who-type-1")
    origin_site: str = Field(pattern=_ID, description="the distribution centre it leaves from")
    destination_site: str = Field(pattern=_ID, description="the store it goes to")
    reference: str = Field("", max_length=200)


class LegIn(Body):
    asset: Name = Field(description="the container or trailer")
    start: TimeNs = Field(alias="from")
    end: TimeNs | None = Field(None, alias="to", description="absent: the current leg, open-ended")
    point: Name = Field(DEFAULT_POINT, description="the product temperature point in that container")


class BatchIn(Body):
    lot: str = Field(pattern=_LOT)
    product: str = Field(min_length=1, max_length=200)
    quantity: float = Field(gt=0)
    unit: str = Field("", max_length=32)
    loaded: TimeNs | None = Field(None, description="absent: on board for the whole shipment")
    unloaded: TimeNs | None = None
    profile: str | None = Field(None, max_length=64, description="its product's own profile, judged live beside "
                                                                 "the shipment's")


class DecisionIn(Body):
    reason: str = Field(max_length=2000, description="why; recorded and signed with the decision")
    username: str = Field(min_length=1, max_length=64, description="the signer's login name (re-entered)")
    password: str = Field(min_length=1, max_length=1024, description="the signer's password, entered now")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a reason is required")
        return v.strip()


class ConsigneeIn(Body):
    name: str = Field(min_length=1, max_length=200, description="the receiving organisation")
    email: str | None = Field(None, max_length=320)
    webhook: str | None = Field(None, max_length=2000, description="http(s) URL; bodies signed with the secret")
    grantee: str | None = Field(None, min_length=1, max_length=64, pattern=NAME,
                                description="the consignee's organisation: its customer keys see this shipment")


class DisableIn(Body):
    username: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


class UserIn(Body):
    username: str = Field(min_length=2, max_length=64)
    full_name: str = Field(min_length=1, max_length=200, description="printed with every signature")
    role: Literal["viewer", "operator", "qa", "qp", "admin"]
    password: str = Field(min_length=12, max_length=1024)


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The domain's errors as problems: not found 404, conflict 409, invalid 422."""
    try:
        return fn(*args, **kwargs)
    except LookupError as exc:
        raise Problem(404, "Not found", str(exc)) from None
    except ShipmentConflict as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    except ShipmentInvalid as exc:
        raise Problem(422, "Invalid request", str(exc)) from None
    except SignatureRefused as exc:
        raise Problem(403, "Signature refused", str(exc)) from None


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    svc = attach(platform)

    @r.post("/shipments", status_code=201, tags=["shipments"])
    def create_shipment(body: ShipmentIn, p: Operator) -> dict[str, Any]:
        return _call(svc.create_shipment, p.tenant, p.actor, profile=body.profile, origin_site=body.origin_site,
                     destination_site=body.destination_site, shipment_id=body.id, reference=body.reference)

    @r.get("/shipments", response_model=Page[dict[str, Any]], tags=["shipments"])
    def list_shipments(p: Viewer, limit: int = Query(100, ge=1, le=1000),
                       cursor: NameCursor = None) -> Page[dict[str, Any]]:
        items, last = svc.list_shipments(p.tenant, cursor, limit)
        return Page(items=items, next_cursor=encode_cursor(last) if last is not None else None)

    @r.get("/shipments/{shipment_id}", tags=["shipments"])
    def get_shipment(shipment_id: ShipmentId, p: Viewer) -> dict[str, Any]:
        """The shipment with its custody legs and batches."""
        return _call(svc.get_shipment, p.tenant, shipment_id)

    @r.post("/shipments/{shipment_id}/custody", status_code=201, tags=["shipments"])
    def add_leg(shipment_id: ShipmentId, body: LegIn, p: Operator) -> dict[str, Any]:
        """Add a custody leg; the open current leg ends where a later one begins."""
        return _call(svc.add_leg, p.tenant, p.actor, shipment_id, body.asset, body.start, body.end,
                     body.point)

    @r.put("/shipments/{shipment_id}/consignee", tags=["shipments"])
    def set_consignee(shipment_id: ShipmentId, body: ConsigneeIn, p: Operator) -> dict[str, Any]:
        """Who receives the shipment: told by e-mail and webhook when the thermal twin predicts an excursion or
        a lot is quarantined, before arrival. The webhook secret is in this answer only."""
        return _call(svc.set_consignee, p.tenant, p.actor, shipment_id, name=body.name, email=body.email,
                     webhook=body.webhook, grantee=body.grantee)

    # -- the consignee's view (a customer key of the shipment's consignee organisation) ---------------------------

    def _shared(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except LookupError:
            raise Problem(404, "Not found", "no such resource") from None

    @r.get("/shared/shipments", tags=["shared"])
    def list_shared_shipments(p: Customer) -> dict[str, Any]:
        """The shipments consigned to the key's organisation: custody, lot states, excursions, signed decisions."""
        return {"items": svc.shared_shipments(p.tenant, p.grantee or "")}

    @r.get("/shared/shipments/{shipment_id}", tags=["shared"])
    def get_shared_shipment(shipment_id: ShipmentId, p: Customer) -> dict[str, Any]:
        return _shared(svc.shared_shipment, p.tenant, p.grantee or "", shipment_id)

    @r.get("/shared/shipments/{shipment_id}/report", tags=["shared"])
    def shared_report(shipment_id: ShipmentId, p: Customer, format: Literal["json", "html", "pdf"] = "json"):
        """The cold-chain report of a shipment consigned to the key's organisation (without the audit trail)."""
        rep = _shared(svc.shared_report, p.tenant, p.grantee or "", shipment_id)
        if format == "pdf":
            return Response(rep.to_pdf(), media_type="application/pdf", headers={
                "Content-Disposition": f'inline; filename="shipment-{shipment_id}.pdf"'})
        return HTMLResponse(rep.to_html()) if format == "html" else rep.data

    @r.post("/shipments/{shipment_id}/batches", status_code=201, tags=["shipments"])
    def add_batch(shipment_id: ShipmentId, body: BatchIn, p: Operator) -> dict[str, Any]:
        return _call(svc.add_batch, p.tenant, p.actor, shipment_id, lot=body.lot, product=body.product,
                     quantity=body.quantity, unit=body.unit, loaded_ns=body.loaded,
                     unloaded_ns=body.unloaded, profile=body.profile)

    @r.get("/shipments/{shipment_id}/report", tags=["shipments"])
    def report(shipment_id: ShipmentId, p: Viewer, format: Literal["json", "html", "pdf"] = "json"):
        """The cold-chain record: custody, MKT and verdict per shipment and per batch (recomputed from the
        store), excursions, signed decisions and the audit trail; ``format=html`` or ``pdf`` prints it with a
        chart."""
        rep = _call(svc.report, p.tenant, shipment_id, time.time_ns())
        if format == "pdf":
            return Response(rep.to_pdf(), media_type="application/pdf", headers={
                "Content-Disposition": f'inline; filename="shipment-{shipment_id}.pdf"'})
        return HTMLResponse(rep.to_html()) if format == "html" else rep.data

    @r.get("/batches", tags=["shipments"])
    def list_batches(p: Viewer, state: Literal["available", "quarantined", "released", "rejected"] | None = None,
                     limit: int = Query(500, ge=1, le=1000)) -> dict[str, Any]:
        """Batches by lot; ``state=quarantined`` is QA's queue of lots awaiting a signed decision."""
        return {"items": svc.list_batches(p.tenant, state, limit)}

    @r.get("/batches/{lot}", tags=["shipments"])
    def get_batch(lot: Lot, p: Viewer) -> dict[str, Any]:
        """The batch, the excursions it went through, and every signed decision on it."""
        return _call(svc.get_batch, p.tenant, lot)

    def _decide(lot: str, meaning: str, body: DecisionIn, p: Principal) -> dict[str, Any]:
        decision = _call(svc.decide, p.tenant, lot, meaning, body.reason, p.actor, username=body.username,
                         password=body.password)
        return {"batch": _call(svc.get_batch, p.tenant, lot), "decision": decision}

    @r.post("/batches/{lot}/release", tags=["shipments"])
    def release(lot: Lot, body: DecisionIn, p: QA) -> dict[str, Any]:
        """Release a quarantined batch, signed by the person whose login and password are in the body (403 when
        they do not match or may not sign; 409 unless quarantined)."""
        return _decide(lot, "released", body, p)

    @r.post("/batches/{lot}/reject", tags=["shipments"])
    def reject(lot: Lot, body: DecisionIn, p: QA) -> dict[str, Any]:
        """Reject a quarantined batch, signed by the person whose login and password are in the body (403 when
        they do not match or may not sign; 409 unless quarantined)."""
        return _decide(lot, "rejected", body, p)

    @r.post("/users", status_code=201, tags=["signatures"])
    def add_user(body: UserIn, p: Admin) -> dict[str, Any]:
        """A person's account: who signs QA decisions (role qa or admin) with their password."""
        return _call(create_user, platform.registry, p.tenant, p.actor, username=body.username,
                     full_name=body.full_name, role=body.role, password=body.password)

    @r.get("/users", tags=["signatures"])
    def users(p: Admin) -> dict[str, Any]:
        """The people who may sign, and whether they still may (never their password or its hash)."""
        return {"items": list_users(platform.registry, p.tenant)}

    @r.post("/users/disable", tags=["signatures"])
    def disable(body: DisableIn, p: Admin) -> dict[str, Any]:
        """The person signs no more; the account is kept (a login is never reused)."""
        return _call(disable_user, platform.registry, p.tenant, p.actor, body.username, body.reason)

    @r.get("/signing-keys", tags=["signatures"])
    def signing_keys(p: Viewer) -> dict[str, Any]:
        """The public keys decisions are signed with (current and retired): verify offline with
        ``twin coldchain verify``."""
        return {"items": svc.signing_keys(p.tenant)}

    @r.post("/signing-keys/rotate", status_code=201, tags=["signatures"])
    def rotate_signing_key(p: Admin) -> dict[str, Any]:
        """A new signing key for the next decisions; earlier decisions still verify with their retired key."""
        key_id = svc.rotate_signing_key(p.tenant, p.actor)
        return {"id": key_id, "items": svc.signing_keys(p.tenant)}

    return r
