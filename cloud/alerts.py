"""Alerts: raised by rules with their evidence, one open alert per (asset, rule), acknowledged and
resolved by people, and announced on an MQTT topic and to signed webhooks.

The evidence (rule, window, values, thresholds) is stored with the alert so an auditor can see why it
fired without re-running anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import select

from cloud.registry import Alert, Registry, Webhook

log = logging.getLogger("cloud.alerts")

SIGNATURE_HEADER = "X-Twin-Signature"
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_ATTEMPTS = 4


class AlertError(ValueError):
    pass


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"id": a.id, "asset": a.asset, "rule": a.rule, "severity": a.severity, "state": a.state,
            "title": a.title, "evidence": a.evidence, "opened_ns": a.opened_ns, "last_seen_ns": a.last_seen_ns,
            "occurrences": a.occurrences, "acked_by": a.acked_by, "acked_ns": a.acked_ns,
            "resolved_by": a.resolved_by, "resolved_ns": a.resolved_ns, "note": a.note}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Delivers alert notifications off the caller's thread: MQTT (fire and forget, QoS 1) and webhooks
    (HMAC-SHA256 signed, retried with backoff, bounded by a timeout)."""

    def __init__(self, registry: Registry, publish: Callable[[str, bytes], None] | None = None) -> None:
        self.registry = registry
        self.publish = publish
        self._q: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.listeners: list[Callable[[str, dict], None]] = []  # in-process subscribers (live WebSocket hub)
        self.counters = {"webhooks_sent": 0, "webhooks_failed": 0, "mqtt_notifications": 0}
        self._http = httpx.Client(timeout=WEBHOOK_TIMEOUT_S)
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._thread.start()

    def notify(self, tenant: str, event: dict) -> None:
        self._q.put((tenant, event))

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued notifications are delivered (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        while True:
            tenant, event = self._q.get()
            try:
                self._deliver(tenant, event)
            except Exception:  # a notifier bug must not stop later notifications
                log.exception("alert notification failed")
            finally:
                self._q.task_done()

    def _deliver(self, tenant: str, event: dict) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        for listener in self.listeners:
            listener(tenant, event)
        if self.publish is not None:
            self.publish(f"twin/v1/{tenant}/alerts", body)
            self.counters["mqtt_notifications"] += 1
        with self.registry.session() as s:
            hooks = s.scalars(select(Webhook).where(Webhook.tenant == tenant, Webhook.active.is_(True))).all()
        for hook in hooks:
            self._post(hook.url, hook.secret, body)

    def _post(self, url: str, secret: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
        delay = 0.5
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                r = self._http.post(url, content=body, headers=headers)
                if r.status_code < 300:
                    self.counters["webhooks_sent"] += 1
                    return
                reason = f"HTTP {r.status_code}"
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    break  # the receiver refuses this payload: retrying will not help
            except httpx.HTTPError as exc:
                reason = str(exc)
            log.warning("webhook %s attempt %d failed: %s", url, attempt, reason)
            time.sleep(delay)
            delay *= 2
        self.counters["webhooks_failed"] += 1
        log.error("webhook %s: giving up", url)


_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class AlertService:
    def __init__(self, registry: Registry, notifier: Notifier | None = None) -> None:
        self.registry = registry
        self.notifier = notifier

    def raise_alert(self, tenant: str, asset: str, rule: str, severity: str, title: str, evidence: dict,
                    at_ns: int | None = None) -> tuple[int, bool]:
        """Open an alert, or refresh the open one for (asset, rule). Returns (id, newly opened).

        A refresh takes the new evidence and title and escalates the severity (never lowers it: a condition
        that got better is resolved, not downgraded), notifying ``alert.escalated`` when it rises — a trend
        alert that opened as "zone D in 60 days" must not still read medium a day before."""
        now = at_ns or time.time_ns()
        key = f"{asset}:{rule}"
        with self.registry.session() as s:
            a = s.scalar(select(Alert).where(Alert.tenant == tenant, Alert.dedup_key == key,
                                             Alert.state != "resolved").with_for_update())
            if a is not None:
                a.occurrences += 1
                a.last_seen_ns = max(a.last_seen_ns, now)
                a.evidence = evidence
                a.title = title
                escalated = _RANK.get(severity, 0) > _RANK.get(a.severity, 0)
                if escalated:
                    a.severity = severity
                s.flush()
                alert_id, out, refreshed = a.id, alert_dict(a), True
            else:
                a = Alert(tenant=tenant, asset=asset, rule=rule, dedup_key=key, severity=severity, state="open",
                          title=title, evidence=evidence, opened_ns=now, last_seen_ns=now, occurrences=1)
                s.add(a)
                s.flush()
                alert_id, out, escalated, refreshed = a.id, alert_dict(a), False, False
        if refreshed:
            if escalated and self.notifier is not None:
                self.notifier.notify(tenant, {"event": "alert.escalated", "alert": out})
            return alert_id, False
        if self.notifier is not None:
            self.notifier.notify(tenant, {"event": "alert.opened", "alert": out})
        return alert_id, True

    def transition(self, tenant: str, alert_id: int, to: str, actor: str, note: str = "") -> dict:
        """open → acknowledged → resolved (open → resolved allowed); anything else is refused."""
        allowed = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}
        with self.registry.session() as s:
            a = s.scalar(select(Alert).where(Alert.tenant == tenant, Alert.id == alert_id).with_for_update())
            if a is None:
                raise LookupError(f"no alert {alert_id}")
            if a.state not in allowed[to]:
                raise AlertError(f"alert {alert_id} is {a.state}; it cannot become {to}")
            before = alert_dict(a)
            now = time.time_ns()
            a.state = to
            if to == "acknowledged":
                a.acked_by, a.acked_ns = actor, now
            else:
                a.resolved_by, a.resolved_ns = actor, now
            if note:
                a.note = note
            self.registry.audit(s, tenant, actor, f"alert.{to}", f"alert:{alert_id}", reason=note,
                                before={"state": before["state"]}, after={"state": to})
            s.flush()
            out = alert_dict(a)
        if self.notifier is not None:
            self.notifier.notify(tenant, {"event": f"alert.{to}", "alert": out})
        return out
