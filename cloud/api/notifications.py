"""Notification channels beyond the signed JSON webhook: Slack and Teams incoming webhooks and e-mail, each routed
by alert severity and asset group. They are webhook rows of another ``kind`` (cloud/webhooks/formats.py), so they
share its delivery: per-tenant workers, retries with backoff, the address guard, given-up deliveries kept and
listed; ``GET``/``DELETE /api/v1/webhooks`` list and remove them too."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, HttpUrl, TypeAdapter, ValidationError, model_validator

from cloud import webhooks
from cloud.api.alerts import WebhookCreated
from cloud.api.auth import Admin
from cloud.api.problems import Problem
from cloud.webhooks.formats import check_group

_EMAIL = re.compile(r"[^@\s<>,;:\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_URL = TypeAdapter(HttpUrl)


class ChannelIn(BaseModel):
    kind: Literal["webhook", "slack", "teams", "email"] = Field(
        description="webhook: our signed JSON; slack: text + blocks; teams: MessageCard; email: through TWIN_SMTP_HOST")
    target: str = Field(min_length=3, max_length=2000,
                        description="the incoming-webhook URL (webhook, slack, teams) or an e-mail address (email)")
    min_severity: Literal["low", "medium", "high", "critical"] = "low"
    asset_group: str | None = Field(None, max_length=200,
                                    description="site:<id>, line:<id> or type:<id>; none: every asset")

    @model_validator(mode="after")
    def _target_fits_kind(self) -> ChannelIn:
        if self.kind == "email":
            if not _EMAIL.fullmatch(self.target):
                raise ValueError("target: not an e-mail address")
        else:
            try:
                _URL.validate_python(self.target)
            except ValidationError:
                raise ValueError("target: not an http(s) URL") from None
        check_group(self.asset_group)
        return self


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    reg, hooks = platform.registry, platform.notifier.webhooks

    @r.post("/notification-channels", status_code=201, response_model=WebhookCreated, tags=["webhooks"])
    def add_channel(body: ChannelIn, p: Admin) -> WebhookCreated:
        """A channel that gets the tenant's alert events of at least ``min_severity`` on assets of
        ``asset_group``. Chat URLs must lead to public addresses (or ones ``TWIN_WEBHOOK_ALLOW`` admits)."""
        kind = "json" if body.kind == "webhook" else body.kind
        url = f"mailto:{body.target}" if kind == "email" else body.target
        try:
            hook, secret = webhooks.create(reg, hooks.policy, p.tenant, p.actor, url, kind, body.min_severity,
                                           body.asset_group)
        except webhooks.WebhookRefused as exc:
            raise Problem(422, "Channel URL refused", f"target: {exc}",
                          errors=[{"where": "body.target", "msg": str(exc)}]) from None
        return WebhookCreated(**hook, secret=secret)

    return r
