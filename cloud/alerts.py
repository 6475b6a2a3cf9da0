"""Alerts: raised by rules with their evidence, one open alert per (asset, rule), acknowledged and
resolved by people, and announced on an MQTT topic and to signed webhooks (delivered by cloud/webhooks.py).

The evidence (rule, window, values, thresholds) is stored with the alert so an auditor can see why it
fired without re-running anything.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cloud.registry import Alert, Registry
from cloud.settings import CloudSettings
from cloud.webhooks import AddressPolicy, DeliverySettings, WebhookDispatcher

log = logging.getLogger("cloud.alerts")


class AlertError(ValueError):
    pass


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"id": a.id, "asset": a.asset, "rule": a.rule, "severity": a.severity, "state": a.state,
            "title": a.title, "evidence": a.evidence, "opened_ns": a.opened_ns, "last_seen_ns": a.last_seen_ns,
            "occurrences": a.occurrences, "acked_by": a.acked_by, "acked_ns": a.acked_ns,
            "resolved_by": a.resolved_by, "resolved_ns": a.resolved_ns, "note": a.note}


class Notifier:
    """Announces alert events off the caller's thread: to in-process listeners and on MQTT (QoS 1) here, in
    order, and to webhooks through ``self.webhooks`` — one delivery worker per tenant with durable retry
    state, so a slow or hung endpoint holds up neither this thread nor another tenant."""

    def __init__(self, registry: Registry, publish: Callable[[str, bytes], None] | None = None,
                 settings: CloudSettings | None = None) -> None:
        self.registry = registry
        self.publish = publish
        cfg = settings or CloudSettings()
        self.webhooks = WebhookDispatcher(registry, AddressPolicy(cfg.webhook_allow), DeliverySettings(
            timeout_s=cfg.webhook_timeout_s, max_attempts=cfg.webhook_max_attempts,
            retry_base_s=cfg.webhook_retry_base_s, retry_max_s=cfg.webhook_retry_max_s,
            smtp_host=cfg.smtp_host, smtp_port=cfg.smtp_port, smtp_from=cfg.smtp_from))
        self._q: queue.Queue[tuple[str, dict] | None] = queue.Queue()
        self.listeners: list[Callable[[str, dict], None]] = []  # in-process subscribers (live WebSocket hub)
        self._mqtt_count = 0
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._thread.start()

    @property
    def counters(self) -> dict[str, int]:
        return {**self.webhooks.counters, "mqtt_notifications": self._mqtt_count}

    def notify(self, tenant: str, event: dict) -> None:
        self._q.put((tenant, event))

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued notifications are handed on and no webhook delivery is due or under way (tests,
        shutdown); a delivery waiting for its retry time does not hold this up."""
        deadline = time.monotonic() + timeout_s
        while (self._q.unfinished_tasks or not self.webhooks.idle()) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        """Stop announcing; an attempt under way finishes (bounded by the webhook timeout), the rest stays
        pending in the registry for the next start."""
        self._q.put(None)
        self._thread.join(5)
        self.webhooks.close()

    def _run(self) -> None:
        self._sweep()  # what a previous run left pending
        next_sweep = time.monotonic() + self.webhooks.config.sweep_s
        while True:
            try:
                item = self._q.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                self._sweep()
                next_sweep = time.monotonic() + self.webhooks.config.sweep_s
                continue
            try:
                if item is None:
                    return
                self._deliver(*item)
            except Exception:  # a notifier bug must not stop later notifications
                log.exception("alert notification failed")
            finally:
                self._q.task_done()

    def _sweep(self) -> None:
        try:
            self.webhooks.sweep()
        except Exception:  # the registry away: the next sweep tries again
            log.exception("webhook sweep failed")

    def _deliver(self, tenant: str, event: dict) -> None:
        for listener in self.listeners:
            listener(tenant, event)
        if self.publish is not None:
            self.publish(f"twin/v1/{tenant}/alerts", json.dumps(event, separators=(",", ":")).encode())
            self._mqtt_count += 1
        self.webhooks.enqueue(tenant, event)


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
