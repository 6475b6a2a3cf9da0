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

One job per module: ``records`` (the rows as dicts, states, errors), ``signing`` (canonical JSON, Ed25519 under
a key held outside the registry, verification), ``people`` (accounts, scrypt passwords, re-authentication at
signing), ``queries`` (one function per question), ``service`` (shipments, custody, batches, quarantine and their
audit), ``decisions`` (signed release and reject, in the stages a profile asks for), ``consignees`` and ``notices``
(who receives a shipment, its view, and the notices it gets before arrival), ``report`` (the record recomputed),
``printable`` (the report as HTML with an SVG chart) and ``pdf`` (the same as PDF).
"""

from cloud.shipments.people import SignatureRefused, create_user
from cloud.shipments.printable import chart_svg, render_html
from cloud.shipments.records import (
    DEFAULT_POINT,
    MEANINGS,
    SYSTEM_ACTOR,
    ShipmentConflict,
    ShipmentInvalid,
    is_excursion_rule,
    notification_topic,
)
from cloud.shipments.report import ShipmentReport, build_report
from cloud.shipments.service import ShipmentService, attach
from cloud.shipments.signing import SIGNATURE_VERSION, canonical_json, sign_record, verify_record

__all__ = [
    "DEFAULT_POINT",
    "MEANINGS",
    "SIGNATURE_VERSION",
    "SYSTEM_ACTOR",
    "ShipmentConflict",
    "ShipmentInvalid",
    "ShipmentReport",
    "ShipmentService",
    "SignatureRefused",
    "attach",
    "build_report",
    "canonical_json",
    "chart_svg",
    "create_user",
    "is_excursion_rule",
    "notification_topic",
    "render_html",
    "sign_record",
    "verify_record",
]
