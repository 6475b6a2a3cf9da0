"""``/api/v1/people`` (staff) and ``/api/v1/shared/people`` (carers' and guardians' keys): a person's twin, read
only through consent, every read audited (``cloud/people.py``).

Reasons and identities travel in request bodies, never in URLs, so they land in no access log. A person's path
id is their pseudonymous subject id (the asset id). A staff key reads as the grantee ``clinic``; a customer key
(a carer's organisation, as ``cloud.sharing`` issues them) as its own grantee, and sees only the people who
consented to it: every other id is answered 404, whether or not it exists.
"""

from __future__ import annotations

import os
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy import select

from cloud.api.auth import Admin, Customer, Principal, Viewer
from cloud.api.params import AssetId, Body
from cloud.api.problems import Problem
from cloud.api.sharing import Grantee
from cloud.packs.person import report as person_report
from cloud.people import CLINIC, ConsentRequired, PersonAccess, Reader, VaultKeyError, load_vault_key
from cloud.registry import Alert
from models.wire import T_NS_MAX

_DAY_NS = 86_400 * 10**9
_NOW_MIN = 91 * _DAY_NS  # a report reaches back up to 90 days from now_ns
_FIELD = Annotated[str, Field(min_length=1, max_length=200)]


class EnrolIn(Body):
    identity: dict[Annotated[str, Field(min_length=1, max_length=64)], _FIELD] = Field(
        min_length=1, max_length=20, description="who the person is (name, birth date, ...): stored encrypted only")
    gateway: str | None = Field(None, max_length=64, description="the home hub that will relay their devices")


class ReasonIn(Body):
    reason: str = Field(min_length=3, max_length=2000, description="why, for the audit trail")


class ConsentIn(Body):
    grantee: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                         description="a carer's or guardian's organisation, or 'clinic' for the tenant's staff")
    points: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["*"], max_length=32, description="points they may see ('*': all)")
    from_ns: int = Field(0, ge=0, le=T_NS_MAX, description="the oldest data time they may see")
    to_ns: int | None = Field(None, ge=0, le=T_NS_MAX, description="the newest (none: no end)")


class ReportIn(ReasonIn):
    days: int = Field(14, ge=1, le=90)
    tz_offset_s: int = Field(0, ge=-14 * 3600, le=14 * 3600, description="the person's UTC offset, for days and AGP")
    break_glass: bool = Field(False, description="read without a consent: needs pii:read and a reason (audited)")
    now_ns: int | None = Field(None, ge=_NOW_MIN, le=T_NS_MAX // 2, description="as of (default: now)")


class ReadIn(ReasonIn):
    point: str = Field("glucose", max_length=64)
    start_ns: int = Field(ge=0, le=T_NS_MAX)
    end_ns: int = Field(ge=0, le=T_NS_MAX)
    break_glass: bool = False


def get_router(platform) -> APIRouter:
    key_file = getattr(platform.settings, "vault_key_file", None) or os.environ.get("TWIN_VAULT_KEY_FILE")
    access = PersonAccess(platform.registry, platform.store, load_vault_key(key_file))
    r = APIRouter(tags=["people"])

    def person(p: Principal, asset: str) -> None:
        if not access.is_person(p.tenant, asset):
            raise Problem(404, "Not found", f"no person {asset!r}")

    def reader_of(p: Principal) -> Reader:
        return Reader(p.actor, CLINIC, pii_read=p.pii_read, staff=True)

    def report_of(p: Principal, reader: Reader, asset: str, body: ReportIn) -> dict:
        now = body.now_ns or time.time_ns()
        start, end = now - body.days * _DAY_NS, now + 1
        readable = [pt for pt in person_report.POINTS
                    if pt == "glucose" or access.window(p.tenant, asset, reader.grantee, pt) is not None]
        try:
            lo, hi = access.authorise(p.tenant, asset, reader, readable, start, end, body.reason, body.break_glass)
        except ConsentRequired as exc:
            if not reader.staff:
                raise Problem(404, "Not found", f"no person {asset!r}") from None
            raise Problem(403, "Consent required", str(exc)) from None
        series = {}
        for pt in readable:
            got = platform.store.read(p.tenant, asset, pt, lo, hi, limit=100_000)
            keep = [i for i, v in enumerate(got.values) if v is not None]
            series[pt] = (np.array([got.t_ns[i] for i in keep], np.int64), np.array([got.values[i] for i in keep]))
        out = person_report.build(series, lo, hi, now, body.tz_offset_s, body.days)
        return {"subject": asset, "points": readable, **out, "alerts": open_alerts(p.tenant, asset, reader)}

    def open_alerts(tenant: str, asset: str, reader: Reader) -> list[dict]:
        """The person's open alerts routed to this reader (a carer named in ``notify``; staff: all of them)."""
        with platform.registry.session() as s:
            rows = s.scalars(select(Alert).where(Alert.tenant == tenant, Alert.asset == asset,
                                                 Alert.state != "resolved").order_by(Alert.opened_ns)).all()
            return [{"id": a.id, "rule": a.rule, "severity": a.severity, "state": a.state, "title": a.title,
                     "opened_ns": a.opened_ns, "escalated": bool((a.evidence or {}).get("escalated"))}
                    for a in rows if reader.staff or reader.grantee in (a.evidence or {}).get("notify", [])]

    # --- staff --------------------------------------------------------------------------------------------------

    @r.post("/api/v1/people", status_code=201)
    def enrol(body: EnrolIn, p: Admin) -> dict:
        """Enrol a person: a new pseudonymous subject id; the identity goes to the vault, encrypted."""
        try:
            return {"subject": access.enrol(p.tenant, dict(body.identity), p.actor, body.gateway)}
        except VaultKeyError as exc:
            raise Problem(409, "Not configured", str(exc)) from None

    @r.get("/api/v1/people")
    def listed(p: Viewer) -> dict:
        """The people the tenant's staff hold a consent for (subject ids only)."""
        return {"items": [{"subject": s} for s in access.people_of(p.tenant, CLINIC)]}

    @r.post("/api/v1/people/{asset}/identity")
    def identity(asset: AssetId, body: ReasonIn, p: Viewer) -> dict:
        """Who the person is, decrypted from the vault: pii:read only, with a reason, audited."""
        person(p, asset)
        if not p.pii_read:
            raise Problem(403, "Forbidden", "reading an identity needs the pii:read permission")
        try:
            found = access.identity(p.tenant, asset, reader_of(p), body.reason)
        except VaultKeyError as exc:
            raise Problem(409, "Not configured", str(exc)) from None
        if found is None:
            raise Problem(404, "Not found", f"no identity for {asset!r}")
        return {"subject": asset, "identity": found}

    @r.post("/api/v1/people/{asset}/consents", status_code=201)
    def grant(asset: AssetId, body: ConsentIn, p: Admin) -> dict:
        """Record a consent: who (grantee) may see which points, recorded from when to when."""
        person(p, asset)
        if body.to_ns is not None and body.to_ns <= body.from_ns:
            raise Problem(422, "Invalid consent", "to_ns must be after from_ns")
        return access.grant(p.tenant, asset, body.grantee, body.points, body.from_ns, body.to_ns, p.actor)

    @r.delete("/api/v1/people/{asset}/consents/{grantee}")
    def revoke(asset: AssetId, grantee: Grantee, p: Admin) -> dict:
        person(p, asset)
        return {"revoked": access.revoke(p.tenant, asset, grantee, p.actor)}

    @r.post("/api/v1/people/{asset}/report")
    def staff_report(asset: AssetId, body: ReportIn, p: Viewer) -> dict:
        """Metrics, AGP, today with the forecast band, open alert rules: as far as the clinic's consent reaches,
        or by break-glass (pii:read and a reason)."""
        person(p, asset)
        return report_of(p, reader_of(p), asset, body)

    @r.post("/api/v1/people/{asset}/read")
    def staff_read(asset: AssetId, body: ReadIn, p: Viewer) -> dict:
        """One point's samples, clipped to the consent."""
        person(p, asset)
        if body.end_ns <= body.start_ns:
            raise Problem(422, "Invalid window", "end_ns must be after start_ns")
        try:
            lo, hi = access.authorise(p.tenant, asset, reader_of(p), [body.point], body.start_ns, body.end_ns,
                                      body.reason, body.break_glass)
        except ConsentRequired as exc:
            raise Problem(403, "Consent required", str(exc)) from None
        got = platform.store.read(p.tenant, asset, body.point, lo, hi, limit=100_000)
        return {"subject": asset, "point": body.point, "start_ns": lo, "end_ns": hi, "t_ns": got.t_ns,
                "values": got.values}

    @r.post("/api/v1/people/{asset}/erase")
    def erase(asset: AssetId, body: ReasonIn, p: Admin) -> dict:
        """Forget the person: series, vault entry, consents, twin, alerts, asset (audited, subject id only)."""
        person(p, asset)
        return {"subject": asset, "erased": access.erase(p.tenant, asset, p.actor, body.reason)}

    # --- carers and guardians (customer keys) ------------------------------------------------------------------

    @r.get("/api/v1/shared/people")
    def my_people(p: Customer) -> dict:
        """The people who consented to this key's organisation."""
        return {"items": [{"subject": s} for s in access.people_of(p.tenant, p.grantee)]}

    @r.get("/api/v1/shared/people/{asset}/report")
    def carer_report(asset: AssetId, p: Customer, reason: Annotated[str, Query(min_length=3, max_length=200)] = "care",
                     days: Annotated[int, Query(ge=1, le=90)] = 14,
                     tz_offset_s: Annotated[int, Query(ge=-14 * 3600, le=14 * 3600)] = 0) -> dict:
        """The same report, as far as this organisation's consent reaches; 404 for anyone else's person."""
        if asset not in access.people_of(p.tenant, p.grantee):
            raise Problem(404, "Not found", f"no person {asset!r}")
        reader = Reader(p.actor, p.grantee, pii_read=False, staff=False)
        return report_of(p, reader, asset, ReportIn(reason=reason, days=days, tz_offset_s=tz_offset_s))

    return r
