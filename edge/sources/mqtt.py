"""MQTT source: subscribes to sensor topics and maps topic + payload to (asset, point, t, value).

Payloads are bare numbers (``4.25``), JSON with configurable paths for value, timestamp and
quality, or binary waveform frames (``models.waveform``: an accelerometer's block, handed on whole, for the
asset the topic maps to). A bad payload is counted and logged with its topic, never raised: one broken sensor must
not take the gateway down.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from dataclasses import dataclass

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.matcher import MQTTMatcher

from edge.config import MqttSource, MqttSubscription
from edge.mqttlink import connect_async, make_client
from edge.sources import Sink
from models import waveform
from models.timestamps import parse_time_ns
from models.wire import Quality

log = logging.getLogger("edge.sources.mqtt")

_CAPTURE = re.compile(r"\{(\d+)\}")
_ROUTE_CACHE_MAX = 100_000


class PayloadError(ValueError):
    pass


def _dig(obj: object, path: str) -> object:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            raise PayloadError(f"missing '{path}'")
        obj = obj[key]
    return obj


@dataclass(frozen=True)
class _Route:
    sub: MqttSubscription
    wildcard_levels: tuple[int, ...]

    def resolve(self, topic: str) -> tuple[str, str]:
        levels = topic.split("/")
        captured = []
        for i in self.wildcard_levels:
            captured.append("/".join(levels[~i:]) if i < 0 else levels[i])

        def fill(template: str) -> str:
            return _CAPTURE.sub(lambda m: captured[int(m.group(1)) - 1], template)

        return fill(self.sub.asset), fill(self.sub.point)

    def parse_map(self, payload: bytes) -> tuple[dict, int | None]:
        """A json_map payload: (point -> raw value, t_ns or None)."""
        sub = self.sub
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"not JSON: {exc}") from None
        values = _dig(obj, sub.value_path)
        if not isinstance(values, dict):
            raise PayloadError(f"'{sub.value_path}' is not an object of point -> value")
        return values, self._timestamp(obj)

    def _timestamp(self, obj: object) -> int | None:
        sub = self.sub
        if not sub.ts_path or not isinstance(obj, dict) or sub.ts_path.split(".")[0] not in obj:
            return None
        raw_t = _dig(obj, sub.ts_path)
        if not isinstance(raw_t, int | float | str) or isinstance(raw_t, bool):
            raise PayloadError(f"'{sub.ts_path}' is not a time: {raw_t!r:.40}")
        try:  # a number in the declared unit (auto: by magnitude), or ISO 8601 text
            return parse_time_ns(raw_t, None if sub.ts_unit == "auto" else sub.ts_unit)
        except ValueError as exc:
            raise PayloadError(f"'{sub.ts_path}': {exc}") from None

    def parse(self, payload: bytes) -> tuple[float | str, int | None, int]:
        sub = self.sub
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise PayloadError("payload is not UTF-8") from None
        if sub.payload == "bare":
            try:
                return float(text), None, Quality.GOOD
            except ValueError:
                # Never the value itself in a log line: it may be personal data sent to the wrong topic.
                raise PayloadError(f"not a number ({len(text)} characters)") from None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"not JSON: {exc.msg}") from None
        raw_v = _dig(obj, sub.value_path)
        value: float | str
        if raw_v is None:
            value, quality = math.nan, Quality.BAD
        elif isinstance(raw_v, bool | int | float):
            value, quality = float(raw_v), Quality.GOOD
        elif isinstance(raw_v, str):
            value, quality = raw_v, Quality.GOOD  # a text point (an id, a state); the agent decides
        else:
            raise PayloadError(f"'{sub.value_path}' is neither a number nor a string ({type(raw_v).__name__})")
        t_ns = self._timestamp(obj)
        if sub.quality_path and isinstance(obj, dict) and sub.quality_path in obj:
            q = obj[sub.quality_path]
            if q not in (0, 1, 2):
                raise PayloadError(f"'{sub.quality_path}' must be 0, 1 or 2, got {q!r:.20}")
            quality = max(quality, int(q))
        return value, t_ns, quality


def _wildcards(topic_filter: str) -> tuple[int, ...]:
    """Topic levels the wildcards match, in order: ``+`` one level (its index), ``#`` the rest of the topic
    (stored as ``~index``, a negative number, which ``resolve`` joins from there on)."""
    levels = topic_filter.split("/")
    return tuple(i if level == "+" else ~i for i, level in enumerate(levels) if level in ("+", "#"))


class MqttSourceRunner:
    """One broker connection serving all of a source's subscriptions."""

    def __init__(self, cfg: MqttSource, client_id: str) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._client_id = client_id
        self._matcher = MQTTMatcher()
        for sub in cfg.subscriptions:
            self._matcher[sub.topic] = _Route(sub, _wildcards(sub.topic))
        self._routes: dict[str, tuple[_Route, str, str] | None] = {}  # topic -> (route, asset, point)
        self._client: mqtt.Client | None = None
        self._sink: Sink | None = None
        self._counts = {"messages": 0, "bad_payloads": 0, "unmapped": 0}
        self._last_bad_log = 0.0
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) received, not yet committed to the outbox
        self._unacked_lock = threading.Lock()

    def start(self, sink: Sink) -> None:
        self._sink = sink
        # Persistent session + manual acks: a reading is acknowledged to the sensor broker only after the
        # agent has committed it to the outbox, so neither a kill -9 nor a restart loses it.
        c = make_client(self.cfg.link, self._client_id, persistent=True, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self._client = c
        connect_async(c, self.cfg.link, persistent=True)

    def mark(self) -> int:
        """How many received messages are already in the sample buffer (call before swapping it)."""
        with self._unacked_lock:
            return len(self._unacked)

    def commit(self, mark: int) -> None:
        """Acknowledge the first ``mark`` messages: their samples are now durable in the outbox."""
        with self._unacked_lock:
            done, self._unacked = self._unacked[:mark], self._unacked[mark:]
        client = self._client
        if client is None:
            return
        for mid, qos in done:
            client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int, timeout_s: float) -> None:
        """Publish to a device (an actuator's write) and wait for the broker to take it; ConnectionError if not."""
        client = self._client
        if client is None or not client.is_connected():
            raise ConnectionError(f"source {self.name}: not connected to {self.cfg.link.url}")
        info = client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise ConnectionError(f"source {self.name}: the broker did not take the publish within {timeout_s:g} s")

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("source %s: broker refused connection: %s", self.name, reason_code)
            return
        client.subscribe([(s.topic, s.qos) for s in self.cfg.subscriptions])
        log.info("source %s: connected, %d subscriptions", self.name, len(self.cfg.subscriptions))

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._counts["messages"] += 1
        try:
            self._handle(msg)
        finally:
            if msg.qos > 0:
                with self._unacked_lock:
                    self._unacked.append((msg.mid, msg.qos))

    def _route(self, topic: str) -> tuple[_Route, str, str] | None:
        """Topic filter matching and template filling, once per topic: sensors repeat their topics."""
        try:
            return self._routes[topic]
        except KeyError:
            pass
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()  # a flood of one-off topics must not grow memory without bound
        route = next(iter(self._matcher.iter_match(topic)), None)
        hit = None if route is None else (route, *route.resolve(topic))
        self._routes[topic] = hit
        return hit

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        hit = self._route(msg.topic)
        if hit is None:
            self._counts["unmapped"] += 1
            return
        route, asset, point = hit
        if route.sub.payload == "json_map":
            self._handle_map(route, asset, msg)
            return
        if route.sub.payload == "waveform":
            try:
                frame = waveform.decode(msg.payload, asset)
            except waveform.FrameError as exc:
                self._bad(msg.topic, str(exc))
                return
            if frame.asset != asset:  # the mapping decides, as for every other payload
                frame = dataclasses.replace(frame, asset=asset)
            assert self._sink is not None
            self._sink(asset, point, frame.t0_ns, frame, Quality.GOOD)
            return
        try:
            value, t_ns, quality = route.parse(msg.payload)
        except PayloadError as exc:
            self._bad(msg.topic, str(exc))
            return
        if t_ns is None:
            t_ns = time.time_ns()  # the sensor gave no time: stamp at arrival, once, here
        assert self._sink is not None
        self._sink(asset, point, t_ns, value, quality)

    def _handle_map(self, route: _Route, asset: str, msg: mqtt.MQTTMessage) -> None:
        try:
            values, t_ns = route.parse_map(msg.payload)
        except PayloadError as exc:
            self._bad(msg.topic, str(exc))
            return
        if t_ns is None:
            t_ns = time.time_ns()
        sink = self._sink
        assert sink is not None
        for point, raw in values.items():
            if raw is None:
                sink(asset, point, t_ns, math.nan, Quality.BAD)
            elif isinstance(raw, int | float) and not isinstance(raw, bool):
                sink(asset, point, t_ns, float(raw), Quality.GOOD)
            elif isinstance(raw, str):
                sink(asset, point, t_ns, raw, Quality.GOOD)
            else:
                self._bad(msg.topic, f"point {point!r}: neither a number nor a string ({type(raw).__name__})")

    def _bad(self, topic: str, reason: str) -> None:
        self._counts["bad_payloads"] += 1
        now = time.monotonic()
        # Log every bad payload's topic, but at most ~10 lines a second so a flood cannot fill the disk.
        if now - self._last_bad_log > 0.1:
            self._last_bad_log = now
            log.warning("bad payload on %s: %s (bad_payloads=%d)", topic, reason,
                        self._counts["bad_payloads"])
