"""Sparkplug B 3.0 host application: the gateway reads a plant's Sparkplug edge nodes as a source.

It keeps every edge node's birth certificates (NBIRTH, DBIRTH) to resolve aliases and datatypes, checks each
node's ``seq`` (0-255, wrapping), and when it cannot trust what it holds — a gap, data before a birth — asks the
node to rebirth (NCMD ``Node Control/Rebirth``) rather than guess. A death (NDEATH whose ``bdSeq`` matches the
birth's, DDEATH) hands every point of that node or device on as bad quality, so nothing downstream keeps
trusting a value nobody vouches for. The host's own STATE is retained online while it runs and offline by its will.
Historical metrics (``is_historical``) keep their timestamps and are handed on as history, not as live readings.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge.config import SparkplugRule, SparkplugSource
from edge.mqttlink import connect_async, make_client
from edge.sources import Sink
from models import sparkplug as spb
from models.wire import Quality

log = logging.getLogger("edge.sources.sparkplug")

_ROUTE_CACHE_MAX = 100_000
_CONTROL = ("Node Control/", "Device Control/")


@dataclass
class _Node:
    """What the host knows of one edge node from its births; ``born`` False until an NBIRTH (again)."""

    born: bool = False
    seq: int = 0
    bdseq: int | None = None
    aliases: dict[int, tuple[str, int]] = field(default_factory=dict)  # alias -> (metric name, datatype)
    types: dict[tuple[str | None, str], int] = field(default_factory=dict)  # (device, name) -> datatype
    devices: set[str] = field(default_factory=set)
    points: dict[str | None, set[tuple[str, str]]] = field(default_factory=dict)  # device -> (asset, point) seen
    last_rebirth: float = -math.inf


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


class SparkplugHost:
    """One broker connection; ``start(sink)``/``stop()`` as every source."""

    def __init__(self, cfg: SparkplugSource, client_id: str, own_node: tuple[str, str] | None = None) -> None:
        """``own_node``: (group, edge node) this gateway publishes as, never read back (it would loop)."""
        self.name = cfg.name
        self._own_node = own_node
        self.cfg = cfg
        self._client_id = client_id
        self._client: mqtt.Client | None = None
        self._sink: Sink | None = None
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._routes: dict[tuple[str, str, str | None, str], tuple[str, str] | None] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._state_topic = spb.state_topic(cfg.host_id)
        self._state_t_ms = time.time_ns() // 1_000_000  # birth and will carry the same timestamp (3.0, 7.5)
        self._counts = {"messages": 0, "bad_payloads": 0, "unmapped": 0, "sparkplug_births": 0,
                        "sparkplug_deaths": 0, "sparkplug_seq_gaps": 0, "sparkplug_rebirths_requested": 0,
                        "sparkplug_historical": 0}

    # -- Source ------------------------------------------------------------------------------
    def start(self, sink: Sink) -> None:
        self._sink = sink
        # [tck-id-operational-behavior-host-application-connect-will] the will is the offline STATE, retained, QoS 1.
        # [tck-id-message-flow-phid-sparkplug-clean-session-311] a host's session is clean: births are asked for again.
        c = make_client(self.cfg.link, self._client_id, persistent=False)
        c.will_set(self._state_topic, spb.state_payload(False, self._state_t_ms), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        connect_async(c, self.cfg.link, persistent=False)

    def stop(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        self._stopping = True  # our own offline STATE comes back to us: not to be answered with online
        if c.is_connected():  # an intentional disconnect says offline itself: the broker sends no will then
            c.publish(self._state_topic, spb.state_payload(False, self._state_t_ms), qos=1, retain=True
                      ).wait_for_publish(2.0)
        c.disconnect()
        c.loop_stop()

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def mark(self) -> int:
        return 0  # a clean session has nothing to acknowledge late: a lost message is a rebirth away

    def commit(self, mark: int) -> None:
        return None

    # -- MQTT --------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("source %s: broker refused connection: %s", self.name, reason_code)
            return
        # [tck-id-host-topic-phid-birth-sub-required] own STATE and the edge nodes' topics first, then
        # [tck-id-host-topic-phid-birth-required] the birth (paho sends them in this order on one connection).
        edge_filter = f"{spb.NAMESPACE}/{self.cfg.group}/+/{self.cfg.edge_node}/#"
        client.subscribe([(self._state_topic, 1), (edge_filter, 1)])
        client.publish(self._state_topic, spb.state_payload(True, self._state_t_ms), qos=1, retain=True)
        log.info("source %s: connected, host %s online, subscribed %s", self.name, self.cfg.host_id, edge_filter)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        """Connection lost: nobody vouches for what the host holds. Every point it knows goes bad now, and every
        node must be born again (its next message brings a rebirth request)."""
        if self._stopping:
            return
        with self._lock:
            for node in self._nodes.values():
                if node.born:
                    node.born = False
                    for device in list(node.points):
                        self._stale(node, device, 0)
        log.warning("source %s: disconnected (%s): the edge nodes' points are stale until they are born again",
                    self.name, reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._counts["messages"] += 1
        if msg.topic == self._state_topic:
            self._own_state(client, msg.payload)
            return
        try:
            topic = spb.parse_topic(msg.topic)
            if topic.message_type in ("NCMD", "DCMD") or (topic.group, topic.edge_node) == self._own_node:
                return  # commands to edge nodes, not data; or this gateway's own edge node
            payload = spb.decode(msg.payload)
        except spb.SparkplugError as exc:
            self._bad(msg.topic, str(exc))
            return
        with self._lock:
            self._handle(topic, payload)

    def _own_state(self, client, raw: bytes) -> None:
        """[tck-id-message-flow-hid-sparkplug-state-message-delivered] another session's offline STATE
        (a will delivered late, a stale retained message) must not stand while this host runs: say online again."""
        if not self._stopping and b'"online":false' in raw.replace(b" ", b""):
            client.publish(self._state_topic, spb.state_payload(True, self._state_t_ms), qos=1, retain=True)

    # -- Sparkplug state machine -------------------------------------------------------------
    def _handle(self, topic: spb.Topic, p: spb.Payload) -> None:
        key = (topic.group, topic.edge_node)
        kind = topic.message_type
        node = self._nodes.get(key)
        if kind == "NBIRTH":
            self._nodes[key] = node = _Node(born=True, seq=p.seq)
            self._counts["sparkplug_births"] += 1
            for m in p.metrics:
                if m.name == spb.BDSEQ:
                    node.bdseq = int(m.long_value)
            self._birth(topic, node, p, None)
            return
        if kind == "NDEATH":
            # Only the death of the session that gave the current birth counts (its will carries the same bdSeq);
            # [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale] at the host's time.
            bdseq = next((int(m.long_value) for m in p.metrics if m.name == spb.BDSEQ), None)
            if node is not None and node.born and (bdseq is None or node.bdseq is None or bdseq == node.bdseq):
                node.born = False
                self._counts["sparkplug_deaths"] += 1
                for device in list(node.points):
                    self._stale(node, device, 0)
            return
        if node is None or not node.born:
            self._rebirth(topic, node, f"{kind} before NBIRTH")
            return
        expected = (node.seq + 1) % 256
        node.seq = p.seq
        if p.seq != expected:
            self._counts["sparkplug_seq_gaps"] += 1
            self._rebirth(topic, node, f"seq {p.seq} where {expected} was due")
        device = topic.device
        if kind == "DBIRTH":
            node.devices.add(device)
            self._birth(topic, node, p, device)
        elif kind == "DDEATH":
            node.devices.discard(device)
            self._counts["sparkplug_deaths"] += 1
            self._stale(node, device, p.timestamp)  # [...-ddeath-devices-tags-stale]: at the DDEATH's time
            node.points.pop(device, None)  # already bad: a later NDEATH need not say so again
        elif device is not None and device not in node.devices:
            self._rebirth(topic, node, f"DDATA from {device} before its DBIRTH")
        else:
            self._data(topic, node, p, device)

    def _birth(self, topic: spb.Topic, node: _Node, p: spb.Payload, device: str | None) -> None:
        for m in p.metrics:
            if m.HasField("alias"):
                node.aliases[m.alias] = (m.name, m.datatype)
            node.types[(device, m.name)] = m.datatype
        self._data(topic, node, p, device)

    def _data(self, topic: spb.Topic, node: _Node, p: spb.Payload, device: str | None) -> None:
        sink = self._sink
        assert sink is not None
        now_ms = time.time_ns() // 1_000_000
        for m in p.metrics:
            if m.name:
                name, datatype = m.name, node.types.get((device, m.name), 0)
            elif m.HasField("alias") and m.alias in node.aliases:
                name, datatype = node.aliases[m.alias]
            else:
                self._counts["unmapped"] += 1  # an alias no birth declared
                continue
            if name == spb.BDSEQ or name.startswith(_CONTROL):
                continue
            hit = self._route(topic, device, name)
            if hit is None:
                self._counts["unmapped"] += 1
                continue
            value = spb.metric_value(m, datatype)
            if value is None and not m.is_null:
                self._counts["unmapped"] += 1  # DataSet, Template, arrays: no scalar reading
                continue
            t_ns = (m.timestamp or p.timestamp or now_ms) * 1_000_000
            node.points.setdefault(device, set()).add(hit)
            reading = (math.nan, Quality.BAD) if value is None else (value, Quality.GOOD)
            if m.is_historical:
                self._counts["sparkplug_historical"] += 1
                sink(*hit, t_ns, *reading, historical=True)
            else:
                sink(*hit, t_ns, *reading)

    def _stale(self, node: _Node, device: str | None, t_ms: int) -> None:
        """Every point of the device (``None``: the node's own metrics) handed on as bad from ``t_ms`` (0: now)."""
        sink = self._sink
        assert sink is not None
        t_ns = (t_ms or time.time_ns() // 1_000_000) * 1_000_000
        for asset, point in sorted(node.points.get(device, ())):
            sink(asset, point, t_ns, math.nan, Quality.BAD)

    def _rebirth(self, topic: spb.Topic, node: _Node | None, why: str) -> None:
        """[tck-id-operational-behavior-host-reordering-rebirth] NCMD ``Node Control/Rebirth`` = true, QoS 0, not
        retained; once per ``rebirth_interval_s`` per node, so a node mid-rebirth is not asked again per message."""
        if node is None:
            node = self._nodes[(topic.group, topic.edge_node)] = _Node()
        now = time.monotonic()
        if now - node.last_rebirth < self.cfg.rebirth_interval_s:
            return
        node.last_rebirth = now
        client = self._client
        if client is None:
            return
        p = spb.new_payload(None, time.time_ns() // 1_000_000)
        spb.add_metric(p, True, name=spb.REBIRTH)
        client.publish(spb.topic(topic.group, "NCMD", topic.edge_node), p.SerializeToString(), qos=0, retain=False)
        self._counts["sparkplug_rebirths_requested"] += 1
        log.info("source %s: rebirth requested from %s/%s: %s", self.name, topic.group, topic.edge_node, why)

    def _route(self, topic: spb.Topic, device: str | None, metric: str) -> tuple[str, str] | None:
        key = (topic.group, topic.edge_node, device, metric)
        try:
            return self._routes[key]
        except KeyError:
            pass
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        hit = None
        for rule in self.cfg.rules:
            if _matches(rule, topic, device, metric):
                # the node's own metrics: {device} is the edge node (a node without devices is one asset)
                values = {"group": topic.group, "edge_node": topic.edge_node, "device": device or topic.edge_node,
                          "metric": metric.replace("/", ".")}
                hit = (_fill(rule.asset, values), _fill(rule.point, values))
                break
        self._routes[key] = hit
        return hit

    def _bad(self, topic: str, reason: str) -> None:
        self._counts["bad_payloads"] += 1
        log.warning("bad payload on %s: %s (bad_payloads=%d)", topic, reason, self._counts["bad_payloads"])


def _matches(rule: SparkplugRule, topic: spb.Topic, device: str | None, metric: str) -> bool:
    if device is None and rule.device not in ("", "*"):
        return False
    if device is not None and (rule.device == "" or not fnmatch.fnmatchcase(device, rule.device)):
        return False
    return (fnmatch.fnmatchcase(topic.group, rule.group) and fnmatch.fnmatchcase(topic.edge_node, rule.edge_node)
            and fnmatch.fnmatchcase(metric, rule.metric))
