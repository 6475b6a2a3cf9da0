"""Ingest from a NATS JetStream cluster: each worker receives only the partitions it leases.

Why: with N workers on one MQTT subscription every worker receives the whole stream and drops what is not its
partition, so N workers cost N times the broker's fan-out and one worker's receive rate caps the cluster. Here
the engine splits the stream (see ``deploy/nats/nats.conf`` and ``deploy/README.md``):

- gateways keep publishing MQTT (3.1.1, QoS 1) to the engine's MQTT front, on ``twin/v1/{tenant}/{gateway}/{kind}``;
- the server's subject mapping sends telemetry, events and status to ``twin.in.{p}.{tenant}.{gateway}.{kind}``,
  ``p = partition(P, tenant, gateway)``: one gateway, one partition, all its kinds in one order;
- one replicated work-queue stream (``TWIN_INGEST``) keeps each message until a worker acknowledges it, which
  the pipeline (``cloud.ingest.Ingest``) does only after the store and the registry have it;
- one durable pull consumer per partition (``ingest-p{p}``); a worker consumes a partition only while it holds
  its lease, a key in a replicated KV bucket that lapses ``TWIN_INGEST_LEASE_TTL_S`` after its last renewal.

Rebalancing: every worker heartbeats ``w.{id}`` in the same bucket; from the live workers each computes its quota
(P / N, the first P mod N sorted ids one more), releases what it holds beyond it (after its messages are
acknowledged) and claims free partitions up to it. A dead worker's leases lapse and the others claim them;
whoever takes a partition recreates its consumer, so whatever the last owner had not acknowledged is delivered
again at once and in order (already written batches are dropped as duplicates by (gateway, epoch, seq)).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import zlib
from typing import Any

from cloud.ingest import Ingest, _Msg

log = logging.getLogger("cloud.ingest")

STREAM = "TWIN_INGEST"
SUBJECT_ROOT = "twin.in"
LEASES = "twin_ingest_leases"
ACK_WAIT_S = 300.0
"""The engine redelivers what a live owner has not acknowledged after this long. Long: while the store is away the
owner holds its messages and retries; handing them over is the lease's job, not the ack timer's."""
FETCH = 200
"""Messages asked for at once per partition."""


def subject_to_topic(subject: str) -> str:
    """``twin.in.{p}.{tenant}.{gateway}.{kind}`` → ``twin/v1/{tenant}/{gateway}/{kind}`` (NATS's MQTT front writes a
    topic's ``.`` as ``//``). Anything else is kept readable for the dead letter."""
    parts = subject.split(".")
    if len(parts) != 6 or ".".join(parts[:2]) != SUBJECT_ROOT:
        return subject
    return "/".join(("twin", "v1", *(p.replace("//", ".") for p in parts[3:])))


def topic_to_subject(topic: str) -> str:
    """An MQTT topic as the NATS subject its MQTT subscribers listen on."""
    return topic.replace(".", "//").replace("/", ".")


def quota(workers: list[str], me: str, partitions: int) -> int:
    """How many partitions ``me`` should hold among ``workers``: an even split, the remainder to the first ids.

    >>> [quota(["a", "b", "c"], w, 12) for w in "abc"], [quota(["a", "b"], w, 5) for w in "ab"]
    ([4, 4, 4], [3, 2])
    """
    ws = sorted(set(workers) | {me})
    n, i = len(ws), ws.index(me)
    return partitions // n + (1 if i < partitions % n else 0)


class NatsIngest(Ingest):
    """The ingest pipeline fed by the partitions this worker leases; acknowledgements go to the engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        self.worker_id = re.sub(r"[^-_=a-zA-Z0-9]", "_", s.ingest_client_id)
        self.counters.update({"partitions_held": 0, "partitions_taken": 0, "partitions_released": 0,
                              "leases_lost": 0, "engine_errors": 0})
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="ingest-nats", daemon=True)
        self._held: dict[int, int] = {}  # partition -> lease revision
        self._renewed: dict[int, float] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._inflight: dict[int, int] = {}
        self._gen = 0
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._main: Any = None

    def _make_client(self) -> None:  # type: ignore[override]
        return None

    def owns(self, tenant: str, gateway: str) -> bool:
        return True  # the engine hands this worker only its partitions' messages

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        except Exception as exc:  # the engine may be gone: the leases then lapse by themselves
            log.warning("ingest: could not release leases on stop (%s)", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)

    async def _shutdown(self) -> None:
        if self._main is not None:
            self._main.cancel()
        for p in list(self._held):  # the pipeline has stopped: what it holds is redelivered to the next owner
            await self._drop(p, release=True, wait=False)
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(f"w.{self.worker_id}")
        if self._nc is not None:  # the acknowledgements and commits still buffered go out; nothing to drain
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()

    # -- engine ----------------------------------------------------------------------------------
    async def _connect(self) -> None:
        import nats
        from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

        s = self.settings

        async def closed(*_: Any) -> None:
            self.connected.clear()

        async def reconnected(*_: Any) -> None:
            self.connected.set()

        self._nc = await nats.connect(servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
                                      name=f"ingest-{self.worker_id}", max_reconnect_attempts=-1,
                                      reconnect_time_wait=0.5, disconnected_cb=closed, reconnected_cb=reconnected)
        # Short: during a leader election after a node is lost, a round that fails fast is retried sooner.
        self._js = self._nc.jetstream(timeout=min(5.0, self.settings.ingest_lease_ttl_s / 2))
        delay = 0.2
        while True:  # a cluster just started has no JetStream leader for a few seconds
            try:
                try:
                    await self._js.stream_info(STREAM)
                except nats.js.errors.NotFoundError:
                    await self._js.add_stream(StreamConfig(
                        name=STREAM, subjects=[f"{SUBJECT_ROOT}.>"], retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE, num_replicas=s.ingest_nats_replicas))
                try:
                    self._kv = await self._js.key_value(LEASES)
                except nats.js.errors.BucketNotFoundError:
                    self._kv = await self._js.create_key_value(KeyValueConfig(
                        bucket=LEASES, ttl=s.ingest_lease_ttl_s, replicas=s.ingest_nats_replicas))
                break
            except Exception as exc:
                if self._stop.is_set():
                    raise
                log.info("ingest: JetStream not ready (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.connected.set()
        log.info("ingest: connected to NATS %s, stream %s, %d partitions", s.nats_url, STREAM,
                 s.ingest_nats_partitions)

    async def _run(self) -> None:
        await self._connect()
        renew = asyncio.create_task(self._renew_loop())
        tick = self.settings.ingest_lease_ttl_s / 3
        try:
            while not self._stop.is_set():
                try:
                    await self._claim()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a node down, a leader election: try again next tick
                    self.counters["engine_errors"] += 1
                    log.warning("ingest: lease round failed (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(tick)
        finally:
            renew.cancel()

    async def _renew_loop(self) -> None:
        """Heartbeat and renew every held lease, all at once, three times per TTL: apart from claiming, so that
        taking partitions (consumers made on a replicated stream: slow) never delays a renewal."""
        from nats.js.errors import KeyWrongLastSequenceError

        kv, me = self._kv, self.worker_id
        tick = self.settings.ingest_lease_ttl_s / 3
        while not self._stop.is_set():
            held = list(self._held.items())
            results = await asyncio.gather(kv.put(f"w.{me}", b"1"),
                                           *(kv.update(f"p.{p}", me.encode(), last=rev) for p, rev in held),
                                           return_exceptions=True)
            for (p, rev), res in zip(held, results[1:], strict=True):
                if self._held.get(p) != rev:
                    continue  # dropped or retaken meanwhile
                if isinstance(res, int):
                    self._held[p], self._renewed[p] = res, time.monotonic()
                elif isinstance(res, KeyWrongLastSequenceError):  # lapsed (this worker stalled), maybe taken
                    self.counters["leases_lost"] += 1
                    log.warning("ingest: lease on partition %d lost", p)
                    await self._drop(p, release=False)
                else:
                    self.counters["engine_errors"] += 1
            self._expire_unrenewed()
            await asyncio.sleep(tick)

    async def _claim(self) -> None:
        """Release what is beyond this worker's quota, claim free partitions up to it."""
        kv, me, n = self._kv, self.worker_id, self.settings.ingest_nats_partitions
        # The bucket's subjects in one stream-leader request (a key listing would make a consumer, which waits
        # for the meta leader: seconds longer after a node is lost). A key deleted lately still has a subject
        # (its marker ages out with the TTL): a worker that left counts a little longer, a released partition
        # is tried after the free ones.
        info = await self._js.stream_info(f"KV_{LEASES}", subjects_filter=f"$KV.{LEASES}.>")
        keys = [k.removeprefix(f"$KV.{LEASES}.") for k in (info.state.subjects or {})]
        workers = [k[2:] for k in keys if k.startswith("w.")]
        taken = {int(k[2:]) for k in keys if k.startswith("p.") and k[2:].isdigit()}
        want = quota(workers, me, n)
        for p in sorted(self._held, reverse=True)[:max(0, len(self._held) - want)]:
            await self._drop(p, release=True)
        start = zlib.crc32(me.encode()) % n  # workers try different free partitions first
        free = sorted((p for p in range(n) if p not in self._held), key=lambda p: (p in taken, (p - start) % n))
        free = free[:max(0, want - len(self._held))]
        revs = await asyncio.gather(*(kv.create(f"p.{p}", me.encode()) for p in free), return_exceptions=True)
        won = [(p, rev) for p, rev in zip(free, revs, strict=True) if isinstance(rev, int)]  # else: another's
        for p, res in zip(won, await asyncio.gather(*(self._take(p, rev) for p, rev in won), return_exceptions=True),
                          strict=True):
            if isinstance(res, Exception):  # its lease lapses unrenewed; claimed again next round
                self.counters["engine_errors"] += 1
                log.warning("ingest: could not take partition %d (%s)", p[0], res)

    def _expire_unrenewed(self) -> None:
        """A lease not renewed within its TTL (the engine unreachable) may be another's now: stop consuming it."""
        ttl = self.settings.ingest_lease_ttl_s
        for p in [p for p, t in self._renewed.items() if time.monotonic() - t > 0.9 * ttl]:
            self.counters["leases_lost"] += 1
            log.warning("ingest: lease on partition %d not renewed for %.1f s; stopped consuming it", p, ttl)
            self._stop_consuming(p)
            self._held.pop(p, None)
            self._renewed.pop(p, None)

    async def _take(self, p: int, rev: int) -> None:
        """Consume partition ``p`` from its oldest unacknowledged message: the consumer is made afresh, so what a
        dead owner held comes now, not after the ack timer."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        name = f"ingest-p{p}"
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(STREAM, name)
        await self._js.add_consumer(STREAM, ConsumerConfig(
            durable_name=name, filter_subject=f"{SUBJECT_ROOT}.{p}.>", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_S, max_deliver=-1,
            max_ack_pending=max(1, self.settings.ingest_max_inflight)))
        sub = await self._js.pull_subscribe_bind(name, STREAM)
        self._held[p], self._renewed[p] = rev, time.monotonic()
        self._inflight.setdefault(p, 0)
        self._tasks[p] = asyncio.create_task(self._consume(p, sub))
        self.counters["partitions_taken"] += 1
        self.counters["partitions_held"] = len(self._held)
        log.info("ingest: partition %d taken (%d held)", p, len(self._held))

    def _stop_consuming(self, p: int) -> None:
        task = self._tasks.pop(p, None)
        if task is not None:
            task.cancel()

    async def _drop(self, p: int, release: bool, wait: bool = True) -> None:
        """Stop consuming ``p``; to release it, first let what it delivered be written and acknowledged (so the
        next owner starts after it), then delete the lease so the next owner need not wait for it to lapse."""
        self._stop_consuming(p)
        rev = self._held.pop(p, None)
        self._renewed.pop(p, None)
        self.counters["partitions_held"] = len(self._held)
        if not release or rev is None:
            return
        deadline = time.monotonic() + self.settings.ingest_lease_ttl_s
        while wait and self._inflight.get(p, 0) > 0 and time.monotonic() < deadline and not self._stop.is_set():
            await asyncio.sleep(0.05)
        try:
            await self._kv.delete(f"p.{p}", last=rev)
        except Exception as exc:
            log.info("ingest: lease on partition %d not released (%s); it lapses", p, exc)
        self.counters["partitions_released"] += 1
        log.info("ingest: partition %d released (%d held)", p, len(self._held))

    async def _consume(self, p: int, sub: Any) -> None:
        import nats.errors

        limit = max(1, self.settings.ingest_max_inflight)
        while not self._stop.is_set():
            if self._q.qsize() >= limit:  # the pipeline is behind: the engine keeps the rest
                await asyncio.sleep(0.01)
                continue
            try:
                msgs = await sub.fetch(FETCH, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["engine_errors"] += 1
                log.info("ingest: fetch on partition %d failed (%s); retrying", p, exc)
                await asyncio.sleep(0.5)
                continue
            now = time.time_ns()
            self._inflight[p] = self._inflight.get(p, 0) + len(msgs)
            for m in msgs:
                self._q.put(_Msg(0, 1, subject_to_topic(m.subject), m.data, 0, now, handle=(p, m)))

    # -- the pipeline's seam ---------------------------------------------------------------------
    def _ack(self, msgs: list[_Msg]) -> None:
        handles = [m.handle for m in msgs if m.handle is not None]
        if handles:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._ack_now(handles)))

    async def _ack_now(self, handles: list[tuple[int, Any]]) -> None:
        for p, m in handles:
            try:
                await m.ack()
            except Exception as exc:  # not acknowledged: delivered again later, dropped as a duplicate then
                log.info("ingest: ack on partition %d failed (%s)", p, exc)
            self._inflight[p] = max(0, self._inflight.get(p, 0) - 1)

    def _publish(self, topic: str, payload: bytes) -> None:
        """A commit to a gateway, through the engine's MQTT front (its subscribers get it at QoS 0: one lost is
        sent again when the gateway resends the batch)."""
        subject = topic_to_subject(topic)
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._nc.publish(subject, payload)))
