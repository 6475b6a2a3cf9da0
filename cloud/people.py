"""People: who a person is (the identity vault), who may see their data (consents), and forgetting them (erasure).

A person's twin is an asset of type ``person`` whose id is a pseudonymous subject id (``subj-`` and 16 random hex
digits, made at enrolment): every series, alert and audit entry names that id only. Who the person is — name,
birth date, anything that identifies them — lives in one table, ``identity_vault``, encrypted with AES-GCM under a
key kept outside the database (``TWIN_VAULT_KEY_FILE``, 32 bytes raw, hex or base64), bound to its tenant and
subject (the associated data), so a row copied onto another subject does not decrypt. Only roles holding
``pii:read`` may decrypt it, with a reason, and each time is audited.

**Consents** say who may see what of a person, from when to when: a grantee (a carer's or guardian's organisation,
as ``cloud.sharing`` names them; ``clinic`` for the tenant's own staff), the points, and the window of data time
they cover. Every read of a person's series goes through ``PersonAccess.read``, which finds the consent covering
the reader, clips the read to it and audits it (who, what, when, why). A staff reader with no consent may break
the glass: with ``pii:read``, a stated reason, audited as such. A customer key (a carer's) never can.

**Erasure** removes the person's series from the time-series store (every measurement and roll-up), their vault
entry, consents, twin, alerts and asset; the audit trail keeps that it happened, under the subject id only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from cloud.registry import Alert, Asset, Base, Registry, Twin
from cloud.sharing import Share

PERSON_TYPE = "person"
CLINIC = "clinic"
"""The grantee that stands for the tenant's own staff in consents."""
ALL_POINTS = "*"
_NS_MAX = 2**63 - 1


class VaultKeyError(RuntimeError):
    """The vault key is missing or malformed: refusing to start beats storing identities in clear."""


class ConsentRequired(PermissionError):
    """No consent covers this read (and no break-glass was allowed); says which grantee and point."""


class IdentityRecord(Base):
    """One person's identity, encrypted (AES-GCM; the key is not in the database)."""

    __tablename__ = "identity_vault"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_ns: Mapped[int] = mapped_column(BigInteger)


class Consent(Base):
    """``grantee`` may see ``points`` of ``subject`` recorded from ``from_ns`` to ``to_ns`` (None: open)."""

    __tablename__ = "person_consents"
    __table_args__ = (Index("ix_person_consents_subject", "tenant", "subject"),
                      Index("ix_person_consents_grantee", "tenant", "grantee"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    grantee: Mapped[str] = mapped_column(String(64))
    points: Mapped[list] = mapped_column(JSON)
    from_ns: Mapped[int] = mapped_column(BigInteger)
    to_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(200))


def consent_dict(c: Consent) -> dict:
    return {"id": c.id, "subject": c.subject, "grantee": c.grantee, "points": list(c.points), "from_ns": c.from_ns,
            "to_ns": c.to_ns, "created_ns": c.created_ns, "created_by": c.created_by}


def load_vault_key(path: str | Path | None) -> bytes | None:
    """The 32-byte AES key from a file: raw, hex or base64 text. None when not configured."""
    if not path:
        return None
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VaultKeyError(f"TWIN_VAULT_KEY_FILE={path}: cannot read the key ({exc.strerror})") from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decode in (lambda b: bytes.fromhex(b.decode()), base64.b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return key
    raise VaultKeyError(f"TWIN_VAULT_KEY_FILE={path}: the key must be 32 bytes (raw, 64 hex digits or base64)")


class IdentityVault:
    """Encrypt and decrypt identities; ``key_id`` (a fingerprint of the key) tells a wrong key from a tampered row."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"assettwin-vault\x00" + key).hexdigest()[:16]

    @staticmethod
    def _aad(tenant: str, subject: str) -> bytes:
        return f"{tenant}\x00{subject}".encode()

    def seal(self, tenant: str, subject: str, identity: dict[str, str]) -> IdentityRecord:
        nonce = os.urandom(12)
        blob = self._aead.encrypt(nonce, json.dumps(identity, sort_keys=True).encode(), self._aad(tenant, subject))
        return IdentityRecord(tenant=tenant, subject=subject, key_id=self.key_id, nonce=nonce, ciphertext=blob,
                              created_ns=time.time_ns())

    def open(self, row: IdentityRecord) -> dict[str, str]:
        if row.key_id != self.key_id:
            raise VaultKeyError(f"the vault entry of {row.subject} was sealed with key {row.key_id}, "
                                f"not the configured {self.key_id}")
        try:
            return json.loads(self._aead.decrypt(row.nonce, row.ciphertext, self._aad(row.tenant, row.subject)))
        except InvalidTag:
            raise VaultKeyError(f"the vault entry of {row.subject} does not authenticate (altered)") from None


@dataclass(frozen=True)
class Reader:
    """Who reads: the audit's actor, the grantee they read as (a carer organisation, or ``clinic``), whether they
    hold ``pii:read`` (break-glass and identities need it) and whether they are staff at all."""

    actor: str
    grantee: str
    pii_read: bool = False
    staff: bool = True


class PersonAccess:
    """Enrol, consent, read (consented, clipped, audited), reveal an identity, erase."""

    def __init__(self, registry: Registry, store, vault_key: bytes | None) -> None:
        self.registry, self.store = registry, store
        self.vault = IdentityVault(vault_key) if vault_key else None

    def _vault(self) -> IdentityVault:
        if self.vault is None:
            raise VaultKeyError("no TWIN_VAULT_KEY_FILE configured: identities can be neither stored nor read")
        return self.vault

    # --- enrolment and identity -------------------------------------------------------------------------

    def enrol(self, tenant: str, identity: dict[str, str], actor: str, gateway: str | None = None) -> str:
        """A new person: their subject id, their encrypted identity; the audit names the subject only."""
        vault = self._vault()
        subject = "subj-" + secrets.token_hex(8)
        self.registry.ensure_tenant(tenant)
        with self.registry.session() as s:
            s.add(Asset(tenant=tenant, id=subject, type=PERSON_TYPE, gateway=gateway, first_seen_ns=0))
            s.add(vault.seal(tenant, subject, identity))
            self.registry.audit(s, tenant, actor, "person.enrol", f"subject:{subject}",
                                after={"identity_fields": sorted(identity)})
        return subject

    def is_person(self, tenant: str, subject: str) -> bool:
        with self.registry.session() as s:
            a = s.get(Asset, (tenant, subject))
            return a is not None and a.type == PERSON_TYPE

    def identity(self, tenant: str, subject: str, reader: Reader, reason: str) -> dict[str, str] | None:
        """The clear identity, for a ``pii:read`` reader with a reason; audited. None: no such person."""
        if not reader.pii_read or not reader.staff:
            raise ConsentRequired("reading an identity needs the pii:read permission")
        with self.registry.session() as s:
            row = s.get(IdentityRecord, (tenant, subject))
            if row is None:
                return None
            found = self._vault().open(row)
            self.registry.audit(s, tenant, reader.actor, "person.identity.read", f"subject:{subject}",
                                reason=reason)
            return found

    # --- consents ------------------------------------------------------------------------------------------

    def grant(self, tenant: str, subject: str, grantee: str, points: list[str], from_ns: int, to_ns: int | None,
              actor: str) -> dict:
        if not self.is_person(tenant, subject):
            raise LookupError(f"no person {subject!r}")
        with self.registry.session() as s:
            row = Consent(tenant=tenant, subject=subject, grantee=grantee, points=sorted(set(points)) or [ALL_POINTS],
                          from_ns=from_ns, to_ns=to_ns, created_ns=time.time_ns(), created_by=actor)
            s.add(row)
            s.flush()
            out = consent_dict(row)
            self.registry.audit(s, tenant, actor, "person.consent.grant", f"subject:{subject}", after=out)
            return out

    def revoke(self, tenant: str, subject: str, grantee: str, actor: str) -> int:
        with self.registry.session() as s:
            n = s.execute(delete(Consent).where(Consent.tenant == tenant, Consent.subject == subject,
                                                Consent.grantee == grantee)).rowcount
            self.registry.audit(s, tenant, actor, "person.consent.revoke", f"subject:{subject}",
                                before={"grantee": grantee, "consents": n})
            return n

    def consents(self, tenant: str, subject: str) -> list[dict]:
        with self.registry.session() as s:
            return [consent_dict(c) for c in s.scalars(select(Consent).where(
                Consent.tenant == tenant, Consent.subject == subject).order_by(Consent.id))]

    def people_of(self, tenant: str, grantee: str) -> list[str]:
        return people_of(self.registry, tenant, grantee)

    def window(self, tenant: str, subject: str, grantee: str, point: str) -> tuple[int, int] | None:
        """The widest data-time window a consent of ``grantee`` covers for ``point`` (None: no consent)."""
        with self.registry.session() as s:
            rows = list(s.scalars(select(Consent).where(Consent.tenant == tenant, Consent.subject == subject,
                                                        Consent.grantee == grantee)))
        spans = [(c.from_ns, c.to_ns if c.to_ns is not None else _NS_MAX) for c in rows
                 if ALL_POINTS in c.points or point in c.points]
        return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None

    # --- reads -----------------------------------------------------------------------------------------------

    def authorise(self, tenant: str, subject: str, reader: Reader, points: list[str], start_ns: int, end_ns: int,
                  reason: str, break_glass: bool = False) -> tuple[int, int]:
        """The (start, end) the reader may read of ``points`` within the asked window; audited either way it is
        allowed. ConsentRequired when no consent covers it and the glass may not be broken."""
        spans = [self.window(tenant, subject, reader.grantee, p) for p in points]
        if all(s is not None for s in spans):
            lo = max([start_ns, *(s[0] for s in spans if s)])
            hi = min([end_ns, *(s[1] for s in spans if s)])
            action = "person.read"
        elif break_glass and reader.staff and reader.pii_read and len(reason.strip()) >= 10:
            lo, hi, action = start_ns, end_ns, "person.read.break_glass"
        else:
            missing = next(p for p, s in zip(points, spans, strict=True) if s is None)
            raise ConsentRequired(f"no consent lets {reader.grantee!r} see {missing!r} of this person" + (
                "; break-glass needs pii:read and a reason of at least 10 characters" if break_glass else ""))
        with self.registry.session() as s:
            self.registry.audit(s, tenant, reader.actor, action, f"subject:{subject}", reason=reason,
                                after={"points": points, "start_ns": lo, "end_ns": max(lo, hi),
                                       "grantee": reader.grantee})
        return lo, max(lo, hi)

    # --- erasure ---------------------------------------------------------------------------------------------

    def erase(self, tenant: str, subject: str, actor: str, reason: str) -> dict[str, int]:
        """Forget the person: their series, vault entry, consents, twin, alerts and asset. What was removed is
        counted and audited under the subject id."""
        if not self.is_person(tenant, subject):
            raise LookupError(f"no person {subject!r}")
        samples = self.store.erase_asset(tenant, subject)
        with self.registry.session() as s:
            counts = {"samples": samples}
            for name, model, col in (("vault", IdentityRecord, IdentityRecord.subject),
                                     ("consents", Consent, Consent.subject), ("alerts", Alert, Alert.asset),
                                     ("twin", Twin, Twin.asset), ("shares", Share, Share.asset),
                                     ("asset", Asset, Asset.id)):
                counts[name] = s.execute(delete(model).where(model.tenant == tenant, col == subject)).rowcount
            self.registry.audit(s, tenant, actor, "person.erase", f"subject:{subject}", reason=reason, after=counts)
        return counts


def people_of(registry: Registry, tenant: str, grantee: str) -> list[str]:
    """The subjects ``grantee`` holds a consent for (the carer's own people), by id."""
    with registry.session() as s:
        return sorted(set(s.scalars(select(Consent.subject).where(Consent.tenant == tenant,
                                                                  Consent.grantee == grantee))))


def people_among(registry: Registry, tenant: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` are people (the live socket streams none of them: their reads go through consent)."""
    if not ids:
        return set()
    with registry.session() as s:
        return set(s.scalars(select(Asset.id).where(Asset.tenant == tenant, Asset.id.in_(ids),
                                                    Asset.type == PERSON_TYPE)))


PERSONAL_EVIDENCE = ("glucose_mgdl", "forecast")
"""What a person's alert evidence holds of their data: withheld from the generic alert routes, which are not
consented reads (the person's report names the same alerts to those who may see the values)."""


def without_personal_values(alert: dict) -> dict:
    ev = alert.get("evidence") or {}
    if ev.get("source") != "person-glucose":
        return alert
    return {**alert, "evidence": {k: (None if k in PERSONAL_EVIDENCE else v) for k, v in ev.items()}}
