"""`make demo` runs `twin demo`: with nothing installed it must serve telemetry over the API within 60 s."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx

from tests.harness.servers import free_port


def test_demo_serves_telemetry_within_60_seconds(tmp_path):
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "twin", "demo", "--port", str(port), "--data-dir",
                             str(tmp_path / "demo"), "--duration", "90"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        key = None
        out = ""
        while key is None and time.monotonic() - started < 60:
            line = proc.stdout.readline()
            out += line
            if m := re.search(r"API key:\s+(\S+)", line):
                key = m.group(1)
            assert proc.poll() is None, out
        assert key, f"no API key printed:\n{out}"
        values = []
        while time.monotonic() - started < 60 and not values:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/assets/trailer-001/telemetry",
                          params={"point": "supply_air"}, headers={"Authorization": f"Bearer {key}"})
            values = r.json().get("values", []) if r.status_code == 200 else []
            time.sleep(0.5)
        assert values, "the demo served no telemetry within 60 s"
        assert all(v is None or -5.0 < v < 15.0 for v in values)  # a chilled trailer near its 4 degC setpoint
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/assets", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0
