"""Actuators, the mirror image of sources: commands from the cloud, written to devices, confirmed, reported.

The cloud keeps a gateway's outstanding commands retained on its ``commands`` topic (``models.wire.CommandQueue``),
so a gateway that was offline gets them all when it connects. Each command runs at most once: its id is recorded
in ``state_dir/commands.json`` before it runs, and a command seen again (the retained queue on every reconnect, a
redelivery) only has its report sent again. One past its ``expires_ns`` is reported expired and not run.

What is checked here, whatever the cloud asked: the asset is one of this gateway's, the property is declared
writable by its type in the local configuration, the value has the declared type and range. Then it is written
through the source that serves the asset (OPC-UA: Write, then a Read of the same node; MQTT: a publish to the
device topic, then the device's own report of the point), and reported succeeded, or failed with the reason
(the OPC-UA server's status, a device that did not confirm in time). ``acknowledge`` calls Acknowledge on the
condition a device raised (``edge/sources/opcua_alarms.py``), and reports the server's status the same way.

A device the gateway cannot reach (its OPC-UA server down, no session) is not a refusal: the command is tried
again with a doubling backoff (``RETRY_MIN_S`` to ``RETRY_MAX_S``) until its TTL, then reported failed with why
and how often it was tried. A refusal (a Bad status, a device that answers otherwise) is final at once.

Commands run on their own threads: a write waits for a device, and the tick loop must not. One asset's commands
run one at a time in the order the cloud issued them (a setpoint, then a mode: never the other way round); up to
``LANES`` assets' at once, so a PLC that does not answer holds up only its own assets.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge.config import GatewayConfig
from edge.sources import Source
from edge.sources.mqtt import MqttSourceRunner
from models.catalogue import MqttWrite, OpcUaWrite
from models.wire import Command, CommandQueue, CommandReport, WireError, decode

log = logging.getLogger("edge.actuators")

DONE_FILE = "commands.json"
DONE_KEEP = 2000
"""Command ids remembered (with their last report): far more than a gateway's queue ever holds."""
RETRY_MIN_S = 0.5
RETRY_MAX_S = 2.0
"""Short: a try without a session costs nothing on the wire, and the device is written soon after it is back."""
LANES = 8
"""Assets whose commands run at the same time."""
ACK_TIMEOUT_S = 10.0
"""How long an OPC-UA server has to answer an Acknowledge call."""


class Refused(ValueError):
    """The command cannot run here; the text says why (sent back as the failure reason)."""


class Unreachable(ConnectionError):
    """The device could not be reached now (no session, a connection that broke mid-write): worth another try."""


class _Stopped(Exception):
    """The gateway is stopping during a retry's wait."""


class Actuator:
    """Runs the commands of one gateway. ``report`` publishes a ``CommandReport``; ``rebirth`` announces the
    gateway again. The agent calls ``observe`` for every reading of a point awaited as a confirmation."""

    def __init__(self, cfg: GatewayConfig, sources: Callable[[], list[Source]],
                 report: Callable[[CommandReport], None], rebirth: Callable[[], None],
                 snapshot: Callable[[str], str] | None = None) -> None:
        self.cfg = cfg
        self._snapshot = snapshot
        self._sources = sources
        self._report = report
        self._rebirth = rebirth
        self._path: Path = cfg.state_dir / DONE_FILE
        self._done: dict[str, dict] = self._load()
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.RLock()
        self._lanes: dict[str, deque[Command]] = {}
        """Asset -> its commands waiting, while a worker runs them in order (absent: none waiting or running)."""
        self._taken: set[str] = set()
        """Ids queued or running: a redelivery meanwhile waits for the result instead of repeating a report."""
        self._pool = ThreadPoolExecutor(LANES, thread_name_prefix="actuator")
        self.awaited: dict[tuple[str, str], list] = {}
        """(asset, point) -> [target, tolerance, last value seen, Event]: read by the agent's sink."""
        self.counts = {"commands_run": 0, "commands_failed": 0, "commands_expired": 0, "commands_repeated": 0,
                       "commands_retries": 0}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- from other threads ------------------------------------------------------------------------

    def on_queue(self, payload: bytes) -> None:
        """The uplink's network thread: hand the queue over, never block it."""
        self._inbox.put(payload)

    def observe(self, asset: str, point: str, value: float) -> None:
        w = self.awaited.get((asset, point))
        if w is not None:
            w[2] = value
            if abs(value - w[0]) <= w[1]:
                w[3].set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="actuators", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # ends a retry's wait at once; queued commands stay unrun (a restart runs them)
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 30
        while self._lanes and time.monotonic() < deadline:  # a write under way ends (its own timeout bounds it)
            time.sleep(0.05)

    # -- the command thread ------------------------------------------------------------------------

    def _main(self) -> None:
        while (payload := self._inbox.get()) is not None:
            try:
                commands = decode(payload, CommandQueue).commands
            except WireError as exc:
                log.warning("unreadable command queue from the cloud: %s", exc)
                continue
            for cmd in commands:
                self._dispatch(cmd)

    def _dispatch(self, cmd: Command) -> None:
        """Into its asset's lane, unless it is there already or done."""
        with self._lock:
            if cmd.id in self._taken:
                return  # queued or running: its report comes when it ends
            done = self._done.get(cmd.id)
            if done is None:
                self._taken.add(cmd.id)
                lane = self._lanes.get(cmd.asset)
                if lane is not None:  # a worker is on this asset: it runs this one after the others
                    lane.append(cmd)
                    return
                self._lanes[cmd.asset] = deque([cmd])
        if done is not None:
            self._count("commands_repeated")
            self._report(CommandReport.model_validate(done))  # the cloud may have missed it: say it again
            return
        try:
            self._pool.submit(self._drain, cmd.asset)
        except RuntimeError:  # stopping: the pool takes no more
            with self._lock:
                self._lanes.pop(cmd.asset, None)

    def _drain(self, asset: str) -> None:
        """A worker's turn on one asset: its commands in order, until none waits."""
        while True:
            with self._lock:
                lane = self._lanes[asset]
                if not lane or self._stopping.is_set():
                    del self._lanes[asset]
                    return
                cmd = lane.popleft()
            try:
                self._handle(cmd)
            except Exception:  # one command must not stop the others
                log.exception("command %s failed unexpectedly", cmd.id)
            finally:
                with self._lock:
                    self._taken.discard(cmd.id)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _handle(self, cmd: Command) -> None:
        if time.time_ns() > cmd.expires_ns:
            self._count("commands_expired")
            self._finish(cmd, "expired", f"reached the gateway after its TTL (expired at {cmd.expires_ns} ns)")
            return
        # Recorded before it runs: a crash mid-write must not write again after a restart.
        self._remember(cmd.id, self._make(cmd, "failed", "the gateway stopped while running it"))
        self._report(self._make(cmd, "delivered"))
        self._count("commands_run")
        try:
            value, reason = self._run_within_ttl(cmd)
        except _Stopped:
            self._forget(cmd.id)  # nothing was written: a restart within the TTL tries it again
            return
        except (Refused, ConnectionError, TimeoutError) as exc:
            self._count("commands_failed")
            self._finish(cmd, "failed", str(exc))
            log.warning("command %s (%s on %s) failed: %s", cmd.id, cmd.action, cmd.asset, exc,
                        extra={"command": cmd.id, "asset": cmd.asset})
            return
        self._finish(cmd, "succeeded", reason, value)
        log.info("command %s (%s on %s) succeeded: %s", cmd.id, cmd.action, cmd.asset, reason,
                 extra={"command": cmd.id, "asset": cmd.asset})

    def _run_within_ttl(self, cmd: Command) -> tuple[float | str | None, str]:
        """``_run``, tried again while the device is unreachable, backing off, until the command's TTL."""
        delay, attempts = RETRY_MIN_S, 0
        while True:
            attempts += 1
            try:
                return self._run(cmd)
            except Unreachable as exc:
                left_s = (cmd.expires_ns - time.time_ns()) / 1e9
                if left_s <= 0:
                    raise TimeoutError(f"{exc}; tried {attempts} times until the command's TTL ran out") from None
                log.info("command %s: %s; trying again in %.1f s", cmd.id, exc, min(delay, left_s),
                         extra={"command": cmd.id, "asset": cmd.asset})
                self._count("commands_retries")
                if self._stopping.wait(min(delay, left_s)):
                    raise _Stopped() from None
                delay = min(delay * 2, RETRY_MAX_S)

    def _run(self, cmd: Command) -> tuple[float | str | None, str]:
        if cmd.action == "rebirth":
            self._rebirth()
            return None, "status announced again"
        if cmd.action == "snapshot":
            if self._snapshot is None:
                raise Refused("this gateway keeps no raw waveform blocks")
            try:
                return None, self._snapshot(cmd.asset)
            except LookupError as exc:
                raise Refused(str(exc)) from None
        if cmd.action == "acknowledge":
            return self._acknowledge(cmd.asset, str(cmd.args.get("condition", "")), str(cmd.args.get("comment", "")))
        asset = next((a for a in self.cfg.assets if a.id == cmd.asset), None)
        if asset is None:
            raise Refused(f"{cmd.asset} is not an asset of gateway {self.cfg.gateway}")
        atype = asset.asset_type
        if cmd.action == "command":
            name = str(cmd.args.get("name", ""))
            spec = atype.commands.get(name)
            if spec is None:
                raise Refused(f"{name!r} is not a command of {atype.id} in this gateway's configuration")
            return self._send(cmd.asset, None, spec.value, spec.opcua, spec.mqtt, None)
        prop = str(cmd.args.get("property", ""))
        w = atype.writable.get(prop)
        if w is None:
            raise Refused(f"{prop!r} is not writable on {atype.id} in this gateway's configuration")
        try:
            value = w.check(cmd.args.get("value"))
        except ValueError as exc:
            raise Refused(f"{prop}: {exc}") from None
        point = w.point or prop
        return self._send(cmd.asset, point, value, w.opcua, w.mqtt, (w.tolerance, w.confirm_s))

    def _send(self, asset: str, point: str | None, value: float | str | bool, opcua: OpcUaWrite | None,
              mqtt: MqttWrite | None, confirm: tuple[float, float] | None) -> tuple[float | str | None, str]:
        """Write through a source that serves the asset in a way the type declares: an OPC-UA source that reads one
        of its points first (a PLC-connected asset), else an MQTT source."""
        timeout = confirm[1] if confirm else 10.0
        sources = self._sources()
        ordered = [s for s in sources if hasattr(s, "serves") and s.serves(asset)]  # type: ignore[attr-defined]
        ordered += [s for s in sources if isinstance(s, MqttSourceRunner)]
        for src in ordered:
            if opcua is not None and hasattr(src, "node_for"):
                node = opcua.node.format(asset=asset) if opcua.node else (src.node_for(asset, point) if point else None)
                if node is None:
                    continue
                try:
                    status, back = src.write(node, value, opcua.data_type, timeout)  # type: ignore[attr-defined]
                except (ConnectionError, TimeoutError, OSError) as exc:
                    raise Unreachable(f"the OPC-UA server did not take the write to {node}: "
                                      f"{exc or type(exc).__name__}") from None
                if status != "Good":
                    raise Refused(f"the OPC-UA server refused the write to {node}: {status}")
                if confirm and not (isinstance(back, int | float) and abs(float(back) - float(value)) <= confirm[0]):
                    raise Refused(f"read back {back!r} from {node} after writing {value}")
                return (float(back) if isinstance(back, int | float) else back), f"written to {node}, read back {back}"
            if mqtt is not None and isinstance(src, MqttSourceRunner):
                topic = mqtt.topic.format(asset=asset)
                body = mqtt.payload.replace("{value}", json.dumps(value)).encode()
                if confirm is None or point is None:
                    src.publish(topic, body, mqtt.qos, timeout)
                    return None, f"published to {topic}"
                return self._publish_confirmed(src, topic, body, mqtt.qos, asset, point, float(value), confirm)
        raise Refused(f"no source of gateway {self.cfg.gateway} writes {asset}"
                      f"{'/' + point if point else ''} the way its type declares")

    def _acknowledge(self, asset: str, condition: str, comment: str) -> tuple[str, str]:
        """A device's own alarm acknowledged on the server that raised it, through the OPC-UA source whose alarm
        tracker holds the condition (else one that takes the asset's alarms): succeeded with the server's Good, or
        refused with the status it answered (BadConditionBranchAlreadyAcked: acknowledged there already)."""
        trackers = [s for s in self._sources() if getattr(s, "alarms", None)]
        src = (next((s for s in trackers if (asset, condition) in s.alarms.open), None)  # type: ignore[attr-defined]
               or next((s for s in trackers if asset in s.alarms.assets), None))  # type: ignore[attr-defined]
        if src is None:
            raise Refused(f"no source of gateway {self.cfg.gateway} takes the alarms of {asset}")
        try:
            status = src.acknowledge(asset, condition, comment, ACK_TIMEOUT_S)  # type: ignore[attr-defined]
        except (ConnectionError, TimeoutError, OSError, RuntimeError) as exc:  # no session, or it broke: again
            raise Unreachable(f"the OPC-UA server did not take the acknowledgement of {condition}: "
                              f"{exc or type(exc).__name__}") from None
        if status == "BadConditionNotFound":  # the tracker's answer: the server was not asked
            raise Refused(f"no condition {condition!r} of {asset} is open on the OPC-UA server (never raised here, "
                          "or cleared and acknowledged): BadConditionNotFound")
        if status != "Good":
            raise Refused(f"the OPC-UA server refused to acknowledge {condition} on {asset}: {status}")
        return status, f"{condition} acknowledged on the OPC-UA server: {status}"

    def _publish_confirmed(self, src: MqttSourceRunner, topic: str, body: bytes, qos: int, asset: str, point: str,
                           value: float, confirm: tuple[float, float]) -> tuple[float, str]:
        tolerance, within_s = confirm
        waiting = [value, tolerance, None, threading.Event()]
        self.awaited[(asset, point)] = waiting
        try:
            src.publish(topic, body, qos, within_s)
            if not waiting[3].wait(within_s):
                raise TimeoutError(f"the device did not report {point} = {value:g} within {within_s:g} s after the "
                                   f"publish to {topic} (last reported: {waiting[2]})")
        finally:
            self.awaited.pop((asset, point), None)
        return float(waiting[2]), f"published to {topic}, device reported {point} = {waiting[2]}"  # type: ignore[arg-type]

    # -- reports and memory --------------------------------------------------------------------------

    def _make(self, cmd: Command, state: str, reason: str = "", value: float | str | None = None) -> CommandReport:
        return CommandReport(gateway=self.cfg.gateway, id=cmd.id, asset=cmd.asset, state=state,  # type: ignore[arg-type]
                             reason=reason[:2000], value=value, t_ns=time.time_ns())

    def _finish(self, cmd: Command, state: str, reason: str, value: float | str | None = None) -> None:
        rep = self._make(cmd, state, reason, value)
        self._remember(cmd.id, rep)
        self._report(rep)

    def _remember(self, cid: str, rep: CommandReport) -> None:
        with self._lock:
            self._done[cid] = rep.model_dump(mode="json")
            while len(self._done) > DONE_KEEP:
                self._done.pop(next(iter(self._done)))
            self._save()

    def _save(self) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._done))
            tmp.replace(self._path)
        except OSError as exc:
            log.warning("command ids not kept in %s (a restart may run one again): %s", self._path, exc)

    def _forget(self, cid: str) -> None:
        with self._lock:
            self._done.pop(cid, None)
            self._save()

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("command ids in %s unreadable (%s): starting with none", self._path, exc)
            return {}
        return data if isinstance(data, dict) else {}
