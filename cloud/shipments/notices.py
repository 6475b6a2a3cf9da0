"""Consignee notices: the receiving customer hears before the goods arrive, not when they open the trailer.

Two moments are worth telling (EU GDP ch. 9.2: excursions are reported to the recipient): the trailer's thermal
twin predicts that the load will leave its range (the ``excursion-predicted`` alert, raised while the compressor is
stopped and nothing is harmed yet), and a lot was quarantined. Each notice carries the evidence (the forecast and
its explanation, the excursion) and goes by e-mail (``TWIN_SMTP_HOST``) and by webhook, whose body is signed with
the consignee's own secret (``X-Twin-Signature: sha256=<HMAC-SHA256 of the body>``, as the alert webhooks).
Delivery is best effort on the notifier's thread, with short timeouts; every notice is audited whether it went
out or not, so the record shows who was told what, when.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import smtplib
import time
from email.message import EmailMessage
from typing import Any

from cloud.registry import Registry, Shipment
from cloud.rules.coldchain import iso
from cloud.shipments.records import ShipmentInvalid
from cloud.webhooks.delivery import post, sign
from cloud.webhooks.targets import AddressPolicy, WebhookRefused

log = logging.getLogger("cloud.shipments.notices")
_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}|[^@\s]{1,64}@localhost")


class ConsigneeNotifier:
    """Validates a consignee's contacts, and sends a notice to them."""

    def __init__(self, registry: Registry, policy: AddressPolicy | None = None, smtp_host: str = "",
                 smtp_port: int = 25, smtp_from: str = "assettwin@localhost", timeout_s: float = 5.0) -> None:
        self.registry = registry
        self.policy = policy or AddressPolicy()
        self.smtp_host, self.smtp_port, self.smtp_from, self.timeout_s = smtp_host, smtp_port, smtp_from, timeout_s

    def contacts(self, email: str | None, webhook: str | None, name: str) -> dict[str, Any]:
        """The consignee as stored: its name, e-mail, webhook URL (checked as alert webhooks are) and a new secret."""
        if not email and not webhook:
            raise ShipmentInvalid("consignee: give an email, a webhook, or both")
        if email and not _EMAIL.fullmatch(email):
            raise ShipmentInvalid(f"email: {email!r} is not an e-mail address")
        if webhook:
            try:
                self.policy.check(webhook)
            except WebhookRefused as exc:
                raise ShipmentInvalid(f"webhook: {exc}") from None
        return {"name": name, "email": email or None, "webhook": webhook or None,
                "secret": secrets.token_urlsafe(32)}

    def send(self, tenant: str, sh: Shipment, body: dict[str, Any]) -> dict[str, Any]:
        """E-mail and webhook the notice to the shipment's consignee; what happened to each, for the audit."""
        c = sh.consignee or {}
        out: dict[str, Any] = {}
        payload = json.dumps({"v": "v1", "kind": "consignee-notice", "tenant": tenant, "shipment": sh.id,
                              "reference": sh.reference, "destination_site": sh.destination_site,
                              "sent_ns": time.time_ns(), **body}, separators=(",", ":"), ensure_ascii=False).encode()
        if c.get("webhook"):
            try:
                target = self.policy.check(c["webhook"])
                outcome = post(target, payload, {"Content-Type": "application/json", "X-Twin-Event": body["event"],
                                                 "X-Twin-Signature": sign(c["secret"], payload)},
                               self.timeout_s)
                out["webhook"] = "delivered" if outcome.delivered else f"failed: {outcome.error}"
            except (WebhookRefused, OSError) as exc:
                out["webhook"] = f"failed: {exc}"
        if c.get("email"):
            if not self.smtp_host:
                out["email"] = "not sent: no TWIN_SMTP_HOST"
            else:
                try:
                    with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_s) as smtp:
                        smtp.send_message(_email(self.smtp_from, c["email"], sh, body))
                    out["email"] = "sent"
                except (OSError, smtplib.SMTPException) as exc:
                    out["email"] = f"failed: {exc}"
        with self.registry.session() as s:
            self.registry.audit(s, tenant, "system:notices", "consignee.notify", f"shipment:{sh.id}",
                                reason=body.get("summary"), after={"event": body["event"], **out})
        log.info("consignee notice %s for %s/%s: %s", body["event"], tenant, sh.id, out)
        return out


def _email(sender: str, to: str, sh: Shipment, body: dict[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, to
    msg["Subject"] = f"Shipment {sh.id}{f' ({sh.reference})' if sh.reference else ''}: {body['summary']}"
    msg.set_content(f"{body['summary']}\n\n{body.get('explanation', '')}\n\nShipment {sh.id} to "
                    f"{sh.destination_site}, as of {iso(time.time_ns())}.\n\nEvidence:\n"
                    + json.dumps(body.get("evidence"), indent=2, ensure_ascii=False, default=str))
    msg.add_attachment(json.dumps(body, ensure_ascii=False, default=str).encode(), maintype="application",
                       subtype="json", filename="notice.json")
    return msg
