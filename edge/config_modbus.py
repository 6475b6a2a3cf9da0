"""The Modbus part of the gateway configuration: a link (TCP or an RTU serial line), the devices on it (unit ids),
each with poll groups of registers mapped to (asset, point). Kept apart from ``edge.config`` only for size;
``edge.config`` puts ``ModbusSource`` in its ``sources`` union.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.modbus import WIDTH, Order, RegisterType

Table = Literal["coil", "discrete_input", "holding", "input"]
BIT_TABLES = ("coil", "discrete_input")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModbusRegister(_Strict):
    """One value: ``table`` at ``address`` (0-based, as on the wire), decoded as ``type`` (coils and discrete inputs
    are 0/1 and take no type), then ``value * scale + offset``. ``asset`` defaults to the device's.
    ``byte_order``/``word_order`` default to the device's."""

    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: RegisterType = "uint16"
    point: str
    asset: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    byte_order: Order | None = None
    word_order: Order | None = None

    @property
    def width(self) -> int:
        return 1 if self.table in BIT_TABLES else WIDTH[self.type]

    @model_validator(mode="after")
    def _fits(self) -> ModbusRegister:
        if self.address + self.width > 65536:
            raise ValueError(f"{self.type} at {self.address} runs past register 65535")
        return self


class ModbusPollGroup(_Strict):
    """Registers read together every ``interval_ms``; adjacent ones are read in one request (up to the device's
    ``max_registers_per_read`` / ``max_bits_per_read``), gaps of up to ``max_gap`` unused registers bridged."""

    interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    registers: list[ModbusRegister] = Field(min_length=1)


class ModbusDevice(_Strict):
    """A device (unit id) on the source's link."""

    unit: int = Field(default=1, ge=0, le=255)
    asset: str | None = None
    byte_order: Order = "big"
    word_order: Order = "big"
    max_registers_per_read: int = Field(default=125, ge=1, le=125)
    max_bits_per_read: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=0, ge=0, le=124, description="Unused registers a read may span to save a request; "
                         "0 by default, as some devices answer an unmapped address with exception 2.")
    poll_groups: list[ModbusPollGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _assets_named(self) -> ModbusDevice:
        for g in self.poll_groups:
            for r in g.registers:
                if r.asset is None and self.asset is None:
                    raise ValueError(f"register {r.table} {r.address} ({r.point}): no asset (set it on the register "
                                     "or the device)")
        return self


class ModbusSource(_Strict):
    """Modbus TCP (``host``, ``port``) or RTU (``serial_port``, ``baudrate``...): one connection, polled. A request
    waits ``timeout_s`` and is sent ``retries`` more times before the poll's values are reported bad; a link that
    fails is reconnected after ``reconnect_min_s`` doubling up to ``reconnect_max_s``, meanwhile its devices' points
    are reported bad (``status`` of the source's counters: ``modbus_devices_down``)."""

    type: Literal["modbus"]
    name: str = "modbus"
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=10)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    devices: list[ModbusDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _link(self) -> ModbusSource:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport rtu needs serial_port (e.g. /dev/ttyUSB0)")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        units = [d.unit for d in self.devices]
        if len(set(units)) != len(units):
            raise ValueError("devices: a unit id appears twice on one link")
        return self
