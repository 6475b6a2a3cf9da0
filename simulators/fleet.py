"""Fleet load: ten thousand and more MQTT devices from one process, with the achieved rate measured.

A simulated device is a topic and a stream of payloads (``sim/{asset}/{point}``, bare number or JSON
``{"t","v","q"}``, as ``devices.py`` sends them); whether each one has its own TCP connection is a
separate choice, ``connections``: a few connections multiplexing thousands of device topics measure what
the broker and the ingest do with the messages, while one connection per device
(``connections == devices``) also measures what the broker pays for the connections themselves (CONNECT
storms, per-client state, keepalives). Both run in one asyncio event loop.

Why not paho: paho costs ~20-40 µs of Python per message (one ``send`` per packet, a lock, a callback
per PUBACK) and one network thread per client, so 10,000 devices at 1 msg/s would use a large part of a
core on the generator, and 10,000 paho clients would need 10,000 threads or a hand-built selector loop.
The generator should be the cheapest part of a load test. This module speaks the small part of MQTT
3.1.1 a sensor needs (CONNECT, PUBLISH QoS 0/1, PUBACK, PINGREQ, DISCONNECT) and writes all packets a
connection owes in one tick with one ``write``: 2.5-8 µs of CPU per message measured (50,000 and 10,000
msg/s over 8 connections). Not supported: TLS, MQTT 5, QoS 2, retained messages, wills.

Schedule: every device sends once per ``1/rate`` seconds, device ``i`` at phase ``i/devices`` of the
period, so the load is smooth rather than one burst per second; a tick (10 ms) sends what fell due since
the last one. What is measured: sent, acknowledged (QoS 1), dropped (due while its connection was down
or never sent by the end), messages per second (mean and the slowest full second), lag behind schedule
(send time - due time, percentiles), PUBACK latency, and the process's CPU time. At QoS 1 each
connection keeps at most ``window`` messages unacknowledged; beyond that (or while the socket's write
buffer is full) messages wait in order and the wait shows up as lag, never as silent loss. Values are a
slow sine per device plus noise; the schedule is deterministic, the noise is not (it depends on ticks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import math
import resource
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from simulators.devices import DEFAULT_TOPIC_TEMPLATE, _topic_maker, parse_broker_url

_LAG_BIN_S = 0.001
_LAG_BINS = 600_001  # 1 ms bins up to 10 min; beyond that counts in the last bin
_ACK_BIN_S = 0.0001
_ACK_BINS = 100_001  # 0.1 ms bins up to 10 s


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate. ``json_share`` of the devices (spread evenly) send JSON, the rest bare numbers."""

    devices: int = 10_000
    rate: float = 1.0  # messages per second per device
    duration_s: float = 30.0
    qos: Literal[0, 1] = 0
    connections: int = 8
    json_share: float = 0.5
    topic_template: str = DEFAULT_TOPIC_TEMPLATE
    prefix: str = "fleet"
    point: str = "value"
    tick_s: float = 0.01
    window: int = 10_000
    connect_concurrency: int = 200
    connect_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0
    keepalive_s: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if self.devices < 1 or self.rate <= 0 or self.duration_s <= 0:
            raise ValueError("devices, rate and duration must be positive")
        if not 1 <= self.connections <= self.devices:
            raise ValueError(f"connections must be between 1 and the number of devices ({self.devices})")
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if not 0 <= self.json_share <= 1:
            raise ValueError("json_share must be between 0 and 1")
        if not 1 <= self.window <= 65_000:
            raise ValueError("window must be between 1 and 65,000 (MQTT packet ids are 16 bit)")

    def device_id(self, i: int) -> str:
        return f"{self.prefix}-{i:05d}"

    def json_devices(self) -> np.ndarray:
        """Boolean per device: evenly spread, exactly floor(devices · json_share) of them."""
        i = np.arange(self.devices)
        return np.floor((i + 1) * self.json_share) > np.floor(i * self.json_share)

    def expected(self) -> int:
        """Messages the schedule holds: device i sends at (i/devices + k)/rate for every time < duration."""
        period = 1.0 / self.rate
        phase = np.arange(self.devices) * (period / self.devices)
        return int(np.ceil((self.duration_s - phase) / period).clip(min=0).sum())


@dataclass
class FleetReport:
    devices: int
    connections: int
    qos: int
    rate: float
    duration_s: float
    expected: int
    sent: int
    acked: int
    dropped: int
    unacked: int
    seconds: float
    per_second: float
    per_second_min: float
    per_second_max: float
    lag_ms_p50: float
    lag_ms_p99: float
    lag_ms_max: float
    ack_ms_p50: float | None
    ack_ms_p99: float | None
    connect_s: float
    tick_gap_ms_max: float  # longest pause between ticks: a starved process shows here, not in cpu_percent
    reconnects: int
    bytes_sent: int
    json_devices: int
    cpu_s: float
    cpu_percent: float
    per_second_series: list[int] = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id: str, keepalive_s: int, user: str | None = None, password: str | None = None) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session."""
    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    body = _utf8("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + _utf8(client_id)
    if user is not None:
        body += _utf8(user)
    if password is not None:
        body += _utf8(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, pid: int = 0) -> bytes:
    """MQTT PUBLISH; ``topic`` already length-prefixed (see ``_utf8``). The hot path of the generator."""
    n = len(topic) + len(payload)
    if qos:
        n += 2
        head = bytes((0x32, n)) if n < 128 else b"\x32" + _varint(n)
        return b"".join((head, topic, pid.to_bytes(2, "big"), payload))
    head = bytes((0x30, n)) if n < 128 else b"\x30" + _varint(n)
    return b"".join((head, topic, payload))


def due_between(cfg: FleetConfig, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """(device indices, due times) of messages due in [a, b), seconds since the start, in time order.

    Device ``i`` is due at ``(i / devices + k) / rate``; consecutive windows partition the schedule.
    """
    period = 1.0 / cfg.rate
    step = period / cfg.devices
    idx_parts, t_parts = [], []
    for k in range(math.floor(a / period), math.floor(b / period) + 1):
        lo = max(0, math.ceil((a - k * period) / step - 1e-9))
        hi = min(cfg.devices, math.ceil((b - k * period) / step - 1e-9))
        if hi > lo:
            i = np.arange(lo, hi)
            idx_parts.append(i)
            t_parts.append(k * period + i * step)
    if not idx_parts:
        return np.empty(0, np.int64), np.empty(0)
    return np.concatenate(idx_parts), np.concatenate(t_parts)


class _Link(asyncio.Protocol):
    """One MQTT connection carrying many devices: its in-flight window, backlog and counters."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run, self.index = run, index
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = run.loop.create_future()
        self.closed: asyncio.Future[None] = run.loop.create_future()
        self.up = False
        self.paused = False
        self.closing = False
        self.buf = bytearray()
        self.inflight: dict[int, float] = {}
        self.next_pid = 0
        self.backlog: collections.deque[tuple[int, float, float]] = collections.deque()
        self.last_write = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.run.connect_packet(self.index))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        now = self.run.loop.time()
        pos = 0
        inflight, on_ack = self.inflight, self.run.on_ack
        while len(buf) - pos >= 4 and buf[pos] == 0x40 and buf[pos + 1] == 2:  # the common case: PUBACKs
            sent_at = inflight.pop((buf[pos + 2] << 8) | buf[pos + 3], None)
            if sent_at is not None:
                on_ack(now - sent_at)
            pos += 4
        while len(buf) - pos >= 2:
            n, shift, i = 0, 0, pos + 1
            while i < len(buf):
                n |= (buf[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            else:
                break  # length incomplete
            if len(buf) - i < n:
                break
            kind = buf[pos] >> 4
            if kind == 4:  # PUBACK
                sent_at = self.inflight.pop(int.from_bytes(buf[i:i + 2], "big"), None)
                if sent_at is not None:
                    self.run.on_ack(now - sent_at)
            elif kind == 2 and not self.connack.done():  # CONNACK: return code in the 2nd byte
                self.connack.set_result(buf[i + 1])
            pos = i + n
        del buf[:pos]
        if self.backlog and len(self.inflight) < self.run.cfg.window:
            self.run.wake_backlog(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.backlog:
            self.run.wake_backlog(self)

    def connection_lost(self, exc: Exception | None) -> None:
        was_up, self.up, self.transport = self.up, False, None
        if not self.connack.done():
            self.connack.set_result(-1)
        if not self.closed.done():
            self.closed.set_result(None)
        self.run.unacked_lost += len(self.inflight)
        self.inflight.clear()
        self.run.dropped += len(self.backlog)
        self.backlog.clear()
        self.buf.clear()
        if was_up and not self.closing:
            self.run.reconnect_later(self.index)

    # sending
    def can_send(self) -> bool:
        return self.up and not self.paused and len(self.inflight) < self.run.cfg.window

    def pid(self) -> int:
        while True:
            self.next_pid = self.next_pid % 65_535 + 1
            if self.next_pid not in self.inflight:
                return self.next_pid


class _Run:
    """The event-loop side of one fleet run."""

    def __init__(self, broker_url: str, cfg: FleetConfig) -> None:
        self.cfg = cfg
        self.host, self.port, self.user, self.password = parse_broker_url(broker_url)
        self.loop = asyncio.get_running_loop()
        topic = _topic_maker(cfg.topic_template)
        self.topics = [_utf8(topic(cfg.device_id(i), cfg.point)) for i in range(cfg.devices)]
        self.is_json = cfg.json_devices().tolist()
        rng = np.random.default_rng(cfg.seed)
        self.base = 20.0 + 5.0 * rng.standard_normal(cfg.devices)
        self.phase = rng.uniform(0, 2 * math.pi, cfg.devices)
        self.noise = rng
        self.run_id = uuid.uuid4().hex[:8]
        self.links = [_Link(self, j) for j in range(cfg.connections)]
        self.sent = self.acked = self.dropped = self.unacked_lost = self.reconnects = self.bytes_sent = 0
        self.lag_hist = np.zeros(_LAG_BINS, np.int64)
        self.ack_hist = [0] * _ACK_BINS
        self.per_second: list[int] = []
        self.start = 0.0
        self.wall0_ns = 0
        self.backlogged: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = False

    def connect_packet(self, j: int) -> bytes:
        return connect_packet(f"{self.cfg.prefix}-{self.run_id}-c{j:05d}", self.cfg.keepalive_s, self.user,
                              self.password)

    def on_ack(self, latency_s: float) -> None:
        self.acked += 1
        self.ack_hist[min(int(latency_s / _ACK_BIN_S), _ACK_BINS - 1)] += 1

    def wake_backlog(self, link: _Link) -> None:
        self.backlogged.add(link.index)

    async def open(self, j: int, gate: asyncio.Semaphore) -> bool:
        link = self.links[j]
        link.connack, link.closed = self.loop.create_future(), self.loop.create_future()
        async with gate:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: link, self.host, self.port), self.cfg.connect_timeout_s)
                code = await asyncio.wait_for(link.connack, self.cfg.connect_timeout_s)
            except (OSError, TimeoutError):
                return False
        link.up = code == 0
        return link.up

    def reconnect_later(self, j: int) -> None:
        async def again() -> None:
            gate = asyncio.Semaphore(1)
            while not self.done:
                await asyncio.sleep(1.0)
                if await self.open(j, gate):
                    self.reconnects += 1
                    return

        task = self.loop.create_task(again())
        self.tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    # --- sending ---------------------------------------------------------------------------------------

    def send(self, idx: np.ndarray, due: np.ndarray, values: np.ndarray, now: float) -> None:
        """Write the messages, grouped per connection; what a connection cannot take now goes to its backlog."""
        cfg = self.cfg
        n_links = cfg.connections
        per_link: dict[int, list[bytes]] = {}
        lags: list[float] = []
        for i, t, v in zip(idx.tolist(), due.tolist(), values.tolist(), strict=True):
            j = i % n_links
            link = self.links[j]
            if not link.up:
                self.dropped += 1
                continue
            if link.backlog or not link.can_send():
                link.backlog.append((i, t, v))
                self.backlogged.add(j)
                continue
            per_link.setdefault(j, []).append(self._packet(link, i, t, v, now))
            lags.append(now - self.start - t)
        self._flush(per_link, lags, now)

    def _packet(self, link: _Link, i: int, t: float, v: float, now: float) -> bytes:
        t_ns = self.wall0_ns + round(t * 1e9)
        payload = (f'{{"t":{t_ns},"v":{v!r},"q":0}}' if self.is_json[i] else repr(v)).encode()
        if self.cfg.qos:
            pid = link.pid()
            link.inflight[pid] = now
            return publish_packet(self.topics[i], payload, 1, pid)
        return publish_packet(self.topics[i], payload, 0)

    def _flush(self, per_link: dict[int, list[bytes]], lags: list[float], now: float) -> None:
        n = 0
        for j, packets in per_link.items():
            link = self.links[j]
            data = b"".join(packets)
            assert link.transport is not None
            link.transport.write(data)
            link.last_write = now
            n += len(packets)
            self.bytes_sent += len(data)
        if n:
            self.sent += n
            second = int(now - self.start)
            while len(self.per_second) <= second:
                self.per_second.append(0)
            self.per_second[second] += n
            bins = np.minimum((np.asarray(lags) / _LAG_BIN_S).astype(np.int64).clip(min=0), _LAG_BINS - 1)
            counts = np.bincount(bins)
            self.lag_hist[:len(counts)] += counts

    def send_backlogs(self, now: float) -> None:
        per_link: dict[int, list[bytes]] = {}
        lags: list[float] = []
        for j in list(self.backlogged):
            link = self.links[j]
            out = per_link.setdefault(j, [])
            while link.backlog and link.can_send():
                i, t, v = link.backlog.popleft()
                out.append(self._packet(link, i, t, v, now))
                lags.append(now - self.start - t)
            if not link.backlog:
                self.backlogged.discard(j)
        self._flush({j: p for j, p in per_link.items() if p}, lags, now)

    def keepalive(self, now: float) -> None:
        quiet = now - self.cfg.keepalive_s / 2
        for link in self.links:
            if link.up and link.last_write < quiet and link.transport is not None:
                link.transport.write(b"\xc0\x00")
                link.last_write = now

    def values(self, idx: np.ndarray, due: np.ndarray) -> np.ndarray:
        """A slow sine per device (10 min period) plus sensor noise, rounded as a sensor would (3 decimals)."""
        wave = np.sin(2 * math.pi * due / 600.0 + self.phase[idx])
        return np.round(self.base[idx] + 5.0 * wave + 0.1 * self.noise.standard_normal(len(idx)), 3)


async def _run_async(broker_url: str, cfg: FleetConfig) -> FleetReport:
    run = _Run(broker_url, cfg)
    gate = asyncio.Semaphore(cfg.connect_concurrency)
    t_connect = time.monotonic()
    ok = await asyncio.gather(*(run.open(j, gate) for j in range(cfg.connections)))
    connect_s = time.monotonic() - t_connect
    if not all(ok):
        for link in run.links:
            if link.transport is not None:
                link.transport.close()
        raise ConnectionError(f"{broker_url}: {ok.count(False)} of {cfg.connections} connections failed "
                              "(broker down, refusing, or out of file descriptors: check ulimit -n)")
    # Everything built so far lives until the end: keep it out of the collector's full passes, which
    # took up to 0.2 s with 10,000 connections and showed up as lag.
    gc.freeze()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    loop = run.loop
    run.start = loop.time()
    run.wall0_ns = time.time_ns()
    last, next_keepalive = 0.0, 1.0
    prev_tick, max_gap = run.start, 0.0
    try:
        while True:
            now = loop.time()
            max_gap, prev_tick = max(max_gap, now - prev_tick), now
            elapsed = min(now - run.start, cfg.duration_s)
            if run.backlogged:
                run.send_backlogs(now)
            idx, due = due_between(cfg, last, elapsed)
            if len(idx):
                run.send(idx, due, run.values(idx, due), now)
            last = elapsed
            if elapsed >= next_keepalive:
                run.keepalive(now)
                next_keepalive += 1.0
            if elapsed >= cfg.duration_s:
                break
            await asyncio.sleep(max(0.0, cfg.tick_s - (loop.time() - now)))
        seconds = loop.time() - run.start
        # Drain: backlogs first, then the PUBACKs still owed.
        deadline = loop.time() + cfg.drain_timeout_s
        while loop.time() < deadline and (run.backlogged or any(link.inflight for link in run.links)):
            run.send_backlogs(loop.time())
            await asyncio.sleep(0.005)
    finally:
        run.done = True
        for task in list(run.tasks):
            task.cancel()
        open_links = [link for link in run.links if link.transport is not None]
        for link in open_links:
            link.closing = True
            assert link.transport is not None
            with contextlib.suppress(Exception):
                link.transport.write(b"\xe0\x00")  # DISCONNECT: no will, clean goodbye
            link.transport.close()  # flushes what is still buffered, then closes
        if open_links:
            await asyncio.wait([link.closed for link in open_links], timeout=5.0)
        gc.unfreeze()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    never_sent = sum(len(link.backlog) for link in run.links)
    unacked = (run.unacked_lost + sum(len(link.inflight) for link in run.links)) if cfg.qos else 0
    whole = int(cfg.duration_s)  # whole seconds inside the schedule; a second with nothing sent counts 0
    full = (run.per_second + [0] * whole)[:whole]
    return FleetReport(
        devices=cfg.devices, connections=cfg.connections, qos=cfg.qos, rate=cfg.rate, duration_s=cfg.duration_s,
        expected=cfg.expected(), sent=run.sent, acked=run.acked if cfg.qos else 0,
        dropped=run.dropped + never_sent, unacked=unacked, seconds=seconds,
        per_second=run.sent / seconds if seconds > 0 else math.inf,
        per_second_min=float(min(full, default=0)), per_second_max=float(max(full, default=0)),
        lag_ms_p50=_percentile(run.lag_hist, 50, _LAG_BIN_S), lag_ms_p99=_percentile(run.lag_hist, 99, _LAG_BIN_S),
        lag_ms_max=_percentile(run.lag_hist, 100, _LAG_BIN_S),
        ack_ms_p50=_percentile(np.asarray(run.ack_hist), 50, _ACK_BIN_S) if cfg.qos else None,
        ack_ms_p99=_percentile(np.asarray(run.ack_hist), 99, _ACK_BIN_S) if cfg.qos else None,
        connect_s=connect_s, tick_gap_ms_max=1000.0 * max_gap, reconnects=run.reconnects, bytes_sent=run.bytes_sent,
        json_devices=int(cfg.json_devices().sum()), cpu_s=cpu_s,
        cpu_percent=100.0 * cpu_s / seconds if seconds > 0 else 0.0, per_second_series=run.per_second,
    )


def _percentile(hist: np.ndarray, q: float, bin_s: float) -> float:
    """The q-th percentile (ms) from a histogram, as the upper edge of the bin it falls in."""
    total = int(hist.sum())
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(total * q / 100))
    return float((np.searchsorted(np.cumsum(hist), rank) + 1) * bin_s * 1000.0)


def run_fleet(broker_url: str, cfg: FleetConfig | None = None) -> FleetReport:
    """Run a fleet for ``cfg.duration_s`` against a broker and return what was achieved; blocks until done."""
    return asyncio.run(_run_async(broker_url, cfg or FleetConfig()))
