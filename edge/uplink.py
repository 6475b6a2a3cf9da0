"""The uplink: drains the outbox to the cloud broker at QoS 1, deleting a row only on its PUBACK.

A publish counts as sent only when acknowledged, so the seconds after a link drop are not lost:
paho re-sends unacknowledged messages on reconnect and anything it never sent is still in the
outbox. In-flight messages are bounded (paho hangs past 65,535 unacknowledged ids).

Also owns the gateway's presence: a retained last will (offline) and birth (online) on the status
topic, periodic status with the health counters, and the desired-configuration subscription.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge.config import GatewayConfig
from edge.mqttlink import connect_async, make_client
from edge.outbox import Outbox
from models import topics
from models.wire import GatewayStatus, encode

log = logging.getLogger("edge.uplink")

NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT 5 PUBACK reason: accepted, but no subscriber — for telemetry that means nobody stores it."""
REFUSED_RETRY_S = 5.0


class Uplink:
    def __init__(
        self,
        cfg: GatewayConfig,
        outbox: Outbox,
        counters: Callable[[], dict[str, int]],
        on_desired: Callable[[bytes], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self._counters = counters
        self._on_desired = on_desired
        self._status_topic = topics.status(cfg.tenant, cfg.gateway)
        self._desired_topic = topics.config_desired(cfg.tenant, cfg.gateway)
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # mid -> outbox row id
        self._acked: collections.deque[tuple[int, int]] = collections.deque()  # (mid, PUBACK reason code)
        self._held: dict[int, float] = {}  # row id -> monotonic time before which it is not re-sent
        self.stats = {"batches_sent": 0, "reconnects": 0, "publish_errors": 0, "publish_refused": 0}
        self._connects = 0
        self.client = make_client(cfg.uplink, f"gw-{cfg.tenant}-{cfg.gateway}")
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.max_queued_messages_set(0)
        will = encode(GatewayStatus(tenant=cfg.tenant, gateway=cfg.gateway, state="offline"))
        self.client.will_set(self._status_topic, will, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail
        # paho's own errors name why a TLS broker dropped us ("certificate revoked", "unknown ca"...); its
        # debug lines stay below the agent's log level.
        self.client.enable_logger(logging.getLogger("edge.uplink.mqtt"))
        self._connect_failures = 0
        self._thread = threading.Thread(target=self._drain, name="uplink", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        connect_async(self.client, self.cfg.uplink)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (or time runs out); used on graceful shutdown."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.stats()["outbox_depth"] == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self._connected.is_set():
            self.publish_status("offline")
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- status ----------------------------------------------------------------------------
    def publish_status(self, state: str = "online") -> None:
        msg = GatewayStatus(
            tenant=self.cfg.tenant, gateway=self.cfg.gateway, state=state,  # type: ignore[arg-type]
            t_ns=time.time_ns(), config_version=self.cfg.version, counters=self._counters(),
            assets={a.id: a.type for a in self.cfg.assets},
        )
        self.client.publish(self._status_topic, encode(msg), qos=1, retain=True)

    # -- paho callbacks (network thread) -----------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("uplink: broker refused connection: %s", reason_code)
            return
        self._connects += 1
        if self._connects > 1:
            self.stats["reconnects"] += 1
        log.info("uplink: connected to %s", self.cfg.uplink.url)
        client.subscribe(self._desired_topic, qos=1)
        self._connected.set()
        self.publish_status("online")
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho retries with backoff (up to 30 s) and keeps the cause to itself: say where to look.
        self._connect_failures += 1
        if self._connect_failures % 20 == 1:
            tls = " or TLS handshake" if self.cfg.uplink.url.startswith("mqtts:") else ""
            log.warning("uplink: cannot connect to %s: TCP connect%s failed (%d so far); check that the broker is "
                        "reachable%s", self.cfg.uplink.url, tls, self._connect_failures,
                        ", that ca_file holds the CA that signed its certificate and that the certificate names "
                        "this host" if tls else "")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("uplink: disconnected (%s); outbox keeps everything until reconnect", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        # Only record; the drain thread owns the in-flight map (no lock shared with paho's).
        self._acked.append((mid, getattr(reason_code, "value", 0) if reason_code is not None else 0))
        self._wake.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._desired_topic and self._on_desired is not None and msg.payload:
            self._on_desired(msg.payload)

    # -- the drain loop ----------------------------------------------------------------------
    def _settle_acks(self) -> None:
        while self._acked:
            mid, code = self._acked.popleft()
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue
            if code >= 0x80 or code == NO_MATCHING_SUBSCRIBERS:
                # The broker took it but nobody will get it (or it refused): keep it and try again later.
                self.stats["publish_refused"] += 1
                self._held[row_id] = time.monotonic() + REFUSED_RETRY_S
                if self.stats["publish_refused"] % 100 == 1:
                    log.warning("uplink: broker answered PUBACK reason 0x%02x; the batch stays in the outbox", code)
                continue
            self.outbox.ack(row_id)
            self.stats["batches_sent"] += 1

    def _drain(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        epoch = 0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            self._settle_acks()
            now = time.monotonic()
            if not self._connected.is_set():
                continue
            if epoch != self._connects:
                # New connection: whatever was in flight may never be acknowledged; send it again
                # from the outbox (the cloud drops duplicates by sequence number).
                epoch = self._connects
                self._inflight.clear()
            if now >= next_status:
                next_status = now + self.cfg.status_interval_s
                self.publish_status("online")
            free = self.cfg.max_inflight - len(self._inflight)
            if free <= 0:
                continue
            if self._held:
                self._held = {r: until for r, until in self._held.items() if until > now}
            for row in self.outbox.pending(free, skip={*self._inflight.values(), *self._held}):
                info = self.client.publish(row.topic, row.payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self.stats["publish_errors"] += 1
                    break  # link just dropped: the row stays in the outbox
                self._inflight[info.mid] = row.id
            self._settle_acks()
