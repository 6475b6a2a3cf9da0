"""``twin bench modbus``: devices x registers polled at a rate by ``twin edge run`` from pymodbus simulators (five
units per simulator process, Modbus TCP on loopback) to the cloud topic on a real Mosquitto; delivered and lost
against what the source read (its ``modbus_samples`` counter, final once every device is down), agent CPU and RSS.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from simulators.rig.modbus import CloudTopic, ModbusSimServer, modbus_fleet_config
from simulators.rig.processes import EdgeProcess, wait_until
from twin.bench_edge import _cpu_s, _rss_mb

UNITS_PER_SERVER = 5


def run_modbus_bench(harness, *, devices: int, registers: int, rate_hz: float, duration_s: float) -> dict:
    interval_ms = max(10, round(1000 / rate_hz))
    units = list(range(1, devices + 1))
    groups = [units[i:i + UNITS_PER_SERVER] for i in range(0, devices, UNITS_PER_SERVER)]
    workdir = Path(tempfile.mkdtemp(prefix="assettwin-bench-modbus-"))
    with harness.MosquittoServer() as broker:
        sims = [ModbusSimServer(f"{g[0]}-{g[-1]}", size=registers) for g in groups]
        try:
            for s in sims:
                s.start()
            cloud = CloudTopic(broker.url, "acme", "gw-modbus")
            cfg = modbus_fleet_config(workdir, broker.url, [(s.port, g) for s, g in zip(sims, groups, strict=True)],
                                      registers, interval_ms=interval_ms)
            edge = EdgeProcess(workdir / "edge", cfg)
            t_start = time.monotonic()
            edge.start()
            try:
                edge.wait_log("edge agent acme/gw-modbus running", timeout=120)
                n_points = devices * registers
                wait_until(lambda: len(cloud.good()) == n_points, timeout=60, what="every register on the cloud topic")
                first_all_s = time.monotonic() - t_start
                pid = edge.proc.pid
                cpu0, t0 = _cpu_s(pid), time.monotonic()
                rss = 0.0
                while time.monotonic() - t0 < duration_s:
                    rss = max(rss, _rss_mb(pid))
                    time.sleep(0.5)
                cpu_pct = 100 * (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
                for s in sims:
                    s.stop()
                wait_until(lambda: cloud.counter("modbus_devices_down") == devices, timeout=30, what="devices down")
                read = cloud.counter("modbus_samples") or 0
                with contextlib.suppress(AssertionError):  # what never arrives is reported as lost
                    wait_until(lambda: sum(map(len, cloud.good().values())) >= read, timeout=30, what="delivery")
                delivered = sum(map(len, cloud.good().values()))
                requests = cloud.counter("modbus_requests") or 0
            finally:
                edge.stop()
                cloud.close()
        finally:
            for s in sims:
                s.close()
    return {"devices": devices, "registers": registers, "rate_hz": rate_hz, "duration_s": duration_s,
            "read": read, "delivered": delivered, "lost": read - delivered, "requests": requests,
            "cpu_pct": cpu_pct, "rss_mb": rss, "every_register_s": first_all_s}
