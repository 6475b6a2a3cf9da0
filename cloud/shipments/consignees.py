"""The consignee, a job of the shipment service (``ShipmentService`` inherits it): who receives a shipment, what
its organisation's customer keys see of it, and the notices it gets before arrival (``notices``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import or_, select

from cloud.registry import CustodyLeg, Registry, Shipment
from cloud.shipments import queries as q
from cloud.shipments.notices import ConsigneeNotifier
from cloud.shipments.records import (
    on_board_at,
)
from cloud.shipments.report import ShipmentReport
from cloud.shipments.signing import (
    decision_out,
    public_keys,
)

log = logging.getLogger("cloud.shipments")


class Consignees:
    """Set a shipment's consignee, answer its view, tell it. Needs the service's registry, notifier and report."""

    registry: Registry
    notices: ConsigneeNotifier | None

    def report(self, tenant: str, shipment_id: str, now_ns: int | None = None) -> ShipmentReport:  # the service's
        raise NotImplementedError

    def set_consignee(self, tenant: str, actor: str, shipment_id: str, *, name: str, email: str | None,
                      webhook: str | None, grantee: str | None = None) -> dict[str, Any]:
        """Who receives the shipment, told before arrival (``notices``); the webhook secret is shown once.
        ``grantee``: the consignee's organisation (``cloud.sharing``), whose customer keys see this shipment."""
        notices = self.notices or ConsigneeNotifier(self.registry)
        contacts = {**notices.contacts(email, webhook, name), "grantee": grantee}
        with self.registry.session() as s:
            sh = q.shipment(s, tenant, shipment_id, lock=True)
            before = {k: v for k, v in (sh.consignee or {}).items() if k != "secret"}
            sh.consignee, sh.consignee_grantee = contacts, grantee
            self.registry.audit(s, tenant, actor, "shipment.consignee", f"shipment:{shipment_id}", before=before,
                                after={k: v for k, v in contacts.items() if k != "secret"})
        return contacts

    def shared_shipments(self, tenant: str, grantee: str) -> list[dict[str, Any]]:
        """The shipments whose consignee is ``grantee``, as its customer keys see them."""
        with self.registry.session() as s:
            ids = list(s.scalars(select(Shipment.id).where(Shipment.tenant == tenant,
                                                           Shipment.consignee_grantee == grantee)
                                 .order_by(Shipment.id).limit(1000)))
        return [self.shared_shipment(tenant, grantee, sid) for sid in ids]

    def shared_shipment(self, tenant: str, grantee: str, shipment_id: str) -> dict[str, Any]:
        """What a consignee sees of its shipment: custody, its lots' states, excursions, the signed decisions'
        statements (verified); no audit trail, no staff ids. LookupError unless shared with ``grantee``."""
        with self.registry.session() as s:
            sh = s.get(Shipment, (tenant, shipment_id))
            if sh is None or sh.consignee_grantee != grantee:
                raise LookupError("no such resource")
            lots = q.batches(s, tenant, shipment_id)
            keys = public_keys(s, tenant)
            decisions = [decision_out(d, keys) for d in q.decisions(s, tenant, [b.lot for b in lots])]
            excursions = {e.id: e for b in lots for e in q.batch_excursions(s, tenant, b.lot)}
            return {"id": sh.id, "reference": sh.reference or "", "profile": sh.profile,
                    "origin_site": sh.origin_site, "destination_site": sh.destination_site,
                    "legs": [{"asset": x.asset, "from_ns": x.from_ns, "to_ns": x.to_ns}
                             for x in q.legs(s, tenant, shipment_id)],
                    "batches": [{"lot": b.lot, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
                                 "state": b.state} for b in lots],
                    "excursions": [{"asset": e.asset, "start_ns": e.start_ns, "end_ns": e.end_ns, "reason": e.reason}
                                   for e in sorted(excursions.values(), key=lambda e: e.start_ns)],
                    "decisions": [{"lot": d["lot"], "statement": d["record"].get("statement", d["meaning"]),
                                   "signer": d["signer"], "signed_at": d["signed_at"], "signature": d["signature"],
                                   "key_id": d["key_id"], "verified": d["verified"]} for d in decisions]}

    def shared_report(self, tenant: str, grantee: str, shipment_id: str) -> ShipmentReport:
        """The report a consignee may read: the shipment's, without the audit trail (staff actions and ids)."""
        self.shared_shipment(tenant, grantee, shipment_id)
        rep = self.report(tenant, shipment_id)
        rep.data["audit"] = []
        return rep

    def _tell_consignees(self, tenant: str, shipment_ids: list[str], body: dict[str, Any]) -> None:
        if self.notices is None:
            return
        for sid in shipment_ids:
            with self.registry.session() as s:
                sh = s.get(Shipment, (tenant, sid))
                if sh is not None:
                    s.expunge(sh)
            if sh is not None and sh.consignee:
                try:
                    self.notices.send(tenant, sh, body)
                except Exception:
                    log.exception("consignee notice for %s/%s failed", tenant, sid)

    def _predicted(self, tenant: str, alert: dict[str, Any]) -> None:
        """The twin predicts an excursion: the consignees of the shipments on board now hear it first."""
        ev = alert.get("evidence") or {}
        at = int(alert.get("opened_ns") or time.time_ns())
        with self.registry.session() as s:
            legs = s.scalars(select(CustodyLeg).where(
                CustodyLeg.tenant == tenant, CustodyLeg.asset == alert["asset"], CustodyLeg.from_ns <= at,
                or_(CustodyLeg.to_ns.is_(None), CustodyLeg.to_ns > at))).all()
            on_board = {leg.shipment: [b.lot for b in q.batches(s, tenant, leg.shipment) if on_board_at(b, at)]
                        for leg in legs}
        forecast = ev.get("forecast") or {}
        for sid, lots in on_board.items():
            self._tell_consignees(tenant, [sid], {
                "event": "excursion.predicted", "asset": alert["asset"], "lots": lots,
                "summary": f"excursion expected at {forecast.get('excursion_at')} in {alert['asset']}: "
                           f"{alert.get('title')}",
                "explanation": ev.get("explanation", ""), "excursion_at": forecast.get("excursion_at"),
                "lead_s": ev.get("lead_s"), "limit_c": ev.get("limit_c"),
                "evidence": {k: ev.get(k) for k in ("values", "thresholds", "forecast", "window")}})

