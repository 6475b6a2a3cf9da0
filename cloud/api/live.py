"""``/api/v1/live``: a WebSocket streaming telemetry and alerts of the assets a client subscribes to.

Authenticate with ``Authorization: Bearer <key>`` or ``?api_key=<key>`` (browsers cannot set headers on
a WebSocket). Send ``{"subscribe": ["trailer-001", ...]}`` / ``{"unsubscribe": [...]}``; receive
``{"type": "telemetry", ...}`` and ``{"type": "alert.opened", ...}`` messages. Assets of another tenant
are never delivered, whatever is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cloud.live import LiveClient


def get_router(platform) -> APIRouter:
    r = APIRouter()

    @r.websocket("/api/v1/live")
    async def live(ws: WebSocket) -> None:
        key = ws.query_params.get("api_key") or ""
        auth = ws.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        found = platform.registry.lookup_key(key) if key else None
        if found is None:
            await ws.close(code=4401, reason="unknown or missing API key")
            return
        await ws.accept()
        client = LiveClient(tenant=found.tenant, loop=asyncio.get_running_loop())
        platform.live.add(client)

        async def pump() -> None:
            while True:
                await ws.send_json(await client.queue.get())

        sender = asyncio.create_task(pump())
        try:
            while True:
                msg = await ws.receive_json()
                if not isinstance(msg, dict):
                    await ws.send_json({"type": "error", "detail": "send a JSON object"})
                    continue
                for key_, op in (("subscribe", client.assets.update), ("unsubscribe", client.assets.difference_update)):
                    assets = msg.get(key_)
                    if isinstance(assets, list) and all(isinstance(a, str) for a in assets):
                        op(assets[:1000])
                await ws.send_json({"type": "subscribed", "assets": sorted(client.assets)})
        except (WebSocketDisconnect, ValueError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await sender  # a closed tab ends the sender too: nothing to report
            platform.live.remove(client)

    return r
