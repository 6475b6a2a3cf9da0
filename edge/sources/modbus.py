"""Modbus source: polls PLCs, meters and drives over Modbus TCP or RTU (pymodbus) and maps registers to (asset, point).

Each device's poll groups are planned once (``plan_reads``): the registers of a table are sorted and adjacent ones
read in one request, up to 125 registers or 2,000 bits, so 100 float32 values cost 2 requests, not 100. A reply
is decoded a type at a time with numpy (``models.modbus.decode_block``). What cannot be read is never silent:
an exception reply (illegal address, device busy...) makes that read's points bad and is counted per code
(``modbus_exception_<code>``), the last code kept per point (``last_exception``); a device that stops answering, or
a link that drops, makes its points bad every poll until it answers again, logged once each way, and counted
(``modbus_devices_down``). The link is reconnected with doubling backoff. All of a source's devices share one
connection, one request at a time (an RTU line allows no more), on one asyncio thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse

from edge.config_modbus import BIT_TABLES, ModbusDevice, ModbusPollGroup, ModbusSource
from edge.sources import Sink
from models.modbus import EXCEPTIONS, decode_block
from models.wire import Quality

log = logging.getLogger("edge.sources.modbus")


@dataclass
class _Decode:
    """Values of one type and byte/word order within a read: where they start, how they scale, where they go."""

    kind: str
    byte_order: str
    word_order: str
    starts: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    routes: list[tuple[str, str]]


@dataclass
class Read:
    """One request: ``count`` registers (or bits) of ``table`` from ``start``, and how to decode the reply."""

    table: str
    start: int
    count: int
    decodes: list[_Decode] = field(default_factory=list)

    @property
    def routes(self) -> list[tuple[str, str]]:
        return [r for d in self.decodes for r in d.routes]


def plan_reads(device: ModbusDevice, group: ModbusPollGroup) -> list[Read]:
    """As few requests as cover every register of ``group``: per table, sorted by address, adjacent (or within
    ``max_gap``) registers merged while the span stays within the device's per-read limit."""
    by_table: dict[str, list] = defaultdict(list)
    for r in group.registers:
        by_table[r.table].append(r)
    reads: list[Read] = []
    for table, regs in by_table.items():
        limit = device.max_bits_per_read if table in BIT_TABLES else device.max_registers_per_read
        gap = 0 if table in BIT_TABLES else device.max_gap
        chunks: list[tuple[int, int, list]] = []  # (start, end, registers)
        for r in sorted(regs, key=lambda r: r.address):
            end = r.address + r.width
            if chunks and r.address <= chunks[-1][1] + gap and max(end, chunks[-1][1]) - chunks[-1][0] <= limit:
                s, e, members = chunks[-1]
                chunks[-1] = (s, max(e, end), [*members, r])
            else:
                chunks.append((r.address, end, [r]))
        for start, end, members in chunks:
            read = Read(table, start, end - start)
            kinds: dict[tuple[str, str, str], list] = defaultdict(list)
            for r in members:
                kind = "bit" if table in BIT_TABLES else r.type
                kinds[(kind, r.byte_order or device.byte_order, r.word_order or device.word_order)].append(r)
            for (kind, bo, wo), rs in kinds.items():
                read.decodes.append(_Decode(
                    kind, bo, wo, np.array([r.address - start for r in rs], dtype=np.intp),
                    np.array([r.scale for r in rs]), np.array([r.offset for r in rs]),
                    [(r.asset or device.asset or "", r.point) for r in rs]))
            reads.append(read)
    return reads


def decode_read(read: Read, payload: list[int] | list[bool]) -> list[float]:
    """The values of ``read``'s points, in ``read.routes`` order, from a reply's registers or bits."""
    out: list[float] = []
    for d in read.decodes:
        if d.kind == "bit":
            raw = np.asarray(payload, dtype=np.float64)[d.starts]
        else:
            raw = decode_block(payload, d.starts, d.kind, d.byte_order, d.word_order)  # type: ignore[arg-type]
        out.extend((raw * d.scale + d.offset).tolist())
    return out


class _DeviceDown(Exception):
    """The device (or the link to it) gave no answer: every point it owns is bad until it answers."""


class ModbusSourceRunner:
    """One link (TCP connection or serial line) and the devices on it, polled on a thread of its own."""

    def __init__(self, cfg: ModbusSource) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._plans = [(d, g, plan_reads(d, g)) for d in cfg.devices for g in d.poll_groups]
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._down: dict[int, float] = {}  # unit -> since (monotonic)
        self._retry_at = 0.0
        self._backoff = cfg.reconnect_min_s
        self.last_exception: dict[tuple[str, str], int] = {}
        self._counts: dict[str, int] = {"modbus_requests": 0, "modbus_samples": 0, "modbus_bad_samples": 0,
                                        "modbus_exceptions": 0, "modbus_timeouts": 0, "modbus_reconnects": 0,
                                        "modbus_errors": 0}

    @property
    def requests_per_cycle(self) -> int:
        return sum(len(reads) for _, _, reads in self._plans)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(self._main())
        self._thread = threading.Thread(target=self._run, name=f"modbus-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        task = self._task
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            if self._client is not None:
                self._client.close()
            self._loop.close()

    async def _main(self) -> None:
        self._lock = asyncio.Lock()
        await asyncio.gather(*(self._poll_forever(d, g, reads) for d, g, reads in self._plans))

    # -- polling ------------------------------------------------------------------------------
    async def _poll_forever(self, device: ModbusDevice, group: ModbusPollGroup, reads: list[Read]) -> None:
        """Polls on a fixed grid (no drift): a slow poll skips the ticks it overran, never bunches them up."""
        period = group.interval_ms / 1000
        next_at = time.monotonic()
        while True:
            try:
                await self._poll(device, reads)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a reply pymodbus could not make sense of: the other devices keep polling
                self._counts["modbus_errors"] += 1
                log.exception("modbus %s unit %d: poll failed", self.name, device.unit)
            now = time.monotonic()
            next_at += period
            if next_at < now:
                next_at += math.ceil((now - next_at) / period) * period
            await asyncio.sleep(next_at - now)

    async def _poll(self, device: ModbusDevice, reads: list[Read]) -> None:
        for read in reads:
            try:
                async with self._lock:
                    reply = await self._request(device, read)
                t_ns = time.time_ns()
            except _DeviceDown as exc:
                self._mark_down(device, str(exc))
                for rest in reads[reads.index(read):]:
                    self._emit_bad(rest, time.time_ns())
                return
            self._mark_up(device)
            if isinstance(reply, ExceptionResponse) or (hasattr(reply, "isError") and reply.isError()):
                code = int(getattr(reply, "exception_code", 0))
                self._counts["modbus_exceptions"] += 1
                key = f"modbus_exception_{code}"
                self._counts[key] = self._counts.get(key, 0) + 1
                for route in read.routes:
                    self.last_exception[route] = code
                log.debug("modbus unit %d %s %d+%d: exception %d (%s)", device.unit, read.table, read.start,
                          read.count, code, EXCEPTIONS.get(code, "unknown"))
                self._emit_bad(read, t_ns)
                continue
            payload = reply.bits[:read.count] if read.table in BIT_TABLES else reply.registers
            values = decode_read(read, payload)
            sink = self._sink
            assert sink is not None
            for (asset, point), v in zip(read.routes, values, strict=True):
                sink(asset, point, t_ns, v, Quality.GOOD)
            self._counts["modbus_samples"] += len(values)

    async def _request(self, device: ModbusDevice, read: Read):
        client = await self._connected()
        fn = {"coil": client.read_coils, "discrete_input": client.read_discrete_inputs,
              "holding": client.read_holding_registers, "input": client.read_input_registers}[read.table]
        self._counts["modbus_requests"] += 1
        try:
            return await fn(read.start, count=read.count, device_id=device.unit)
        except (ModbusException, OSError, TimeoutError) as exc:  # no answer after the retries, or the link dropped
            self._counts["modbus_timeouts"] += 1
            if not client.connected:
                self._link_failed()
            raise _DeviceDown(f"no answer: {exc}") from None

    async def _connected(self):
        """The client, connected; raises _DeviceDown while the link is down and its backoff has not run out."""
        c = self._client
        if c is not None and c.connected:
            return c
        now = time.monotonic()
        if now < self._retry_at:
            raise _DeviceDown("link down")
        if c is not None:
            c.close()
        cfg = self.cfg
        common = {"timeout": cfg.timeout_s, "retries": cfg.retries, "reconnect_delay": 0}
        if cfg.transport == "tcp":
            c = AsyncModbusTcpClient(cfg.host, port=cfg.port, **common)
        else:
            c = AsyncModbusSerialClient(cfg.serial_port or "", baudrate=cfg.baudrate, parity=cfg.parity,
                                        stopbits=cfg.stopbits, bytesize=cfg.bytesize, **common)
        self._client = c
        self._counts["modbus_reconnects"] += 1
        try:
            ok = await asyncio.wait_for(c.connect(), cfg.timeout_s + 1)
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            self._link_failed()
            where = f"{cfg.host}:{cfg.port}" if cfg.transport == "tcp" else cfg.serial_port
            raise _DeviceDown(f"cannot connect to {where}")
        self._backoff = cfg.reconnect_min_s
        return c

    def _link_failed(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_s)

    def _mark_down(self, device: ModbusDevice, why: str) -> None:
        if device.unit not in self._down:
            self._down[device.unit] = time.monotonic()
            log.warning("modbus %s unit %d down: %s", self.name, device.unit, why)

    def _mark_up(self, device: ModbusDevice) -> None:
        since = self._down.pop(device.unit, None)
        if since is not None:
            log.info("modbus %s unit %d recovered after %.1f s", self.name, device.unit, time.monotonic() - since)

    def _emit_bad(self, read: Read, t_ns: int) -> None:
        sink = self._sink
        assert sink is not None
        for asset, point in read.routes:
            sink(asset, point, t_ns, math.nan, Quality.BAD)
        self._counts["modbus_bad_samples"] += len(read.routes)

    # -- Source protocol ----------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {**self._counts, "modbus_devices_down": len(self._down)}

    def down_units(self) -> set[int]:
        return set(self._down)

    def mark(self) -> int:
        return 0  # polled: nothing to acknowledge upstream

    def commit(self, mark: int) -> None:
        pass
