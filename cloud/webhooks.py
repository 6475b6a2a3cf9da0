"""Alert webhooks: which addresses a webhook may reach, how a delivery is signed, and who delivers it.

A webhook URL is chosen by a tenant's admin, so it is hostile input aimed at our own network: every
address its host resolves to is checked (loopback, private, link-local, multicast, unspecified, reserved
and cloud-metadata addresses are refused unless ``TWIN_WEBHOOK_ALLOW`` admits them), at registration and
again at every delivery, and the delivery connects to the very address that was checked — no second DNS
lookup for a rebinding resolver to answer differently — with no proxy and no redirect followed.

Each tenant has its own delivery worker, so one tenant's hung endpoint delays only that tenant's alerts.
What is still to be delivered lives in the registry (``webhook_deliveries``: attempts, next try, last
error), so a restart, or another process, resumes it. The body carries its own ``sent_ns`` and
``delivery`` id under the HMAC, which lets a receiver refuse replays (README, "Webhooks").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy import delete, func, select, update

from cloud.registry import Registry, Webhook, WebhookDelivery

log = logging.getLogger("cloud.webhooks")

SIGNATURE_HEADER = "X-Twin-Signature"
TIMESTAMP_HEADER = "X-Twin-Timestamp"
DELIVERY_HEADER = "X-Twin-Delivery"
EVENT_HEADER = "X-Twin-Event"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",    # AWS ECS task metadata
    "fd00:ec2::254",    # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud (Python counts it as global)
    "168.63.129.16",    # Azure WireServer: a public address that answers only inside Azure
))
"""Refused even when a host-name entry of the allow-list admits the host: only a network entry that
contains one of these admits it."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class WebhookRefused(ValueError):
    """A webhook URL, or one of the addresses it resolves to, that the policy refuses; the message says why
    without the URL's credentials."""


class WebhookUnresolved(WebhookRefused):
    """The host does not resolve (now): refused at registration, retried later at delivery."""


def forbidden_reason(addr: IpAddress) -> str | None:
    """Why ``addr`` is no place to send a webhook, or None for a public address. An IPv6 address that
    embeds an IPv4 one (mapped, 6to4, NAT64) is judged by the IPv4 address it leads to."""
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and any(addr in n for n in _NAT64):
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None:
            return forbidden_reason(inner)
    for reason, flag in (("a loopback", addr.is_loopback), ("a link-local", addr.is_link_local),
                         ("a multicast", addr.is_multicast), ("an unspecified", addr.is_unspecified),
                         ("a reserved", addr.is_reserved), ("a private", addr.is_private)):
        if flag:
            return f"{reason} address"
    if not addr.is_global:
        return "not a globally routable address"
    return None


def parse_allow(entries: Iterable[str]) -> tuple[tuple[IpNetwork, ...], frozenset[str]]:
    """``TWIN_WEBHOOK_ALLOW`` entries: networks (``10.1.0.0/16``, ``127.0.0.1``) or exact host names
    (``hooks.plant.internal``). Raises ValueError naming a bad entry."""
    nets: list[IpNetwork] = []
    hosts: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", entry):
            raise ValueError(f"TWIN_WEBHOOK_ALLOW: {raw!r} is neither a network (10.0.0.0/8, 127.0.0.1) "
                             "nor a host name")
        hosts.add(entry)
    return tuple(nets), frozenset(hosts)


_TOKENISH = re.compile(r"[A-Za-z0-9_\-]{16,}")


def redact(url: str) -> str:
    """``url`` fit for a log or an API answer: no userinfo, query values masked, no fragment, and long
    token-like path segments (Slack's and Discord's hook URLs keep their secret there) masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    segments = ["***" if _TOKENISH.fullmatch(seg) and re.search(r"[0-9A-Z]", seg) else seg
                for seg in parts.path.split("/")]
    query = "&".join(f"{kv.partition('=')[0]}=***" for kv in parts.query.split("&") if kv)
    return f"{parts.scheme}://{netloc}{'/'.join(segments)}" + (f"?{query}" if query else "")


def _scrub(text: str, url: str) -> str:
    """An error message with whatever secret of ``url`` it might quote (password, query values) masked."""
    try:
        parts = urlsplit(url)
        secret_bits = [parts.password or "", parts.username or ""]
    except ValueError:
        return text
    secret_bits += [kv.partition("=")[2] for kv in parts.query.split("&")]
    for bit in sorted({b for b in secret_bits if len(b) >= 3} | {unquote(b) for b in secret_bits if len(b) >= 3},
                      key=len, reverse=True):
        text = text.replace(bit, "***")
    return text.replace(url, redact(url))


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: where to connect (``addresses``, each one checked) and what to say
    there (``host_header``, ``sni`` for TLS, the credentials from the URL's userinfo)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    host_header: str
    addresses: tuple[str, ...]
    authorization: str | None

    def url_for(self, address: str) -> httpx.URL:
        return httpx.URL(scheme=self.scheme, host=address, port=self.port, raw_path=self.path.encode("ascii"))


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


class AddressPolicy:
    """Which destinations webhooks may reach: public addresses, plus what the allow-list admits."""

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver = resolve) -> None:
        self.networks, self.hosts = parse_allow(allow)
        self.resolver = resolver

    def admits(self, host: str, addr: IpAddress) -> str | None:
        """None when ``addr`` (one of ``host``'s addresses) may be reached, else why not."""
        if any(addr.version == n.version and addr in n for n in self.networks):
            return None
        reason = forbidden_reason(addr)
        if reason is None or (host in self.hosts and addr not in METADATA_ADDRESSES):
            return None
        return reason

    def check(self, url: str) -> Target:
        """Parse ``url``, resolve its host and check every address; raises WebhookRefused saying why."""
        try:
            u = httpx.URL(url)
            scheme, host, port = u.scheme, u.raw_host.decode("ascii").lower().rstrip("."), u.port
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise WebhookRefused(f"not a URL ({type(exc).__name__})") from None
        if scheme not in ("http", "https"):
            raise WebhookRefused(f"scheme {scheme!r}: only http and https")
        if not host:
            raise WebhookRefused("no host")
        port = port or (443 if scheme == "https" else 80)
        try:
            literal: IpAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        try:
            addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookUnresolved(f"host {host} does not resolve ({_first_line(exc)})") from None
        if not addresses:
            raise WebhookUnresolved(f"host {host} does not resolve")
        for a in addresses:
            reason = self.admits(host, ipaddress.ip_address(a))
            if reason is not None:
                shown = host if literal is not None else f"{host} resolves to {a}, which"
                raise WebhookRefused(f"{shown} is {reason}; TWIN_WEBHOOK_ALLOW can admit it")
        auth = None
        if u.userinfo:
            auth = "Basic " + base64.b64encode(unquote(u.userinfo.decode("ascii")).encode()).decode()
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if u.port is None else f"{bracketed}:{port}"
        path = u.raw_path.decode("ascii") or "/"
        return Target(url, scheme, host, port, path, host_header, tuple(addresses), auth)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Twin-Signature`` value: HMAC-SHA256 of the exact body, which holds ``sent_ns``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


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
            error = f"connect {address}: {_first_line(exc) or type(exc).__name__}"
            continue
        except httpx.HTTPError as exc:
            return Outcome(False, True, f"{type(exc).__name__}: {_first_line(exc)}")
        status = response.status_code
        if status < 300:
            return Outcome(True, False)
        if status < 400:
            where = response.headers.get("location", "")
            return Outcome(False, False, f"HTTP {status}: redirect to {redact(where)} not followed")
        # The receiver refuses this payload: retrying will not help, except for these.
        return Outcome(False, status in (408, 425, 429) or status >= 500, f"HTTP {status}")
    return Outcome(False, True, error)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


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
        """One pending delivery per active webhook of ``tenant``, due now; returns how many."""
        now = time.time_ns()
        with self.registry.session() as s:
            hooks = list(s.scalars(select(Webhook.id).where(Webhook.tenant == tenant, Webhook.active.is_(True))))
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

    def _claim(self, tenant: str) -> tuple[WebhookDelivery, str, str] | None:
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
                return row, hook.url, hook.secret

    def _attempt(self, row: WebhookDelivery, url: str, secret: str) -> None:
        attempt = row.attempts + 1
        try:
            target = self.policy.check(url)
            sent_ns = time.time_ns()
            body = json.dumps({**row.event, "delivery": row.id, "sent_ns": sent_ns}, separators=(",", ":")).encode()
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
            outcome = Outcome(False, True, f"{type(exc).__name__}: {_first_line(exc)}")
        self._record(row, url, attempt, outcome)

    def _record(self, row: WebhookDelivery, url: str, attempt: int, outcome: Outcome) -> None:
        now = time.time_ns()
        error = _scrub(outcome.error, url)
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


# -- the webhooks themselves (what the API routes call) --------------------------------------------
def webhook_dict(h: Webhook, pending: int = 0, failed: int = 0) -> dict[str, Any]:
    """A webhook as the API shows it: the URL redacted, never the secret."""
    return {"id": h.id, "url": redact(h.url), "active": h.active, "created_ns": h.created_ns,
            "rotated_ns": h.rotated_ns, "last_delivered_ns": h.last_delivered_ns, "last_error": h.last_error,
            "pending": pending, "failed": failed}


def create(registry: Registry, policy: AddressPolicy, tenant: str, actor: str, url: str) -> tuple[dict, str]:
    """Register a webhook after checking where its URL leads; (webhook, secret shown once)."""
    policy.check(url)
    secret = new_secret()
    with registry.session() as s:
        h = Webhook(tenant=tenant, url=url, secret=secret, active=True, created_ns=time.time_ns(), last_error="")
        s.add(h)
        s.flush()
        registry.audit(s, tenant, actor, "webhook.create", f"webhook:{h.id}", after={"url": redact(url)})
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
