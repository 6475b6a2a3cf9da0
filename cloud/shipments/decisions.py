"""Signed QA decisions on quarantined lots, a job of the shipment service (``ShipmentService`` inherits it): the
signer re-authenticated, the stages the profile asks for, the Ed25519 signature under the tenant's key, the audit,
and the keys' publication and rotation."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from cloud.registry import Batch, BatchDecision, Registry
from cloud.rules.coldchain import iso
from cloud.shipments import queries as q
from cloud.shipments.people import authenticate_signer, signer_name
from cloud.shipments.records import (
    APPROVED,
    MEANINGS,
    Note,
    ShipmentConflict,
    ShipmentInvalid,
    batch_dict,
    decision_dict,
)
from cloud.shipments.signing import (
    ALGORITHM,
    SIGNATURE_VERSION,
    KeyStore,
    public_keys,
    sign_record,
    signed_batch,
    signed_excursion,
    statement,
    verified,
)


class Decisions:
    """Release and reject, signed; what a signature verifies with. Needs the service's registry, keys, profile
    files and notification sender."""

    registry: Registry
    keys: KeyStore
    profile_refs: dict[str, str]

    def _send(self, notes: list[Note]) -> None:  # the service's
        raise NotImplementedError

    def decide(self, tenant: str, lot: str, meaning: str, reason: str, actor: str, *, username: str,
               password: str) -> dict[str, Any]:
        """Release or reject a quarantined batch, signed by the person ``username``, re-authenticated by their
        password now (``SignatureRefused`` otherwise; the refusal is audited). The signed record binds the
        signer's name, the time, the meaning and the reason to the batch's state at signing (its version and
        the excursions behind the quarantine) and to the previous decision's signature on this lot; Ed25519
        under the tenant's key, held outside the registry. ``actor``: the API client the request came from.

        Where the lot's profile asks for approval in stages (``approvals: [qa, qp]``), each release signature is
        one stage, by a person of that stage's role (or an admin) who signed no earlier stage of it; the lot stays
        quarantined (meaning ``approved``) until the last stage releases it. A reject ends it at any stage."""
        from cloud.shipments.people import SignatureRefused

        if meaning not in MEANINGS:
            raise ShipmentInvalid(f"meaning: {meaning!r} is not one of {', '.join(MEANINGS)}")
        reason = reason.strip()
        if not reason:
            raise ShipmentInvalid("reason: required; say why the batch is " + meaning)
        reg, now = self.registry, time.time_ns()
        with reg.session() as s:
            b = q.batch(s, tenant, lot)  # another tenant's lot, or none: not found, before any password is checked
            stages = self._approvals(s, b)
            pending = _pending_stages(q.decisions(s, tenant, [lot]))
        try:
            with reg.session() as s:
                user = authenticate_signer(s, tenant, username, password)
            stage = stages[min(len(pending), len(stages) - 1)] if meaning == "released" else None
            if stage is not None and user.role not in (stage, "admin"):
                raise SignatureRefused(f"signature refused: this release's next stage is {stage} "
                                       f"({' then '.join(stages)}); {username} is {user.role}")
            if stage is not None and user.username in pending:
                raise SignatureRefused(f"signature refused: {username} signed an earlier stage of this release; "
                                       "each stage is another person's")
        except SignatureRefused as exc:
            with reg.session() as s:
                reg.audit(s, tenant, actor, "signature.refused", f"batch:{lot}", reason=str(exc),
                          after={"username": username, "meaning": meaning})
            raise
        signer = signer_name(user)
        final = meaning != "released" or len(pending) + 1 >= len(stages)
        if not final:
            meaning = APPROVED
        with reg.session() as s:
            b = q.batch(s, tenant, lot, lock=True)
            if b.state != "quarantined":
                raise ShipmentConflict(f"batch {lot} is {b.state}; only a quarantined batch can be "
                                       f"{'released' if meaning == APPROVED else meaning}")
            previous = q.decisions(s, tenant, [lot])
            if _pending_stages(previous) != pending:
                raise ShipmentConflict(f"batch {lot}: another stage was signed meanwhile; reload and sign again")
            key_id, key = self.keys.current(s, reg, tenant)
            record = {"v": SIGNATURE_VERSION, "alg": ALGORITHM, "kind": "batch-decision", "tenant": tenant,
                      "lot": lot, "meaning": meaning, "reason": reason,
                      "statement": f"approved ({stage}); release awaits {', '.join(stages[len(pending) + 1:])}"
                      if meaning == APPROVED else statement(meaning, reason),
                      "stage": stage, "stages": stages if stage else None, "final": final,
                      "signer": signer, "signer_login": user.username, "signer_role": user.role,
                      "authentication": "login name and password, entered at signing", "signed_at": iso(now),
                      "key_id": key_id, "batch": signed_batch(b),
                      "excursions": [signed_excursion(e) for e in q.batch_excursions(s, tenant, lot)],
                      "previous_signature": previous[-1].signature if previous else None}
            digest, signature = sign_record(key, record)
            d = BatchDecision(tenant=tenant, lot=lot, meaning=meaning, reason=reason, signer=signer, signed_ns=now,
                              record=record, digest=digest, signature=signature, key_id=key_id)
            s.add(d)
            before = batch_dict(b)
            b.state, b.version, b.updated_ns = b.state if meaning == APPROVED else meaning, b.version + 1, now
            s.flush()
            reg.audit(s, tenant, signer, MEANINGS.get(meaning, "batch.approve"), f"batch:{lot}",
                      reason=reason, before=before,
                      after={**batch_dict(b), "decision_id": d.id, "meaning": meaning, "signature": signature,
                             "via": actor})
            out = decision_dict(d)
            sh = q.shipment(s, tenant, b.shipment)
            note = Note(tenant, sh.origin_site, sh.destination_site, {
                "event": f"batch.{meaning}", "tenant": tenant, "shipment": b.shipment, "lots": [lot],
                "origin_site": sh.origin_site, "destination_site": sh.destination_site, "reason": reason,
                "signer": signer, "signature": signature, "t_ns": now})
        self._send([note])
        return out

    def _approvals(self, s: Session, b: Batch) -> list[str]:
        """The release stages the lot's profile asks for (its product's, else its shipment's)."""
        from cloud.rules.coldchain.profiles import ProfileError, load_profile

        name = b.profile or q.shipment(s, b.tenant, b.shipment).profile
        try:
            return list(load_profile(self.profile_refs.get(name, name)).approvals)
        except ProfileError:
            return ["qa"]

    def verify(self, tenant: str, decision: dict[str, Any]) -> bool:
        """Does the decision's signature verify on its record under the published key it names, and does the
        record say what the decision's columns say? False for any edit of either."""
        with self.registry.session() as s:
            key = public_keys(s, tenant).get(str(decision.get("key_id")))
            return verified(decision, key.public_key if key else None)

    def signing_keys(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's published public keys (current and retired): what ``twin coldchain verify`` needs."""
        with self.registry.session() as s:
            return [{"id": k.id, "algorithm": k.algorithm, "public_key": k.public_key, "created_ns": k.created_ns,
                     "retired_ns": k.retired_ns} for k in sorted(public_keys(s, tenant).values(),
                                                                 key=lambda k: k.created_ns)]

    def rotate_signing_key(self, tenant: str, actor: str) -> str:
        """A new signing key for the tenant's next decisions; earlier ones still verify with the old public key."""
        with self.registry.session() as s:
            key_id = self.keys.rotate(s, self.registry, tenant)
            self.registry.audit(s, tenant, actor, "signing_key.rotate", f"signing_key:{key_id}",
                                after={"id": key_id})
        return key_id


def _pending_stages(decisions: list[BatchDecision]) -> list[str]:
    """Logins that signed the stages of the release under way: the ``approved`` decisions since the last final."""
    out: list[str] = []
    for d in decisions:
        out = [*out, str(d.record.get("signer_login"))] if d.meaning == APPROVED else []
    return out


