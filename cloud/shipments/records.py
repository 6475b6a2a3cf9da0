"""What the shipment record is made of, as plain dicts: the views of its rows that the API answers with and the
audit trail stores, the states and meanings a batch goes through, and the two errors a request can meet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.registry import Batch, BatchDecision, CustodyLeg, Excursion, Shipment
from cloud.rules.coldchain import iso
from cloud.rules.coldchain.reefer import CLASSIFICATIONS

DEFAULT_POINT = "supply_air"
"""The product temperature of a refrigerated trailer, as the live reefer rules judge it."""
SYSTEM_ACTOR = "system:coldchain"
MEANINGS = {"released": "batch.release", "rejected": "batch.reject"}
"""What a QA signature means (21 CFR 11.50(a)(3)) and its audit action; the batch's new state is the meaning."""
APPROVED = "approved"
"""A release signed at a stage before the last its profile asks for (``approvals``): the lot stays quarantined."""
USABLE = ("available", "released")
"""States an excursion moves to ``quarantined``; a rejected lot stays rejected."""
NOT_EXCURSIONS = frozenset(CLASSIFICATIONS)
"""``coldchain:`` alarms about the equipment, the sensor, the unit's power or a forecast, not the product's
temperature: a mechanic or a technician acts on them; the product alarm follows if the load does warm."""
FOREVER = 2**63 - 1
"""An open end (a leg still running, a lot never unloaded) in comparisons."""


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


# -- record views -----------------------------------------------------------------------------------------

def shipment_dict(sh: Shipment) -> dict[str, Any]:
    return {"id": sh.id, "profile": sh.profile, "origin_site": sh.origin_site,
            "destination_site": sh.destination_site, "reference": sh.reference or "", "created_ns": sh.created_ns,
            "created_by": sh.created_by,
            "consignee": {k: v for k, v in sh.consignee.items() if k != "secret"} if sh.consignee else None}


def leg_dict(leg: CustodyLeg) -> dict[str, Any]:
    return {"id": leg.id, "asset": leg.asset, "point": leg.point, "from_ns": leg.from_ns, "to_ns": leg.to_ns}


def batch_dict(b: Batch) -> dict[str, Any]:
    return {"lot": b.lot, "shipment": b.shipment, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
            "loaded_ns": b.loaded_ns, "unloaded_ns": b.unloaded_ns, "profile": b.profile, "state": b.state,
            "version": b.version, "updated_ns": b.updated_ns}


def excursion_dict(e: Excursion) -> dict[str, Any]:
    return {"id": e.id, "asset": e.asset, "start_ns": e.start_ns, "end_ns": e.end_ns, "reason": e.reason,
            "alert_id": e.alert_id, "recorded_ns": e.recorded_ns, "recorded_by": e.recorded_by}


def decision_dict(d: BatchDecision) -> dict[str, Any]:
    return {"id": d.id, "lot": d.lot, "meaning": d.meaning, "reason": d.reason, "signer": d.signer,
            "signed_ns": d.signed_ns, "signed_at": iso(d.signed_ns), "record": d.record, "digest": d.digest,
            "signature": d.signature, "key_id": d.key_id}


def on_board(b: Batch, leg: CustodyLeg, start_ns: int, end_ns: int) -> bool:
    """Was the batch in the leg's container at some instant of [start_ns, end_ns]?"""
    lo = max(leg.from_ns, b.loaded_ns if b.loaded_ns is not None else leg.from_ns)
    hi = min(leg.to_ns if leg.to_ns is not None else FOREVER, b.unloaded_ns if b.unloaded_ns is not None else FOREVER)
    return lo < hi and lo <= end_ns and hi > start_ns


def on_board_at(b: Batch, t_ns: int) -> bool:
    """Was the batch on board its shipment at ``t_ns`` (loaded, not yet unloaded)?"""
    return (b.loaded_ns is None or b.loaded_ns <= t_ns) and (b.unloaded_ns is None or b.unloaded_ns > t_ns)


def overlaps(a_from: int, a_to: int | None, b_from: int, b_to: int | None) -> bool:
    return a_from < (b_to if b_to is not None else FOREVER) and b_from < (a_to if a_to is not None else FOREVER)


@dataclass
class Note:
    """A notification to send once the transaction that caused it has committed."""

    tenant: str
    origin_site: str
    destination_site: str
    body: dict[str, Any]
