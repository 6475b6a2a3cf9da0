"""Shipments and batches: where every lot was, and when, and what quality decided about it. This is the
record a quality person signs a release on (EU GDP ch. 9) and an auditor reads (21 CFR Part 11).

A shipment (one product profile, from an origin site, the distribution centre, to a destination site,
the store) moves through custody legs: one container each, from when to when, the current leg open-ended.
Batches (lots) ride in a shipment, on board for all of it or for part (a multi-drop trailer unloads lots
on the way). An excursion in a container quarantines exactly the batches on board a leg in that
container while it lasted, and the origin and destination are told on
``twin/v1/{tenant}/notifications/{dc|store}/{site}``. Only QA releases or rejects a quarantined batch,
with a reason; the decision is signed (who, when, what it means, bound to the batch's state at that
moment), and every state change goes to the audit trail with the state before and after.

The report recomputes the temperature record from the store and judges it with the same cold-chain code
as the live rules (``cloud.rules.coldchain``), per shipment and per batch, so a report printed twice says
the same thing. No FastAPI here: ``cloud/api/shipments.py`` translates HTTP into these calls, and the live
rules call :meth:`ShipmentService.quarantine_for_excursion`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.registry import (
    Asset,
    AuditEntry,
    Batch,
    BatchDecision,
    BatchExcursion,
    CustodyLeg,
    Excursion,
    Registry,
    Shipment,
    SigningKey,
    Site,
)
from cloud.rules.coldchain import Profile, evaluate, iso, load_profile, mkt_c, shipped_profiles
from cloud.rules.coldchain.mkt import hold_durations_ns, time_weighted_mean_c
from cloud.rules.coldchain.reefer import CLASSIFICATIONS, clean
from cloud.store import Series, TimeSeriesStore

log = logging.getLogger("cloud.shipments")

DEFAULT_POINT = "supply_air"
"""The product temperature of a refrigerated trailer, as the live reefer rules judge it."""
SYSTEM_ACTOR = "system:coldchain"
MEANINGS = {"released": "batch.release", "rejected": "batch.reject"}
"""What a QA signature means (21 CFR 11.50(a)(3)) and its audit action; the batch's new state is the meaning."""
USABLE = ("available", "released")
"""States an excursion moves to ``quarantined``; a rejected lot stays rejected."""
NOT_EXCURSIONS = frozenset(CLASSIFICATIONS)
"""``coldchain:`` alarms about the equipment, the sensor, the unit's power or a forecast, not the product's
temperature: a mechanic or a technician acts on them; the product alarm follows if the load does warm."""
SIGNATURE_VERSION = 1
_FOREVER = 2**63 - 1
_PAGE = 50_000
_CHART_POINTS = 1500  # per leg: enough for a printed page; min and max of each bucket are kept


class ShipmentInvalid(ValueError):
    """The request names something that does not exist or cannot be (HTTP 422)."""


class ShipmentConflict(RuntimeError):
    """The request contradicts the record as it stands (HTTP 409)."""


def notification_topic(tenant: str, kind: str, site: str) -> str:
    """``kind``: ``dc`` (the origin, a distribution centre) or ``store`` (the destination)."""
    return f"twin/v1/{tenant}/notifications/{kind}/{site}"


def is_excursion_rule(rule: str) -> bool:
    """A product excursion (``coldchain:<profile>:<boundary>``), not an equipment or sensor alarm."""
    head, _, rest = rule.partition(":")
    return head == "coldchain" and bool(rest) and rest.split(":", 1)[0] not in NOT_EXCURSIONS


# -- signatures -------------------------------------------------------------------------------------------

def canonical_json(record: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, UTF-8. Times in signed records are ISO 8601
    strings, so no number in them exceeds what any JSON reader keeps exactly."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_record(secret: str, record: dict[str, Any]) -> tuple[str, str]:
    """(SHA-256 digest, HMAC-SHA256 under ``secret``) of the canonical record, both hex."""
    body = canonical_json(record)
    return hashlib.sha256(body).hexdigest(), hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_record(secret: str, record: dict[str, Any], digest: str, signature: str) -> bool:
    want_digest, want_signature = sign_record(secret, record)
    return hmac.compare_digest(want_digest, digest) and hmac.compare_digest(want_signature, signature)


# -- record views -----------------------------------------------------------------------------------------

def shipment_dict(sh: Shipment) -> dict[str, Any]:
    return {"id": sh.id, "profile": sh.profile, "origin_site": sh.origin_site,
            "destination_site": sh.destination_site, "reference": sh.reference or "", "created_ns": sh.created_ns,
            "created_by": sh.created_by}


def leg_dict(leg: CustodyLeg) -> dict[str, Any]:
    return {"id": leg.id, "asset": leg.asset, "point": leg.point, "from_ns": leg.from_ns, "to_ns": leg.to_ns}


def batch_dict(b: Batch) -> dict[str, Any]:
    return {"lot": b.lot, "shipment": b.shipment, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
            "loaded_ns": b.loaded_ns, "unloaded_ns": b.unloaded_ns, "state": b.state, "version": b.version,
            "updated_ns": b.updated_ns}


def excursion_dict(e: Excursion) -> dict[str, Any]:
    return {"id": e.id, "asset": e.asset, "start_ns": e.start_ns, "end_ns": e.end_ns, "reason": e.reason,
            "alert_id": e.alert_id, "recorded_ns": e.recorded_ns, "recorded_by": e.recorded_by}


def decision_dict(d: BatchDecision) -> dict[str, Any]:
    return {"id": d.id, "lot": d.lot, "meaning": d.meaning, "reason": d.reason, "signer": d.signer,
            "signed_ns": d.signed_ns, "signed_at": iso(d.signed_ns), "record": d.record, "digest": d.digest,
            "signature": d.signature, "key_id": d.key_id}


def _signed_batch(b: Batch) -> dict[str, Any]:
    return {"lot": b.lot, "shipment": b.shipment, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
            "loaded_at": None if b.loaded_ns is None else iso(b.loaded_ns),
            "unloaded_at": None if b.unloaded_ns is None else iso(b.unloaded_ns),
            "state": b.state, "version": b.version}


def _signed_excursion(e: Excursion) -> dict[str, Any]:
    return {"id": e.id, "asset": e.asset, "start": iso(e.start_ns), "end": iso(e.end_ns), "reason": e.reason,
            "alert_id": e.alert_id}


def _on_board(b: Batch, leg: CustodyLeg, start_ns: int, end_ns: int) -> bool:
    """Was the batch in the leg's container at some instant of [start_ns, end_ns]?"""
    lo = max(leg.from_ns, b.loaded_ns if b.loaded_ns is not None else leg.from_ns)
    hi = min(leg.to_ns if leg.to_ns is not None else _FOREVER, b.unloaded_ns if b.unloaded_ns is not None else _FOREVER)
    return lo < hi and lo <= end_ns and hi > start_ns


def _overlaps(a_from: int, a_to: int | None, b_from: int, b_to: int | None) -> bool:
    return a_from < (b_to if b_to is not None else _FOREVER) and b_from < (a_to if a_to is not None else _FOREVER)


@dataclass
class _Note:
    """A notification to send once the transaction that caused it has committed."""

    tenant: str
    origin_site: str
    destination_site: str
    body: dict[str, Any]


@dataclass
class ShipmentReport:
    """The report's record (``data``, what the JSON answer is) and the readings behind its chart."""

    data: dict[str, Any]
    readings: list[tuple[str, np.ndarray, np.ndarray]]  # (leg label, t_ns, °C) per custody leg

    def to_html(self) -> str:
        return render_html(self)


class ShipmentService:
    def __init__(self, registry: Registry, store: TimeSeriesStore,
                 publish: Callable[[str, bytes], object] | None = None) -> None:
        self.registry = registry
        self.store = store
        self.publish = publish

    # -- shipments, legs, batches -----------------------------------------------------------------------

    def create_shipment(self, tenant: str, actor: str, *, profile: str, origin_site: str, destination_site: str,
                        shipment_id: str | None = None, reference: str = "") -> dict[str, Any]:
        if profile not in shipped_profiles():
            raise ShipmentInvalid(f"profile: {profile!r} is not a shipped profile ({', '.join(shipped_profiles())})")
        sid = shipment_id or f"shp-{secrets.token_hex(6)}"
        reg = self.registry
        with reg.session() as s:
            for field, site in (("origin_site", origin_site), ("destination_site", destination_site)):
                if s.get(Site, (tenant, site)) is None:
                    raise ShipmentInvalid(f"{field}: no site {site!r} in this tenant; create the site first")
            if s.get(Shipment, (tenant, sid)) is not None:
                raise ShipmentConflict(f"shipment {sid!r} exists")
            sh = Shipment(tenant=tenant, id=sid, profile=profile, origin_site=origin_site,
                          destination_site=destination_site, reference=reference, created_ns=time.time_ns(),
                          created_by=actor)
            s.add(sh)
            out = shipment_dict(sh)
            reg.audit(s, tenant, actor, "shipment.create", f"shipment:{sid}", after=out)
        return out

    def list_shipments(self, tenant: str, after: str | None = None, limit: int = 100) -> tuple[list[dict], str | None]:
        """A page of shipments by id; the second value is the id to continue after (None: the end)."""
        with self.registry.session() as s:
            q = select(Shipment).where(Shipment.tenant == tenant)
            if after is not None:
                q = q.where(Shipment.id > after)
            rows = list(s.scalars(q.order_by(Shipment.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return [shipment_dict(x) for x in rows], rows[-1].id if more else None

    def get_shipment(self, tenant: str, shipment_id: str) -> dict[str, Any]:
        with self.registry.session() as s:
            sh = self._shipment(s, tenant, shipment_id)
            return {**shipment_dict(sh), "legs": [leg_dict(x) for x in self._legs(s, tenant, shipment_id)],
                    "batches": [batch_dict(b) for b in self._batches(s, tenant, shipment_id)]}

    def add_leg(self, tenant: str, actor: str, shipment_id: str, asset: str, from_ns: int, to_ns: int | None = None,
                point: str = DEFAULT_POINT) -> dict[str, Any]:
        """Add a custody leg. A shipment is in one container at a time: a leg overlapping another is refused,
        except that the open current leg ends where a later leg begins (the hand-over). An excursion already
        recorded in that container during the leg quarantines the batches on board (custody is often
        entered after the fact)."""
        if to_ns is not None and to_ns <= from_ns:
            raise ShipmentInvalid(f"to: {iso(to_ns)} is not after from {iso(from_ns)}")
        reg, notes = self.registry, []
        with reg.session() as s:
            self._shipment(s, tenant, shipment_id, lock=True)
            if s.get(Asset, (tenant, asset)) is None:
                raise ShipmentInvalid(f"asset: no asset {asset!r} in this tenant")
            for other in self._legs(s, tenant, shipment_id):
                if other.to_ns is None and other.from_ns < from_ns:
                    before = leg_dict(other)
                    other.to_ns = from_ns
                    reg.audit(s, tenant, actor, "custody.close", f"shipment:{shipment_id}",
                              reason=f"handed over to {asset}", before=before, after=leg_dict(other))
                elif _overlaps(other.from_ns, other.to_ns, from_ns, to_ns):
                    end = iso(other.to_ns) if other.to_ns is not None else "now"
                    raise ShipmentConflict(f"the shipment is in {other.asset} from {iso(other.from_ns)} to {end} "
                                           f"(leg {other.id}); a shipment is in one container at a time")
            leg = CustodyLeg(tenant=tenant, shipment=shipment_id, asset=asset, point=point, from_ns=from_ns,
                             to_ns=to_ns)
            s.add(leg)
            s.flush()
            out = leg_dict(leg)
            reg.audit(s, tenant, actor, "custody.add", f"shipment:{shipment_id}", after=out)
            for exc in self._excursions_during(s, tenant, asset, from_ns, to_ns):
                notes += self._sweep(s, exc, actor)
        self._send(notes)
        return out

    def add_batch(self, tenant: str, actor: str, shipment_id: str, *, lot: str, product: str, quantity: float,
                  unit: str = "", loaded_ns: int | None = None, unloaded_ns: int | None = None) -> dict[str, Any]:
        """Put a lot on a shipment, on board over [loaded, unloaded) (None: the whole shipment). An excursion
        already recorded on one of the shipment's legs while it was on board quarantines it at once."""
        if loaded_ns is not None and unloaded_ns is not None and unloaded_ns <= loaded_ns:
            raise ShipmentInvalid(f"unloaded: {iso(unloaded_ns)} is not after loaded {iso(loaded_ns)}")
        reg, notes = self.registry, []
        with reg.session() as s:
            self._shipment(s, tenant, shipment_id, lock=True)
            if s.get(Batch, (tenant, lot)) is not None:
                raise ShipmentConflict(f"batch {lot!r} exists; a lot rides in one shipment")
            b = Batch(tenant=tenant, lot=lot, shipment=shipment_id, product=product, quantity=quantity, unit=unit,
                      loaded_ns=loaded_ns, unloaded_ns=unloaded_ns, state="available", version=0,
                      updated_ns=time.time_ns())
            s.add(b)
            s.flush()
            reg.audit(s, tenant, actor, "batch.create", f"batch:{lot}", after=batch_dict(b))
            for leg in self._legs(s, tenant, shipment_id):
                for exc in self._excursions_during(s, tenant, leg.asset, leg.from_ns, leg.to_ns):
                    notes += self._sweep(s, exc, actor)
            out = batch_dict(b)
        self._send(notes)
        return out

    def get_batch(self, tenant: str, lot: str) -> dict[str, Any]:
        """The batch with the excursions it went through and every decision on it (signatures re-verified)."""
        with self.registry.session() as s:
            b = self._batch(s, tenant, lot)
            key = s.get(SigningKey, tenant)
            return {**batch_dict(b), "excursions": [excursion_dict(e) for e in self._batch_excursions(s, tenant, lot)],
                    "decisions": [self._decision_out(d, key) for d in self._decisions(s, tenant, [lot])]}

    # -- excursions and quarantine ----------------------------------------------------------------------

    def quarantine_for_excursion(self, tenant: str, asset: str, start_ns: int, end_ns: int, reason: str,
                                 alert_id: int | None = None, actor: str = SYSTEM_ACTOR) -> list[str]:
        """Record that ``asset`` was out of range over [start_ns, end_ns] and quarantine every batch that was
        on board it meanwhile (and no other); returns the lots newly quarantined. The live rules call this.

        Idempotent per alert: called again for the same ``alert_id`` (the excursion went on) it widens the
        recorded window and quarantines only batches not yet tied to it, so a lot released after review is
        not quarantined again by the same excursion.
        """
        if end_ns < start_ns:
            raise ShipmentInvalid(f"excursion ends ({iso(end_ns)}) before it starts ({iso(start_ns)})")
        reg, now = self.registry, time.time_ns()
        with reg.session() as s:
            exc = None
            if alert_id is not None:
                exc = s.scalar(select(Excursion).where(Excursion.tenant == tenant, Excursion.alert_id == alert_id)
                               .with_for_update())
            if exc is None:
                exc = Excursion(tenant=tenant, asset=asset, start_ns=start_ns, end_ns=end_ns, reason=reason,
                                alert_id=alert_id, recorded_ns=now, recorded_by=actor)
                s.add(exc)
                s.flush()
                reg.audit(s, tenant, actor, "excursion.record", f"excursion:{exc.id}", reason=reason,
                          after=excursion_dict(exc))
            elif start_ns < exc.start_ns or end_ns > exc.end_ns:
                before = excursion_dict(exc)
                exc.start_ns, exc.end_ns = min(exc.start_ns, start_ns), max(exc.end_ns, end_ns)
                reg.audit(s, tenant, actor, "excursion.extend", f"excursion:{exc.id}", reason=reason,
                          before=before, after=excursion_dict(exc))
            notes = self._sweep(s, exc, actor)
        self._send(notes)
        return sorted(lot for n in notes for lot in n.body["lots"])

    def on_alert_event(self, tenant: str, event: dict[str, Any]) -> None:
        """Notifier listener: a newly opened product-excursion alert quarantines what was in the container.

        Runs on the notifier's thread before the alert's own MQTT and webhook delivery, so it never raises.
        """
        alert = event.get("alert") or {}
        if event.get("event") != "alert.opened" or not is_excursion_rule(str(alert.get("rule", ""))):
            return
        try:
            window = (alert.get("evidence") or {}).get("window") or {}
            start = int(window.get("start_ns") or alert["opened_ns"])
            end = max(int(window.get("end_ns") or alert["last_seen_ns"]), start)
            self.quarantine_for_excursion(tenant, alert["asset"], start, end, alert.get("title") or alert["rule"],
                                          alert_id=alert["id"], actor=f"rule:{alert['rule']}")
        except Exception:
            log.exception("quarantine for alert %s failed", alert.get("id"))

    def _sweep(self, s: Session, exc: Excursion, actor: str) -> list[_Note]:
        """Tie every batch that was on board ``exc.asset`` during ``exc`` to it; quarantine the usable ones."""
        reg, now = self.registry, time.time_ns()
        legs = s.scalars(select(CustodyLeg).where(
            CustodyLeg.tenant == exc.tenant, CustodyLeg.asset == exc.asset, CustodyLeg.from_ns <= exc.end_ns,
            or_(CustodyLeg.to_ns.is_(None), CustodyLeg.to_ns > exc.start_ns)).order_by(CustodyLeg.id)).all()
        why = f"excursion {exc.id} in {exc.asset} {iso(exc.start_ns)} to {iso(exc.end_ns)}: {exc.reason}"
        newly: dict[str, list[str]] = {}
        for leg in legs:
            for b in self._batches(s, exc.tenant, leg.shipment, lock=True):
                if not _on_board(b, leg, exc.start_ns, exc.end_ns) or \
                        s.get(BatchExcursion, (exc.tenant, b.lot, exc.id)) is not None:
                    continue
                s.add(BatchExcursion(tenant=exc.tenant, lot=b.lot, excursion_id=exc.id))
                s.flush()
                if b.state in USABLE:
                    before = batch_dict(b)
                    b.state, b.version, b.updated_ns = "quarantined", b.version + 1, now
                    reg.audit(s, exc.tenant, actor, "batch.quarantine", f"batch:{b.lot}", reason=why, before=before,
                              after={**batch_dict(b), "excursion_id": exc.id})
                    newly.setdefault(leg.shipment, []).append(b.lot)
        notes = []
        for shipment_id, lots in newly.items():
            sh = self._shipment(s, exc.tenant, shipment_id)
            notes.append(_Note(exc.tenant, sh.origin_site, sh.destination_site, {
                "event": "batches.quarantined", "tenant": exc.tenant, "shipment": shipment_id, "lots": sorted(lots),
                "origin_site": sh.origin_site, "destination_site": sh.destination_site,
                "excursion": excursion_dict(exc), "t_ns": now}))
        return notes

    # -- quality decisions ------------------------------------------------------------------------------

    def decide(self, tenant: str, lot: str, meaning: str, reason: str, actor: str) -> dict[str, Any]:
        """Release or reject a quarantined batch, signed by ``actor``. The signed record binds the signer,
        the time, the meaning and the reason to the batch's state at signing (its version and the
        excursions behind the quarantine) and to the previous decision's signature on this lot."""
        if meaning not in MEANINGS:
            raise ShipmentInvalid(f"meaning: {meaning!r} is not one of {', '.join(MEANINGS)}")
        reason = reason.strip()
        if not reason:
            raise ShipmentInvalid("reason: required; say why the batch is " + meaning)
        reg, now = self.registry, time.time_ns()
        with reg.session() as s:
            b = self._batch(s, tenant, lot, lock=True)
            if b.state != "quarantined":
                raise ShipmentConflict(f"batch {lot} is {b.state}; only a quarantined batch can be {meaning}")
            previous = self._decisions(s, tenant, [lot])
            key_id, secret = self._signing_key(s, tenant, actor)
            record = {"v": SIGNATURE_VERSION, "kind": "batch-decision", "tenant": tenant, "lot": lot,
                      "meaning": meaning, "reason": reason, "signer": actor, "signed_at": iso(now), "key_id": key_id,
                      "batch": _signed_batch(b),
                      "excursions": [_signed_excursion(e) for e in self._batch_excursions(s, tenant, lot)],
                      "previous_signature": previous[-1].signature if previous else None}
            digest, signature = sign_record(secret, record)
            d = BatchDecision(tenant=tenant, lot=lot, meaning=meaning, reason=reason, signer=actor, signed_ns=now,
                              record=record, digest=digest, signature=signature, key_id=key_id)
            s.add(d)
            before = batch_dict(b)
            b.state, b.version, b.updated_ns = meaning, b.version + 1, now
            s.flush()
            reg.audit(s, tenant, actor, MEANINGS[meaning], f"batch:{lot}",
                      reason=reason, before=before,
                      after={**batch_dict(b), "decision_id": d.id, "meaning": meaning, "signature": signature})
            out = decision_dict(d)
            sh = self._shipment(s, tenant, b.shipment)
            note = _Note(tenant, sh.origin_site, sh.destination_site, {
                "event": f"batch.{meaning}", "tenant": tenant, "shipment": b.shipment, "lots": [lot],
                "origin_site": sh.origin_site, "destination_site": sh.destination_site, "reason": reason,
                "signer": actor, "signature": signature, "t_ns": now})
        self._send([note])
        return out

    def verify(self, tenant: str, decision: dict[str, Any]) -> bool:
        """Does the decision's signature recompute from its record, and does the record say what the
        decision's columns say? False for any edit of either."""
        with self.registry.session() as s:
            key = s.get(SigningKey, tenant)
        return _verified(decision, key)

    def _signing_key(self, s: Session, tenant: str, actor: str) -> tuple[str, str]:
        key = s.get(SigningKey, tenant)
        if key is None:
            new_id = secrets.token_hex(8)
            self.registry.insert_ignore(s, SigningKey, [{"tenant": tenant, "id": new_id,
                                                         "secret": secrets.token_urlsafe(48),
                                                         "created_ns": time.time_ns()}])
            key = s.get(SigningKey, tenant)
            if key.id == new_id:  # not a concurrent first signer's key
                self.registry.audit(s, tenant, actor, "signing_key.create", f"signing_key:{new_id}",
                                    after={"id": new_id})
        return key.id, key.secret

    def _decision_out(self, d: BatchDecision, key: SigningKey | None) -> dict[str, Any]:
        out = decision_dict(d)
        return {**out, "verified": _verified(out, key)}

    # -- the report -------------------------------------------------------------------------------------

    def report(self, tenant: str, shipment_id: str, now_ns: int | None = None) -> ShipmentReport:
        """The shipment's record: custody, temperatures from the store judged against its profile (MKT,
        alarms, verdict) for the shipment and for each batch's time on board, excursions, signed decisions
        (re-verified) and the audit trail. An open leg is read up to ``now_ns``."""
        now = now_ns or time.time_ns()
        with self.registry.session() as s:
            sh = self._shipment(s, tenant, shipment_id)
            legs = self._legs(s, tenant, shipment_id)
            batches = self._batches(s, tenant, shipment_id)
            lots = [b.lot for b in batches]
            key = s.get(SigningKey, tenant)
            decisions = [self._decision_out(d, key) for d in self._decisions(s, tenant, lots)]
            excursions = {e.id: e for leg in legs for e in self._excursions_during(s, tenant, leg.asset, leg.from_ns,
                                                                                    leg.to_ns)}
            links = s.scalars(select(BatchExcursion).where(BatchExcursion.tenant == tenant,
                                                           BatchExcursion.lot.in_(lots))).all() if lots else []
            for link in links:
                if link.excursion_id not in excursions:
                    excursions[link.excursion_id] = s.get(Excursion, link.excursion_id)
            targets = [f"shipment:{shipment_id}"] + [f"batch:{lot}" for lot in lots]
            audit = s.scalars(select(AuditEntry).where(AuditEntry.tenant == tenant, AuditEntry.target.in_(targets))
                              .order_by(AuditEntry.id)).all()
            shipment = shipment_dict(sh)
            leg_rows = [leg_dict(x) for x in legs]
            batch_rows = [batch_dict(b) for b in batches]
            excursion_rows = [excursion_dict(e) for e in sorted(excursions.values(), key=lambda e: e.start_ns)]
            audit_rows = [{"id": e.id, "t_ns": e.t_ns, "actor": e.actor, "action": e.action, "target": e.target,
                           "reason": e.reason, "before": e.before, "after": e.after} for e in audit]
        profile = load_profile(shipment["profile"])
        readings, t_parts, v_parts = [], [], []
        for leg in leg_rows:
            until = leg["to_ns"] if leg["to_ns"] is not None else max(now, leg["from_ns"])
            t, v = self._readings(tenant, leg["asset"], leg["point"], leg["from_ns"], until)
            leg.update(until_ns=until, **_summary(t, v, profile.delta_h_kj_mol))
            readings.append((f"{leg['asset']} ({leg['point']})", t, v))
            t_parts.append(t)
            v_parts.append(v)
        t_all = np.concatenate(t_parts) if t_parts else np.zeros(0, np.int64)
        v_all = np.concatenate(v_parts) if v_parts else np.zeros(0, float)
        by_lot: dict[str, list[int]] = {}
        for link in links:
            by_lot.setdefault(link.lot, []).append(link.excursion_id)
        for b in batch_rows:
            lo = b["loaded_ns"] if b["loaded_ns"] is not None else -_FOREVER
            hi = b["unloaded_ns"] if b["unloaded_ns"] is not None else _FOREVER
            on_board = (t_all >= lo) & (t_all < hi)
            b.update(temperature=_judged(t_all[on_board], v_all[on_board], profile),
                     excursion_ids=sorted(by_lot.get(b["lot"], [])),
                     decisions=[d for d in decisions if d["lot"] == b["lot"]])
        data = {"shipment": shipment, "profile": {"name": profile.name, "description": profile.description},
                "generated_ns": now, "generated_at": iso(now), "legs": leg_rows,
                "temperature": _judged(t_all, v_all, profile), "batches": batch_rows, "excursions": excursion_rows,
                "decisions": decisions, "audit": audit_rows}
        return ShipmentReport(data, readings)

    def _readings(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
        """Every good reading of one point over [start, end), paged so a long leg is read whole."""
        t: list[int] = []
        values: list[float | None] = []
        quality: list[int] = []
        while start_ns < end_ns:
            page = self.store.query_range(tenant, asset, point, start_ns, end_ns, limit=_PAGE)
            t += page.t_ns
            values += page.values
            quality += page.quality if page.quality is not None else [0] * len(page.t_ns)
            if len(page.t_ns) < _PAGE:
                break
            start_ns = page.t_ns[-1] + 1
        return clean(Series(t, values, quality))

    # -- queries ----------------------------------------------------------------------------------------

    def _shipment(self, s: Session, tenant: str, shipment_id: str, lock: bool = False) -> Shipment:
        q = select(Shipment).where(Shipment.tenant == tenant, Shipment.id == shipment_id)
        sh = s.scalar(q.with_for_update() if lock else q)
        if sh is None:
            raise LookupError(f"no shipment {shipment_id!r}")
        return sh

    def _batch(self, s: Session, tenant: str, lot: str, lock: bool = False) -> Batch:
        q = select(Batch).where(Batch.tenant == tenant, Batch.lot == lot)
        b = s.scalar(q.with_for_update() if lock else q)
        if b is None:
            raise LookupError(f"no batch {lot!r}")
        return b

    @staticmethod
    def _legs(s: Session, tenant: str, shipment_id: str) -> list[CustodyLeg]:
        return list(s.scalars(select(CustodyLeg).where(CustodyLeg.tenant == tenant, CustodyLeg.shipment == shipment_id)
                              .order_by(CustodyLeg.from_ns)))

    @staticmethod
    def _batches(s: Session, tenant: str, shipment_id: str, lock: bool = False) -> list[Batch]:
        q = select(Batch).where(Batch.tenant == tenant, Batch.shipment == shipment_id).order_by(Batch.lot)
        return list(s.scalars(q.with_for_update() if lock else q))

    @staticmethod
    def _decisions(s: Session, tenant: str, lots: Iterable[str]) -> list[BatchDecision]:
        lots = list(lots)
        if not lots:
            return []
        return list(s.scalars(select(BatchDecision).where(BatchDecision.tenant == tenant, BatchDecision.lot.in_(lots))
                              .order_by(BatchDecision.id)))

    @staticmethod
    def _batch_excursions(s: Session, tenant: str, lot: str) -> list[Excursion]:
        return list(s.scalars(select(Excursion).join(BatchExcursion, BatchExcursion.excursion_id == Excursion.id)
                              .where(BatchExcursion.tenant == tenant, BatchExcursion.lot == lot)
                              .order_by(Excursion.start_ns, Excursion.id)))

    @staticmethod
    def _excursions_during(s: Session, tenant: str, asset: str, from_ns: int, to_ns: int | None) -> list[Excursion]:
        q = select(Excursion).where(Excursion.tenant == tenant, Excursion.asset == asset,
                                    Excursion.end_ns >= from_ns)
        if to_ns is not None:
            q = q.where(Excursion.start_ns < to_ns)
        return list(s.scalars(q.order_by(Excursion.id)))

    def _send(self, notes: list[_Note]) -> None:
        """Tell the distribution centre and the store; after the commit, so nobody hears of a change that
        was rolled back. A broker that is down costs the message, not the record (it is in the audit)."""
        if self.publish is None:
            return
        for n in notes:
            body = json.dumps({"v": "v1", "kind": "notification", **n.body}, separators=(",", ":")).encode()
            for topic in (notification_topic(n.tenant, "dc", n.origin_site),
                          notification_topic(n.tenant, "store", n.destination_site)):
                try:
                    if self.publish(topic, body) is False:
                        log.warning("notification to %s not sent: broker not connected", topic)
                except Exception:
                    log.exception("notification to %s failed", topic)


def _verified(decision: dict[str, Any], key: SigningKey | None) -> bool:
    record = decision["record"]
    if key is None or not isinstance(record, dict) or record.get("key_id") != key.id or decision["key_id"] != key.id:
        return False
    says = {"lot": decision["lot"], "meaning": decision["meaning"], "reason": decision["reason"],
            "signer": decision["signer"], "signed_at": iso(decision["signed_ns"])}
    return all(record.get(k) == v for k, v in says.items()) and \
        verify_record(key.secret, record, decision["digest"], decision["signature"])


def _summary(t: np.ndarray, v: np.ndarray, delta_h_kj_mol: float) -> dict[str, Any]:
    if t.size == 0:
        return {"readings": 0, "min_c": None, "max_c": None, "mean_c": None, "mkt_c": None}
    hold = hold_durations_ns(t)
    return {"readings": int(t.size), "min_c": float(v.min()), "max_c": float(v.max()),
            "mean_c": time_weighted_mean_c(v, hold), "mkt_c": mkt_c(v, hold, delta_h_kj_mol)}


def _judged(t: np.ndarray, v: np.ndarray, profile: Profile) -> dict[str, Any]:
    """MKT (full precision) and the profile's verdict over these readings, as ``twin coldchain evaluate``
    would give them for the same data."""
    if t.size == 0:
        return {"readings": 0, "mkt_c": None, "evaluation": None}
    ev = evaluate(t, v, profile)
    return {"readings": ev.readings, "mkt_c": ev.mkt_c, "mean_c": ev.mean_c, "evaluation": ev.to_dict()}


def attach(platform) -> ShipmentService:
    """The platform's shipment service, listening to its alerts; created on the first call, the same one
    after (several apps may be built on one platform)."""
    for listener in platform.notifier.listeners:
        service = getattr(listener, "__self__", None)
        if isinstance(service, ShipmentService) and service.registry is platform.registry:
            return service
    link = platform.link
    service = ShipmentService(platform.registry, platform.store,
                              publish=(lambda topic, body: link.publish(topic, body)) if link is not None else None)
    platform.notifier.listeners.append(service.on_alert_event)
    return service


# -- printable HTML ---------------------------------------------------------------------------------------

_PAGE_HTML = string.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Shipment $title: cold-chain record</title>
<style>
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#111}
h1{font-size:20px;margin:0 0 .4em}h2{font-size:15px;margin:1.6em 0 .5em;border-bottom:1px solid #888}
table{border-collapse:collapse;width:100%;margin:.3em 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}
.wrap{word-break:break-all}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;word-break:break-all}
.quarantined,.fail,.bad{color:#b00000;font-weight:600}.released,.pass,.ok{color:#006400;font-weight:600}
.rejected{color:#700;font-weight:700}.muted{color:#666}
svg{width:100%;height:auto;border:1px solid #ccc;background:#fff}
@media print{body{margin:1cm}h2{break-after:avoid}table,svg,tr{break-inside:avoid}}
</style></head><body>
<h1>Shipment $title</h1>
$summary
<h2>Temperature</h2>
$chart
<h2>Mean kinetic temperature and verdict</h2>
$mkt
<h2>Custody</h2>
$legs
<h2>Excursions</h2>
$excursions
<h2>Batches</h2>
$batches
<h2>Quality decisions (signed)</h2>
$decisions
<h2>Audit trail</h2>
$audit
<p class="muted">Generated $generated. Each decision is signed with HMAC-SHA256 over the canonical JSON of its
record (signer, time, meaning, reason, the batch's state and excursions, the previous signature); "verified"
means the signature recomputed when this report was generated.</p>
</body></html>
""")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    """``rows`` hold HTML already escaped (cells may carry markup)."""
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _t(t_ns: int | None) -> str:
    return _e(None if t_ns is None else iso(t_ns))


def _shown(key: str, value: Any) -> str:
    """An audit value as a reader wants it: times in ISO 8601."""
    return _t(value) if key.endswith("_ns") and isinstance(value, int) else _e(value)


def _c(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} °C"


def _decimate(t: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``n`` points keeping each bucket's minimum and maximum, so a short spike stays visible."""
    if t.size <= n:
        return t, v
    keep: list[int] = []
    for idx in np.array_split(np.arange(t.size), n // 2):
        lo, hi = idx[np.argmin(v[idx])], idx[np.argmax(v[idx])]
        keep += sorted({int(lo), int(hi)})
    k = np.asarray(keep)
    return t[k], v[k]


def chart_svg(readings: list[tuple[str, np.ndarray, np.ndarray]], t0: int, t1: int,
              excursions: list[dict[str, Any]], limits: list[tuple[str, float]]) -> str:
    """An inline SVG line chart: one polyline per custody leg, excursions shaded, profile limits dashed."""
    values = [v for _, _, v in readings if v.size]
    if not values or t1 <= t0:
        return '<p class="muted">No readings stored for this shipment\'s custody legs.</p>'
    w, h, left, right, top, bottom = 900, 320, 56, 12, 12, 44
    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    pad = max(0.5, (hi - lo) * 0.08)
    lo, hi = lo - pad, hi + pad
    sx, sy = (w - left - right) / (t1 - t0), (h - top - bottom) / (hi - lo)

    def x(t: float) -> float:
        return left + (t - t0) * sx

    def y(c: float) -> float:
        return top + (hi - c) * sy

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="temperature over the shipment" font-size="11" font-family="sans-serif">']
    for e in excursions:
        a, b = max(e["start_ns"], t0), min(max(e["end_ns"], e["start_ns"] + 1), t1)
        if a < b:
            out.append(f'<rect x="{x(a):.1f}" y="{top}" width="{max(x(b) - x(a), 1.5):.1f}" height="{h - top - bottom}"'
                       f' fill="#d62728" fill-opacity="0.15"><title>excursion {e["id"]} in {_e(e["asset"])}'
                       f'</title></rect>')
    for i in range(6):
        c = lo + (hi - lo) * i / 5
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 4}" y="{y(c) + 4:.1f}" text-anchor="end">{c:.1f}</text>')
    for name, c in limits:
        if lo <= c <= hi:
            out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#d62728" '
                       f'stroke-dasharray="5 4"><title>{_e(name)} {c:g} °C</title></line>')
    for i, (name, t, v) in enumerate(readings):
        if not t.size:
            continue
        td, vd = _decimate(t, v, _CHART_POINTS)
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(td.tolist(), vd.tolist(), strict=True))
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{pts}">'
                   f'<title>{_e(name)}</title></polyline>')
        out.append(f'<text x="{left + 8 + 190 * (i % 4)}" y="{h - 8}" fill="{colour}">■ {_e(name)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" '
               f'stroke="#999"/><text x="{left}" y="{h - bottom + 14}">{_e(iso(t0))}</text>'
               f'<text x="{w - right}" y="{h - bottom + 14}" text-anchor="end">{_e(iso(t1))}</text>'
               f'<text x="14" y="{top + (h - top - bottom) / 2:.0f}" transform="rotate(-90 14 '
               f'{top + (h - top - bottom) / 2:.0f})" text-anchor="middle">°C</text></svg>')
    return "".join(out)


def render_html(rep: ShipmentReport) -> str:
    """A printable, self-contained page (no external assets): what Annex 11 calls a clear printed copy."""
    d = rep.data
    sh, prof = d["shipment"], d["profile"]
    profile = load_profile(prof["name"])
    limits = [(b.name, v) for b in profile.boundaries for v in (b.above, b.below) if v is not None]
    if profile.mkt is not None and profile.mkt.limit is not None:
        limits.append(("MKT limit", profile.mkt.limit))
    legs = d["legs"]
    t0 = min((leg["from_ns"] for leg in legs), default=0)
    # An open leg's chart ends at its last reading, not at "now": the page shows data, not empty time.
    t1 = max((leg["to_ns"] if leg["to_ns"] is not None else int(t[-1]) if t.size else leg["from_ns"]
              for leg, (_, t, _) in zip(legs, rep.readings, strict=True)), default=0)
    summary = _table(["shipment", "reference", "profile", "origin (DC)", "destination (store)", "created"],
                     [[_e(sh["id"]), _e(sh["reference"] or None), f"{_e(prof['name'])}<br>"
                       f"<span class=muted>{_e(prof['description'])}</span>", _e(sh["origin_site"]),
                       _e(sh["destination_site"]), f"{_t(sh['created_ns'])} by {_e(sh['created_by'])}"]], "")

    def judged_row(label: str, j: dict[str, Any]) -> list[str]:
        ev = j["evaluation"]
        if ev is None:
            return [label, "0", "—", "—", "—", '<span class="muted">no readings</span>']
        verdict = ev["verdict"]
        window = ev["mkt"].get("window_mkt_c")
        reasons = "".join(f"<br><span class=muted>{_e(r)}</span>" for r in verdict["reasons"])
        return [label, str(j["readings"]), _c(j["mean_c"]), _c(j["mkt_c"]), _c(window),
                f'<span class="{_e(verdict["result"])}">{_e(verdict["result"])}</span>{reasons}']

    mkt = _table(["record", "readings", "mean", "MKT", "worst window MKT", "verdict"],
                 [judged_row(f"shipment {_e(sh['id'])}", d["temperature"])]
                 + [judged_row(f"batch {_e(b['lot'])}", b["temperature"]) for b in d["batches"]], "")
    leg_table = _table(["leg", "container", "point", "from", "to", "readings", "min", "max", "MKT"],
                       [[str(x["id"]), _e(x["asset"]), _e(x["point"]), _t(x["from_ns"]),
                         _t(x["to_ns"]) if x["to_ns"] is not None else f"open (read to {_t(x['until_ns'])})",
                         str(x["readings"]), _c(x["min_c"]), _c(x["max_c"]), _c(x["mkt_c"])] for x in legs],
                       "No custody legs recorded.")
    excursions = _table(["id", "container", "start", "end", "reason", "alert", "recorded"],
                        [[str(e["id"]), _e(e["asset"]), _t(e["start_ns"]), _t(e["end_ns"]), _e(e["reason"]),
                          _e(e["alert_id"]), f"{_t(e['recorded_ns'])} by {_e(e['recorded_by'])}"]
                         for e in d["excursions"]], "No excursions.")
    batches = _table(["lot", "product", "quantity", "on board", "state", "excursions"],
                     [[_e(b["lot"]), _e(b["product"]), f"{b['quantity']:g} {_e(b['unit'])}",
                       "whole shipment" if b["loaded_ns"] is None and b["unloaded_ns"] is None else
                       f"{_t(b['loaded_ns'])} to {_t(b['unloaded_ns'])}",
                       f'<span class="{_e(b["state"])}">{_e(b["state"])}</span>',
                       _e(", ".join(map(str, b["excursion_ids"])) or None)] for b in d["batches"]],
                     "No batches.")
    decisions = _table(["lot", "meaning", "signed by", "signed at", "reason", "signature", "verified"],
                       [[_e(x["lot"]), f'<span class="{_e(x["meaning"])}">{_e(x["meaning"])}</span>', _e(x["signer"]),
                         _e(x["signed_at"]), _e(x["reason"]),
                         f'<span class="mono">HMAC-SHA256 {_e(x["signature"])}<br>SHA-256 {_e(x["digest"])}<br>'
                         f'key {_e(x["key_id"])}</span>',
                         '<span class="ok">yes</span>' if x["verified"] else '<span class="bad">NO</span>']
                        for x in d["decisions"]], "No decisions.")

    def change(a: dict[str, Any]) -> str:
        b, f = a["before"] or {}, a["after"] or {}
        keys = [k for k in f if b.get(k) != f.get(k)] if b else []
        if not b:
            return '<span class="muted">created</span>' if f else ""
        return '<div class="wrap">' + "<br>".join(f"{_e(k)}: {_shown(k, b.get(k))} → {_shown(k, f.get(k))}"
                                                  for k in keys) + "</div>"

    audit = _table(["time", "who", "action", "target", "reason", "change"],
                   [[_t(a["t_ns"]), _e(a["actor"]), _e(a["action"]), _e(a["target"]), _e(a["reason"] or None),
                     change(a)] for a in d["audit"]], "No audit entries.")
    return _PAGE_HTML.substitute(
        title=_e(sh["id"]), summary=summary, chart=chart_svg(rep.readings, t0, t1, d["excursions"], limits), mkt=mkt,
        legs=leg_table, excursions=excursions, batches=batches, decisions=decisions, audit=audit,
        generated=_e(d["generated_at"]))
