"""The MQTT device front: publishes readings the way field sensors do, one message per sample.

Simulated devices are sensors, not gateways: each (asset, point) has its own topic, by default
``sim/{asset}/{point}``, and the payload is either the bare number (``4.25``) or a small JSON object
``{"t": <int ns>, "v": <float>, "q": <0 good | 1 uncertain | 2 bad>}``. An edge agent subscribes to
them like it would to real sensors.

At QoS 1 the publisher waits for every PUBACK and keeps at most ``window`` messages unacknowledged:
paho hangs past 65,535 in flight (message ids wrap). Small windows are also faster: with 20,000
QoS 1 messages on loopback, a window of 100 gave ~10,000 msg/s and 1,000 gave ~5,000 (paho's work per
PUBACK grows with what it holds in flight).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import paho.mqtt.client as mqtt

DEFAULT_TOPIC_TEMPLATE = "sim/{asset}/{point}"
PayloadStyle = Literal["json", "bare"]
ArrayTriple = tuple[np.ndarray, np.ndarray, np.ndarray]


class Reading(NamedTuple):
    """One sample as a device sends it."""

    asset: str
    point: str
    t_ns: int
    value: float
    quality: int = 0


@dataclass(frozen=True)
class PublishReport:
    sent: int
    acked: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else math.inf


def parse_broker_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user:password@]host[:port]`` → (host, port, user, password); port defaults to 1883."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"broker {url!r}: expected mqtt://host:port")
    return parts.hostname, parts.port or 1883, parts.username, parts.password


def interleave(series: Mapping[tuple[str, str], ArrayTriple]) -> Iterator[Reading]:
    """Merge per-(asset, point) arrays (t_ns, values, quality) into readings in time order.

    Equal timestamps keep the mapping's order, so the sequence is deterministic.
    """
    keys = list(series)
    if not keys:
        return
    t = np.concatenate([np.asarray(s[0], np.int64) for s in series.values()])
    v = np.concatenate([np.asarray(s[1], np.float64) for s in series.values()])
    q = np.concatenate([np.asarray(s[2], np.int8) for s in series.values()])
    src = np.repeat(np.arange(len(keys)), [len(s[0]) for s in series.values()])
    order = np.argsort(t, kind="stable")
    for k, ti, vi, qi in zip(src[order].tolist(), t[order].tolist(), v[order].tolist(), q[order].tolist(),
                             strict=True):
        yield Reading(keys[k][0], keys[k][1], ti, vi, qi)


def encode_payload(reading: Reading, style: PayloadStyle) -> bytes:
    """The bytes a device sends; ``repr`` of a float is the shortest text that reads back exactly."""
    if not math.isfinite(reading.value):
        raise ValueError(f"{reading.asset}/{reading.point}: cannot send non-finite value {reading.value}")
    if style == "bare":
        return repr(float(reading.value)).encode()
    return f'{{"t":{reading.t_ns},"v":{float(reading.value)!r},"q":{reading.quality}}}'.encode()


def _topic_maker(template: str) -> Callable[[str, str], str]:
    try:
        template.format(asset="a", point="p")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"topic template {template!r}: only {{asset}} and {{point}} may be used ({exc})") from None
    cache: dict[tuple[str, str], str] = {}

    def topic(asset: str, point: str) -> str:
        name = cache.get((asset, point))
        if name is None:
            name = template.format(asset=asset, point=point)
            if any(c in name for c in "+#") or not name:
                raise ValueError(f"topic {name!r} (asset {asset!r}, point {point!r}) is not publishable")
            cache[(asset, point)] = name
        return name

    return topic


def publish_readings(
    broker_url: str,
    readings: Iterable[Reading],
    *,
    qos: int = 1,
    style: PayloadStyle = "json",
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    rate: float | None = None,
    realtime: bool = False,
    window: int = 100,
    client_id: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float = 30.0,
) -> PublishReport:
    """Publish readings in the order given and return once the broker has acknowledged all of them.

    ``rate`` caps samples per second (None: as fast as acknowledgements allow). ``realtime`` sends each
    reading when the wall clock reaches its ``t_ns`` (readings must then be stamped in wall-clock time).
    ``on_progress`` receives the number sent so far, every few hundred messages and at the end.
    """
    if style not in ("json", "bare"):
        raise ValueError(f"payload style {style!r}: use 'json' or 'bare'")
    if window < 1 or window > 65_000:
        raise ValueError("window must be between 1 and 65,000 unacknowledged messages")
    host, port, user, password = parse_broker_url(broker_url)
    topic = _topic_maker(topic_template)
    client_id = client_id or f"sim-{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if user is not None:
        client.username_pw_set(user, password)
    client.max_inflight_messages_set(window)
    connected = threading.Event()
    refused: list[str] = []
    acks = threading.Condition()
    acked = 0

    def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    def on_publish(c: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        nonlocal acked
        with acks:
            acked += 1
            acks.notify_all()

    def wait_acked(at_least: int) -> None:
        with acks:
            if not acks.wait_for(lambda: acked >= at_least, timeout=timeout_s):
                raise TimeoutError(
                    f"{broker_url}: no PUBACK for {timeout_s} s ({acked} of {sent} acknowledged)")

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(host, port)
    except OSError as exc:
        raise ConnectionError(f"cannot reach MQTT broker {broker_url}: {exc}") from None
    client.loop_start()
    sent = 0
    try:
        if not connected.wait(timeout_s) or refused:
            why = refused or "timeout"
            raise ConnectionError(f"MQTT broker {broker_url} did not accept the connection: {why}")
        start = time.monotonic()
        for r in readings:
            if realtime:
                delay = (r.t_ns - time.time_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
            elif rate:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if sent - acked >= window:
                wait_acked(sent - window + 1)
            info = client.publish(topic(r.asset, r.point), encode_payload(r, style), qos=qos)
            # While paho reconnects, QoS >= 1 messages are queued (NO_CONN) and sent later: not an error.
            if info.rc != mqtt.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
                raise ConnectionError(f"{broker_url}: publish failed: {mqtt.error_string(info.rc)}")
            sent += 1
            if on_progress is not None and sent % 500 == 0:
                on_progress(sent)
        wait_acked(sent)
        seconds = time.monotonic() - start
        if on_progress is not None:
            on_progress(sent)
    finally:
        client.disconnect()
        client.loop_stop()
    return PublishReport(sent=sent, acked=acked, seconds=seconds)
