"""Ingest: MQTT → validate → de-duplicate → time-series store and registry → acknowledge.

A message is acknowledged to the broker (paho manual ack) only after its data is durably written,
so a store outage or a killed worker loses nothing: unacknowledged messages are delivered again.
Several workers split the load through an MQTT 5 shared subscription (``$share/ingest/…``).

What cannot be used is dead-lettered with the reason and the raw payload, counted, logged, and
acknowledged — a malformed message must never block the ones behind it or crash the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select

from cloud.registry import AlarmRecord, AnomalyRecord, Asset, DeadLetter, Gateway, IngestSeen, Registry
from cloud.settings import CloudSettings
from cloud.store import Rows, StoreUnavailable, TimeSeriesStore
from cloud.store.base import StoreRejected
from models import topics
from models.wire import AnomalyEvent, GatewayStatus, TelemetryBatch, WireError, decode, decode_event

log = logging.getLogger("cloud.ingest")

MAX_TOPIC_LEN = 256
SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps a worker's session (and its queued messages) while the worker is away."""


@dataclass
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class _Group:
    """The messages written together in one store call and one registry transaction."""

    acks: list[_Msg] = field(default_factory=list)
    rows: Rows = field(default_factory=Rows)
    batches: list[tuple[_Msg, TelemetryBatch]] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)


class Ingest:
    def __init__(self, settings: CloudSettings, store: TimeSeriesStore, registry: Registry,
                 on_written: Callable[[list[TelemetryBatch]], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._on_written = on_written
        self._q: queue.Queue[_Msg] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.counters = {
            "messages": 0, "batches_written": 0, "points_written": 0, "duplicates": 0,
            "dead_letters": 0, "events": 0, "store_retries": 0, "seq_gaps": 0, "other_partition": 0,
        }
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)

    # -- broker ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.mqtt_version == "5"
        # A stable client id with a persistent session: while this worker is down the broker keeps
        # (and on reconnect delivers) what arrived for it, including unacknowledged messages.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.ingest_client_id,
                        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True,
                        **({} if v5 else {"clean_session": False}))
        if s.mqtt_username:
            c.username_pw_set(s.mqtt_username, s.mqtt_password)
        if urlparse(s.mqtt_url).scheme == "mqtts":
            c.tls_set(ca_certs=s.mqtt_ca_file)
        c.on_connect = self._on_connect
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
        client.subscribe([(f, 1) for f in self._filters()])
        self.connected.set()
        log.info("ingest: connected to %s, subscribed %s", self.settings.mqtt_url, self._filters())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("ingest: disconnected from broker (%s), reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._q.put(_Msg(msg.mid, msg.qos, msg.topic, msg.payload))

    def start(self) -> None:
        u = urlparse(self.settings.mqtt_url)
        kwargs: dict = {}
        if self.settings.mqtt_version == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(u.hostname or "127.0.0.1", u.port or 1883, keepalive=30, **kwargs)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    # -- the writer loop -----------------------------------------------------------------------
    def _collect(self) -> list[_Msg]:
        try:
            first = self._q.get(timeout=0.2)
        except queue.Empty:
            return []
        msgs = [first]
        deadline = time.monotonic() + self.settings.ingest_max_wait_ms / 1000
        budget = self.settings.ingest_max_batch_points
        # Group messages until the point budget or the wait is spent: fewer, larger store writes.
        while budget > 0 and len(msgs) < 1000:
            left = deadline - time.monotonic()
            try:
                m = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            msgs.append(m)
            budget -= max(1, len(m.payload) // 20)  # a rough point count; exact counting costs a parse
        return msgs

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._collect()
            if msgs:
                self.process(msgs)

    def process(self, msgs: list[_Msg]) -> None:
        self.counters["messages"] += len(msgs)
        group = _Group(acks=list(msgs))
        for m in msgs:
            self._classify(m, group)
        self._dedupe(group)
        self._write_store(group)
        self._write_registry(group)
        for m in group.acks:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)
        if self._on_written is not None and group.batches:
            self._on_written([b for _, b in group.batches])

    def _dead(self, group: _Group, m: _Msg, reason: str, tenant: str | None = None,
              payload: bytes | None = None) -> None:
        self.counters["dead_letters"] += 1
        log.warning("dead letter from %s: %s", m.topic[:MAX_TOPIC_LEN], reason)
        group.dead.append({"received_ns": time.time_ns(), "tenant": tenant, "topic": m.topic[:MAX_TOPIC_LEN],
                           "reason": reason[:2000], "payload": m.payload if payload is None else payload})

    def owns(self, tenant: str, gateway: str) -> bool:
        """In partitioned mode, whether this worker's partition holds the gateway."""
        s = self.settings
        if s.ingest_mode != "partitioned" or s.ingest_partitions <= 1:
            return True
        return zlib.crc32(f"{tenant}/{gateway}".encode()) % s.ingest_partitions == s.ingest_partition

    def _classify(self, m: _Msg, group: _Group) -> None:
        try:
            parts = topics.parse(m.topic)
        except ValueError as exc:
            if self.owns("", ""):  # names no gateway: exactly one worker (the owner of the empty key) keeps it
                self._dead(group, m, str(exc))
            return
        if not self.owns(parts.tenant, parts.gateway):
            self.counters["other_partition"] += 1
            return
        try:
            if parts.kind == "telemetry":
                msg: TelemetryBatch | GatewayStatus | object = decode(m.payload, TelemetryBatch)
            elif parts.kind == "events":
                msg = decode_event(m.payload)
            else:
                msg = decode(m.payload, GatewayStatus)
        except WireError as exc:
            self._dead(group, m, f"{parts.kind}: {exc}", parts.tenant)
            return
        if (msg.tenant, msg.gateway) != (parts.tenant, parts.gateway):  # type: ignore[attr-defined]
            self._dead(group, m, f"payload says {msg.tenant}/{msg.gateway}, topic says "  # type: ignore
                       f"{parts.tenant}/{parts.gateway}", parts.tenant)
            return
        if isinstance(msg, TelemetryBatch):
            group.batches.append((m, msg))
        elif isinstance(msg, GatewayStatus):
            group.statuses.append(msg)
        else:
            group.events.append(msg)

    def _dedupe(self, group: _Group) -> None:
        if not group.batches:
            return
        by_gw: dict[tuple[str, str], list[int]] = {}
        for _, b in group.batches:
            by_gw.setdefault((b.tenant, b.gateway), []).append(b.seq)
        seen: set[tuple[str, str, int]] = set()
        with self.registry.session() as s:
            for (tenant, gw), seqs in by_gw.items():
                q = select(IngestSeen.seq).where(IngestSeen.tenant == tenant, IngestSeen.gateway == gw,
                                                 IngestSeen.seq.in_(seqs))
                seen.update((tenant, gw, seq) for seq in s.scalars(q))
        fresh = []
        for m, b in group.batches:
            key = (b.tenant, b.gateway, b.seq)
            if key in seen:
                self.counters["duplicates"] += 1
                continue
            seen.add(key)
            fresh.append((m, b))
            for ser in b.series:
                group.rows.extend_series(b.tenant, ser.asset, ser.point, ser.t_ns, ser.values, ser.quality)
        group.batches = fresh

    def _write_store(self, group: _Group) -> None:
        if not len(group.rows):
            return
        delay = 0.5
        while True:
            try:
                self.store.write(group.rows)
                break
            except StoreUnavailable as exc:
                # Hold the messages (not acknowledged) and retry: the broker keeps them for us.
                self.counters["store_retries"] += 1
                log.warning("store unavailable (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)
            except StoreRejected as exc:
                log.warning("store rejected part of a write (%s); writing batch by batch", exc)
                self._write_each(group)
                break
        self.counters["batches_written"] += len(group.batches)
        self.counters["points_written"] += len(group.rows)

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

    def _write_registry(self, group: _Group) -> None:
        reg = self.registry
        with reg.session() as s:
            if group.dead:
                s.add_all(DeadLetter(**d) for d in group.dead)
            tenants = {b.tenant for _, b in group.batches} | {e.tenant for e in group.events} | \
                      {st.tenant for st in group.statuses}
            from cloud.registry import Tenant

            reg.insert_ignore(s, Tenant, [{"id": t, "name": t} for t in tenants])
            now = time.time_ns()
            reg.insert_ignore(s, IngestSeen, [{"tenant": b.tenant, "gateway": b.gateway, "seq": b.seq}
                                              for _, b in group.batches])
            assets = {(b.tenant, ser.asset, b.gateway) for _, b in group.batches for ser in b.series}
            reg.insert_ignore(s, Asset, [{"tenant": t, "id": a, "gateway": g, "first_seen_ns": now}
                                         for t, a, g in assets])
            self._track_sequences(s, group, now)
            for ev in group.events:
                self.counters["events"] += 1
                if isinstance(ev, AnomalyEvent):
                    reg.upsert(s, AnomalyRecord, [ev.model_dump(exclude={"v", "kind", "seq"})],
                               keys=("tenant", "event_id"))
                else:
                    reg.upsert(s, AlarmRecord, [ev.model_dump(exclude={"v", "kind", "seq", "end_ns"})],
                               keys=("tenant", "event_id"))
            for st in group.statuses:
                reg.upsert(s, Gateway, [{"tenant": st.tenant, "id": st.gateway, "state": st.state,
                                         "last_seen_ns": st.t_ns or now, "config_version": st.config_version,
                                         "counters": st.counters}], keys=("tenant", "id"))

    def _track_sequences(self, s, group: _Group, now: int) -> None:
        """Gaps in a gateway's sequence numbers are counted and logged; late fills close them."""
        by_gw: dict[tuple[str, str], list[int]] = {}
        for _, b in group.batches:
            by_gw.setdefault((b.tenant, b.gateway), []).append(b.seq)
        for (tenant, gw), seqs in by_gw.items():
            row = s.get(Gateway, (tenant, gw))
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
