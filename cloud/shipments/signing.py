"""Signed quality decisions (21 CFR Part 11): the canonical bytes a signature covers, HMAC-SHA256 over them under
the tenant's signing key, and the check that a stored decision still says what its signed record says.

A signed record binds the signer, the time, the meaning and the reason to the batch's state at signing (its
version and the excursions behind the quarantine) and to the previous decision's signature on the lot, so an
edit of any of them, or of the chain, fails :func:`verified`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cloud.registry import Batch, BatchDecision, Excursion, SigningKey
from cloud.rules.coldchain import iso
from cloud.shipments.records import decision_dict

SIGNATURE_VERSION = 1


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


def signed_batch(b: Batch) -> dict[str, Any]:
    """The batch as a signed record holds it: times as ISO 8601, no bookkeeping columns."""
    return {"lot": b.lot, "shipment": b.shipment, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
            "loaded_at": None if b.loaded_ns is None else iso(b.loaded_ns),
            "unloaded_at": None if b.unloaded_ns is None else iso(b.unloaded_ns),
            "state": b.state, "version": b.version}


def signed_excursion(e: Excursion) -> dict[str, Any]:
    return {"id": e.id, "asset": e.asset, "start": iso(e.start_ns), "end": iso(e.end_ns), "reason": e.reason,
            "alert_id": e.alert_id}


def verified(decision: dict[str, Any], key: SigningKey | None) -> bool:
    """Does the decision's signature recompute from its record under ``key``, and does the record say what the
    decision's columns say? False for any edit of either, or for another key."""
    record = decision["record"]
    if key is None or not isinstance(record, dict) or record.get("key_id") != key.id or decision["key_id"] != key.id:
        return False
    says = {"lot": decision["lot"], "meaning": decision["meaning"], "reason": decision["reason"],
            "signer": decision["signer"], "signed_at": iso(decision["signed_ns"])}
    return all(record.get(k) == v for k, v in says.items()) and \
        verify_record(key.secret, record, decision["digest"], decision["signature"])


def decision_out(d: BatchDecision, key: SigningKey | None) -> dict[str, Any]:
    """A decision as the API and the report show it: with ``verified`` recomputed now."""
    out = decision_dict(d)
    return {**out, "verified": verified(out, key)}
