"""The shipment service: creates shipments, custody legs and batches, quarantines what was on board when an
excursion is recorded, takes QA's signed decisions, writes every change to the audit trail with the state before
and after, and tells the origin and destination sites (after the commit). The live rules reach it through
:func:`attach`: a newly opened product-excursion alert quarantines what was in the container (of the shipment, or
the lot, whose profile it broke)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.registry import (
    Asset,
    Batch,
    BatchExcursion,
    CustodyLeg,
    Excursion,
    Registry,
    Shipment,
    Site,
)
from cloud.rules.coldchain import iso, shipped_profiles
from cloud.rules.coldchain.live import PREDICTED_RULE
from cloud.shipments import queries as q
from cloud.shipments.consignees import Consignees
from cloud.shipments.decisions import Decisions
from cloud.shipments.notices import ConsigneeNotifier
from cloud.shipments.records import (
    DEFAULT_POINT,
    SYSTEM_ACTOR,
    USABLE,
    Note,
    ShipmentConflict,
    ShipmentInvalid,
    batch_dict,
    excursion_dict,
    is_excursion_rule,
    leg_dict,
    notification_topic,
    on_board,
    overlaps,
    shipment_dict,
)
from cloud.shipments.report import ShipmentReport, build_report
from cloud.shipments.signing import (
    KeyStore,
    decision_out,
    public_keys,
)
from cloud.store import TimeSeriesStore

log = logging.getLogger("cloud.shipments")
DEFAULT_KEY_DIR = "~/.local/state/assettwin/signing-keys"
"""Where tenants' private signing keys live unless ``TWIN_SIGNING_KEY_DIR`` says (a mounted secret in production)."""


class ShipmentService(Decisions, Consignees):
    """Shipments, custody, batches, quarantine and signed decisions of every tenant, on one registry and store."""

    def __init__(self, registry: Registry, store: TimeSeriesStore,
                 publish: Callable[[str, bytes], object] | None = None, *, key_dir: str | Path = DEFAULT_KEY_DIR,
                 extra_profiles: Mapping[str, str] | None = None) -> None:
        self.registry = registry
        self.store = store
        self.publish = publish
        self.keys = KeyStore(key_dir)
        self.notices: ConsigneeNotifier | None = None  # set by attach: the platform's SMTP relay and address policy
        self.profile_refs = dict(extra_profiles or {})
        """The deployment's own profiles, name -> file (its rules judge by it; shipments may name it)."""
        self.profiles = (*shipped_profiles(), *self.profile_refs)
        """Profiles a shipment or a lot may name."""

    # -- shipments, legs, batches -----------------------------------------------------------------------

    def register_profile(self, ref: str | Path) -> str:
        """A profile of this deployment's own (a YAML file) that shipments and lots may name; its name."""
        from cloud.rules.coldchain.profiles import load_profile

        name = load_profile(ref).name
        self.profile_refs[name] = str(ref)
        self.profiles = (*shipped_profiles(), *self.profile_refs)
        return name

    def create_shipment(self, tenant: str, actor: str, *, profile: str, origin_site: str, destination_site: str,
                        shipment_id: str | None = None, reference: str = "") -> dict[str, Any]:
        if profile not in self.profiles:
            raise ShipmentInvalid(f"profile: {profile!r} is not a known profile ({', '.join(self.profiles)})")
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
            sh = q.shipment(s, tenant, shipment_id)
            return {**shipment_dict(sh), "legs": [leg_dict(x) for x in q.legs(s, tenant, shipment_id)],
                    "batches": [batch_dict(b) for b in q.batches(s, tenant, shipment_id)]}

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
            q.shipment(s, tenant, shipment_id, lock=True)
            if s.get(Asset, (tenant, asset)) is None:
                raise ShipmentInvalid(f"asset: no asset {asset!r} in this tenant")
            for other in q.legs(s, tenant, shipment_id):
                if other.to_ns is None and other.from_ns < from_ns:
                    before = leg_dict(other)
                    other.to_ns = from_ns
                    reg.audit(s, tenant, actor, "custody.close", f"shipment:{shipment_id}",
                              reason=f"handed over to {asset}", before=before, after=leg_dict(other))
                elif overlaps(other.from_ns, other.to_ns, from_ns, to_ns):
                    end = iso(other.to_ns) if other.to_ns is not None else "now"
                    raise ShipmentConflict(f"the shipment is in {other.asset} from {iso(other.from_ns)} to {end} "
                                           f"(leg {other.id}); a shipment is in one container at a time")
            leg = CustodyLeg(tenant=tenant, shipment=shipment_id, asset=asset, point=point, from_ns=from_ns,
                             to_ns=to_ns)
            s.add(leg)
            s.flush()
            out = leg_dict(leg)
            reg.audit(s, tenant, actor, "custody.add", f"shipment:{shipment_id}", after=out)
            for exc in q.excursions_during(s, tenant, asset, from_ns, to_ns):
                notes += self._sweep(s, exc, actor)
        self._send(notes)
        return out

    def add_batch(self, tenant: str, actor: str, shipment_id: str, *, lot: str, product: str, quantity: float,
                  unit: str = "", loaded_ns: int | None = None, unloaded_ns: int | None = None,
                  profile: str | None = None) -> dict[str, Any]:
        """Put a lot on a shipment, on board over [loaded, unloaded) (None: the whole shipment). An excursion
        already recorded on one of the shipment's legs while it was on board quarantines it at once.
        ``profile``: its product's own profile, judged live beside the shipment's (None: the shipment's only)."""
        if profile is not None and profile not in self.profiles:
            raise ShipmentInvalid(f"profile: {profile!r} is not a known profile ({', '.join(self.profiles)})")
        if loaded_ns is not None and unloaded_ns is not None and unloaded_ns <= loaded_ns:
            raise ShipmentInvalid(f"unloaded: {iso(unloaded_ns)} is not after loaded {iso(loaded_ns)}")
        reg, notes = self.registry, []
        with reg.session() as s:
            q.shipment(s, tenant, shipment_id, lock=True)
            if s.get(Batch, (tenant, lot)) is not None:
                raise ShipmentConflict(f"batch {lot!r} exists; a lot rides in one shipment")
            b = Batch(tenant=tenant, lot=lot, shipment=shipment_id, product=product, quantity=quantity, unit=unit,
                      loaded_ns=loaded_ns, unloaded_ns=unloaded_ns, profile=profile, state="available", version=0,
                      updated_ns=time.time_ns())
            s.add(b)
            s.flush()
            reg.audit(s, tenant, actor, "batch.create", f"batch:{lot}", after=batch_dict(b))
            for leg in q.legs(s, tenant, shipment_id):
                for exc in q.excursions_during(s, tenant, leg.asset, leg.from_ns, leg.to_ns):
                    notes += self._sweep(s, exc, actor)
            out = batch_dict(b)
        self._send(notes)
        return out

    def list_batches(self, tenant: str, state: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Batches by lot, of one state when given (``quarantined``: QA's queue)."""
        with self.registry.session() as s:
            query = select(Batch).where(Batch.tenant == tenant)
            if state is not None:
                query = query.where(Batch.state == state)
            return [batch_dict(b) for b in s.scalars(query.order_by(Batch.lot).limit(limit))]

    def get_batch(self, tenant: str, lot: str) -> dict[str, Any]:
        """The batch with the excursions it went through and every decision on it (signatures re-verified)."""
        with self.registry.session() as s:
            b = q.batch(s, tenant, lot)
            keys = public_keys(s, tenant)
            return {**batch_dict(b), "excursions": [excursion_dict(e) for e in q.batch_excursions(s, tenant, lot)],
                    "decisions": [decision_out(d, keys) for d in q.decisions(s, tenant, [lot])]}

    # -- excursions and quarantine ----------------------------------------------------------------------

    def quarantine_for_excursion(self, tenant: str, asset: str, start_ns: int, end_ns: int, reason: str,
                                 alert_id: int | None = None, actor: str = SYSTEM_ACTOR, *,
                                 shipment: str | None = None, lots: list[str] | None = None,
                                 except_lots: list[str] | None = None) -> list[str]:
        """Record that ``asset`` was out of range over [start_ns, end_ns] and quarantine every batch that was
        on board it meanwhile (and no other); returns the lots newly quarantined. The live rules call this.

        Idempotent per alert: called again for the same ``alert_id`` (the excursion went on) it widens the
        recorded window and quarantines only batches not yet tied to it, so a lot released after review is
        not quarantined again by the same excursion. ``shipment`` (and ``lots``): the excursion broke that
        shipment's profile (that lot's product profile), so only what it judged is quarantined (``except_lots``:
        lots judged by their product's own profile instead).
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
            notes = self._sweep(s, exc, actor, shipment, lots, except_lots)
        self._send(notes)
        return sorted(lot for n in notes for lot in n.body["lots"])

    def on_alert_event(self, tenant: str, event: dict[str, Any]) -> None:
        """Notifier listener: a newly opened product-excursion alert quarantines what was in the container.

        Runs on the notifier's thread before the alert's own MQTT and webhook delivery, so it never raises.
        """
        alert = event.get("alert") or {}
        if event.get("event") == "alert.opened" and alert.get("rule") == PREDICTED_RULE:
            try:
                self._predicted(tenant, alert)
            except Exception:
                log.exception("consignee notice for alert %s failed", alert.get("id"))
            return
        if event.get("event") != "alert.opened" or not is_excursion_rule(str(alert.get("rule", ""))):
            return
        try:
            window = (alert.get("evidence") or {}).get("window") or {}
            start = int(window.get("start_ns") or alert["opened_ns"])
            end = max(int(window.get("end_ns") or alert["last_seen_ns"]), start)
            values = (alert.get("evidence") or {}).get("values") or {}
            self.quarantine_for_excursion(tenant, alert["asset"], start, end, alert.get("title") or alert["rule"],
                                          alert_id=alert["id"], actor=f"rule:{alert['rule']}",
                                          shipment=values.get("shipment"), lots=values.get("lots"),
                                          except_lots=values.get("except_lots"))
        except Exception:
            log.exception("quarantine for alert %s failed", alert.get("id"))

    def _sweep(self, s: Session, exc: Excursion, actor: str, shipment: str | None = None,
               lots: list[str] | None = None, except_lots: list[str] | None = None) -> list[Note]:
        """Tie every batch that was on board ``exc.asset`` during ``exc`` (of ``shipment``, among ``lots``, when
        given) to it; quarantine the usable ones."""
        reg, now = self.registry, time.time_ns()
        legs = s.scalars(select(CustodyLeg).where(
            CustodyLeg.tenant == exc.tenant, CustodyLeg.asset == exc.asset, CustodyLeg.from_ns <= exc.end_ns,
            or_(CustodyLeg.to_ns.is_(None), CustodyLeg.to_ns > exc.start_ns)).order_by(CustodyLeg.id)).all()
        why = f"excursion {exc.id} in {exc.asset} {iso(exc.start_ns)} to {iso(exc.end_ns)}: {exc.reason}"
        newly: dict[str, list[str]] = {}
        for leg in legs:
            if shipment is not None and leg.shipment != shipment:
                continue
            for b in q.batches(s, exc.tenant, leg.shipment, lock=True):
                if (lots is not None and b.lot not in lots) or b.lot in (except_lots or ()) or \
                        not on_board(b, leg, exc.start_ns, exc.end_ns) or \
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
            sh = q.shipment(s, exc.tenant, shipment_id)
            notes.append(Note(exc.tenant, sh.origin_site, sh.destination_site, {
                "event": "batches.quarantined", "tenant": exc.tenant, "shipment": shipment_id, "lots": sorted(lots),
                "origin_site": sh.origin_site, "destination_site": sh.destination_site,
                "excursion": excursion_dict(exc), "t_ns": now}))
        return notes

    # -- the report -------------------------------------------------------------------------------------

    def report(self, tenant: str, shipment_id: str, now_ns: int | None = None) -> ShipmentReport:
        """The shipment's record: custody, temperatures from the store judged against its profile (MKT,
        alarms, verdict) for the shipment and for each batch's time on board, excursions, signed decisions
        (re-verified) and the audit trail. An open leg is read up to ``now_ns``."""
        return build_report(self.registry, self.store, tenant, shipment_id, now_ns, self.profile_refs)

    def _send(self, notes: list[Note]) -> None:
        """Tell the distribution centre and the store; after the commit, so nobody hears of a change that
        was rolled back. A broker that is down costs the message, not the record (it is in the audit)."""
        for n in notes:
            if n.body.get("event") == "batches.quarantined":
                exc = n.body["excursion"]
                self._tell_consignees(n.tenant, [n.body["shipment"]], {
                    "event": "batches.quarantined", "lots": n.body["lots"], "asset": exc["asset"],
                    "summary": f"lots {', '.join(n.body['lots'])} quarantined: {exc['reason']}",
                    "explanation": f"An excursion in {exc['asset']} from {iso(exc['start_ns'])} to "
                                   f"{iso(exc['end_ns'])} quarantined them; quality assurance decides on each.",
                    "evidence": {"excursion": exc}})
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


def attach(platform) -> ShipmentService:
    """The platform's shipment service, listening to its alerts; created on the first call, the same one
    after (several apps may be built on one platform)."""
    for listener in platform.notifier.listeners:
        service = getattr(listener, "__self__", None)
        if isinstance(service, ShipmentService) and service.registry is platform.registry:
            return service
    from cloud.webhooks.targets import AddressPolicy

    link, settings = platform.link, platform.settings
    ref = settings.coldchain_profile
    name = None if ref in shipped_profiles() else _profile_name(ref)
    service = ShipmentService(platform.registry, platform.store,
                              publish=(lambda topic, body: link.publish(topic, body)) if link is not None else None,
                              key_dir=getattr(settings, "signing_key_dir", "") or DEFAULT_KEY_DIR,
                              extra_profiles={name: ref} if name else None)
    service.notices = ConsigneeNotifier(platform.registry, AddressPolicy(settings.webhook_allow),
                                        settings.smtp_host, settings.smtp_port, settings.smtp_from,
                                        settings.webhook_timeout_s)
    platform.notifier.listeners.append(service.on_alert_event)
    return service



def _profile_name(ref: str) -> str | None:
    """The name of the deployment's own profile file (shipments may name it), None if it cannot be read."""
    from cloud.rules.coldchain.profiles import ProfileError, load_profile

    try:
        return load_profile(ref).name
    except ProfileError:
        return None
