"""Modbus devices for the tests and ``twin bench modbus``: the simulator (``simulators.modbus_server``) as a real
process on a free loopback port, or on one end of a pseudo-terminal pair made by ``socat`` (an RTU line).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar, Self

import paho.mqtt.client as mqtt

from models import topics
from models.wire import GatewayStatus, Quality, TelemetryBatch, decode
from simulators.rig.procs import stop_process
from simulators.rig.servers import HarnessError, _Server, tcp_open


class ModbusSimServer(_Server):
    """``python -m simulators.modbus_server``: ``units`` on TCP (a free port, kept across restarts) or, with
    ``serial``, RTU on that device."""

    name = "modbus"
    startup_timeout: ClassVar[float] = 20.0

    def __init__(self, units: str = "1", size: int = 200, serial: str | None = None, busy: int | None = None) -> None:
        super().__init__()
        self.units, self.size, self.serial, self.busy = units, size, serial, busy

    @property
    def url(self) -> str:
        return self.serial or f"modbus.tcp://{self.host}:{self.port}"

    def _launch(self) -> None:
        argv = [sys.executable, "-m", "simulators.modbus_server", "--units", self.units, "--size", str(self.size)]
        argv += ["--serial", self.serial] if self.serial else ["--port", str(self.port)]
        if self.busy is not None:
            argv += ["--busy", str(self.busy)]
        self._popen(argv)

    def _probe(self) -> bool:
        if self.serial:  # nothing to connect to: the line it printed once serving
            return "modbus simulator:" in self.log_tail(5)
        return tcp_open(self.host, self.port)

    def kill(self) -> None:
        """A device that loses power: SIGKILL, no goodbye."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


class SerialPair:
    """Two linked pseudo-terminals (``socat pty,raw,echo=0 pty,raw,echo=0``): an RTU line on one machine."""

    def __init__(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise HarnessError("socat not found (Debian: apt-get install socat; `make servers` installs it)")
        self._dir = Path(tempfile.mkdtemp(prefix="assettwin-rtu-"))
        self.a, self.b = str(self._dir / "a"), str(self._dir / "b")
        self._log = self._dir / "socat.log"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not (Path(self.a).exists() and Path(self.b).exists()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"socat made no pty pair: {self._log.read_text(errors='replace')}")
            time.sleep(0.02)

    def close(self) -> None:
        stop_process(self._proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def plc_type(registers: int) -> dict:
    """An asset type of ``registers`` numeric points ``r000``..., one per holding register (no detectors)."""
    return {"id": f"plc-{registers}", "name": f"PLC with {registers} registers",
            "points": {f"r{i:03d}": {"unit": "1"} for i in range(registers)}}


def modbus_fleet_config(workdir: Path, uplink_url: str, servers: list[tuple[int, list[int]]], registers: int,
                        interval_ms: int = 1000, **overrides: object) -> dict:
    """A gateway.yaml reading ``registers`` holding registers (uint16, addresses 0...) of every unit of every
    simulator ``(port, units)`` every ``interval_ms``: unit ``u`` is asset ``plc-{u:03d}``, one source per port."""
    sources = [{"type": "modbus", "name": f"modbus-{port}", "port": port, "timeout_s": 1.0, "retries": 1,
                "reconnect_min_s": 0.2, "reconnect_max_s": 2.0,
                "devices": [{"unit": u, "asset": f"plc-{u:03d}", "poll_groups": [
                    {"interval_ms": interval_ms,
                     "registers": [{"address": i, "point": f"r{i:03d}"} for i in range(registers)]}]} for u in units]}
               for port, units in servers]
    kind = plc_type(registers)
    cfg: dict = {"tenant": "acme", "gateway": "gw-modbus", "uplink": {"url": uplink_url},
                 "outbox": {"path": str(workdir / "outbox.sqlite")}, "state_dir": str(workdir / "state"),
                 "tick_ms": 100, "status_interval_s": 0.5, "asset_types": {kind["id"]: kind},
                 "assets": [{"id": f"plc-{u:03d}", "type": kind["id"]} for _, units in servers for u in units],
                 "sources": sources}
    cfg.update(overrides)
    return cfg


class CloudTopic:
    """Everything the gateway publishes for the cloud: unique samples by (asset, point, t_ns), and its last status."""

    def __init__(self, url: str, tenant: str, gateway: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.samples: dict[tuple[str, str, int], tuple[float | None, int]] = {}
        self.status: GatewayStatus | None = None
        self._lock = threading.Lock()
        self._telemetry, status = topics.telemetry(tenant, gateway), topics.status(tenant, gateway)
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, *_: c.subscribe([(self._telemetry, 1), (status, 1)])
        self.c.on_subscribe = lambda *_: ready.set()
        self.c.on_message = self._on_message
        self.c.connect(host, int(port))
        self.c.loop_start()
        assert ready.wait(10)

    def _on_message(self, client, userdata, m) -> None:
        if m.topic == self._telemetry:
            batch = decode(m.payload, TelemetryBatch)
            with self._lock:
                for s in batch.series:
                    for t, v, q in zip(s.t_ns, s.values, s.quality, strict=True):
                        self.samples[(s.asset, s.point, t)] = (v, q)
        elif m.payload:
            self.status = decode(m.payload, GatewayStatus)

    def good(self) -> dict[tuple[str, str], list[tuple[int, float]]]:
        out: dict[tuple[str, str], list[tuple[int, float]]] = {}
        with self._lock:
            for (a, p, t), (v, q) in self.samples.items():
                if q == Quality.GOOD:
                    out.setdefault((a, p), []).append((t, v))
        return out

    def bad_points(self) -> set[tuple[str, str]]:
        with self._lock:
            return {(a, p) for (a, p, _), (_, q) in self.samples.items() if q == Quality.BAD}

    def counter(self, name: str) -> int | None:
        s = self.status
        return None if s is None else s.counters.get(name)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
