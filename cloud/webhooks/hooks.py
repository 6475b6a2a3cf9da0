"""The webhooks themselves, as the API routes use them: register (after checking where the URL leads), list with
their pending and given-up deliveries, delete, rotate the secret. Every change is audited; a URL is shown redacted
and a secret only once."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import delete, func, select

from cloud.registry import Registry, Webhook, WebhookDelivery
from cloud.webhooks.formats import check_group
from cloud.webhooks.targets import AddressPolicy, redact


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def webhook_dict(h: Webhook, pending: int = 0, failed: int = 0) -> dict[str, Any]:
    """A webhook as the API shows it: the URL redacted, never the secret."""
    return {"id": h.id, "url": h.url if h.kind == "email" else redact(h.url), "active": h.active,
            "created_ns": h.created_ns, "rotated_ns": h.rotated_ns, "last_delivered_ns": h.last_delivered_ns,
            "last_error": h.last_error, "pending": pending, "failed": failed, "kind": h.kind or "json",
            "min_severity": h.min_severity or "low", "asset_group": h.asset_group}


def create(registry: Registry, policy: AddressPolicy, tenant: str, actor: str, url: str, kind: str = "json",
           min_severity: str = "low", asset_group: str | None = None) -> tuple[dict, str]:
    """Register a webhook (or another notification channel, cloud/webhooks/formats.py) after checking where its
    URL leads (an e-mail channel's ``mailto:`` has no address to check); (webhook, secret shown once)."""
    check_group(asset_group)
    if kind != "email":
        policy.check(url)
    secret = new_secret()
    with registry.session() as s:
        h = Webhook(tenant=tenant, url=url, secret=secret, active=True, created_ns=time.time_ns(), last_error="",
                    kind=kind, min_severity=min_severity, asset_group=asset_group)
        s.add(h)
        s.flush()
        shown = url if kind == "email" else redact(url)
        registry.audit(s, tenant, actor, "webhook.create", f"webhook:{h.id}",
                       after={"url": shown, "kind": kind, "min_severity": min_severity, "asset_group": asset_group})
        return webhook_dict(h), secret


def list_page(registry: Registry, tenant: str, limit: int, after: int | None) -> tuple[list[dict], bool]:
    """The tenant's webhooks by id, with how many deliveries are pending and given up; (items, more)."""
    with registry.session() as s:
        q = select(Webhook).where(Webhook.tenant == tenant)
        if after is not None:
            q = q.where(Webhook.id > after)
        hooks = list(s.scalars(q.order_by(Webhook.id).limit(limit + 1)))
        ids = [h.id for h in hooks[:limit]]
        counts: dict[tuple[int, str], int] = {}
        if ids:
            for hook_id, state, n in s.execute(
                    select(WebhookDelivery.webhook_id, WebhookDelivery.state, func.count())
                    .where(WebhookDelivery.webhook_id.in_(ids)).group_by(WebhookDelivery.webhook_id,
                                                                         WebhookDelivery.state)):
                counts[(hook_id, state)] = n
        items = [webhook_dict(h, counts.get((h.id, "pending"), 0), counts.get((h.id, "failed"), 0))
                 for h in hooks[:limit]]
    return items, len(hooks) > limit


def remove(registry: Registry, tenant: str, actor: str, hook_id: int) -> None:
    """Delete a webhook and what it still had to deliver; LookupError when the tenant has no such webhook."""
    with registry.session() as s:
        h = s.scalar(select(Webhook).where(Webhook.tenant == tenant, Webhook.id == hook_id).with_for_update())
        if h is None:
            raise LookupError(f"no webhook {hook_id}")
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id))
        registry.audit(s, tenant, actor, "webhook.delete", f"webhook:{hook_id}", before={"url": redact(h.url)})
        s.delete(h)


def rotate(registry: Registry, tenant: str, actor: str, hook_id: int) -> tuple[dict, str]:
    """A new secret, in force for every attempt from now on (pending ones too); (webhook, secret shown once)."""
    secret = new_secret()
    with registry.session() as s:
        h = s.scalar(select(Webhook).where(Webhook.tenant == tenant, Webhook.id == hook_id).with_for_update())
        if h is None:
            raise LookupError(f"no webhook {hook_id}")
        h.secret, h.rotated_ns = secret, time.time_ns()
        registry.audit(s, tenant, actor, "webhook.rotate", f"webhook:{hook_id}")
        s.flush()
        return webhook_dict(h), secret
