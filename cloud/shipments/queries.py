"""The shipment record's queries, one function per question, inside the caller's session (``lock``: ``SELECT …
FOR UPDATE``, for a change that must not interleave with another on the same rows)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.registry import Batch, BatchDecision, BatchExcursion, CustodyLeg, Excursion, Shipment


def shipment(s: Session, tenant: str, shipment_id: str, lock: bool = False) -> Shipment:
    q = select(Shipment).where(Shipment.tenant == tenant, Shipment.id == shipment_id)
    sh = s.scalar(q.with_for_update() if lock else q)
    if sh is None:
        raise LookupError(f"no shipment {shipment_id!r}")
    return sh


def batch(s: Session, tenant: str, lot: str, lock: bool = False) -> Batch:
    q = select(Batch).where(Batch.tenant == tenant, Batch.lot == lot)
    b = s.scalar(q.with_for_update() if lock else q)
    if b is None:
        raise LookupError(f"no batch {lot!r}")
    return b


def legs(s: Session, tenant: str, shipment_id: str) -> list[CustodyLeg]:
    return list(s.scalars(select(CustodyLeg).where(CustodyLeg.tenant == tenant, CustodyLeg.shipment == shipment_id)
                          .order_by(CustodyLeg.from_ns)))


def batches(s: Session, tenant: str, shipment_id: str, lock: bool = False) -> list[Batch]:
    q = select(Batch).where(Batch.tenant == tenant, Batch.shipment == shipment_id).order_by(Batch.lot)
    return list(s.scalars(q.with_for_update() if lock else q))


def decisions(s: Session, tenant: str, lots: Iterable[str]) -> list[BatchDecision]:
    lots = list(lots)
    if not lots:
        return []
    return list(s.scalars(select(BatchDecision).where(BatchDecision.tenant == tenant, BatchDecision.lot.in_(lots))
                          .order_by(BatchDecision.id)))


def batch_excursions(s: Session, tenant: str, lot: str) -> list[Excursion]:
    return list(s.scalars(select(Excursion).join(BatchExcursion, BatchExcursion.excursion_id == Excursion.id)
                          .where(BatchExcursion.tenant == tenant, BatchExcursion.lot == lot)
                          .order_by(Excursion.start_ns, Excursion.id)))


def excursions_during(s: Session, tenant: str, asset: str, from_ns: int, to_ns: int | None) -> list[Excursion]:
    q = select(Excursion).where(Excursion.tenant == tenant, Excursion.asset == asset, Excursion.end_ns >= from_ns)
    if to_ns is not None:
        q = q.where(Excursion.start_ns < to_ns)
    return list(s.scalars(q.order_by(Excursion.id)))
