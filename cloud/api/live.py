"""``/api/v1/live``: a WebSocket streaming telemetry and alerts of the assets a client subscribes to.

Authenticate with ``Authorization: Bearer <key>`` or ``?api_key=<key>`` (browsers cannot set headers on
a WebSocket). Send ``{"subscribe": ["trailer-001", ...]}`` / ``{"unsubscribe": [...]}``; receive
``{"type": "telemetry", ...}`` and ``{"type": "alert.opened", ...}`` messages. Assets of another tenant
are never delivered, whatever is asked for.

A socket lives no longer than its key: when the key is revoked the socket is closed with code 4401 and the
reason ``API key revoked`` — at once when this process revoked it, else within ``api_key_cache_s`` (all open
sockets' keys are checked in one registry query per interval, whichever API process revoked them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from cloud.api.security import MISS, socket_key
from cloud.live import LiveClient
from cloud.people import people_among
from cloud.registry import ApiKey, Registry
from cloud.sharing import CUSTOMER

log = logging.getLogger("cloud.api.live")
CLOSE_UNAUTHORIZED = 4401
"""4000 + HTTP 401: no valid key (unknown, missing, or revoked while the socket was open; the reason says which)."""
CLOSE_NOT_FOUND = 4404
"""4000 + HTTP 404: a customer key, to which only its shared assets' view exists (``cloud.api.sharing``)."""


class Revocations:
    """Which open sockets' keys have been revoked: an event per socket, set by :meth:`revoked` (this process
    revoked the key) or by a poll of the registry every ``interval_s`` while sockets are open (another did)."""

    def __init__(self, registry: Registry, interval_s: float) -> None:
        self.registry, self.interval_s = registry, interval_s
        self._events: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task | None = None

    def watch(self, key_id: str) -> asyncio.Event:
        """An event set when ``key_id`` is revoked (on the event loop)."""
        event = asyncio.Event()
        self._events.setdefault(key_id, set()).add(event)
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._loop is not loop:
            self._loop, self._poller = loop, loop.create_task(self._poll())
        return event

    def unwatch(self, key_id: str, event: asyncio.Event) -> None:
        events = self._events.get(key_id, set())
        events.discard(event)
        if not events:
            self._events.pop(key_id, None)

    def revoked(self, key_id: str) -> None:
        """This process revoked ``key_id``: its sockets close now (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set, key_id)

    def _set(self, key_id: str) -> None:
        for event in self._events.get(key_id, ()):
            event.set()

    async def _poll(self) -> None:
        while self._events:
            await asyncio.sleep(self.interval_s)
            ids = list(self._events)
            try:
                valid = await run_in_threadpool(self._valid, ids)
            except Exception as exc:  # the registry away: sockets stay open, asked again next interval
                log.warning("live: could not check %d keys for revocation (%s)", len(ids), str(exc).splitlines()[0])
                continue
            for key_id in set(ids) - valid:
                self._set(key_id)

    def _valid(self, ids: list[str]) -> set[str]:
        with self.registry.session() as s:
            return set(s.scalars(select(ApiKey.id).where(ApiKey.id.in_(ids), ApiKey.revoked.is_(False))))


def get_router(platform) -> APIRouter:
    r = APIRouter()

    @r.websocket("/api/v1/live")
    async def live(ws: WebSocket) -> None:
        key = socket_key(ws.scope)
        state = ws.app.state
        found = state.key_cache.cached(key) if key else None
        if found is MISS:
            found = await run_in_threadpool(state.key_cache.get, key, platform.registry.lookup_key)
        await ws.accept()  # then closed with a code a browser can read (a refused handshake reaches it as 1006)
        if found is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="unknown, revoked or missing API key")
            return
        if found.role == CUSTOMER:  # a grantee's key: not a route of its view (cloud.sharing)
            await ws.close(code=CLOSE_NOT_FOUND, reason="not found")
            return
        client = LiveClient(tenant=found.tenant, loop=asyncio.get_running_loop())
        platform.live.add(client)
        revocations: Revocations = state.revocations
        revoked = revocations.watch(found.id)

        closed_for_revocation = False
        async with anyio.create_task_group() as tasks:

            async def pump() -> None:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # a closed tab ends the sender too
                    while True:
                        await ws.send_json(await client.queue.get())
                tasks.cancel_scope.cancel()

            async def close_on_revocation() -> None:
                nonlocal closed_for_revocation
                await revoked.wait()
                closed_for_revocation = True
                tasks.cancel_scope.cancel()

            tasks.start_soon(pump)
            tasks.start_soon(close_on_revocation)
            try:
                with contextlib.suppress(WebSocketDisconnect, ValueError):  # gone, or not JSON: the socket ends
                    while True:
                        msg = await ws.receive_json()
                        if not isinstance(msg, dict):
                            await ws.send_json({"type": "error", "detail": "send a JSON object"})
                            continue
                        for key_, op in (("subscribe", client.assets.update),
                                         ("unsubscribe", client.assets.difference_update)):
                            assets = msg.get(key_)
                            if isinstance(assets, list) and all(isinstance(a, str) for a in assets):
                                assets = assets[:1000]
                                if key_ == "subscribe":  # a person's values are read through consent, audited
                                    people = await run_in_threadpool(people_among, platform.registry,
                                                                     found.tenant, assets)
                                    assets = [a for a in assets if a not in people]
                                op(assets)
                        await ws.send_json({"type": "subscribed", "assets": sorted(client.assets)})
            finally:
                tasks.cancel_scope.cancel()
                revocations.unwatch(found.id, revoked)
                platform.live.remove(client)
        if closed_for_revocation:
            log.info("live: key %s revoked; closing its socket", found.id)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await ws.close(code=CLOSE_UNAUTHORIZED, reason="API key revoked")

    return r
