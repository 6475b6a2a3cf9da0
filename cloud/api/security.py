"""What every request goes through: a body-size limit, a per-key rate limit, security headers, and
CORS only for origins the operator lists (closed by default). Key lookups are cached briefly so a busy
client costs no database round trip per request; a revoked key stops working within the cache time."""

from __future__ import annotations

import hashlib
import threading
import time

from fastapi import FastAPI
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
    """One bucket per key (hash); refilled continuously at ``rate`` up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._b: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 if allowed, else seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
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


def _key_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode(errors="replace").strip()
        if name == b"x-api-key":
            return value.decode(errors="replace")
    return None


class Guard:
    """ASGI middleware: size limit, rate limit, headers. Problems are answered in problem+json."""

    def __init__(self, app: ASGIApp, settings: CloudSettings, buckets: TokenBuckets) -> None:
        self.app, self.settings, self.buckets = app, settings, buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.api_max_body_bytes
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _problem(send, 413, "Payload too large", f"the body may be at most {limit} bytes")
            return
        key = _key_of(scope)
        if key is not None:
            wait = self.buckets.take(hashlib.sha256(key.encode()).hexdigest())
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
    app.add_middleware(Guard, settings=settings, buckets=TokenBuckets(settings.api_rate_per_s,
                                                                      settings.api_rate_burst))
