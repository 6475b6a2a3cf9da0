"""Alerts (list and filter, acknowledge, resolve), webhooks (add, list, delete, rotate), and the audit trail."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, HttpUrl
from sqlalchemy import select

from cloud import webhooks
from cloud.alerts import AlertError, alert_dict
from cloud.api.auth import Admin, Operator, Viewer
from cloud.api.deps import Page, decode_cursor, encode_cursor
from cloud.api.params import AssetFilter, Body, RowCursor, RuleFilter, SeverityFilter
from cloud.api.problems import Problem
from cloud.people import without_personal_values
from cloud.registry import Alert, AuditEntry
from cloud.rules import explain


class AlertOut(BaseModel):
    id: int
    asset: str
    rule: str
    severity: str
    state: str
    title: str
    evidence: dict[str, Any]
    opened_ns: int
    last_seen_ns: int
    occurrences: int
    acked_by: str | None
    acked_ns: int | None
    resolved_by: str | None
    resolved_ns: int | None
    note: str
    command: dict[str, Any] | None = Field(None, description="acknowledging an alert raised from a device's own "
                                           "alarm (an OPC-UA condition): the acknowledge command sent to its gateway "
                                           "(GET /api/v1/assets/{asset}/commands/{id} follows it)")


class NoteIn(Body):
    note: str = Field("", max_length=2000)


class WebhookIn(BaseModel):
    url: HttpUrl = Field(description="http(s) URL; credentials in it are used, and only ever shown redacted")


class WebhookOut(BaseModel):
    id: int
    url: str = Field(description="redacted: no userinfo, query values and token-like path segments masked")
    active: bool
    created_ns: int
    rotated_ns: int | None
    last_delivered_ns: int | None
    last_error: str
    pending: int = Field(description="deliveries waiting for their (next) attempt")
    failed: int = Field(description="deliveries given up in the last week")
    kind: str = Field("json", description="json (signed body), slack, teams or email (/notification-channels)")
    min_severity: str = Field("low", description="only alerts of this severity or above")
    asset_group: str | None = Field(None, description="only alerts on assets of this group (site:, line:, type:)")


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret, shown only in this answer")


AlertId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an alert's id")]
"""Bounded to the registry's integer column: a larger id is a 422, not a database error."""
HookId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a webhook's id")]


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    reg, alerts = platform.registry, platform.alerts

    @r.get("/alerts", response_model=Page[AlertOut], tags=["alerts"])
    def list_alerts(p: Viewer, state: Literal["open", "acknowledged", "resolved", "active"] | None = None,
                    severity: SeverityFilter = None, asset: AssetFilter = None, rule: RuleFilter = None,
                    limit: int = Query(100, ge=1, le=1000), cursor: RowCursor = None) -> Page[AlertOut]:
        with reg.session() as s:
            q = select(Alert).where(Alert.tenant == p.tenant)
            if state == "active":
                q = q.where(Alert.state != "resolved")
            elif state:
                q = q.where(Alert.state == state)
            for col, val in ((Alert.severity, severity), (Alert.asset, asset), (Alert.rule, rule)):
                if val:
                    q = q.where(col == val)
            if cursor is not None:
                q = q.where(Alert.id < cursor)
            rows = list(s.scalars(q.order_by(Alert.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[AlertOut(**without_personal_values(alert_dict(a))) for a in rows],
                    next_cursor=encode_cursor(rows[-1].id) if more else None)

    @r.get("/alerts/{alert_id}", response_model=AlertOut, tags=["alerts"])
    def get_alert(alert_id: AlertId, p: Viewer) -> AlertOut:
        with reg.session() as s:
            a = s.scalar(select(Alert).where(Alert.tenant == p.tenant, Alert.id == alert_id))
            if a is None:
                raise Problem(404, "Not found", f"no alert {alert_id}")
            return AlertOut(**without_personal_values(alert_dict(a)))

    @r.get("/alerts/{alert_id}/explain", tags=["alerts"])
    def explain_alert(alert_id: AlertId, p: Viewer) -> dict[str, Any]:
        """Recompute the alert's rule on the stored data: the evidence found beside the evidence stored."""
        with reg.session() as s:
            a = s.scalar(select(Alert).where(Alert.tenant == p.tenant, Alert.id == alert_id))
            if a is None:
                raise Problem(404, "Not found", f"no alert {alert_id}")
            alert = {**alert_dict(a), "tenant": a.tenant}
        out = explain.explain(platform, alert)
        if "stored" in out:  # a person's values are read through consent, not here
            out["stored"] = without_personal_values({"evidence": out["stored"]})["evidence"]
        return {"alert_id": alert_id, "rule": alert["rule"], **out}

    def _move(alert_id: int, to: str, p, note: str) -> AlertOut:
        try:
            return AlertOut(**without_personal_values(alerts.transition(p.tenant, alert_id, to, p.actor, note)))
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except AlertError as exc:
            raise Problem(409, "Conflict", str(exc)) from None

    @r.post("/alerts/{alert_id}/ack", response_model=AlertOut, tags=["alerts"])
    def ack(alert_id: AlertId, p: Operator, body: NoteIn | None = None) -> AlertOut:
        """An alert raised from a device's own alarm (an OPC-UA condition) is acknowledged on the device too:
        ``command`` is the command that carries it, succeeded or failed with the server's status."""
        note = body.note if body else ""
        out = _move(alert_id, "acknowledged", p, note)
        out.command = platform.commands.acknowledge_alarm(p.tenant, out.model_dump(), p.actor, note)
        return out

    @r.post("/alerts/{alert_id}/resolve", response_model=AlertOut, tags=["alerts"])
    def resolve(alert_id: AlertId, p: Operator, body: NoteIn | None = None) -> AlertOut:
        return _move(alert_id, "resolved", p, body.note if body else "")

    hooks = platform.notifier.webhooks

    @r.post("/webhooks", status_code=201, response_model=WebhookCreated, tags=["webhooks"])
    def add_webhook(body: WebhookIn, p: Admin) -> WebhookCreated:
        """Alert events are POSTed to ``url``, signed: ``X-Twin-Signature: sha256=<HMAC-SHA256 of the body>``,
        the body carrying ``sent_ns`` and ``delivery`` for a replay window (README, "Webhooks"). The URL must
        lead to public addresses (or ones ``TWIN_WEBHOOK_ALLOW`` admits): 422 naming the address otherwise.
        The secret is shown once."""
        try:
            hook, secret = webhooks.create(reg, hooks.policy, p.tenant, p.actor, str(body.url))
        except webhooks.WebhookRefused as exc:
            raise Problem(422, "Webhook URL refused", f"url: {exc}",
                          errors=[{"where": "body.url", "msg": str(exc)}]) from None
        return WebhookCreated(**hook, secret=secret)

    @r.get("/webhooks", response_model=Page[WebhookOut], tags=["webhooks"])
    def list_webhooks(p: Admin, limit: int = Query(100, ge=1, le=1000),
                      cursor: str | None = None) -> Page[WebhookOut]:
        """The tenant's webhooks (URLs redacted), each with its deliveries pending and given up."""
        after = decode_cursor(cursor)
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise Problem(422, "Invalid request", "cursor: not a cursor this API issued")
        items, more = webhooks.list_page(reg, p.tenant, limit, after)
        return Page(items=[WebhookOut(**h) for h in items],
                    next_cursor=encode_cursor(items[-1]["id"]) if more else None)

    @r.delete("/webhooks/{hook_id}", status_code=204, tags=["webhooks"])
    def delete_webhook(hook_id: HookId, p: Admin) -> Response:
        """The webhook goes, with whatever it still had to deliver."""
        try:
            webhooks.remove(reg, p.tenant, p.actor, hook_id)
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        return Response(status_code=204)

    @r.post("/webhooks/{hook_id}/rotate", response_model=WebhookCreated, tags=["webhooks"])
    def rotate_webhook(hook_id: HookId, p: Admin) -> WebhookCreated:
        """A new secret, shown once; every attempt from now on is signed with it, retries of earlier events too."""
        try:
            hook, secret = webhooks.rotate(reg, p.tenant, p.actor, hook_id)
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        return WebhookCreated(**hook, secret=secret)

    @r.get("/audit", tags=["audit"], responses={200: {"content": {"application/x-ndjson": {
        "schema": {"type": "string"}, "example": '{"id": 1, "action": "site.create"}\n'}}}})
    def audit(p: Admin, limit: int = Query(100, ge=1, le=10_000), cursor: RowCursor = None,
              format: Literal["json", "ndjson"] = "json"):
        """The append-only audit trail, newest first; ``format=ndjson`` exports it line by line."""
        with reg.session() as s:
            q = select(AuditEntry).where(AuditEntry.tenant == p.tenant)
            if cursor is not None:
                q = q.where(AuditEntry.id < cursor)
            rows = list(s.scalars(q.order_by(AuditEntry.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        items = [{"id": e.id, "t_ns": e.t_ns, "actor": e.actor, "action": e.action, "target": e.target,
                  "reason": e.reason, "before": e.before, "after": e.after} for e in rows[:limit]]
        if format == "ndjson":
            return Response("".join(json.dumps(i) + "\n" for i in items), media_type="application/x-ndjson")
        return {"items": items, "next_cursor": encode_cursor(rows[limit - 1].id) if more else None}

    return r
