"""Modbus register codec: how a number sits in 16-bit registers, the contract a gateway and a device agree on.

A 32- or 64-bit value spans 2 or 4 registers. Devices disagree on two things: the order of the registers
(``word_order``: ``big`` puts the most significant word first, Modbus' own convention; ``little`` the least) and
the order of the two bytes inside each register (``byte_order``: ``big`` as the standard says, ``little`` for
the byte-swapped devices). ``decode_block`` turns many values of one type and order at once (numpy), because
a gateway decodes thousands of registers a second; ``encode`` is the slow inverse for devices and tests.

>>> encode(1.5, "float32")
[16320, 0]
>>> float(decode([16320, 0], "float32"))
1.5
>>> decode_block([0, 1, 0, 2], [0, 2], "uint32", word_order="little").tolist()
[65536.0, 131072.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]

WIDTH: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
"""Registers per value."""
_DTYPE = {"int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "float32": ">f4", "float64": ">f8"}

EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "server device failure",
              5: "acknowledge", 6: "server device busy", 8: "memory parity error",
              10: "gateway path unavailable", 11: "gateway target device failed to respond"}
"""Modbus exception codes (Modbus Application Protocol 1.1b3, section 7)."""


def _indices(starts: Sequence[int] | np.ndarray, kind: str, word_order: Order) -> np.ndarray:
    """(n, width) register indices, most significant word first."""
    width = WIDTH[kind]
    words = np.arange(width) if word_order == "big" else np.arange(width)[::-1]
    return np.asarray(starts, dtype=np.intp)[:, None] + words[None, :]


def decode_block(registers: Sequence[int] | np.ndarray, starts: Sequence[int] | np.ndarray, kind: RegisterType,
                 byte_order: Order = "big", word_order: Order = "big") -> np.ndarray:
    """Values (float64) of ``kind`` starting at each index of ``starts`` in ``registers`` (as read, 0..65535)."""
    regs = np.asarray(registers, dtype=np.uint16)
    words = regs[_indices(starts, kind, word_order)]  # (n, width), most significant first
    wire = words.astype(">u2" if byte_order == "big" else "<u2")  # each register's bytes as the device sent them
    return np.frombuffer(wire.tobytes(), dtype=_DTYPE[kind]).astype(np.float64)


def decode(registers: Sequence[int], kind: RegisterType, byte_order: Order = "big",
           word_order: Order = "big") -> float:
    """One value from its registers (exactly ``WIDTH[kind]`` of them)."""
    if len(registers) != WIDTH[kind]:
        raise ValueError(f"{kind} takes {WIDTH[kind]} registers, got {len(registers)}")
    return float(decode_block(registers, [0], kind, byte_order, word_order)[0])


def encode(value: float, kind: RegisterType, byte_order: Order = "big", word_order: Order = "big") -> list[int]:
    """The registers that hold ``value`` as ``kind``; an integer type takes ``value`` rounded, and raises
    ValueError when it does not fit."""
    dtype = np.dtype(_DTYPE[kind])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        v = round(value)
        if not info.min <= v <= info.max:
            raise ValueError(f"{value} does not fit in {kind}")
        raw = np.array([v], dtype=dtype).tobytes()
    else:
        raw = np.array([value], dtype=dtype).tobytes()
    words = np.frombuffer(raw, dtype=">u2" if byte_order == "big" else "<u2").astype(np.int64).tolist()
    return words if word_order == "big" else words[::-1]
