"""Who delivers a webhook, and how it is signed. Each tenant has its own delivery worker, so one tenant's hung
endpoint delays only that tenant's alerts. What is still to be delivered lives in the registry
(``webhook_deliveries``: attempts, next try, last error), so a restart, or another process, resumes it. The body
carries its own ``sent_ns`` and ``delivery`` id under the HMAC, which lets a receiver refuse replays."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from cloud.registry import Asset, Registry, Webhook, WebhookDelivery
from cloud.webhooks.formats import asset_groups, chat_body, email_message, routed
from cloud.webhooks.targets import AddressPolicy, Target, WebhookRefused, WebhookUnresolved, first_line, redact, scrub

log = logging.getLogger("cloud.webhooks")

SIGNATURE_HEADER = "X-Twin-Signature"
TIMESTAMP_HEADER = "X-Twin-Timestamp"
DELIVERY_HEADER = "X-Twin-Delivery"
EVENT_HEADER = "X-Twin-Event"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Twin-Signature`` value: HMAC-SHA256 of the exact body, which holds ``sent_ns``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retry: bool
    error: str = ""


@dataclass(frozen=True)
class DeliverySettings:
    timeout_s: float = 5.0
    max_attempts: int = 12
    retry_base_s: float = 2.0
    retry_max_s: float = 900.0
    sweep_s: float = 30.0
    """How often a process looks for due deliveries it was not told about (another process died holding them)."""
    idle_exit_s: float = 300.0
    smtp_host: str = ""
    """E-mail channels' relay (``TWIN_SMTP_HOST``); empty: an e-mail delivery is given up, saying so."""
    smtp_port: int = 25
    smtp_from: str = "assettwin@localhost"

    @property
    def lease_ns(self) -> int:
        """How long a claimed delivery is left to its process: one attempt on up to two addresses and more."""
        return int((30 + 8 * self.timeout_s) * 1e9)


_SSL = ssl.create_default_context()


def post(target: Target, body: bytes, headers: dict[str, str], timeout_s: float) -> Outcome:
    """One delivery attempt to the checked addresses (the next one only when connecting failed), through a
    bare transport: no proxy from the environment, no redirect, no pooled connection (a pooled TLS
    connection is keyed by address and would be reused for another host name on it)."""
    sent_headers = {**headers, "Host": target.host_header}
    if target.authorization:
        sent_headers["Authorization"] = target.authorization
    extensions: dict[str, Any] = {"timeout": httpx.Timeout(timeout_s).as_dict()}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    error = ""
    for address in target.addresses[:2]:
        request = httpx.Request("POST", target.url_for(address), headers=sent_headers, content=body,
                                extensions=extensions)
        try:
            with httpx.HTTPTransport(verify=_SSL, retries=0) as transport:
                response = transport.handle_request(request)
                response.close()
        except httpx.ConnectError as exc:
            error = f"connect {address}: {first_line(exc) or type(exc).__name__}"
            continue
        except httpx.HTTPError as exc:
            return Outcome(False, True, f"{type(exc).__name__}: {first_line(exc)}")
        status = response.status_code
        if status < 300:
            return Outcome(True, False)
        if status < 400:
            where = response.headers.get("location", "")
            return Outcome(False, False, f"HTTP {status}: redirect to {redact(where)} not followed")
        # The receiver refuses this payload: retrying will not help, except for these.
        return Outcome(False, status in (408, 425, 429) or status >= 500, f"HTTP {status}")
    return Outcome(False, True, error)


class _TenantWorker:
    """Delivers one tenant's due deliveries in order, then sleeps until the next is due or it is poked."""

    def __init__(self, dispatcher: WebhookDispatcher, tenant: str) -> None:
        self.dispatcher, self.tenant = dispatcher, tenant
        self.cond = threading.Condition()
        self.pokes = 0
        self.idle = False
        self.thread = threading.Thread(target=self._run, name=f"webhooks-{tenant}", daemon=True)

    def poke(self) -> None:
        with self.cond:
            self.pokes += 1
            self.idle = False
            self.cond.notify()

    def _run(self) -> None:
        d = self.dispatcher
        while not d.stopping.is_set():
            with self.cond:
                seen = self.pokes
            try:
                next_ns = d.deliver_due(self.tenant)
            except Exception:  # the registry away: keep the worker, try again shortly
                log.exception("webhook deliveries of tenant %s: registry error; retrying in 5 s", self.tenant)
                next_ns = time.time_ns() + 5_000_000_000
            with self.cond:
                if self.pokes != seen:
                    continue
                wait_s = d.config.idle_exit_s if next_ns is None else (next_ns - time.time_ns()) / 1e9
                if wait_s <= 0:
                    continue
                self.idle = True  # nothing due now: what drain() waits for
                self.cond.wait(timeout=wait_s)
                if self.pokes != seen:
                    continue
                self.idle = False  # a retry is due, or nothing came for idle_exit_s
            if next_ns is None and d.retire(self, seen):
                return


class WebhookDispatcher:
    """Per-tenant delivery workers over the durable ``webhook_deliveries`` rows.

    A row's ``next_try_ns`` is also its lease: whoever claims a due row moves it ahead by the lease first,
    so two processes never deliver it at once, and one that dies while delivering leaves it to be retried
    after the lease."""

    def __init__(self, registry: Registry, policy: AddressPolicy, config: DeliverySettings | None = None) -> None:
        self.registry, self.policy = registry, policy
        self.config = config or DeliverySettings()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _TenantWorker] = {}
        self.counters = {"webhooks_sent": 0, "webhooks_failed": 0, "webhooks_retried": 0, "webhooks_refused": 0}

    # -- scheduling ------------------------------------------------------------------------------
    def enqueue(self, tenant: str, event: dict) -> int:
        """One pending delivery per active webhook of ``tenant`` whose route takes the event, due now; returns
        how many."""
        now = time.time_ns()
        with self.registry.session() as s:
            rows = list(s.execute(select(Webhook.id, Webhook.min_severity, Webhook.asset_group).where(
                Webhook.tenant == tenant, Webhook.active.is_(True))))
            groups: set[str] = set()
            if any(g for _, _, g in rows):
                asset = s.get(Asset, (tenant, str((event.get("alert") or {}).get("asset", ""))))
                groups = asset_groups(asset.site, asset.line, asset.type) if asset is not None else set()
            hooks = [hook_id for hook_id, sev, group in rows if routed(event, sev, group, groups)]
            for hook_id in hooks:
                s.add(WebhookDelivery(tenant=tenant, webhook_id=hook_id, event=event, state="pending", attempts=0,
                                      created_ns=now, next_try_ns=now, last_error=""))
        if hooks:
            self.poke(tenant)
        return len(hooks)

    def poke(self, tenant: str) -> None:
        """Wake the tenant's worker, starting one if it has none."""
        with self._lock:
            if self.stopping.is_set():
                return
            worker = self._workers.get(tenant)
            if worker is None:
                worker = self._workers[tenant] = _TenantWorker(self, tenant)
                worker.thread.start()
            worker.poke()

    def retire(self, worker: _TenantWorker, seen: int) -> bool:
        """A worker idle for ``idle_exit_s`` leaves, unless it was poked meanwhile (then it stays): poke()
        holds the same lock, so no poke lands on a worker that is gone."""
        with self._lock:
            if worker.pokes != seen:
                return False
            if self._workers.get(worker.tenant) is worker:
                del self._workers[worker.tenant]
            return True

    def sweep(self) -> None:
        """Wake a worker for every tenant with pending deliveries (at start: what a previous run left), and
        forget deliveries given up more than a week ago."""
        now = time.time_ns()
        with self.registry.session() as s:
            tenants = list(s.scalars(select(WebhookDelivery.tenant).where(
                WebhookDelivery.state == "pending").distinct()))
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.state == "failed",
                                                    WebhookDelivery.next_try_ns < now - 7 * 86400 * 10**9))
        for tenant in tenants:
            self.poke(tenant)

    def idle(self) -> bool:
        with self._lock:
            workers = list(self._workers.values())
        return all(w.idle for w in workers)

    def close(self, timeout_s: float | None = None) -> None:
        self.stopping.set()
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for w in workers:
            w.poke()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.config.timeout_s * 2 + 1)
        for w in workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))

    # -- delivering ------------------------------------------------------------------------------
    def deliver_due(self, tenant: str) -> int | None:
        """Deliver the tenant's due deliveries, oldest first; returns when the next pending one is due."""
        while not self.stopping.is_set():
            claimed = self._claim(tenant)
            if claimed is None:
                break
            self._attempt(*claimed)
        with self.registry.session() as s:
            return s.scalar(select(func.min(WebhookDelivery.next_try_ns)).where(
                WebhookDelivery.tenant == tenant, WebhookDelivery.state == "pending"))

    def _claim(self, tenant: str) -> tuple[WebhookDelivery, str, str, str] | None:
        while True:
            now = time.time_ns()
            with self.registry.session() as s:
                row = s.scalar(select(WebhookDelivery).where(
                    WebhookDelivery.tenant == tenant, WebhookDelivery.state == "pending",
                    WebhookDelivery.next_try_ns <= now).order_by(WebhookDelivery.id).limit(1))
                if row is None:
                    return None
                taken = s.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == row.id, WebhookDelivery.state == "pending",
                    WebhookDelivery.next_try_ns == row.next_try_ns).values(next_try_ns=now + self.config.lease_ns))
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another process took it first
                hook = s.get(Webhook, row.webhook_id)
                if hook is None or hook.tenant != tenant:
                    s.delete(row)
                    continue
                return row, hook.url, hook.secret, hook.kind

    def _attempt(self, row: WebhookDelivery, url: str, secret: str, kind: str = "json") -> None:
        attempt = row.attempts + 1
        try:
            if kind == "email":
                outcome = self._mail(row, url.removeprefix("mailto:"))
            else:
                target = self.policy.check(url)
                sent_ns = time.time_ns()
                body = (json.dumps({**row.event, "delivery": row.id, "sent_ns": sent_ns}, separators=(",", ":"))
                        .encode() if kind == "json" else chat_body(kind, row.event))
                headers = {"Content-Type": "application/json", "User-Agent": "assettwin-webhooks/1",
                           SIGNATURE_HEADER: sign(secret, body), TIMESTAMP_HEADER: str(sent_ns),
                           DELIVERY_HEADER: str(row.id), EVENT_HEADER: str(row.event.get("event", ""))}
                outcome = post(target, body, headers, self.config.timeout_s)
        except WebhookUnresolved as exc:
            outcome = Outcome(False, True, str(exc))
        except WebhookRefused as exc:
            self._count("webhooks_refused")
            outcome = Outcome(False, False, f"refused: {exc}")
        except Exception as exc:  # counted as an attempt, so a delivery that trips a bug is given up, not looped
            outcome = Outcome(False, True, f"{type(exc).__name__}: {first_line(exc)}")
        self._record(row, url, attempt, outcome)

    def _mail(self, row: WebhookDelivery, to: str) -> Outcome:
        """One e-mail through the relay; a relay away or refusing for now (4xx) is retried, a 5xx is not."""
        c = self.config
        if not c.smtp_host:
            return Outcome(False, False, "no TWIN_SMTP_HOST: e-mail channels cannot deliver")
        try:
            with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.timeout_s) as smtp:
                smtp.send_message(email_message(c.smtp_from, to, row.event, row.id))
        except smtplib.SMTPResponseException as exc:
            said = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return Outcome(False, exc.smtp_code < 500, f"SMTP {exc.smtp_code}: {str(said)[:300]}")
        except smtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, False, f"SMTP refused {', '.join(exc.recipients)}")
        except (OSError, smtplib.SMTPException) as exc:
            return Outcome(False, True, f"SMTP {type(exc).__name__}: {first_line(exc)}")
        return Outcome(True, False)

    def _record(self, row: WebhookDelivery, url: str, attempt: int, outcome: Outcome) -> None:
        now = time.time_ns()
        error = scrub(outcome.error, url)
        give_up = not outcome.delivered and (not outcome.retry or attempt >= self.config.max_attempts)
        delay_s = min(self.config.retry_base_s * 2 ** (attempt - 1), self.config.retry_max_s) * random.uniform(0.8, 1.2)
        with self.registry.session() as s:
            hook = s.get(Webhook, row.webhook_id)
            if outcome.delivered:
                s.execute(delete(WebhookDelivery).where(WebhookDelivery.id == row.id))
                if hook is not None:
                    hook.last_delivered_ns, hook.last_error = now, ""
            else:
                s.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(
                    attempts=attempt, last_error=error, state="failed" if give_up else "pending",
                    next_try_ns=now if give_up else now + int(delay_s * 1e9)))
                if hook is not None:
                    hook.last_error = error
        where = f"webhook {row.webhook_id} of {row.tenant} ({redact(url)})"
        if outcome.delivered:
            self._count("webhooks_sent")
            log.info("%s: delivery %d sent (attempt %d)", where, row.id, attempt)
        elif give_up:
            self._count("webhooks_failed")
            log.error("%s: delivery %d given up after attempt %d: %s", where, row.id, attempt, error)
        else:
            self._count("webhooks_retried")
            log.warning("%s: delivery %d attempt %d failed: %s; next in %.1f s", where, row.id, attempt, error,
                        delay_s)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1
