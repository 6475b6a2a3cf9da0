"""The shipment report: its custody, the temperatures recomputed from the store and judged against its profile with
the same cold-chain code as the live rules (MKT, alarms, verdict; for the shipment and for each batch's time on
board), its excursions, its signed decisions (re-verified) and its audit trail. Computed afresh on every call, so
a report printed twice says the same thing; ``to_html`` is the printable copy (``printable.py``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from cloud.registry import AuditEntry, BatchExcursion, Excursion, Registry
from cloud.rules.coldchain import Profile, evaluate, iso, load_profile, mkt_c
from cloud.rules.coldchain.mkt import hold_durations_ns, time_weighted_mean_c
from cloud.rules.coldchain.reefer import clean
from cloud.shipments import queries as q
from cloud.shipments.printable import profile_limits, render_html
from cloud.shipments.records import FOREVER, batch_dict, excursion_dict, leg_dict, shipment_dict
from cloud.shipments.signing import decision_out, public_keys
from cloud.store import Series, TimeSeriesStore

PAGE = 50_000
"""Readings per store query: a long leg is read in pages."""


@dataclass
class ShipmentReport:
    """The report's record (``data``, what the JSON answer is) and the readings behind its chart."""

    data: dict[str, Any]
    readings: list[tuple[str, np.ndarray, np.ndarray]]  # (leg label, t_ns, °C) per custody leg

    def to_html(self) -> str:
        return render_html(self)

    def to_pdf(self) -> bytes:
        from cloud.shipments.pdf import render_pdf  # reportlab only when a PDF is asked for

        return render_pdf(self)


def build_report(registry: Registry, store: TimeSeriesStore, tenant: str, shipment_id: str,
                 now_ns: int | None = None, profile_refs: Mapping[str, str] | None = None) -> ShipmentReport:
    """The shipment's report as of ``now_ns`` (default now): an open leg is read up to then. ``profile_refs``:
    profile name -> file for the deployment's own profiles (shipped ones load by name); a lot whose product
    names a profile of its own is judged by it."""
    refs = profile_refs or {}
    now = now_ns or time.time_ns()
    with registry.session() as s:
        sh = q.shipment(s, tenant, shipment_id)
        legs = q.legs(s, tenant, shipment_id)
        batches = q.batches(s, tenant, shipment_id)
        lots = [b.lot for b in batches]
        keys = public_keys(s, tenant)
        decisions = [decision_out(d, keys) for d in q.decisions(s, tenant, lots)]
        excursions = {e.id: e for leg in legs for e in q.excursions_during(s, tenant, leg.asset, leg.from_ns,
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
    profile = load_profile(refs.get(shipment["profile"], shipment["profile"]))
    readings, t_parts, v_parts = [], [], []
    for leg in leg_rows:
        until = leg["to_ns"] if leg["to_ns"] is not None else max(now, leg["from_ns"])
        t, v = read_readings(store, tenant, leg["asset"], leg["point"], leg["from_ns"], until)
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
        lo = b["loaded_ns"] if b["loaded_ns"] is not None else -FOREVER
        hi = b["unloaded_ns"] if b["unloaded_ns"] is not None else FOREVER
        on_board = (t_all >= lo) & (t_all < hi)
        own = load_profile(refs.get(b["profile"], b["profile"])) if b.get("profile") else profile
        b.update(temperature=_judged(t_all[on_board], v_all[on_board], own),
                 excursion_ids=sorted(by_lot.get(b["lot"], [])),
                 decisions=[d for d in decisions if d["lot"] == b["lot"]])
    data = {"shipment": shipment, "profile": {"name": profile.name, "description": profile.description,
                                              "limits": [list(x) for x in profile_limits(profile)]},
            "generated_ns": now, "generated_at": iso(now), "legs": leg_rows,
            "temperature": _judged(t_all, v_all, profile), "batches": batch_rows, "excursions": excursion_rows,
            "decisions": decisions, "audit": audit_rows}
    return ShipmentReport(data, readings)


def read_readings(store: TimeSeriesStore, tenant: str, asset: str, point: str, start_ns: int,
                  end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Every good reading of one point over [start, end), paged so a long leg is read whole."""
    t: list[int] = []
    values: list[float | None] = []
    quality: list[int] = []
    while start_ns < end_ns:
        page = store.query_range(tenant, asset, point, start_ns, end_ns, limit=PAGE)
        t += page.t_ns
        values += page.values
        quality += page.quality if page.quality is not None else [0] * len(page.t_ns)
        if len(page.t_ns) < PAGE:
            break
        start_ns = page.t_ns[-1] + 1
    return clean(Series(t, values, quality))


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
