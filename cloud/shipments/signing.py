"""Signed quality decisions (21 CFR Part 11): the canonical bytes a signature covers, the tenant's Ed25519 signing
key held outside the registry database, and the check that a stored decision still says what its signed record
says — with nothing but the published public key, so an auditor verifies offline (``twin coldchain verify``).

A signed record binds the signer (a person, re-authenticated at that moment: ``cloud.shipments.people``), the
time, the meaning ("released", "rejected: <reason>") and the reason to the batch's state at signing (its version
and the excursions behind the quarantine) and to the previous decision's signature on the lot, so an edit of any
of them, or of the chain, fails :func:`verified`.

Why the private key is a file: a secret stored beside the records it signs lets whoever can write the database
forge a signature. The key directory (``TWIN_SIGNING_KEY_DIR``, one folder per tenant, files 0600) is a separate
trust boundary — a mounted secret in a deployment. Rotation writes a new key and retires the old one's public half
(kept: the decisions it signed still verify).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.registry import Batch, BatchDecision, Excursion, Registry, SigningPublicKey
from cloud.rules.coldchain import iso
from cloud.shipments.records import decision_dict

SIGNATURE_VERSION = 2
ALGORITHM = "ed25519"


def canonical_json(record: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, UTF-8. Times in signed records are ISO 8601
    strings, so no number in them exceeds what any JSON reader keeps exactly."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign_record(key: Ed25519PrivateKey, record: dict[str, Any]) -> tuple[str, str]:
    """(SHA-256 digest, Ed25519 signature) of the canonical record, both hex."""
    body = canonical_json(record)
    return hashlib.sha256(body).hexdigest(), key.sign(body).hex()


def verify_record(public_key_pem: str, record: dict[str, Any], digest: str, signature: str) -> bool:
    """Does ``signature`` sign exactly ``record`` under the public key, and ``digest`` hash it?"""
    body = canonical_json(record)
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, Ed25519PublicKey):
            return False
        key.verify(bytes.fromhex(signature), body)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return hashlib.sha256(body).hexdigest() == digest


class KeyStore:
    """Each tenant's current private signing key, as files under ``root/<tenant>/``: ``<key id>.pem`` and
    ``current`` (the id in use). Created on first use; its public half is published in the registry."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def current(self, s: Session, registry: Registry, tenant: str) -> tuple[str, Ed25519PrivateKey]:
        folder = self.root / tenant
        pointer = folder / "current"
        if pointer.exists():
            key_id = pointer.read_text().strip()
            key = serialization.load_pem_private_key((folder / f"{key_id}.pem").read_bytes(), None)
            assert isinstance(key, Ed25519PrivateKey), f"{folder / key_id}.pem is not an Ed25519 key"
        else:
            key_id, key = self._write(tenant)
        if s.get(SigningPublicKey, (tenant, key_id)) is None:  # a new key, or a registry restored elsewhere
            registry.insert_ignore(s, SigningPublicKey, [{"tenant": tenant, "id": key_id, "algorithm": ALGORITHM,
                                                          "public_key": public_pem(key), "created_ns": time.time_ns(),
                                                          "retired_ns": None}])
        return key_id, key

    def rotate(self, s: Session, registry: Registry, tenant: str) -> str:
        """A new key for the tenant's next signatures; the old public key stays published, marked retired."""
        now = time.time_ns()
        for old in s.scalars(select(SigningPublicKey).where(SigningPublicKey.tenant == tenant,
                                                            SigningPublicKey.retired_ns.is_(None))):
            old.retired_ns = now
        key_id, _ = self._write(tenant)
        self.current(s, registry, tenant)
        return key_id

    def _write(self, tenant: str) -> tuple[str, Ed25519PrivateKey]:
        folder = self.root / tenant
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_id, key = secrets.token_hex(8), Ed25519PrivateKey.generate()
        path = folder / f"{key_id}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        tmp = folder / "current.tmp"
        tmp.write_text(key_id)
        tmp.replace(folder / "current")
        return key_id, key


def public_keys(s: Session, tenant: str) -> dict[str, SigningPublicKey]:
    return {k.id: k for k in s.scalars(select(SigningPublicKey).where(SigningPublicKey.tenant == tenant))}


def signed_batch(b: Batch) -> dict[str, Any]:
    """The batch as a signed record holds it: times as ISO 8601, no bookkeeping columns."""
    return {"lot": b.lot, "shipment": b.shipment, "product": b.product, "quantity": b.quantity, "unit": b.unit or "",
            "loaded_at": None if b.loaded_ns is None else iso(b.loaded_ns),
            "unloaded_at": None if b.unloaded_ns is None else iso(b.unloaded_ns),
            "state": b.state, "version": b.version}


def signed_excursion(e: Excursion) -> dict[str, Any]:
    return {"id": e.id, "asset": e.asset, "start": iso(e.start_ns), "end": iso(e.end_ns), "reason": e.reason,
            "alert_id": e.alert_id}


def statement(meaning: str, reason: str) -> str:
    """The meaning as it is printed with the signature (21 CFR 11.50(a)(3))."""
    return meaning if meaning == "released" else f"{meaning}: {reason}"


def verified(decision: dict[str, Any], public_key_pem: str | None) -> bool:
    """Does the decision's signature verify on its record under the public key, and does the record say what the
    decision's columns say? False for any edit of either, or for another key."""
    record = decision.get("record")
    if public_key_pem is None or not isinstance(record, dict) or record.get("key_id") != decision.get("key_id"):
        return False
    try:
        says = {"lot": decision["lot"], "meaning": decision["meaning"], "reason": decision["reason"],
                "signer": decision["signer"], "signed_at": iso(decision["signed_ns"])}
    except (KeyError, TypeError, ValueError):
        return False
    return all(record.get(k) == v for k, v in says.items()) and \
        verify_record(public_key_pem, record, str(decision.get("digest", "")), str(decision.get("signature", "")))


def decision_out(d: BatchDecision, keys: dict[str, SigningPublicKey]) -> dict[str, Any]:
    """A decision as the API and the report show it: with ``verified`` recomputed now."""
    out = decision_dict(d)
    key = keys.get(d.key_id)
    return {**out, "verified": verified(out, key.public_key if key else None)}
