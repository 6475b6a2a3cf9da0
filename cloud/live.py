"""Live updates for WebSocket clients: telemetry and alerts of the assets each client subscribed to.

Fed from the cloud link's MQTT subscription (a paho thread) and from the alert notifier; handed to
each client's asyncio queue on the API's event loop. A slow client loses its oldest updates (bounded
queue, counted) rather than slowing ingest or other clients: live views are for watching, history is
in the store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from models import topics
from models.wire import TelemetryBatch, WireError, decode

log = logging.getLogger("cloud.live")
QUEUE_LIMIT = 1000


@dataclass(eq=False)
class LiveClient:
    tenant: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    assets: set[str] = field(default_factory=set)
    dropped: int = 0

    def offer(self, msg: dict) -> None:
        """Called on the event loop."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(msg)


class LiveHub:
    def __init__(self) -> None:
        self._clients: set[LiveClient] = set()
        self._lock = threading.Lock()
        self.counters = {"live_clients": 0, "live_messages": 0}

    def add(self, client: LiveClient) -> None:
        with self._lock:
            self._clients.add(client)
            self.counters["live_clients"] = len(self._clients)

    def remove(self, client: LiveClient) -> None:
        with self._lock:
            self._clients.discard(client)
            self.counters["live_clients"] = len(self._clients)

    def _send(self, tenant: str, asset: str, msg: dict) -> None:
        with self._lock:
            targets = [c for c in self._clients if c.tenant == tenant and asset in c.assets]
        for c in targets:
            self.counters["live_messages"] += 1
            c.loop.call_soon_threadsafe(c.offer, msg)

    def on_telemetry(self, topic: str, payload: bytes) -> None:
        """MQTT handler for ``twin/v1/+/+/telemetry``."""
        with self._lock:
            if not self._clients:
                return  # nobody watching: do not even decode
        try:
            tenant = topics.parse(topic).tenant
            batch = decode(payload, TelemetryBatch)
        except (ValueError, WireError):
            return  # ingest dead-letters it; the live view just skips it
        # Numbers only: ``batch.text`` is as the gateway sent it, before ingest pseudonymises personal values.
        for s in batch.series:
            self._send(tenant, s.asset, {"type": "telemetry", "asset": s.asset, "point": s.point,
                                         "t_ns": s.t_ns, "values": s.values})

    def on_command(self, tenant: str, command: dict) -> None:
        """A command issued or moved forward in its lifecycle (``cloud.commands``)."""
        self._send(tenant, command.get("asset", ""), {"type": "command", "command": command})

    def on_alert(self, tenant: str, event: dict) -> None:
        alert = event.get("alert", {})
        self._send(tenant, alert.get("asset", ""), {"type": event.get("event", "alert"), "alert": alert})
