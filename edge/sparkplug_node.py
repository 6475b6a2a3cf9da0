"""The gateway as a Sparkplug B 3.0 edge node, so SCADA and historians consume its points as they are.

Each asset is a Sparkplug device; each point a metric with an alias fixed by the agent's point layout (numeric
points first, then text points), so DDATA carries aliases only. The node's session: bdSeq in the will (NDEATH)
and the NBIRTH, one more on every new MQTT connection and kept across restarts; NBIRTH then a DBIRTH per asset
with every point's last value (null when none yet); DDATA per asset each tick with what that tick read, in time
order; a rebirth whenever a host asks (NCMD ``Node Control/Rebirth``); NDEATH before an intentional disconnect.
Readings that come while the broker is away are not queued here: Sparkplug carries live state (a rebirth
restates it), and the outbox keeps every sample for the cloud.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt

from edge.buffer import Tick
from edge.config import GatewayConfig
from edge.mqttlink import connect_async, make_client
from models import sparkplug as spb
from models.wire import Quality

log = logging.getLogger("edge.sparkplug")

BDSEQ_FILE = "sparkplug-bdseq"
_QUALITY_BAD = 0  # Sparkplug's "Quality" property codes (specification 6.4.9.1): 0 bad, 192 good, 500 stale


class SparkplugEdgeNode:
    def __init__(self, cfg: GatewayConfig, points: list[tuple[str, str]], text_points: list[tuple[str, str]]) -> None:
        assert cfg.sparkplug is not None
        self.cfg = cfg.sparkplug
        self.group = self.cfg.group
        self.node_id = self.cfg.edge_node or cfg.gateway
        self._client_id = f"spb-{cfg.tenant}-{cfg.gateway}"
        self._bdseq_path = cfg.state_dir / BDSEQ_FILE
        self._bdseq = self._load_bdseq()
        self._will_bdseq = self._bdseq
        self._seq = 0
        self._born = False
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._layout(points, text_points)
        self.counts = {"sparkplug_births_sent": 0, "sparkplug_rebirths": 0, "sparkplug_data_sent": 0}

    def _layout(self, points: list[tuple[str, str]], text_points: list[tuple[str, str]]) -> None:
        """alias -> (asset, point, datatype): numeric point i of the agent's layout is alias i + 1, text points
        follow. ``_last`` (alias -> (t_ms, value)) is what a birth restates."""
        self._metrics = [(a, p, spb.DataType.Double) for a, p in points]
        self._metrics += [(a, p, spb.DataType.String) for a, p in text_points]
        self._text_alias = {(a, p): len(points) + 1 + j for j, (a, p) in enumerate(text_points)}
        self._devices: dict[str, list[int]] = {}
        for alias, (asset, _, _) in enumerate(self._metrics, start=1):
            self._devices.setdefault(asset, []).append(alias)
        self._last: dict[int, tuple[int, float | str]] = {}

    def relayout(self, points: list[tuple[str, str]], text_points: list[tuple[str, str]]) -> None:
        """The agent's assets changed (a desired configuration): new aliases, announced by a rebirth in the same
        session (same bdSeq) — a host must take a new NBIRTH as a fresh start."""
        with self._lock:
            self._layout(points, text_points)
            self._born = False
        if self._client is not None and self._client.is_connected():
            self._birth(self._client)

    # -- session ---------------------------------------------------------------------------
    def start(self) -> None:
        c = make_client(self.cfg.link, self._client_id, persistent=False)
        self._set_will(c)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        connect_async(c, self.cfg.link, persistent=False)

    def stop(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        with self._lock:
            if c.is_connected():
                # [tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath] NDEATH, then DISCONNECT
                c.publish(self._topic("NDEATH"), self._death(), qos=1).wait_for_publish(2.0)
            self._born = False
        c.disconnect()
        c.loop_stop()

    def _load_bdseq(self) -> int:
        try:
            return int(self._bdseq_path.read_text()) % 256
        except (OSError, ValueError):
            return 0

    def _set_will(self, c: mqtt.Client) -> None:
        """[tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq] the will carries this
        connection's bdSeq (Int64); the next connection's is one more, kept on disk so a restart moves on too."""
        self._will_bdseq = self._bdseq
        self._bdseq = (self._bdseq + 1) % 256
        try:
            self._bdseq_path.parent.mkdir(parents=True, exist_ok=True)
            self._bdseq_path.write_text(str(self._bdseq))
        except OSError as exc:
            log.warning("sparkplug bdSeq not kept in %s: %s", self._bdseq_path, exc)
        # [tck-id-message-flow-edge-node-birth-publish-will-message-qos] QoS 1, not retained
        c.will_set(self._topic("NDEATH"), self._death(), qos=1, retain=False)

    def _death(self) -> bytes:
        p = spb.new_payload(None, _now_ms())
        spb.add_metric(p, self._will_bdseq, name=spb.BDSEQ, datatype=spb.DataType.Int64)
        return p.SerializeToString()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("sparkplug edge node %s: broker refused connection: %s", self.node_id, reason_code)
            return
        # [tck-id-message-flow-edge-node-ncmd-subscribe] QoS 1, before the birth
        client.subscribe(self._topic("NCMD"), qos=1)
        self._birth(client)
        log.info("sparkplug edge node %s/%s: born (bdSeq %d, %d devices)", self.group, self.node_id,
                 self._will_bdseq, len(self._devices))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        with self._lock:
            self._born = False
        if self._client is client:
            self._set_will(client)  # paho's reconnect sends the will as it stands then

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            p = spb.decode(msg.payload)
        except spb.SparkplugError as exc:
            log.warning("sparkplug edge node %s: bad NCMD ignored: %s", self.node_id, exc)
            return
        if any(m.name == spb.REBIRTH and m.boolean_value for m in p.metrics):
            self.counts["sparkplug_rebirths"] += 1
            log.info("sparkplug edge node %s: rebirth requested", self.node_id)
            self._birth(client)

    def _birth(self, client: mqtt.Client) -> None:
        """NBIRTH (seq 0, bdSeq of this connection) then a DBIRTH per asset with every metric it will ever send
        ([tck-id-operational-behavior-data-publish-dbirth]) at its current value or null
        ([tck-id-operational-behavior-data-publish-dbirth-values])."""
        with self._lock:
            now = _now_ms()
            self._seq = 0
            p = spb.new_payload(0, now)
            # [tck-id-operational-behavior-data-commands-rebirth-action-3] the will's bdSeq, on a rebirth too
            spb.add_metric(p, self._will_bdseq, name=spb.BDSEQ, t_ms=now, datatype=spb.DataType.Int64)
            spb.add_metric(p, False, name=spb.REBIRTH, t_ms=now)
            # [tck-id-message-flow-edge-node-birth-publish-nbirth-qos] QoS 0, not retained
            client.publish(self._topic("NBIRTH"), p.SerializeToString(), qos=0)
            for asset, aliases in self._devices.items():
                p = spb.new_payload(self._next_seq(), now)
                for alias in aliases:
                    _, point, datatype = self._metrics[alias - 1]
                    t_ms, value = self._last.get(alias, (now, None))
                    spb.add_metric(p, value, name=point, alias=alias, t_ms=t_ms, datatype=datatype)
                client.publish(self._topic("DBIRTH", asset), p.SerializeToString(), qos=0)
            self._born = True
            self.counts["sparkplug_births_sent"] += 1

    # -- data ------------------------------------------------------------------------------
    def publish(self, tick: Tick, text: list[tuple[str, str, int, str]]) -> None:
        """One DDATA per asset that read something this tick; called by the agent's tick."""
        if not len(tick) and not text:
            return
        order = np.argsort(tick.t_ns, kind="stable")
        per_device: dict[str, list[tuple[int, int, float | str, int]]] = {}
        metrics = self._metrics
        for i, t, x, q in zip(tick.idx[order].tolist(), tick.t_ns[order].tolist(), tick.x[order].tolist(),
                              tick.quality[order].tolist(), strict=True):
            if i < len(metrics):  # a tick read in the layout before a relayout is not announced
                per_device.setdefault(metrics[i][0], []).append((i + 1, t // 1_000_000, x, q))
        for asset, point, t, v in sorted(text, key=lambda r: r[2]):
            alias = self._text_alias.get((asset, point))
            if alias is not None:
                per_device.setdefault(asset, []).append((alias, t // 1_000_000, v, Quality.GOOD))
        with self._lock:
            for _, rows in per_device.items():
                for alias, t_ms, v, _ in rows:
                    self._last[alias] = (t_ms, v)
            client = self._client
            if client is None or not self._born:
                return
            now = _now_ms()
            for asset, rows in per_device.items():
                p = spb.new_payload(self._next_seq(), now)
                add = p.metrics.add
                for alias, t_ms, v, q in rows:
                    # alias only, no name, no datatype ([tck-id-payloads-metric-datatype-not-req])
                    if q == Quality.GOOD and type(v) is float and v == v:  # the common case, 8x add_metric's speed
                        add(alias=alias, timestamp=t_ms, double_value=v)
                        continue
                    m = spb.add_metric(p, v, alias=alias, t_ms=t_ms, datatype=metrics[alias - 1][2], typed=False)
                    if q == Quality.BAD and not (isinstance(v, float) and math.isnan(v)):
                        m.properties.keys.append("Quality")
                        m.properties.values.add(type=spb.DataType.Int32, int_value=_QUALITY_BAD)
                client.publish(self._topic("DDATA", asset), p.SerializeToString(), qos=0)
                self.counts["sparkplug_data_sent"] += 1

    def _next_seq(self) -> int:
        """[tck-id-payloads-ddata-seq-inc] one more than the node's previous message, 255 wrapping to 0."""
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _topic(self, kind: str, device: str | None = None) -> str:
        return spb.topic(self.group, kind, self.node_id, device)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

