"""Ingest: MQTT → validate → de-duplicate → time-series store and registry → acknowledge.

A message is acknowledged to the broker (paho manual ack) only after its data is durably written,
so a store outage or a killed worker loses nothing: unacknowledged messages are delivered again.
Several workers split the load (see ``CloudSettings.ingest_mode``); on a NATS JetStream cluster
(``TWIN_INGEST_ENGINE=nats``, ``cloud.ingest_nats``) each receives only its partitions, through the same pipeline.

The gateway is told too (``models.wire.Committed`` on its ``committed`` topic): it keeps every batch until
then, not only until the broker's PUBACK, because a broker that crashes loses what it acknowledged since its
last save. What a gateway sends again is dropped by (gateway, outbox epoch, seq), remembered in bounded space
per epoch (``SeqWindow``), and acknowledged again so that the gateway can let go of it.

Samples stamped further ahead of their arrival than ``TWIN_INGEST_FUTURE_TOLERANCE_S`` are dead-lettered, not
written: a gateway clock a year fast would otherwise pin its assets' latest values. Each gateway's clock offset
(its ``sent_ns`` against arrival) is kept on its registry row.

What cannot be used is dead-lettered with the reason and the raw payload, counted, logged, and
acknowledged — a malformed message must never block the ones behind it or crash the worker.

Why one module of some 850 lines: it is one pipeline whose correctness is an ordering — a message is acknowledged
only after the store write and the registry transaction that records it — and every step (classify, dedupe,
refuse the future, write store, write registry, track sequences) reads and writes the same group on the two
threads below. Split across files, that ordering and the group's invariants would have no single place to be read.
What stands alone lives elsewhere already: the wire (``models.wire``), stores (``cloud.store``), pseudonyms
(``cloud.pii``), the broker connection (``cloud.mqttconn``).

Two threads behind paho's network thread, so decoding the next messages overlaps writing the last ones:

- the *preparer* decodes and validates what arrived into a group, drops duplicates, and encodes the
  group's store write (line protocol, gzip);
- the *writer* sends the group to the store, records it in the registry (one transaction) and only
  then acknowledges its messages.

A group grows while the writer is busy (up to ``ingest_max_batch_points``) and is handed over as soon
as the writer is free: an idle worker writes each message at once, a loaded one writes few large
groups. How many messages may wait unacknowledged is the MQTT 5 receive maximum
(``ingest_max_inflight``); the broker keeps the rest, which is what holds a backlog while the store is
down — never this process's memory.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from cloud import mqttconn
from cloud.metrics import STORE_WRITE, observe_ingest_lag
from cloud.pii import Pseudonymiser, load_key
from cloud.registry import AlarmRecord, AnomalyRecord, Asset, DeadLetter, Gateway, IngestEpoch, Registry, Tenant
from cloud.settings import CloudSettings
from cloud.store import Rows, StoreUnavailable, TimeSeriesStore
from cloud.store.base import StoreRejected
from models import topics
from models.wire import (
    MAX_PAYLOAD_BYTES,
    AlarmEvent,
    AnomalyEvent,
    Committed,
    GatewayStatus,
    PayloadTooLarge,
    PointSeries,
    TelemetryBatch,
    TextSeries,
    WireError,
    decode,
    decode_event,
    encode,
    inflate,
)

log = logging.getLogger("cloud.ingest")

MAX_TOPIC_LEN = 256
"""How much of a topic a dead letter or a log line keeps."""
MAX_ID_LEN = 64
"""A tenant or gateway id: the registry's column and the wire's bound."""
SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps a worker's session (and its queued messages) while the worker is away."""
KNOWN_TTL_S = 300.0
"""How long tenants and assets seen in the registry are trusted without asking it again."""
SEQ_WINDOW = 4096
"""Sequences remembered below the highest of a (gateway, epoch): 512 bytes per epoch, ~7 minutes of a gateway
sending 10 batches a second. A gateway resends what was not committed within seconds, far inside it."""
EPOCHS_PER_GATEWAY = 8
"""The most outbox epochs kept per gateway (the newest): a gateway cannot grow the registry by inventing them."""
CLOCK_WINDOW_NS = 60 * 1_000_000_000
"""A gateway's clock offset is the largest (sent_ns - arrival) over this long, then measured afresh."""

EpochKey = tuple[str, str, str]
"""(tenant, gateway, epoch)"""
BatchKey = tuple[str, str, str, int]
"""(tenant, gateway, epoch, seq)"""


def _printable(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped, so any database and log can keep it."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _duration(s: float) -> str:
    """Seconds as a reader wants them in a reason: 90 s, 5.0 h, 365.0 days."""
    return f"{s:.0f} s" if s < 3600 else f"{s / 3600:.1f} h" if s < 172_800 else f"{s / 86_400:.1f} days"


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:500]


def _unstorable(ev: AnomalyEvent | AlarmEvent) -> str | None:
    """Make an edge event storable as it is: a registry column or JSON document has no NaN or infinity, so such
    a peak value or piece of evidence becomes null (the number was not usable anyway); an anomaly's score is
    required, and one that is not a finite number cannot be stored (SQLite keeps NaN as NULL) nor served as JSON."""
    if isinstance(ev, AnomalyEvent):
        if not math.isfinite(ev.peak_score):
            return f"anomaly: peak_score must be a finite number (got {ev.peak_score})"
        if ev.peak_value is not None and not math.isfinite(ev.peak_value):
            ev.peak_value = None
    else:
        for k, v in ev.evidence.items():
            if isinstance(v, float) and not math.isfinite(v):
                ev.evidence[k] = None  # type: ignore[assignment]
    return None


class _Stopping(Exception):
    """The worker is stopping while a group is not written: leave it unacknowledged for the next one."""


@dataclass
class SeqWindow:
    """Which sequences of one (gateway, epoch) are written, in bounded space: everything above ``high`` is new; of
    the ``SEQ_WINDOW`` sequences ending at ``high``, bit ``i`` of ``bits`` says whether ``high - i`` is; below
    the window nothing is known. ``missing`` counts the gaps not filled yet.

    >>> w = SeqWindow()
    >>> [w.add(s) for s in (0, 1, 4)], w.seen(3), w.seen(4), w.missing
    ([0, 0, 2], False, True, 2)
    """

    high: int = -1
    bits: int = 0
    missing: int = 0

    @classmethod
    def of(cls, row: IngestEpoch) -> SeqWindow:
        return cls(row.high_seq, int.from_bytes(row.window or b"", "little"), row.missing or 0)

    def dump(self) -> bytes:
        return self.bits.to_bytes(SEQ_WINDOW // 8, "little")

    def seen(self, seq: int) -> bool | None:
        """Written before; None below the window (unknown)."""
        if seq > self.high:
            return False
        d = self.high - seq
        return bool(self.bits >> d & 1) if d < SEQ_WINDOW else None

    def add(self, seq: int) -> int:
        """Record ``seq`` as written; the number of sequences it skipped (a gap: thinned at the edge, or late)."""
        if seq > self.high:
            shift, gap = seq - self.high, seq - self.high - 1
            self.bits = 1 if shift >= SEQ_WINDOW else ((self.bits << shift) | 1) & ((1 << SEQ_WINDOW) - 1)
            self.high, self.missing = seq, self.missing + gap
            return gap
        d = self.high - seq
        if d < SEQ_WINDOW and not self.bits >> d & 1:
            self.bits |= 1 << d
            self.missing = max(0, self.missing - 1)  # a late fill
        return 0


@dataclass
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    epoch: int = 0
    """The broker connection it arrived on: after a reconnect the broker delivers it again (same session)
    and message ids may be reused, so only the new copy is acknowledged."""
    arrival_ns: int = 0
    """Wall-clock time it arrived (0: when it is classified); what future timestamps and clock offsets are
    measured against."""
    handle: Any = None
    """What the engine needs to acknowledge it, when that is not an MQTT message id (``cloud.ingest_nats``)."""


@dataclass
class _Group:
    """The messages written together in one store call and one registry transaction."""

    acks: list[_Msg] = field(default_factory=list)
    rows: Rows = field(default_factory=Rows)
    batches: list[tuple[_Msg, TelemetryBatch]] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)
    points: int = 0
    keys: set[BatchKey] = field(default_factory=set)
    """The batches to write: pending in the worker until the registry has them."""
    encoded: Any = None
    committed: dict[EpochKey, tuple[set[int], set[int]]] = field(default_factory=dict)
    """Per gateway epoch, the telemetry and event sequences to tell the gateway about once this group is written:
    written now, written before (a resend), or dead-lettered for good."""
    clock: dict[tuple[str, str], int] = field(default_factory=dict)
    """Per gateway, the largest (sent_ns - arrival) of its batches here."""
    future: dict[tuple[str, str], int] = field(default_factory=dict)
    """Per gateway, the samples dead-lettered for being stamped too far ahead."""

    def commit_later(self, tenant: str, gateway: str, epoch: str, seq: int, event: bool = False) -> None:
        if epoch:  # a gateway from before epochs deletes on PUBACK: nothing to tell it
            self.committed.setdefault((tenant, gateway, epoch), (set(), set()))[event].add(seq)


def decode_telemetry(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> TelemetryBatch:
    """A TelemetryBatch from the wire, validated in one pass by pydantic's JSON parser (~3x cheaper than
    ``json.loads`` then validation on batches of thousands of samples). What it refuses goes through
    ``models.wire.decode``, which words the reason (schema version, lengths...) for the dead letter."""
    raw = inflate(payload, max_bytes)
    try:
        return TelemetryBatch.model_validate_json(raw)
    except ValidationError:
        return decode(payload, TelemetryBatch, max_bytes)


class Ingest:
    def __init__(self, settings: CloudSettings, store: TimeSeriesStore, registry: Registry,
                 on_written: Callable[[list[TelemetryBatch]], None] | None = None,
                 on_events: Callable[[list], None] | None = None,
                 on_status: Callable[[list[GatewayStatus]], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._on_written = on_written
        self._on_events = on_events  # rules that turn edge events into alerts (after the events are stored)
        self._on_status = on_status  # rules that remember when a gateway was offline (power loss)
        self._q: queue.Queue[_Msg] = queue.Queue()
        self._handoff: queue.Queue[_Group] = queue.Queue(maxsize=1)
        self._writer_busy = threading.Event()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._epoch = 0
        self._pending: set[BatchKey] = set()
        self._pending_lock = threading.Lock()
        self._known_tenants: set[str] = set()
        self._known_assets: set[tuple[str, str]] = set()
        self._known_since = time.monotonic()
        self.counters = {
            "messages": 0, "batches_written": 0, "points_written": 0, "groups_written": 0, "duplicates": 0,
            "dead_letters": 0, "events": 0, "store_retries": 0, "registry_retries": 0, "seq_gaps": 0,
            "other_partition": 0, "statuses": 0, "over_limit": 0, "future_samples": 0, "new_epochs": 0,
            "seq_below_window": 0, "commits_published": 0,
        }
        # Personal text values are pseudonymised (or dropped) in the preparer, before any store, log or hook.
        self.pii = Pseudonymiser(load_key(settings.pii_key_file), self.counters)
        self._client = self._make_client()
        self._threads = [threading.Thread(target=self._prepare_loop, name="ingest-prepare", daemon=True),
                         threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)]

    # -- broker ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.mqtt_version == "5"
        # A stable client id with a persistent session: while this worker is down the broker keeps
        # (and on reconnect delivers) what arrived for it, including unacknowledged messages.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.ingest_client_id,
                        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True,
                        **({} if v5 else {"clean_session": False}))
        mqttconn.configure(c, s)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(1, 30)
        return c

    def _filters(self) -> list[str]:
        s = self.settings
        shared = s.ingest_shared and s.ingest_mode == "shared"
        return [topics.ingest_filter(k, shared=shared) for k in ("telemetry", "events", "status")]

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.error("ingest: broker refused connection: %s", reason_code)
            return
        self._epoch += 1
        client.subscribe([(f, 1) for f in self._filters()])
        self.connected.set()
        log.info("ingest: connected to %s", self.settings.mqtt_url)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        log.info("ingest: subscribed to %s", self._filters())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("ingest: disconnected from broker (%s), reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._q.put(_Msg(msg.mid, msg.qos, msg.topic, msg.payload, self._epoch, time.time_ns()))

    def start(self) -> None:
        host, port = mqttconn.broker_address(self.settings)
        kwargs: dict = {}
        if self.settings.mqtt_version == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            # Bounds what the broker sends ahead of our acknowledgements (its default is 20 messages,
            # too few to keep one group writing while the next one is prepared).
            props.ReceiveMaximum = max(1, min(self.settings.ingest_max_inflight, 65_535))
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(host, port, keepalive=30, **kwargs)
        self._client.loop_start()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    # -- the pipeline --------------------------------------------------------------------------
    def _writer_free(self) -> bool:
        return self._handoff.empty() and not self._writer_busy.is_set()

    def _collect(self) -> _Group | None:
        """Decode arriving messages into a group until the point budget is spent, or the writer is free
        and nothing more is waiting."""
        try:
            first = self._q.get(timeout=0.2)
        except queue.Empty:
            return None
        group = _Group()
        self._add(first, group)
        budget = self.settings.ingest_max_batch_points
        # A third of the window: one group writing, one handed over, one being collected.
        max_msgs = max(1, self.settings.ingest_max_inflight // 3)
        while group.points < budget and len(group.acks) < max_msgs and not self._stop.is_set():
            try:
                m = self._q.get_nowait()
            except queue.Empty:
                if self._writer_free():
                    break
                try:
                    m = self._q.get(timeout=0.005)
                except queue.Empty:
                    continue
            self._add(m, group)
        return group

    def _add(self, m: _Msg, group: _Group) -> None:
        self.counters["messages"] += 1
        group.acks.append(m)
        self._classify(m, group)

    def _prepare_loop(self) -> None:
        while not self._stop.is_set():
            group = self._collect()
            if group is None:
                continue
            try:
                self._retrying(lambda g=group: self._prepare(g), "registry")
            except _Stopping:
                return
            while not self._stop.is_set():
                try:
                    self._handoff.put(group, timeout=0.2)
                    break
                except queue.Full:
                    pass

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            try:
                group = self._handoff.get(timeout=0.2)
            except queue.Empty:
                continue
            self._writer_busy.set()
            try:
                self._commit(group, retry=True)
            except _Stopping:
                return
            finally:
                self._writer_busy.clear()

    def process(self, msgs: list[_Msg]) -> None:
        """Write one group synchronously: both halves of the pipeline in the calling thread."""
        group = _Group()
        for m in msgs:
            self._add(m, group)
        self._prepare(group)
        self._commit(group, retry=False)

    def _prepare(self, group: _Group) -> None:
        self._dedupe(group)
        group.encoded = self.store.prepare(group.rows)  # the CPU half of the store write, off the writer

    def _commit(self, group: _Group, retry: bool) -> None:
        try:
            if retry:
                self._retrying(lambda: self._write_store(group), "store")
                self._retrying(lambda: self._write_registry_isolating(group), "registry")
            else:
                self._write_store(group)
                self._write_registry_isolating(group)
        finally:
            with self._pending_lock:
                self._pending.difference_update(group.keys)
        self._publish_committed(group)
        self._ack(group.acks)
        for hook, items in ((self._on_status, group.statuses), (self._on_written, [b for _, b in group.batches]),
                            (self._on_events, group.events)):
            if hook is not None and items:
                try:
                    hook(items)
                except Exception:
                    log.exception("ingest: rule hook failed")

    def _publish_committed(self, group: _Group) -> None:
        """Tell each gateway what of it is now durably written. Before the broker ack: if this process dies in
        between, the broker delivers the batches again, they are duplicates, and the gateway is told again."""
        for (tenant, gateway, epoch), (tel, ev) in group.committed.items():
            try:
                topic = topics.committed(tenant, gateway)
            except ValueError:
                continue  # a gateway id no topic can name: nothing was sent from there
            msg = Committed(epoch=epoch, telemetry=sorted(tel), events=sorted(ev))
            self._publish(topic, encode(msg))
            self.counters["commits_published"] += 1

    # The engine seam: how written messages are acknowledged and commits published (MQTT here; NATS JetStream in
    # cloud.ingest_nats, which overrides these two, the client, start, stop and owns).
    def _ack(self, msgs: list[_Msg]) -> None:
        epoch = self._epoch
        for m in msgs:
            if m.qos > 0 and m.epoch == epoch:
                self._client.ack(m.mid, m.qos)

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)

    def _retrying(self, fn: Callable[[], None], what: str) -> None:
        """Run ``fn`` until it works, holding the group's messages unacknowledged meanwhile: the registry
        being away (or a bug on one group) must delay data, never lose it or stop the worker for good."""
        delay = 0.5
        while True:
            try:
                fn()
                return
            except _Stopping:
                raise
            except DBAPIError as exc:
                self.counters["registry_retries"] += 1
                log.warning("registry unavailable (%s); retrying in %.1fs", str(exc).splitlines()[0], delay)
            except Exception:
                self.counters[f"{what}_retries"] = self.counters.get(f"{what}_retries", 0) + 1
                log.exception("ingest: %s step failed; retrying in %.1fs", what, delay)
            if self._stop.wait(delay):
                raise _Stopping
            delay = min(delay * 2, 10.0)

    # -- decoding ------------------------------------------------------------------------------
    def _dead(self, group: _Group, m: _Msg, reason: str, tenant: str | None = None,
              payload: bytes | None = None) -> None:
        self.counters["dead_letters"] += 1
        # The reason may quote the hostile input: PostgreSQL text cannot hold NUL, and a row the registry
        # refuses would hold up every message behind this one.
        topic, reason = _printable(m.topic[:MAX_TOPIC_LEN]), _printable(reason[:2000])
        log.warning("dead letter from %s: %s", topic, reason)
        payload = self.pii.scrub_payload(m.payload if payload is None else payload, self.registry)  # nothing personal
        group.dead.append({"received_ns": time.time_ns(), "tenant": tenant, "topic": topic, "reason": reason,
                           "payload": payload})

    def owns(self, tenant: str, gateway: str) -> bool:
        """In partitioned mode, whether this worker's partition holds the gateway."""
        s = self.settings
        if s.ingest_mode != "partitioned" or s.ingest_partitions <= 1:
            return True
        return zlib.crc32(f"{tenant}/{gateway}".encode()) % s.ingest_partitions == s.ingest_partition

    def _topic_refused(self, topic: str) -> str | None:
        """Why a topic is refused before it is parsed: too long, or tenant/gateway levels the registry cannot hold."""
        limit = self.settings.ingest_max_topic_bytes
        if len(topic.encode(errors="surrogatepass")) > limit:
            return f"topic longer than TWIN_INGEST_MAX_TOPIC_BYTES={limit} bytes"
        levels = topic.split("/")
        if len(levels) >= 4 and not 1 <= len(levels[2]) <= MAX_ID_LEN:
            return f"topic's tenant level must be 1 to {MAX_ID_LEN} characters (got {len(levels[2])})"
        if len(levels) >= 4 and not 1 <= len(levels[3]) <= MAX_ID_LEN:
            return f"topic's gateway level must be 1 to {MAX_ID_LEN} characters (got {len(levels[3])})"
        return None

    def _classify(self, m: _Msg, group: _Group) -> None:
        refused = self._topic_refused(m.topic)
        try:
            if refused:
                raise ValueError(refused)
            parts = topics.parse(m.topic)
        except ValueError as exc:
            if self.owns("", ""):  # names no gateway: exactly one worker (the owner of the empty key) keeps it
                self.counters["over_limit"] += refused is not None
                self._dead(group, m, str(exc))
            return
        if not self.owns(parts.tenant, parts.gateway):
            self.counters["other_partition"] += 1
            return
        limit = self.settings.ingest_max_payload_bytes
        if len(m.payload) > limit:
            self.counters["over_limit"] += 1
            self._dead(group, m, f"{parts.kind}: payload of {len(m.payload)} bytes is larger than "
                       f"TWIN_INGEST_MAX_PAYLOAD_BYTES={limit}", parts.tenant)
            return
        try:
            if parts.kind == "telemetry":
                msg: TelemetryBatch | GatewayStatus | object = decode_telemetry(m.payload, limit)
            elif parts.kind == "events":
                msg = decode_event(m.payload, limit)
            else:
                msg = decode(m.payload, GatewayStatus, limit)
        except PayloadTooLarge as exc:
            self.counters["over_limit"] += 1
            self._dead(group, m, f"{parts.kind}: {exc} (TWIN_INGEST_MAX_PAYLOAD_BYTES)", parts.tenant)
            return
        except WireError as exc:
            self._dead(group, m, f"{parts.kind}: {exc}", parts.tenant)
            return
        except Exception as exc:  # a payload that trips the decoder itself must not stop the worker
            log.exception("ingest: cannot decode a message on %s", m.topic[:MAX_TOPIC_LEN])
            self._dead(group, m, f"{parts.kind}: cannot decode ({type(exc).__name__}: {exc})", parts.tenant)
            return
        if isinstance(msg, AnomalyEvent | AlarmEvent | TelemetryBatch):
            # Said to the gateway that sent it (the topic's, which the broker's ACL vouches for) once this group is
            # written, whether as data or as a dead letter: either way, sending it again would change nothing.
            group.commit_later(parts.tenant, parts.gateway, msg.epoch, msg.seq,
                               event=not isinstance(msg, TelemetryBatch))
        if (msg.tenant, msg.gateway) != (parts.tenant, parts.gateway):  # type: ignore[attr-defined]
            self._dead(group, m, f"payload says {msg.tenant}/{msg.gateway}, topic says "  # type: ignore
                       f"{parts.tenant}/{parts.gateway}", parts.tenant)
            return
        if isinstance(msg, TelemetryBatch):
            n, most = msg.n_samples + sum(len(t.t_ns) for t in msg.text), self.settings.ingest_max_batch_samples
            if n > most:
                self.counters["over_limit"] += 1
                self._dead(group, m, f"telemetry: {n} samples in one batch, more than "
                           f"TWIN_INGEST_MAX_BATCH_SAMPLES={most}", parts.tenant)
                return
            if not m.arrival_ns:
                m.arrival_ns = time.time_ns()
            if msg.sent_ns > 0:
                gw, offset = (msg.tenant, msg.gateway), msg.sent_ns - m.arrival_ns
                group.clock[gw] = max(group.clock.get(gw, offset), offset)
            group.batches.append((m, msg))
            group.points += msg.n_samples
        elif isinstance(msg, GatewayStatus):
            self.counters["statuses"] += 1
            group.statuses.append(msg)
        else:
            refused = _unstorable(msg)  # type: ignore[arg-type]
            if refused:
                self._dead(group, m, f"events: {refused}", parts.tenant)
                return
            group.events.append(msg)

    def _dedupe(self, group: _Group) -> None:
        """Drop batches already written — by an earlier group still in the writer, or (registry) before — and
        keep the rest's samples that are not stamped too far ahead."""
        group.rows = Rows()
        group.keys = set()
        if not group.batches:
            return
        keys = {(b.tenant, b.gateway, b.epoch, b.seq) for _, b in group.batches}
        # Pending first, then the registry: a key leaves the pending set only after the registry has it.
        with self._pending_lock:
            seen = keys & self._pending
        ask = sorted({k[:3] for k in keys - seen})
        windows: dict[EpochKey, SeqWindow] = {}
        if ask:
            with self.registry.session() as s:
                for i in range(0, len(ask), 500):
                    q = select(IngestEpoch).where(
                        tuple_(IngestEpoch.tenant, IngestEpoch.gateway, IngestEpoch.epoch).in_(ask[i:i + 500]))
                    windows.update(((r.tenant, r.gateway, r.epoch), SeqWindow.of(r)) for r in s.scalars(q))
        fresh = []
        for m, b in group.batches:
            key = (b.tenant, b.gateway, b.epoch, b.seq)
            w = windows.get(key[:3])
            before = w.seen(b.seq) if w is not None and key not in seen else None
            if key in seen or before:
                self.counters["duplicates"] += 1
                continue
            if before is None and w is not None:  # so far behind that the window no longer says: write it again
                self.counters["seq_below_window"] += 1
                log.warning("gateway %s/%s: seq %d of epoch %r is more than %d behind the newest (%d); written "
                            "(again, if it was: the store overwrites)", b.tenant, b.gateway, b.seq, b.epoch,
                            SEQ_WINDOW, w.high)
            seen.add(key)
            group.keys.add(key)
            fresh.append((m, b))
            self._refuse_future(group, m, b)
            for ser in b.series:
                group.rows.extend_series(b.tenant, ser.asset, ser.point, ser.t_ns, ser.values, ser.quality, ser.status)
        group.batches = fresh
        self._protect_text(group)
        with self._pending_lock:
            self._pending |= group.keys

    def _refuse_future(self, group: _Group, m: _Msg, b: TelemetryBatch) -> None:
        """Take out of ``b`` the samples stamped more than the tolerance ahead of their arrival, into one dead
        letter per batch with the reason; counted per worker and per gateway."""
        tol_s = self.settings.ingest_future_tolerance_s
        limit = (m.arrival_ns or time.time_ns()) + int(tol_s * 1e9)
        if all(not s.t_ns or max(s.t_ns) <= limit for s in (*b.series, *b.text)):
            return
        out_series: list[PointSeries] = []
        out_text: list[TextSeries] = []
        kept_series: list[PointSeries] = []
        kept_text: list[TextSeries] = []
        for ser in b.series:
            if not ser.t_ns or max(ser.t_ns) <= limit:
                kept_series.append(ser)
                continue
            ok = [i for i, t in enumerate(ser.t_ns) if t <= limit]
            bad = [i for i, t in enumerate(ser.t_ns) if t > limit]
            cols = ("t_ns", "values", "quality") + (("status",) if ser.status else ())
            out_series.append(ser.model_copy(update={k: [getattr(ser, k)[i] for i in bad] for k in cols}))
            if ok:
                kept_series.append(ser.model_copy(update={k: [getattr(ser, k)[i] for i in ok] for k in cols}))
        for tx in b.text:
            if not tx.t_ns or max(tx.t_ns) <= limit:
                kept_text.append(tx)
                continue
            ok = [i for i, t in enumerate(tx.t_ns) if t <= limit]
            bad = [i for i, t in enumerate(tx.t_ns) if t > limit]
            out_text.append(tx.model_copy(update={k: [getattr(tx, k)[i] for i in bad] for k in ("t_ns", "values")}))
            if ok:
                kept_text.append(tx.model_copy(update={k: [getattr(tx, k)[i] for i in ok] for k in ("t_ns", "values")}))
        b.series, b.text = kept_series, kept_text
        n = sum(len(x.t_ns) for x in (*out_series, *out_text))
        ahead = _duration((max(max(x.t_ns) for x in (*out_series, *out_text)) - limit) / 1e9 + tol_s)
        names = ", ".join(f"{x.asset}/{x.point}" for x in (*out_series, *out_text)[:5])
        more = len(out_series) + len(out_text) - 5
        self.counters["future_samples"] += n
        gw = (b.tenant, b.gateway)
        group.future[gw] = group.future.get(gw, 0) + n
        # The personal text values of the refused part are scrubbed by _dead, like any dead letter's.
        payload = TelemetryBatch(tenant=b.tenant, gateway=b.gateway, epoch=b.epoch, seq=b.seq, sent_ns=b.sent_ns,
                                 series=out_series, text=out_text).model_dump_json().encode()
        self._dead(group, m, f"telemetry: {n} sample(s) stamped more than TWIN_INGEST_FUTURE_TOLERANCE_S={tol_s:g} "
                   f"s ahead of their arrival (up to {ahead} ahead): {names}"
                   f"{f' and {more} more' if more > 0 else ''}", b.tenant, payload=payload)

    def _protect_text(self, group: _Group) -> None:
        """Text points into the group's rows, personal values pseudonymised or dropped (``cloud/pii.py``). The
        batches' own text is replaced, so rules and hooks never hold a clear personal value either."""
        with_text = [(m, b) for m, b in group.batches if b.text]
        if not with_text:
            return
        types = self.pii.asset_types(self.registry, {(b.tenant, t.asset) for _, b in with_text for t in b.text})
        for m, b in with_text:
            b.text, refused = self.pii.prepare_batch(b.tenant, b.text, types, group.rows)
            for reason, ser in refused:
                self._dead(group, m, f"telemetry: {reason}", b.tenant, payload=ser.model_dump_json().encode())

    # -- writing -------------------------------------------------------------------------------
    def _write_store(self, group: _Group) -> None:
        if not len(group.rows):
            self.counters["batches_written"] += len(group.batches)  # batches with no samples are still accepted
            return
        delay = 0.5
        while True:
            try:
                with STORE_WRITE.time():
                    self.store.write_prepared(group.encoded)
                break
            except StoreUnavailable as exc:
                # Hold the messages (not acknowledged) and retry: the broker keeps what follows them.
                self.counters["store_retries"] += 1
                log.warning("store unavailable (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    raise _Stopping from None
                delay = min(delay * 2, 10.0)
            except StoreRejected as exc:
                log.warning("store rejected part of a write (%s); writing batch by batch", exc)
                self._write_each(group)
                break
        self.counters["batches_written"] += len(group.batches)
        self.counters["points_written"] += len(group.rows)
        self.counters["groups_written"] += 1
        observe_ingest_lag(max(s.t_ns[-1] for s in b.series if s.t_ns) for _, b in group.batches
                           if any(s.t_ns for s in b.series))

    def _write_each(self, group: _Group) -> None:
        """Isolate what the store refuses: good series are written, bad ones dead-lettered."""
        for m, b in group.batches:
            for ser in b.series:
                rows = Rows()
                rows.extend_series(b.tenant, ser.asset, ser.point, ser.t_ns, ser.values, ser.quality, ser.status)
                try:
                    self.store.write(rows)
                except StoreRejected as exc:
                    self._dead(group, m, f"{ser.asset}/{ser.point}: {exc}", b.tenant,
                               payload=ser.model_dump_json().encode())
        by_point = {(b.tenant, t.asset, t.point): (m, t) for m, b in group.batches for t in b.text}
        for tr in group.rows.text:  # already pseudonymised: safe in a dead letter
            try:
                self.store.write(Rows(text=[tr], n=len(tr.t_ns)))
            except StoreRejected as exc:
                m, t = by_point[(tr.tenant, tr.asset, tr.point)]
                self._dead(group, m, f"{tr.asset}/{tr.point}: {exc}", tr.tenant, payload=t.model_dump_json().encode())

    def _write_registry(self, group: _Group) -> None:
        reg = self.registry
        if time.monotonic() - self._known_since > KNOWN_TTL_S:
            self._known_tenants, self._known_assets, self._known_since = set(), set(), time.monotonic()
        tenants = ({b.tenant for _, b in group.batches} | {e.tenant for e in group.events}  # type: ignore[attr-defined]
                   | {st.tenant for st in group.statuses}) - self._known_tenants
        assets = {(b.tenant, ser.asset): b.gateway for _, b in group.batches for ser in b.series}
        new_assets = {k: gw for k, gw in assets.items() if k not in self._known_assets}
        now = time.time_ns()
        with reg.session() as s:
            if group.dead:
                s.add_all(DeadLetter(**d) for d in group.dead)
            reg.insert_ignore(s, Tenant, [{"id": t, "name": t} for t in tenants])
            reg.insert_ignore(s, Asset, [{"tenant": t, "id": a, "gateway": g, "first_seen_ns": now}
                                         for (t, a), g in new_assets.items()])
            self._track_sequences(s, group, now)
            for ev in group.events:
                self.counters["events"] += 1
                if isinstance(ev, AnomalyEvent):
                    reg.upsert(s, AnomalyRecord, [ev.model_dump(exclude={"v", "kind", "epoch", "seq"})],
                               keys=("tenant", "event_id"))
                else:
                    reg.upsert(s, AlarmRecord, [ev.model_dump(exclude={"v", "kind", "epoch", "seq", "end_ns"})],  # type: ignore
                               keys=("tenant", "event_id"))
            for st in group.statuses:
                reg.upsert(s, Gateway, [{"tenant": st.tenant, "id": st.gateway, "state": st.state,
                                         "last_seen_ns": st.t_ns or now, "config_version": st.config_version,
                                         "counters": st.counters}], keys=("tenant", "id"))
                if st.assets and st.state == "online":
                    # What a live gateway is configured with: its assets (an asset that moved to this gateway
                    # follows it) and their types. A stale retained "offline" status claims nothing.
                    reg.insert_ignore(s, Tenant, [{"id": st.tenant, "name": st.tenant}])
                    reg.insert_ignore(s, Asset, [{"tenant": st.tenant, "id": a, "gateway": st.gateway,
                                                  "first_seen_ns": now} for a in st.assets])
                    for a, typ in st.assets.items():
                        s.execute(update(Asset).where(Asset.tenant == st.tenant, Asset.id == a)
                                  .values(gateway=st.gateway))
                        s.execute(update(Asset).where(Asset.tenant == st.tenant, Asset.id == a, Asset.type.is_(None))
                                  .values(type=typ))
        self._known_tenants |= tenants
        self._known_assets |= new_assets.keys()

    def _write_registry_isolating(self, group: _Group) -> None:
        """Write the group's registry part; if the registry refuses it for its content (a value its columns
        cannot hold), write it message by message and dead-letter what is refused. Retrying the same content
        would never succeed and would hold up every message behind it."""
        try:
            self._write_registry(group)
            return
        except (DataError, IntegrityError) as exc:
            log.warning("registry refused a group (%s); writing it message by message", _first_line(exc))
        parts: list[tuple[_Group, str, bytes, str]] = []
        for m, b in group.batches:
            parts.append((_Group(batches=[(m, b)], keys={(b.tenant, b.gateway, b.epoch, b.seq)}), m.topic, m.payload,
                          b.tenant))
        for ev in group.events:
            parts.append((_Group(events=[ev]), topics.events(ev.tenant, ev.gateway),  # type: ignore[attr-defined]
                          ev.model_dump_json().encode(), ev.tenant))  # type: ignore[attr-defined]
        for st in group.statuses:
            parts.append((_Group(statuses=[st]), topics.status(st.tenant, st.gateway), st.model_dump_json().encode(),
                          st.tenant))
        if group.dead:
            parts.append((_Group(dead=group.dead), "", b"", ""))
        for sub, topic, payload, tenant in parts:
            try:
                self._write_registry(sub)
            except (DataError, IntegrityError) as exc:
                if not topic:
                    raise
                self.counters["registry_refused"] = self.counters.get("registry_refused", 0) + 1
                refused = _Group()
                self._dead(refused, _Msg(0, 0, topic, payload), f"registry refused it: {_first_line(exc)}", tenant)
                self._write_registry(refused)
                for kept in (group.events, group.statuses):  # rules must not act on what was not stored
                    for item in sub.events + sub.statuses:  # type: ignore[operator]
                        if item in kept:
                            kept.remove(item)

    def _track_sequences(self, s, group: _Group, now: int) -> None:
        """Record the group's batches in their epochs' windows (gaps counted and logged, late fills close them), a
        new epoch on its gateway's row, old epochs pruned; and the gateways' clock offsets and future samples."""
        by_epoch: dict[EpochKey, list[int]] = {}
        for _, b in group.batches:
            by_epoch.setdefault((b.tenant, b.gateway, b.epoch), []).append(b.seq)
        gws = sorted({k[:2] for k in by_epoch} | set(group.clock) | set(group.future))
        if not gws:
            return
        pairs = tuple_(IngestEpoch.tenant, IngestEpoch.gateway)
        # Locked (PostgreSQL) so that two workers sharing a gateway cannot both update its windows from one read;
        # SQLite's single writer refuses a transaction whose read went stale.
        rows = {(r.tenant, r.gateway, r.epoch): r for r in s.scalars(
            select(IngestEpoch).where(pairs.in_(gws)).with_for_update())}
        new = [k for k in by_epoch if k not in rows]
        if new:
            self.registry.insert_ignore(s, IngestEpoch, [
                {"tenant": t, "gateway": g, "epoch": e, "high_seq": -1, "window": b"", "missing": 0,
                 "first_seen_ns": now, "last_seen_ns": now} for t, g, e in new])
            rows.update(((r.tenant, r.gateway, r.epoch), r) for r in s.scalars(
                select(IngestEpoch).where(tuple_(IngestEpoch.tenant, IngestEpoch.gateway, IngestEpoch.epoch)
                                          .in_(new)).with_for_update()))
        for key, seqs in by_epoch.items():
            row, w = rows[key], SeqWindow.of(rows[key])
            for seq in sorted(seqs):
                gap = w.add(seq)
                if gap:
                    self.counters["seq_gaps"] += 1
                    log.warning("gateway %s/%s: %d batch(es) missing before seq %d of epoch %r", *key[:2], gap, seq,
                                key[2])
            row.high_seq, row.window, row.missing, row.last_seen_ns = w.high, w.dump(), w.missing, now
        gw_rows = {(g.tenant, g.id): g for g in s.scalars(
            select(Gateway).where(tuple_(Gateway.tenant, Gateway.id).in_(gws)))}
        for tenant, gw in gws:
            row = gw_rows.get((tenant, gw))
            if row is None:
                row = Gateway(tenant=tenant, id=gw, state="online", last_seen_ns=now, counters={},
                              high_seq=-1, missing_seqs=0, config_version=0, epoch="", epoch_since_ns=0,
                              clock_checked_ns=0, future_samples=0)
                s.add(row)
            mine = {k[2]: r for k, r in rows.items() if k[:2] == (tenant, gw)}
            for e in (e for t, g, e in new if (t, g) == (tenant, gw)):
                # A new outbox (wiped, replaced, reinstalled): its sequence starts again, under an epoch of its own.
                self.counters["new_epochs"] += 1
                if len(mine) > 1:
                    log.info("gateway %s/%s: new outbox epoch %r (was %r); its sequence starts again", tenant, gw,
                             e, row.epoch)
                row.epoch, row.epoch_since_ns = e, now
            if row.epoch in mine:
                row.high_seq = mine[row.epoch].high_seq
            kept = self._prune_epochs(s, row, mine, now)
            row.missing_seqs = min(sum(mine[e].missing or 0 for e in kept), 2**63 - 1)  # hostile seqs: a BIGINT
            row.last_seen_ns = now
            if (offset := group.clock.get((tenant, gw))) is not None:
                if row.clock_offset_ns is None or now - (row.clock_checked_ns or 0) > CLOCK_WINDOW_NS:
                    row.clock_offset_ns, row.clock_checked_ns = offset, now
                else:
                    row.clock_offset_ns = max(row.clock_offset_ns, offset)
            row.future_samples = (row.future_samples or 0) + group.future.get((tenant, gw), 0)

    def _prune_epochs(self, s, gw: Gateway, epochs: dict[str, IngestEpoch], now: int) -> list[str]:
        """Forget the epochs of a gateway not heard from within the retention (never its current one), and all but
        the newest ``EPOCHS_PER_GATEWAY``; the epochs kept. An old epoch is kept a while because its batches may
        still be queued in the broker when the new one starts."""
        cutoff = now - int(self.settings.ingest_epoch_retention_s * 1e9)
        newest = sorted(epochs, key=lambda e: (e == gw.epoch, epochs[e].last_seen_ns), reverse=True)
        kept = []
        for i, e in enumerate(newest):
            if e != gw.epoch and (i >= EPOCHS_PER_GATEWAY or epochs[e].last_seen_ns < cutoff):
                s.delete(epochs[e])
                log.info("gateway %s/%s: forgot outbox epoch %r (last heard from %d)", gw.tenant, gw.id, e,
                         epochs[e].last_seen_ns)
            else:
                kept.append(e)
        return kept
