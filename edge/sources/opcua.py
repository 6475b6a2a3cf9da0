"""OPC-UA source: asyncua subscriptions (the server pushes changes, nothing is polled) mapped to (asset, point).

Why its own thread and asyncio loop: asyncua is asyncio-only and the agent is threaded; one loop per
source keeps a slow or dead server from stalling the rest of the gateway.

What a reading becomes:

- time: the SourceTimestamp (the device's clock), else the ServerTimestamp, else the arrival time, as
  integer ns since the epoch;
- quality: the StatusCode's severity, 0 good / 1 uncertain / 2 bad; a Bad reading's value is NaN, so a
  stale number a PLC still carries is never taken for a measurement; any code but plain Good
  (BadSensorFailure, UncertainLastUsableValue, Good with limit bits...) is also handed, whole, to ``on_status``
  (the agent), and travels on the wire as the series' ``status``;
- an array variable configured as a ``waveform``: one block of raw samples (``edge.blocks.array_frame``).

What survives an outage: any loss (server restart, network down, a subscription the server dropped)
tears the session down; reconnects wait ``reconnect_min_s`` doubling to ``reconnect_max_s`` with
±``reconnect_jitter``, then resolve browse paths again and re-create every monitored item. A node the
server does not know (``BadNodeIdUnknown``, ``BadNoMatch``: typically a server that rebuilds its address
space after a restart) is retried every ``unknown_node_retry_s`` until it appears, and counted.

Nodes are NodeId strings (``ns=2;s=trailer-001.supply_air``; ``nsu=<namespace URI>;s=…`` is resolved
through the server's namespace array) or browse paths from the Root folder,
``/Objects/2:trailer-001/2:supply_air`` (each segment ``<namespace index>:<BrowseName>``, no index =
namespace 0; names containing ``/`` cannot be written this way).

Who the server is (``opcua_trust.py``): with security on, a server is only used once its certificate is trusted — pinned
(``server_cert_file``) or found in the trust list ``trust_dir`` (the certificate itself, or a CA that issued
it, checked by asyncua's ``TrustStore``). The check runs at CreateSession, after the server has proved it
holds the certificate's key and before the session is activated, so an impostor never sees the password. A
refused server is retried (the trust list is read again each time, so adding its certificate is enough) and
logged once per certificate, naming its SHA-256 fingerprint. Trust on first use, when configured, pins the
first certificate into an empty ``trust_dir``; a server that later shows another one is refused.

Counters: ``opcua_values`` (readings handed to the sink), ``opcua_bad_quality`` (of them, Bad ones),
``opcua_reconnects`` (sessions re-established after a loss), ``opcua_unknown_nodes`` (look-ups of a node
the server did not know, each retry counts), ``opcua_errors`` (failed connects, lost connections,
rejected monitored items, unusable values), ``opcua_untrusted`` (connects refused because the server's
certificate is not trusted; also counted in ``opcua_errors``), ``opcua_pinned`` (certificates pinned on
first use), ``opcua_blocks`` (waveform blocks handed to the sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto

from edge.blocks import array_frame
from edge.config import OpcUaNode, OpcUaSource
from edge.sources import Sink, opcua_publish
from edge.sources.opcua_alarms import AlarmTracker, SourceAlarm
from edge.sources.opcua_alarms import timestamp_ns as _ns
from edge.sources.opcua_trust import ServerTrust, UntrustedServer, certificate_uri
from edge.sources.opcua_trust import fingerprint as fingerprint  # re-exported: what refusals name a server by
from models.wire import Quality

log = logging.getLogger("edge.sources.opcua")


class _LostConnectionIsNotACrash(logging.Filter):
    """asyncua's publish loop logs a dropped connection as an ERROR with a traceback ("Publish iteration
    crashed"), on every PLC restart; this source reports the loss itself, as one line naming the endpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, ConnectionError) and str(record.msg).startswith("Publish iteration crashed"))


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_LostConnectionIsNotACrash())
# TrustStore logs every certificate it does not trust as an ERROR with a traceback, on every retry; the source
# says it once per certificate, with the fingerprint and what to do.
logging.getLogger("asyncuagds.validate").addFilter(
    lambda record: not str(record.msg).startswith("Not trusted certificate used"))

_UNKNOWN = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNoMatch, ua.StatusCodes.BadNodeIdInvalid})
_SEGMENT = re.compile(r"^(\d+):(.+)$")
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_POLICIES = {"Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
             "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
             "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss}


def browse_path(path: str) -> ua.BrowsePath:
    """``/Objects/2:asset/2:point`` → a BrowsePath from the Root folder over hierarchical references."""
    elements = []
    for segment in path.strip("/").split("/"):
        m = _SEGMENT.match(segment)
        name = ua.QualifiedName(m.group(2), int(m.group(1))) if m else ua.QualifiedName(segment, 0)
        elements.append(ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                               IsInverse=False, IncludeSubtypes=True, TargetName=name))
    return ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                         RelativePath=ua.RelativePath(Elements=elements))


def _status_name(code: int) -> str:
    return ua.StatusCode(code).name


class OpcUaSourceRunner:
    """One server connection (a session with one subscription) serving all of a source's nodes."""

    def __init__(self, cfg: OpcUaSource) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._nodes: list[OpcUaNode] = list(cfg.nodes)
        # Client handle i+1 is node i: stable across sessions, so the publish callback needs one dict lookup.
        self._routes: dict[int, tuple[str, str]] = {i + 1: (n.asset, n.point) for i, n in enumerate(self._nodes)}
        self._node_ids: dict[int, ua.NodeId] = {i: ua.NodeId.from_string(n.node) for i, n in enumerate(self._nodes)
                                                if not n.is_browse_path}
        self._counts = {k: 0 for k in ("opcua_values", "opcua_bad_quality", "opcua_reconnects", "opcua_unknown_nodes",
                                       "opcua_errors", "opcua_untrusted", "opcua_pinned", "opcua_blocks")}
        self.on_alarm: Callable[[SourceAlarm], None] | None = None  # the agent's alarm path, set before start()
        self.on_status: Callable[[str, str, int, int], None] | None = None  # (asset, point, t_ns, StatusCode)
        self.alarms = cfg.alarms and AlarmTracker(cfg.alarms, {n.asset for n in self._nodes} | {cfg.alarms.asset},
                                                  lambda a: self.on_alarm and self.on_alarm(a))
        self._refused_fingerprint = ""  # the untrusted certificate last logged (one log line per certificate)
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._unknown_reason: dict[int, str] = {}  # node index -> why it is not monitored (logged once per reason)
        self._last_bad_log = 0.0
        self._app_uri: str | None = cfg.application_uri
        self._client: Client | None = None  # the session up now, for writes (actuators); None between sessions

    # -- the Source interface --------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._stop_requested = False
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name=f"opcua-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        """Close the session (the server deletes its subscription) and end the thread."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(self.cfg.request_timeout_s + 5)
            if self._thread.is_alive():
                log.warning("opcua source %s (%s): thread did not stop in time", self.name, self.cfg.endpoint)
            self._thread = None

    def counters(self) -> dict[str, int]:
        return {**self._counts, **(self.alarms.counts if self.alarms else {})}

    def mark(self) -> int:
        """Nothing to acknowledge upstream: an OPC-UA server keeps current values, not a queue to drain."""
        return 0

    def commit(self, mark: int) -> None:
        """See ``mark``: a no-op for OPC-UA."""

    def acknowledge(self, asset: str, condition: str, comment: str = "", timeout_s: float = 5.0) -> str:
        """Acknowledge a condition of this server (``alarms`` configured): the status name the server answered."""
        assert self.alarms is not None, "no alarms configured"
        return self.alarms.acknowledge_from(self._loop, self._client, asset, condition, comment, timeout_s)

    # -- writes (the actuator side) ----------------------------------------------------------------------

    def serves(self, asset: str) -> bool:
        """Whether this source reads any point of ``asset`` (so writes to it go through this server)."""
        return any(n.asset == asset for n in self._nodes)

    def node_for(self, asset: str, point: str) -> str | None:
        """The node this source reads (asset, point) from, if it reads it."""
        return next((n.node for n in self._nodes if n.asset == asset and n.point == point), None)

    def write(self, node: str, value: float | bool | str, data_type: str, timeout_s: float) -> tuple[str, object]:
        """Write ``value`` as ``data_type`` to ``node`` on the session up now, then read it back: (the Write's
        status name, the value read after it). ConnectionError when there is no session; the server's refusal
        (BadUserAccessDenied, BadTypeMismatch...) is the status, not an exception."""
        loop, client = self._loop, self._client
        if loop is None or client is None:
            raise ConnectionError(f"opcua source {self.name} ({self.cfg.endpoint}): no session to write on")
        fut = asyncio.run_coroutine_threadsafe(self._write(client, node, value, data_type), loop)
        return fut.result(timeout_s)

    async def _write(self, client: Client, node: str, value: float | bool | str, data_type: str) -> tuple[str, object]:
        if node.startswith("/"):
            [res] = await client.uaclient.translate_browsepaths_to_nodeids([browse_path(node)])
            if not res.StatusCode.is_good() or not res.Targets:
                return res.StatusCode.name, None
            nid = ua.NodeId(res.Targets[0].TargetId.Identifier, res.Targets[0].TargetId.NamespaceIndex)
        else:
            nid = ua.NodeId.from_string(node)
            uri = getattr(nid, "NamespaceUri", None)
            if uri:
                namespaces: list[str] = await client.get_namespace_array()
                if uri not in namespaces:
                    return "BadNodeIdUnknown", None
                nid = ua.NodeId(nid.Identifier, namespaces.index(uri), nid.NodeIdType)
        vtype = getattr(ua.VariantType, data_type)
        typed: object = bool(value) if data_type == "Boolean" else str(value) if data_type == "String" else (
            float(value) if data_type in ("Double", "Float") else int(value))  # type: ignore[arg-type]
        [status] = await client.uaclient.write_attributes([nid], [ua.DataValue(ua.Variant(typed, vtype))])
        if not status.is_good():
            return status.name, None
        [dv] = await client.uaclient.read_attributes([nid], ua.AttributeIds.Value)
        return status.name, dv.Value.Value if dv.Value is not None else None

    # -- the event loop ----------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never expected; a dead source must say so
            log.exception("opcua source %s (%s): stopped by an unexpected error", self.name, self.cfg.endpoint)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
        if self._stop_requested:
            return
        run = asyncio.create_task(self._run())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (run, stop):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Connect, serve until the connection is lost, back off, again — until stop()."""
        attempt = 0
        connected_before = False
        while True:
            client = self._new_client()
            up_since = math.inf
            try:
                await self._connect(client)
                if connected_before:
                    self._counts["opcua_reconnects"] += 1
                connected_before, up_since = True, time.monotonic()
                self._refused_fingerprint = ""
                self._client = client
                await self._serve(client)
            except asyncio.CancelledError:
                raise
            except UntrustedServer as exc:
                self._counts["opcua_errors"] += 1
                self._counts["opcua_untrusted"] += 1
                level = logging.ERROR if exc.fingerprint != self._refused_fingerprint else logging.DEBUG
                self._refused_fingerprint = exc.fingerprint
                log.log(level, "opcua source %s (%s): refusing the server: %s", self.name, self.cfg.endpoint, exc,
                        extra={"endpoint": self.cfg.endpoint, "reason": "untrusted server certificate",
                               "fingerprint": exc.fingerprint})
            except Exception as exc:  # everything a server or network can throw at us is retried
                self._counts["opcua_errors"] += 1
                reason = _reason(exc)
                log.warning("opcua source %s (%s): %s", self.name, self.cfg.endpoint, reason,
                            extra={"endpoint": self.cfg.endpoint, "reason": reason})
            finally:
                self._client = None
                await self._close(client)
            # Only a session that stayed up resets the backoff: a server that accepts and then drops every
            # session at once must not be hammered at the minimum delay.
            if time.monotonic() - up_since >= self.cfg.reconnect_max_s:
                attempt = 0
            delay = self._backoff(attempt)
            attempt += 1
            log.info("opcua source %s (%s): reconnecting in %.1f s", self.name, self.cfg.endpoint, delay,
                     extra={"endpoint": self.cfg.endpoint, "delay_s": delay})
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        cfg = self.cfg
        base = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(attempt, 30))
        return base * (1 + cfg.reconnect_jitter * (2 * random.random() - 1))

    # -- one session ---------------------------------------------------------------------------------------

    def _new_client(self) -> Client:
        c = Client(self.cfg.endpoint, timeout=self.cfg.request_timeout_s, watchdog_intervall=self.cfg.keepalive_s)
        c.name = c.description = f"assettwin edge source {self.name}"
        c.session_timeout = 60_000  # ms; every reconnect opens a fresh session, an old one need not linger
        return c

    async def _connect(self, client: Client) -> None:
        cfg = self.cfg
        if cfg.security != "None":
            assert cfg.cert_file is not None and cfg.key_file is not None  # the config validator made sure
            if self._app_uri is None:
                cert = await uacrypto.load_certificate(Path(cfg.cert_file))
                self._app_uri = certificate_uri(cert) or f"urn:assettwin:edge:{self.name}"
            client.application_uri = self._app_uri
            server_cert = str(cfg.server_cert_file) if cfg.server_cert_file else None
            try:
                await client.set_security(_POLICIES[cfg.security_policy], str(cfg.cert_file), str(cfg.key_file),
                                          server_certificate=server_cert, mode=_MODES[cfg.security])
            except ua.UaError as exc:  # e.g. "No matching endpoints": the server does not offer this mode
                raise ConnectionError(f"security {cfg.security_policy}/{cfg.security}: {exc}") from None
            if cfg.trust_dir is not None:
                client.certificate_validator = ServerTrust(cfg.trust_dir, cfg.trust_on_first_use, self.name,
                                                           cfg.endpoint, self._pinned)
        elif self._app_uri:
            client.application_uri = self._app_uri
        if cfg.username is not None:
            client.set_user(cfg.username)
            client.set_password(cfg.password or "")
        self._lost = asyncio.Event()
        client.connection_lost_callback = self._on_connection_lost
        await client.connect()

    def _pinned(self) -> None:
        self._counts["opcua_pinned"] += 1

    async def _on_connection_lost(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):  # asyncua's keep-alive probe got no answer: a silent network
            self._session_lost(f"connection lost: no answer to the keep-alive probe within {self.cfg.keepalive_s:g} s")
        else:
            self._session_lost(f"connection lost: {_reason(exc)}")

    def _session_lost(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():  # the first reason is the cause
            self._lost_reason = reason
            self._lost.set()

    async def _serve(self, client: Client) -> None:
        """Create the subscription and its monitored items, then wait for a loss (retrying unknown nodes)."""
        cfg = self.cfg
        keepalive = max(1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cfg.publishing_interval_ms, RequestedLifetimeCount=keepalive * 10,
            RequestedMaxKeepAliveCount=keepalive, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        # No per-value work but the sink call: the raw session API, not asyncua's Subscription (a task per value
        # there), and each PLC-shaped data change read as columns (opcua_publish), not an object per value.
        opcua_publish.install(getattr(client.uaclient, "session", None))
        sub = await client.uaclient.create_subscription(params, self._on_publish)
        namespaces: list[str] = await client.get_namespace_array()
        pending = list(range(len(self._nodes)))
        pending = await self._monitor(client, sub.SubscriptionId, pending, namespaces)
        if self.alarms:
            await self.alarms.subscribe(client, sub.SubscriptionId)
        log.info("opcua source %s (%s): subscribed %d of %d nodes (security %s, publishing every %.0f ms)",
                 self.name, cfg.endpoint, len(self._nodes) - len(pending), len(self._nodes), cfg.security,
                 sub.RevisedPublishingInterval, extra={"endpoint": cfg.endpoint})
        assert self._lost is not None
        while True:
            timeout = cfg.unknown_node_retry_s if pending else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout)
            if self._lost.is_set():
                raise ConnectionError(self._lost_reason or "connection lost")
            pending = await self._monitor(client, sub.SubscriptionId, pending, namespaces)

    async def _monitor(self, client: Client, sub_id: int, pending: list[int], namespaces: list[str]) -> list[int]:
        """Create monitored items for the nodes in ``pending``; return those still to retry."""
        targets: dict[int, ua.NodeId] = {}
        paths = [i for i in pending if self._nodes[i].is_browse_path]
        if paths:
            found = await client.uaclient.translate_browsepaths_to_nodeids([browse_path(self._nodes[i].node)
                                                                           for i in paths])
            for i, res in zip(paths, found, strict=True):
                if res.StatusCode.is_good() and res.Targets:
                    targets[i] = ua.NodeId(res.Targets[0].TargetId.Identifier, res.Targets[0].TargetId.NamespaceIndex)
                else:
                    self._not_monitored(i, res.StatusCode.value)
        for i in pending:
            if i in self._node_ids:
                nid = self._node_ids[i]
                uri = getattr(nid, "NamespaceUri", None)
                if uri:
                    if uri not in namespaces:
                        self._not_monitored(i, ua.StatusCodes.BadNodeIdUnknown, f"namespace {uri} not on the server")
                        continue
                    nid = ua.NodeId(nid.Identifier, namespaces.index(uri), nid.NodeIdType)
                targets[i] = nid
        if not targets:
            return [i for i in pending if i not in targets]
        order = sorted(targets)
        results = await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub_id, TimestampsToReturn=ua.TimestampsToReturn.Both,
            ItemsToCreate=[self._item_request(i, targets[i]) for i in order]))
        still: list[int] = [i for i in pending if i not in targets]
        for i, res in zip(order, results, strict=True):
            if res.StatusCode.is_good():
                if self._unknown_reason.pop(i, None) is not None:
                    log.info("opcua source %s (%s): node %s is monitored now", self.name, self.cfg.endpoint,
                             self._nodes[i].node, extra={"endpoint": self.cfg.endpoint, "node": self._nodes[i].node})
            else:
                self._not_monitored(i, res.StatusCode.value)
                still.append(i)
        return sorted(still)

    def _item_request(self, i: int, node_id: ua.NodeId) -> ua.MonitoredItemCreateRequest:
        n = self._nodes[i]
        flt = None
        if n.deadband_abs is not None:
            flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=ua.DeadbandType.Absolute,
                                      DeadbandValue=n.deadband_abs)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(ClientHandle=i + 1, SamplingInterval=n.sampling_interval_ms,
                                                        Filter=flt, QueueSize=n.queue_size, DiscardOldest=True))

    def _not_monitored(self, i: int, code: int, detail: str = "") -> None:
        node = self._nodes[i].node
        reason = _status_name(code) + (f" ({detail})" if detail else "")
        if code in _UNKNOWN:
            self._counts["opcua_unknown_nodes"] += 1
            what = f"node {node} unknown to the server: {reason}; retrying every {self.cfg.unknown_node_retry_s:g} s"
        else:
            self._counts["opcua_errors"] += 1
            what = f"node {node} refused: {reason}; retrying every {self.cfg.unknown_node_retry_s:g} s"
        # Log when a node's state changes, not on every retry: a missing node must not fill the disk.
        level = logging.WARNING if self._unknown_reason.get(i) != reason else logging.DEBUG
        self._unknown_reason[i] = reason
        log.log(level, "opcua source %s (%s): %s", self.name, self.cfg.endpoint, what,
                extra={"endpoint": self.cfg.endpoint, "node": node, "reason": reason})

    async def _close(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.cfg.request_timeout_s)

    # -- the hot path ----------------------------------------------------------------------------------------

    def _on_publish(self, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for every PublishResponse: hand each value to the sink."""
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # keep-alive
        sink, routes, counts = self._sink, self._routes, self._counts
        assert sink is not None
        for notif in data:
            if type(notif) is opcua_publish.ScalarChanges:
                opcua_publish.hand(notif, routes, sink, counts, self.on_status)
            elif isinstance(notif, ua.DataChangeNotification):
                for item in notif.MonitoredItems:
                    route = routes.get(item.ClientHandle)
                    if route is None:
                        continue
                    dv = item.Value
                    code = dv.StatusCode.value if dv.StatusCode is not None else 0
                    t_ns = _ns(dv.SourceTimestamp) or _ns(dv.ServerTimestamp) or time.time_ns()
                    if code and self.on_status is not None:  # the full code, beyond good/uncertain/bad
                        self.on_status(route[0], route[1], t_ns, code)
                    if code >> 31:  # Bad (severity bits 10 or 11)
                        counts["opcua_values"] += 1
                        counts["opcua_bad_quality"] += 1
                        sink(route[0], route[1], t_ns, math.nan, Quality.BAD)
                        continue
                    raw = dv.Value.Value if dv.Value is not None else None
                    if isinstance(raw, int | float):  # bool is an int
                        counts["opcua_values"] += 1
                        sink(route[0], route[1], t_ns, float(raw), Quality.UNCERTAIN if code >> 30 else Quality.GOOD)
                    elif type(raw) is list and (frame := array_frame(self._nodes[item.ClientHandle - 1], t_ns, raw)):
                        counts["opcua_blocks"] += 1
                        sink(route[0], route[1], t_ns, frame, Quality.GOOD)
                    else:
                        self._unusable(item.ClientHandle - 1, raw)
            elif isinstance(notif, ua.EventNotificationList) and self.alarms:
                self.alarms.on_events(notif.Events)
            elif isinstance(notif, ua.StatusChangeNotification) and not notif.Status.is_good():
                # The server dropped our subscription (e.g. it timed out): start a fresh session.
                self._session_lost(f"subscription status {notif.Status.name}")

    def _unusable(self, i: int, raw: object) -> None:
        self._counts["opcua_errors"] += 1
        now = time.monotonic()
        if now - self._last_bad_log > 0.1:  # at most ~10 lines a second
            self._last_bad_log = now
            node = self._nodes[i].node
            log.warning("opcua source %s (%s): node %s sent a value that is not a number: %.40r (opcua_errors=%d)",
                        self.name, self.cfg.endpoint, node, raw, self._counts["opcua_errors"],
                        extra={"endpoint": self.cfg.endpoint, "node": node, "reason": "not a number"})


def _reason(exc: BaseException) -> str:
    """A short, readable cause: the OPC-UA status name when there is one."""
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc)
    if not text:
        return type(exc).__name__
    return text if text.startswith(("connection lost", "subscription")) else f"{type(exc).__name__}: {text}"
