"""Modbus: the register codec, the read planner, and the source against the real pymodbus simulator over TCP (a free
loopback port) and RTU (a socat pseudo-terminal pair). Waits are on conditions, never fixed sleeps."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.config import ConfigError, parse_config
from edge.config_modbus import ModbusDevice, ModbusPollGroup, ModbusSource
from edge.sources.modbus import ModbusSourceRunner, plan_reads
from models.modbus import WIDTH, decode, encode
from models.wire import Quality
from simulators.modbus_server import METER, holding_value
from simulators.rig.modbus import ModbusSimServer, SerialPair
from tests.harness.processes import wait_until

FAST = {"timeout_s": 0.5, "retries": 0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}

# 0x12345678 / 1.0 / 1.0 as every device family lays them out: ABCD (big/big), CDAB (word swap), BADC (byte swap),
# DCBA (both), per the byte and word order names used by the config.
EXACT = [
    ("uint32", 0x12345678, "big", "big", [0x1234, 0x5678]),
    ("uint32", 0x12345678, "big", "little", [0x5678, 0x1234]),
    ("uint32", 0x12345678, "little", "big", [0x3412, 0x7856]),
    ("uint32", 0x12345678, "little", "little", [0x7856, 0x3412]),
    ("int32", -2, "big", "big", [0xFFFF, 0xFFFE]),
    ("int32", -2, "little", "little", [0xFEFF, 0xFFFF]),
    ("int16", -2, "big", "big", [0xFFFE]),
    ("int16", -2, "little", "big", [0xFEFF]),
    ("uint16", 0xABCD, "big", "big", [0xABCD]),
    ("uint16", 0xABCD, "little", "little", [0xCDAB]),
    ("float32", 1.0, "big", "big", [0x3F80, 0x0000]),
    ("float32", 1.0, "big", "little", [0x0000, 0x3F80]),
    ("float32", 1.0, "little", "big", [0x803F, 0x0000]),
    ("float32", 1.0, "little", "little", [0x0000, 0x803F]),
    ("float64", 1.0, "big", "big", [0x3FF0, 0, 0, 0]),
    ("float64", 1.0, "big", "little", [0, 0, 0, 0x3FF0]),
    ("float64", 1.0, "little", "big", [0xF03F, 0, 0, 0]),
    ("float64", -2.5, "little", "little", [0, 0, 0, 0x04C0]),
]


@pytest.mark.parametrize(("kind", "value", "byte_order", "word_order", "registers"), EXACT)
def test_codec_lays_out_every_type_and_order_exactly(kind, value, byte_order, word_order, registers) -> None:
    assert encode(value, kind, byte_order, word_order) == registers
    assert decode(registers, kind, byte_order, word_order) == value


_RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
           "uint32": (0, 2**32 - 1)}


@st.composite
def _typed_values(draw):
    kind = draw(st.sampled_from(sorted(WIDTH)))
    if kind in _RANGES:
        value = float(draw(st.integers(*_RANGES[kind])))
    else:
        value = draw(st.floats(allow_nan=False, width=32 if kind == "float32" else 64))
    return kind, value, draw(st.sampled_from(["big", "little"])), draw(st.sampled_from(["big", "little"]))


@given(_typed_values())
def test_codec_round_trips_every_value_of_every_type_and_order(case) -> None:
    kind, value, bo, wo = case
    regs = encode(value, kind, bo, wo)
    assert len(regs) == WIDTH[kind] and all(0 <= r <= 0xFFFF for r in regs)
    assert decode(regs, kind, bo, wo) == value


def test_codec_refuses_a_value_its_integer_type_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit in uint16"):
        encode(70000, "uint16")


def _device(registers: list[dict], **options) -> tuple[ModbusDevice, ModbusPollGroup]:
    d = ModbusDevice.model_validate({"asset": "a", "poll_groups": [{"registers": registers}], **options})
    return d, d.poll_groups[0]


def test_contiguous_registers_are_read_in_as_few_requests_as_the_limits_allow() -> None:
    regs = [{"address": i, "point": f"p{i}"} for i in range(300)]  # 300 uint16: 125 + 125 + 50
    regs += [{"table": "coil", "address": i, "point": f"c{i}"} for i in range(2500)]  # 2,000 + 500 bits
    regs += [{"table": "input", "address": 10 + 2 * i, "type": "float32", "point": f"f{i}"} for i in range(70)]
    reads = plan_reads(*_device(regs))
    assert sorted((r.table, r.start, r.count) for r in reads) == [
        ("coil", 0, 2000), ("coil", 2000, 500), ("holding", 0, 125), ("holding", 125, 125), ("holding", 250, 50),
        ("input", 10, 124), ("input", 134, 16)]  # a float32 is never split across two requests


def test_a_gap_splits_a_read_unless_max_gap_bridges_it() -> None:
    regs = [{"address": 0, "point": "a"}, {"address": 5, "type": "int32", "point": "b"}]
    assert [(r.start, r.count) for r in plan_reads(*_device(regs))] == [(0, 1), (5, 2)]
    assert [(r.start, r.count) for r in plan_reads(*_device(regs, max_gap=4))] == [(0, 7)]


def test_the_gateway_config_names_the_modbus_field_that_is_wrong() -> None:
    cfg = {"tenant": "t", "gateway": "g", "assets": [{"id": "a", "type": "refrigerated-trailer"}],
           "sources": [{"type": "modbus", "transport": "rtu", "devices": [
               {"asset": "a", "poll_groups": [{"registers": [{"address": 1, "point": "supply_air"}]}]}]}]}
    with pytest.raises(ConfigError, match=r"sources\[0\]: Value error, transport rtu needs serial_port"):
        parse_config(cfg)


class Recorder:
    """A thread-safe sink keeping every (asset, point, t_ns, value, quality)."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, str, int, float, int]] = []
        self._lock = threading.Lock()

    def __call__(self, asset, point, t_ns, value, quality) -> None:
        with self._lock:
            self.samples.append((asset, point, t_ns, value, quality))

    def last(self, asset: str, point: str):
        with self._lock:
            for a, p, _, v, q in reversed(self.samples):
                if (a, p) == (asset, point):
                    return v, q
        return None


def _meter(asset: str) -> list[dict]:
    return [{"table": "input", "address": a, "point": p, "type": k, "byte_order": b, "word_order": w,
             "asset": asset} for a, p, k, b, w, _ in METER]


@pytest.fixture(scope="module")
def sim() -> Iterator[ModbusSimServer]:
    with ModbusSimServer("1-3", size=200, busy=150) as server:
        yield server


@pytest.fixture
def run_source() -> Iterator:
    runners: list[ModbusSourceRunner] = []

    def start(cfg: dict, sink: Recorder) -> ModbusSourceRunner:
        runner = ModbusSourceRunner(ModbusSource.model_validate({"type": "modbus", **FAST, **cfg}))
        runner.start(sink)
        runners.append(runner)
        return runner

    yield start
    for r in runners:
        r.stop()


def _all_good(rec: Recorder, routes: list[tuple[str, str]]) -> bool:
    return all((v := rec.last(*r)) is not None and v[1] == Quality.GOOD for r in routes)


def test_every_table_type_and_order_reads_exactly_with_scale_and_offset(sim, run_source) -> None:
    rec = Recorder()
    regs = [
        *_meter("meter-1"), {"address": 7, "point": "h7"},
        {"address": 8, "point": "h8_scaled", "scale": 0.1, "offset": -100},
        {"table": "coil", "address": 3, "point": "coil3"}, {"table": "coil", "address": 4, "point": "coil4"},
        {"table": "discrete_input", "address": 6, "point": "di6"}, {"table": "discrete_input", "address": 7,
                                                                    "point": "di7"}]
    runner = run_source({"port": sim.port, "devices": [
        {"unit": 2, "asset": "plc-2", "poll_groups": [{"interval_ms": 100, "registers": regs}]}]}, rec)
    routes = [("meter-1", m[1]) for m in METER] + [("plc-2", p) for p in ("h7", "h8_scaled", "coil3", "di6")]
    wait_until(lambda: _all_good(rec, routes), timeout=10, what="every point read good")
    for _, point, kind, _, _, value in METER:
        want = float(np.float32(value)) if kind == "float32" else float(value)
        assert rec.last("meter-1", point) == (want, Quality.GOOD), point
    assert rec.last("plc-2", "h7") == (holding_value(2, 7), Quality.GOOD)
    assert rec.last("plc-2", "h8_scaled")[0] == pytest.approx(holding_value(2, 8) * 0.1 - 100)
    assert [rec.last("plc-2", p)[0] for p in ("coil3", "coil4", "di6", "di7")] == [1.0, 0.0, 1.0, 0.0]
    assert runner.requests_per_cycle == 4  # input 0..23, holding 7..8, coils 3..4, discrete inputs 6..7


def test_exception_replies_are_bad_quality_with_their_code_kept_and_counted(sim, run_source) -> None:
    rec = Recorder()
    runner = run_source({"port": sim.port, "devices": [{"unit": 3, "asset": "plc-3", "poll_groups": [
        {"interval_ms": 100, "registers": [{"address": 150, "point": "busy"}, {"address": 500, "point": "nowhere"},
                                           {"address": 1, "point": "fine"}]}]}]}, rec)
    wait_until(lambda: runner.counters().get("modbus_exception_2", 0) >= 2
               and runner.counters().get("modbus_exception_6", 0) >= 2, timeout=10, what="both exceptions twice")
    busy, nowhere = rec.last("plc-3", "busy"), rec.last("plc-3", "nowhere")
    assert math.isnan(busy[0]) and busy[1] == Quality.BAD and math.isnan(nowhere[0]) and nowhere[1] == Quality.BAD
    assert runner.last_exception == {("plc-3", "busy"): 6, ("plc-3", "nowhere"): 2}
    assert rec.last("plc-3", "fine") == (holding_value(3, 1), Quality.GOOD)  # one bad read spoils no other
    c = runner.counters()
    assert c["modbus_exceptions"] == sum(v for k, v in c.items() if k.startswith("modbus_exception_"))
    assert c["modbus_devices_down"] == 0  # an exception is an answer: the device is there


def test_a_device_killed_is_reported_down_and_recovers_when_it_returns(run_source) -> None:
    rec = Recorder()
    with ModbusSimServer("1", size=50) as dev:
        runner = run_source({"port": dev.port, "devices": [{"unit": 1, "asset": "plc-1", "poll_groups": [
            {"interval_ms": 100, "registers": [{"address": 4, "point": "r4"}]}]}]}, rec)
        wait_until(lambda: rec.last("plc-1", "r4") == (holding_value(1, 4), Quality.GOOD), timeout=10,
                   what="a first good value")
        dev.kill()
        wait_until(lambda: runner.down_units() == {1}, timeout=10, what="the device reported down")
        assert runner.counters()["modbus_devices_down"] == 1
        v, q = rec.last("plc-1", "r4")
        assert math.isnan(v) and q == Quality.BAD
        dev.start()  # same port
        wait_until(lambda: runner.down_units() == set() and rec.last("plc-1", "r4")[1] == Quality.GOOD,
                   timeout=15, what="recovery after the restart")
        assert rec.last("plc-1", "r4") == (holding_value(1, 4), Quality.GOOD)
        assert runner.counters()["modbus_devices_down"] == 0


def test_rtu_on_a_serial_line_reads_two_units_and_reports_an_absent_one_bad(run_source) -> None:
    rec = Recorder()
    with SerialPair() as line, ModbusSimServer("1-2", size=50, serial=line.a):
        run_source({"transport": "rtu", "serial_port": line.b, "baudrate": 115200, "devices": [
            {"unit": 1, "asset": "meter-1", "poll_groups": [{"interval_ms": 100, "registers": _meter("meter-1")}]},
            {"unit": 2, "asset": "plc-2", "poll_groups": [{"interval_ms": 100, "registers": [
                {"address": 9, "point": "r9"}, {"table": "coil", "address": 1, "point": "c1"}]}]},
            {"unit": 9, "asset": "plc-9", "poll_groups": [{"interval_ms": 200, "registers": [
                {"address": 0, "point": "r0"}]}]}]}, rec)
        wait_until(lambda: _all_good(rec, [("meter-1", "thd_pct"), ("plc-2", "r9"), ("plc-2", "c1")]), timeout=15,
                   what="RTU values")
        assert rec.last("meter-1", "runtime_s") == (3_000_000_000.0, Quality.GOOD)
        assert rec.last("meter-1", "power_factor") == (float(np.float32(0.95)), Quality.GOOD)
        assert rec.last("plc-2", "r9") == (holding_value(2, 9), Quality.GOOD)
        assert rec.last("plc-2", "c1") == (1.0, Quality.GOOD)
        wait_until(lambda: (v := rec.last("plc-9", "r0")) is not None and v[1] == Quality.BAD, timeout=10,
                   what="unit 9 (absent) reported bad")
