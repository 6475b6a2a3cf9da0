"""What every request goes through: a body-size limit, a rate limit, security headers, and CORS only for
origins the operator lists (closed by default).

The rate limit is per identity: the API key that authentication uses (``Authorization: Bearer`` before
``X-API-Key``, read by :func:`presented_key` for both), or the client's address when the request carries no key
that is valid. So a valid key cannot escape its bucket by adding a rotating second header, and neither
anonymous requests nor made-up keys go unlimited. The key is looked up here, once per request, and handed on to
authentication (``cloud.api.auth``). Lookups are cached briefly so a busy client costs no database round trip
per request; a revoked key stops working within the cache time (at once in the process that revoked it)."""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.settings import CloudSettings

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class TokenBuckets:
    """One bucket per identity; refilled continuously at ``rate`` up to ``burst``. Buckets that have refilled
    are forgotten once there are ``max_buckets`` (a client rotating its address costs memory only while its
    buckets are short of tokens)."""

    def __init__(self, rate: float, burst: int, max_buckets: int = 100_000) -> None:
        self.rate, self.burst, self.max_buckets = rate, burst, max_buckets
        self._b: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 if allowed, else seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            if who not in self._b and len(self._b) >= self.max_buckets:
                full_after = self.burst / self.rate
                self._b = {k: v for k, v in self._b.items() if now - v[1] < full_after}
            tokens, last = self._b.get(who, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._b[who] = (tokens - 1, now)
                return 0.0
            self._b[who] = (tokens, now)
            return (1 - tokens) / self.rate


MISS = object()


class KeyCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl = ttl_s
        self._c: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str):
        """The key's cached lookup, or ``MISS`` (never looked up, or longer ago than the TTL)."""
        h = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            hit = self._c.get(h)
        return hit[1] if hit and time.monotonic() - hit[0] < self.ttl else MISS

    def forget(self, key_id: str) -> None:
        """Drop a key's lookup (it was revoked here): its next request is looked up again."""
        with self._lock:
            self._c = {h: hit for h, hit in self._c.items() if getattr(hit[1], "id", None) != key_id}

    def get(self, key: str, load):
        h = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._c.get(h)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = load(key)
        with self._lock:
            if len(self._c) > 10_000:
                self._c.clear()
            self._c[h] = (now, value)
        return value


LOOKED_UP = "api_key_lookup"
"""Where the guard leaves ``(key, ApiKey or None)`` in the request's state for authentication."""


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key a request authenticates with: the ``Authorization: Bearer`` value when that header is there
    (any other scheme: none), else ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None
    return x_api_key or None


def socket_key(scope: Scope) -> str | None:
    """A live socket's key: ``Authorization: Bearer``, else ``?api_key=`` (browsers cannot set headers on a
    WebSocket)."""
    headers = Headers(scope=scope)
    return presented_key(headers.get("authorization"), None) or QueryParams(scope["query_string"]).get("api_key")


def client_identity(scope: Scope) -> str:
    """The bucket of a request without a valid key: its address (an IPv6 client by its /64, which one host
    usually holds whole)."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"addr:{host}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"net:{ipaddress.ip_network((ip, 64), strict=False)}"
    return f"addr:{ip}"


class Guard:
    """ASGI middleware: size limit, rate limit, headers. Problems are answered in problem+json."""

    def __init__(self, app: ASGIApp, settings: CloudSettings, buckets: TokenBuckets, keys: KeyCache,
                 lookup: Any) -> None:
        self.app, self.settings, self.buckets, self.keys, self.lookup = app, settings, buckets, keys, lookup

    async def _wait(self, scope: Scope, key: str | None) -> float:
        """Seconds this request must wait (0: go on), charged to its key or its address. A key not in the cache
        is looked up only once its address has a token: made-up keys cost the database as much as the address
        may ask, and no more."""
        if not key:
            return self.buckets.take(client_identity(scope))
        found, address_paid = self.keys.cached(key), False
        if found is MISS:
            wait = self.buckets.take(client_identity(scope))
            if wait > 0:
                return wait
            found, address_paid = await run_in_threadpool(self.keys.get, key, self.lookup), True
        scope.setdefault("state", {})[LOOKED_UP] = (key, found)
        if found is not None:
            return self.buckets.take(f"key:{found.id}")
        return 0.0 if address_paid else self.buckets.take(client_identity(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Opening a live socket counts as a request.
        if scope["type"] == "websocket" and await self._wait(scope, socket_key(scope)) > 0:
            await receive()  # websocket.connect; a close before accept refuses the handshake
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limit: try again later"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.api_max_body_bytes
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _problem(send, 413, "Payload too large", f"the body may be at most {limit} bytes")
            return
        headers = Headers(scope=scope)
        wait = await self._wait(scope, presented_key(headers.get("authorization"), headers.get("x-api-key")))
        if wait > 0:
            await _problem(send, 429, "Too many requests", f"rate limit: retry in {wait:.2f} s",
                           [(b"retry-after", str(max(1, round(wait))).encode())])
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # No Content-Length (chunked): read it all here, up to the limit, then hand it on.
            chunks, seen, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] != "http.request":
                    return
                chunks.append(msg.get("body", b""))
                seen += len(chunks[-1])
                more = msg.get("more_body", False)
                if seen > limit:
                    await _problem(send, 413, "Payload too large", f"the body may be at most {limit} bytes")
                    return
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            receive = replay

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        await self.app(scope, receive, with_headers)


async def _problem(send: Send, status: int, title: str, detail: str, extra=()) -> None:
    import json

    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: CloudSettings) -> None:
    if settings.api_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-Match"],
                           expose_headers=["ETag"])
    app.add_middleware(Guard, settings=settings, buckets=TokenBuckets(settings.api_rate_per_s, settings.api_rate_burst),
                       keys=app.state.key_cache, lookup=app.state.platform.registry.lookup_key)
