"""The uplink: drains the outbox to the cloud broker at QoS 1; a row leaves only when the cloud has written it.

The broker's PUBACK is not the end: a broker that crashes (SIGKILL, OOM) loses what it acknowledged
since its last save. Ingest says what it has durably written on the gateway's ``committed`` topic
(``models.wire.Committed``), and only then is a row deleted. Until then it waits, acknowledged by the
broker, and is sent again:

- on every new connection (the broker may be a restarted one that lost it): everything not committed
  goes again, and the cloud drops what it already has by (gateway, epoch, seq) and says so again;
- when the cloud committed rows sent after it ``COMMIT_GRACE_S`` ago and not it (its commit, or the
  row itself, was lost on the way). A cloud that is away commits nothing, so nothing is resent for it.

How many rows may wait for their commit is bounded (``awaiting_max``): while the cloud is away the
outbox keeps the backlog, not the broker. In-flight messages are bounded too (paho hangs past 65,535
unacknowledged ids). Rows stored before epochs (no sequence number) still leave on PUBACK.

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
from edge.outbox import PRIORITY_EVENT, Outbox, OutboxRow
from models import topics
from models.wire import Committed, GatewayStatus, WireError, decode, encode

log = logging.getLogger("edge.uplink")

NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT 5 PUBACK reason: accepted, but no subscriber — for telemetry that means nobody stores it."""
REFUSED_RETRY_S = 5.0
COMMIT_GRACE_S = 10.0
"""How long after the cloud committed later rows a row still waiting for its own is sent again."""


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
        self.on_commands: Callable[[bytes], None] | None = None
        self._commands_topic = topics.commands(cfg.tenant, cfg.gateway)
        self._status_topic = topics.status(cfg.tenant, cfg.gateway)
        self._desired_topic = topics.config_desired(cfg.tenant, cfg.gateway)
        self._committed_topic = topics.committed(cfg.tenant, cfg.gateway)
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Owned by the drain thread; paho's callbacks only append to the two deques.
        self._inflight: dict[int, tuple[OutboxRow, int]] = {}  # mid -> (row, send number)
        self._acked: collections.deque[tuple[int, int]] = collections.deque()  # (mid, PUBACK reason code)
        self._commits: collections.deque[Committed] = collections.deque()
        self._awaiting: dict[int, int] = {}  # row id -> send number: acknowledged by the broker, not committed
        self._held: dict[int, float] = {}  # row id -> monotonic time before which it is not re-sent
        self._resend: set[int] = set()  # row ids to send again
        self._after = [-1, -1]  # per priority, the last row id handed out on this connection
        self._sends = 0
        self._committed_upto = -1  # the highest send number the cloud committed
        self._progress: collections.deque[tuple[float, int]] = collections.deque()  # (when, _committed_upto)
        self.awaiting_max = max(1024, 16 * cfg.max_inflight)
        self.commit_grace_s = COMMIT_GRACE_S
        self.stats = {"batches_sent": 0, "reconnects": 0, "publish_errors": 0, "publish_refused": 0,
                      "rows_committed": 0, "rows_resent": 0, "commits_other_epoch": 0, "awaiting_commit": 0}
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
        client.subscribe([(self._desired_topic, 1), (self._committed_topic, 1), (self._commands_topic, 1)])
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
        if msg.topic == self._committed_topic:
            try:
                self._commits.append(decode(msg.payload, Committed))
            except WireError as exc:
                log.warning("uplink: unreadable commit from the cloud: %s", exc)
            self._wake.set()
        elif msg.topic == self._desired_topic and self._on_desired is not None and msg.payload:
            self._on_desired(msg.payload)
        elif msg.topic == self._commands_topic and self.on_commands is not None and msg.payload:
            self.on_commands(msg.payload)

    # -- the drain loop ----------------------------------------------------------------------
    def _settle_acks(self) -> None:
        while self._acked:
            mid, code = self._acked.popleft()
            sent = self._inflight.pop(mid, None)
            if sent is None:
                continue
            row, n = sent
            if code >= 0x80 or code == NO_MATCHING_SUBSCRIBERS:
                # The broker took it but nobody will get it (or it refused): keep it and try again later.
                self.stats["publish_refused"] += 1
                self._held[row.id] = time.monotonic() + REFUSED_RETRY_S
                if self.stats["publish_refused"] % 100 == 1:
                    log.warning("uplink: broker answered PUBACK reason 0x%02x; the batch stays in the outbox", code)
                continue
            self.stats["batches_sent"] += 1
            if row.seq is None:
                self.outbox.ack(row.id)  # stored before epochs: the cloud has no way to name it
            else:
                self._awaiting[row.id] = n

    def _settle_commits(self, now: float) -> None:
        while self._commits:
            c = self._commits.popleft()
            if c.epoch != self.outbox.epoch:  # about an outbox that was here before this one
                self.stats["commits_other_epoch"] += 1
                continue
            gone = self.outbox.commit(c.epoch, c.telemetry, c.events)
            self.stats["rows_committed"] += len(gone)
            upto = self._committed_upto
            for row_id in gone:
                n = self._awaiting.pop(row_id, None)
                if n is not None:
                    upto = max(upto, n)
                self._resend.discard(row_id)
                self._held.pop(row_id, None)
            if gone and self._inflight:  # committed before its PUBACK came: nothing left to wait for
                done = set(gone)
                self._inflight = {mid: (r, n) for mid, (r, n) in self._inflight.items() if r.id not in done}
            if upto > self._committed_upto:
                self._committed_upto = upto
                self._progress.append((now, upto))

    def _find_lost(self, now: float) -> None:
        """Rows sent before some that the cloud committed ``commit_grace_s`` ago were lost on the way: again."""
        passed = -1
        while self._progress and self._progress[0][0] <= now - self.commit_grace_s:
            passed = self._progress.popleft()[1]
        if passed < 0:
            return
        lost = [row_id for row_id, n in self._awaiting.items() if n < passed]
        for row_id in lost:
            del self._awaiting[row_id]
        if lost:
            self._resend.update(lost)
            log.warning("uplink: %d row(s) sent before others the cloud committed are not committed; sending them "
                        "again", len(lost))

    def _new_connection(self) -> None:
        """Whatever was in flight may never be acknowledged, and what the broker acknowledged may be lost with
        a broker that restarted: everything not committed is sent again from the outbox (the cloud drops the
        duplicates by epoch and sequence and says so again)."""
        self.stats["rows_resent"] += len(self._awaiting) + len(self._inflight)
        self._inflight.clear()
        self._awaiting.clear()
        self._held.clear()
        self._resend.clear()
        self._progress.clear()
        self._after = [-1, -1]

    def _publish(self, row: OutboxRow) -> bool:
        info = self.client.publish(row.topic, row.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats["publish_errors"] += 1
            return False  # link just dropped: the row stays in the outbox
        self._inflight[info.mid] = (row, self._sends)
        self._sends += 1
        return True

    def _drain(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        connection = 0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            now = time.monotonic()
            self._settle_acks()
            self._settle_commits(now)
            self.stats["awaiting_commit"] = len(self._awaiting)
            if not self._connected.is_set():
                continue
            if connection != self._connects:
                connection = self._connects
                self._new_connection()
            if now >= next_status:
                next_status = now + self.cfg.status_interval_s
                self.publish_status("online")
            self._find_lost(now)
            free = min(self.cfg.max_inflight - len(self._inflight),
                       self.awaiting_max - len(self._inflight) - len(self._awaiting))
            if free <= 0:
                continue
            if self._held:
                due = [r for r, until in self._held.items() if until <= now]
                for r in due:
                    del self._held[r]
                self._resend.update(due)
            if self._resend:
                wanted = sorted(self._resend)[:free]
                self._resend.difference_update(wanted)
                again = self.outbox.rows(wanted)  # those not found were thinned, or committed meanwhile
                for i, row in enumerate(again):
                    if not self._publish(row):
                        self._resend.update(r.id for r in again[i:])
                        free = 0
                        break
                    self.stats["rows_resent"] += 1
                    free -= 1
            if free > 0:
                for row in self.outbox.pending_after(free, *self._after):
                    if not self._publish(row):
                        break
                    self._after[row.priority != PRIORITY_EVENT] = row.id
            self._settle_acks()
