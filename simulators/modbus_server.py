"""A Modbus device front (pymodbus server) over TCP or an RTU serial line: one or many units, each a machine's PLC
and an energy meter, known register contents so a reader can be checked exactly. It speaks only the wire.

Per unit ``u`` (``size`` registers and bits per table):

- holding register ``i``: ``(u * 1000 + i) % 65536`` (a PLC's uint16 block);
- coil ``i``: ``i % 2``; discrete input ``i``: ``i % 3 == 0``;
- input registers, an energy meter (``METER``): its values in every type and byte/word order;
- with ``busy=A``, any read of holding registers that covers ``A`` answers exception 6 (server device busy);
  anything past ``size`` answers exception 2 (illegal data address), as pymodbus does for an undefined address.

    python -m simulators.modbus_server --port 5020 --units 1-5 --size 200
    python -m simulators.modbus_server --serial /dev/pts/7 --units 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from models.modbus import encode

METER: list[tuple[int, str, str, str, str, float]] = [
    # (address, point, type, byte_order, word_order, value)
    (0, "voltage_v", "float32", "big", "big", 230.5),
    (2, "energy_kwh", "float64", "big", "big", 123456.789),
    (6, "power_w", "int32", "big", "big", -123456),
    (8, "runtime_s", "uint32", "big", "big", 3_000_000_000),
    (10, "temperature_dc", "int16", "big", "big", -42),
    (11, "frequency_hz", "float32", "big", "little", 49.95),
    (13, "power_factor", "float32", "little", "little", 0.95),
    (15, "current_ma", "uint16", "little", "big", 4321),
    (16, "reactive_var", "int32", "little", "big", -7),
    (18, "apparent_va", "uint32", "big", "little", 70000),
    (20, "thd_pct", "float64", "little", "little", 3.25),
]
"""The meter in every unit's input registers."""


def holding_value(unit: int, address: int) -> int:
    return (unit * 1000 + address) % 65536


def meter_registers(size: int) -> list[int]:
    regs = [0] * size
    for address, _, kind, bo, wo, value in METER:
        words = encode(value, kind, bo, wo)  # type: ignore[arg-type]
        regs[address:address + len(words)] = words
    return regs


async def _busy(address: int, function_code: int, start_address: int, req_address: int, count: int,
                current: list[int], set_values: object) -> ExcCodes | None:
    if function_code == 3 and req_address <= address < req_address + count:
        return ExcCodes.DEVICE_BUSY
    return None


def device(unit: int, size: int, busy: int | None = None) -> SimDevice:
    """One unit, with the four tables apart (coils and discrete inputs addressed by bit)."""
    blocks = (
        [SimData(0, values=[i % 2 == 1 for i in range(size)], datatype=DataType.BITS)],
        [SimData(0, values=[i % 3 == 0 for i in range(size)], datatype=DataType.BITS)],
        [SimData(0, values=[holding_value(unit, i) for i in range(size)], datatype=DataType.REGISTERS)],
        [SimData(0, values=meter_registers(size), datatype=DataType.REGISTERS)],
    )
    return SimDevice(unit, blocks, action=partial(_busy, busy) if busy is not None else None)


def parse_units(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


async def serve(units: list[int], size: int, port: int | None = None, serial: str | None = None,
                busy: int | None = None, baudrate: int = 19200) -> None:
    devices = [device(u, size, busy) for u in units]
    if serial:
        server = ModbusSerialServer(devices, port=serial, baudrate=baudrate, ignore_missing_devices=True)
    else:
        server = ModbusTcpServer(devices, address=("127.0.0.1", port or 502), ignore_missing_devices=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
    print(f"modbus simulator: units {units[0]}..{units[-1]} ({len(units)}), {size} registers each, "
          f"{'serial ' + serial if serial else f'tcp 127.0.0.1:{port}'}", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="modbus_server", description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="Modbus TCP on 127.0.0.1:PORT")
    where.add_argument("--serial", help="Modbus RTU on this serial device (a pty end)")
    ap.add_argument("--units", default="1", help="unit ids: 1,2,5-9")
    ap.add_argument("--size", type=int, default=200, help="registers (and bits) per table")
    ap.add_argument("--busy", type=int, help="holding register whose reads answer exception 6")
    ap.add_argument("--baudrate", type=int, default=19200)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(parse_units(args.units), args.size, args.port, args.serial, args.busy, args.baudrate))


if __name__ == "__main__":
    main()
