"""Ingest: MQTT → validate → de-duplicate → time-series store and registry → acknowledge.

A message is acknowledged to the broker (paho manual ack) only after its data is durably written,
so a store outage or a killed worker loses nothing: unacknowledged messages are delivered again.
Several workers split the load (see ``CloudSettings.ingest_mode``).

What cannot be used is dead-lettered with the reason and the raw payload, counted, logged, and
acknowledged — a malformed message must never block the ones behind it or crash the worker.

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
from cloud.pii import Pseudonymiser, load_key
from cloud.registry import AlarmRecord, AnomalyRecord, Asset, DeadLetter, Gateway, IngestSeen, Registry, Tenant
from cloud.settings import CloudSettings
from cloud.store import Rows, StoreUnavailable, TimeSeriesStore
from cloud.store.base import StoreRejected
from models import topics
from models.wire import (
    MAX_PAYLOAD_BYTES,
    AlarmEvent,
    AnomalyEvent,
    GatewayStatus,
    PayloadTooLarge,
    TelemetryBatch,
    WireError,
    decode,
    decode_event,
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


def _printable(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped, so any database and log can keep it."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    epoch: int = 0
    """The broker connection it arrived on: after a reconnect the broker delivers it again (same session)
    and message ids may be reused, so only the new copy is acknowledged."""


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
    keys: set[tuple[str, str, int]] = field(default_factory=set)
    """(tenant, gateway, seq) of the batches to write: pending in the worker until the registry has them."""
    encoded: Any = None


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
        self._pending: set[tuple[str, str, int]] = set()
        self._pending_lock = threading.Lock()
        self._known_tenants: set[str] = set()
        self._known_assets: set[tuple[str, str]] = set()
        self._known_since = time.monotonic()
        self.counters = {
            "messages": 0, "batches_written": 0, "points_written": 0, "groups_written": 0, "duplicates": 0,
            "dead_letters": 0, "events": 0, "store_retries": 0, "registry_retries": 0, "seq_gaps": 0,
            "other_partition": 0, "statuses": 0, "over_limit": 0,
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
        self._q.put(_Msg(msg.mid, msg.qos, msg.topic, msg.payload, self._epoch))

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
        epoch = self._epoch
        for m in group.acks:
            if m.qos > 0 and m.epoch == epoch:
                self._client.ack(m.mid, m.qos)
        for hook, items in ((self._on_status, group.statuses), (self._on_written, [b for _, b in group.batches]),
                            (self._on_events, group.events)):
            if hook is not None and items:
                try:
                    hook(items)
                except Exception:
                    log.exception("ingest: rule hook failed")

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
        payload = self.pii.scrub_payload(m.payload if payload is None else payload)  # no clear personal values
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
        """Drop batches already written — by an earlier group still in the writer, or (registry) before."""
        group.rows = Rows()
        group.keys = set()
        if not group.batches:
            return
        keys = {(b.tenant, b.gateway, b.seq) for _, b in group.batches}
        # Pending first, then the registry: a key leaves the pending set only after the registry has it.
        with self._pending_lock:
            seen = keys & self._pending
        ask = list(keys - seen)
        if ask:
            with self.registry.session() as s:
                for i in range(0, len(ask), 500):
                    q = select(IngestSeen.tenant, IngestSeen.gateway, IngestSeen.seq).where(
                        tuple_(IngestSeen.tenant, IngestSeen.gateway, IngestSeen.seq).in_(ask[i:i + 500]))
                    seen.update((t, g, q_) for t, g, q_ in s.execute(q))
        fresh = []
        for m, b in group.batches:
            key = (b.tenant, b.gateway, b.seq)
            if key in seen:
                self.counters["duplicates"] += 1
                continue
            seen.add(key)
            group.keys.add(key)
            fresh.append((m, b))
            for ser in b.series:
                group.rows.extend_series(b.tenant, ser.asset, ser.point, ser.t_ns, ser.values, ser.quality)
        group.batches = fresh
        self._protect_text(group)
        with self._pending_lock:
            self._pending |= group.keys

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

    def _write_each(self, group: _Group) -> None:
        """Isolate what the store refuses: good series are written, bad ones dead-lettered."""
        for m, b in group.batches:
            for ser in b.series:
                rows = Rows()
                rows.extend_series(b.tenant, ser.asset, ser.point, ser.t_ns, ser.values, ser.quality)
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
            reg.insert_ignore(s, IngestSeen, [{"tenant": t, "gateway": g, "seq": q} for t, g, q in group.keys])
            reg.insert_ignore(s, Asset, [{"tenant": t, "id": a, "gateway": g, "first_seen_ns": now}
                                         for (t, a), g in new_assets.items()])
            self._track_sequences(s, group, now)
            for ev in group.events:
                self.counters["events"] += 1
                if isinstance(ev, AnomalyEvent):
                    reg.upsert(s, AnomalyRecord, [ev.model_dump(exclude={"v", "kind", "seq"})],
                               keys=("tenant", "event_id"))
                else:
                    reg.upsert(s, AlarmRecord, [ev.model_dump(exclude={"v", "kind", "seq", "end_ns"})],  # type: ignore
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
            parts.append((_Group(batches=[(m, b)], keys={(b.tenant, b.gateway, b.seq)}), m.topic, m.payload, b.tenant))
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
        """Gaps in a gateway's sequence numbers are counted and logged; late fills close them."""
        by_gw: dict[tuple[str, str], list[int]] = {}
        for _, b in group.batches:
            by_gw.setdefault((b.tenant, b.gateway), []).append(b.seq)
        if not by_gw:
            return
        rows = {(g.tenant, g.id): g for g in s.scalars(
            select(Gateway).where(tuple_(Gateway.tenant, Gateway.id).in_(list(by_gw))))}
        for (tenant, gw), seqs in by_gw.items():
            row = rows.get((tenant, gw))
            if row is None:
                row = Gateway(tenant=tenant, id=gw, state="online", last_seen_ns=now, counters={},
                              high_seq=-1, missing_seqs=0, config_version=0)
                s.add(row)
            high, missing = row.high_seq if row.high_seq is not None else -1, row.missing_seqs or 0
            for seq in sorted(seqs):
                if seq > high + 1:
                    gap = seq - high - 1
                    missing += gap
                    self.counters["seq_gaps"] += 1
                    log.warning("gateway %s/%s: %d batch(es) missing before seq %d", tenant, gw, gap, seq)
                elif seq <= high:
                    missing = max(0, missing - 1)
                high = max(high, seq)
            row.high_seq, row.missing_seqs, row.last_seen_ns = high, missing, now
