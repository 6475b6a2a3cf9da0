"""Kernels compiled ahead of time (``twin edge compile``) against the same kernels under numba's JIT.

The build is made once for this module, by the real command, into a temp dir. Each workload runs in a
fresh process, because the kernel source (build or JIT) is chosen once per process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import topics
from models.wire import AnomalyEvent, GatewayStatus, decode, decode_event
from simulators.devices import Reading, publish_readings
from tests.harness.processes import EdgeProcess, gateway_config, wait_until
from tests.test_edge_agent import Listener

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000

# Every kernel the agent runs, through the agent's own classes (the workload the build records its signatures
# from); writes what they returned and prints which kernels ran.
WORKLOAD = r"""
import json, sys
import numpy as np
from edge import kernels
from edge.compile import exercise
np.savez(sys.argv[1], **exercise())
print(json.dumps({**kernels.status(), "numba": "numba" in sys.modules}))
"""


def _python(code: str, *args: str, **env: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kernels")
    r = subprocess.run([sys.executable, "-m", "twin", "edge", "compile", "--out", str(out)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"kernels: built {out}" in r.stdout
    return out


def test_the_build_runs_every_kernel_without_numba_and_returns_what_the_jit_returns(build, tmp_path):
    aot = _python(WORKLOAD, str(tmp_path / "aot.npz"), TWIN_KERNELS="aot", TWIN_KERNEL_DIR=str(build))
    jit = _python(WORKLOAD, str(tmp_path / "jit.npz"), TWIN_KERNELS="jit")
    assert aot == {"mode": "aot", "fallback": None, "numba": False}
    assert jit == {"mode": "jit", "fallback": None, "numba": True}
    a, j = np.load(tmp_path / "aot.npz"), np.load(tmp_path / "jit.npz")
    assert a["mask"].any() and len(a["events"]) >= 2 and len(a["firings"]) >= 1  # the workload did fire
    for key in ("score", "mask", "feat", "events", "firings"):
        np.testing.assert_array_equal(a[key], j[key], err_msg=key)


def test_compile_if_needed_keeps_a_current_build(build):
    r = subprocess.run([sys.executable, "-m", "twin", "edge", "compile", "--out", str(build), "--if-needed"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"kernels: the build in {build} is current"


STATUS = "import json, sys; from edge import kernels; import edge.detect.ewma; " \
         "print(json.dumps({**kernels.status(), 'numba': 'numba' in sys.modules}))"


def test_a_stale_build_is_ignored_and_required_builds_refuse_to_start(build, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(build, stale)
    manifest = json.loads((stale / "kernels.json").read_text())
    (stale / "kernels.json").write_text(json.dumps({**manifest, "digest": "0" * 64}))  # sources changed since
    assert _python(STATUS, TWIN_KERNELS="auto", TWIN_KERNEL_DIR=str(stale)) == {
        "mode": "jit", "fallback": None, "numba": True}
    r = subprocess.run([sys.executable, "-c", STATUS], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "TWIN_KERNELS": "aot", "TWIN_KERNEL_DIR": str(stale)})
    assert r.returncode == 1
    assert "TWIN_KERNELS=aot but the kernel build in" in r.stderr and "is stale" in r.stderr
    assert "run `twin edge compile`" in r.stderr


UNCOVERED = r"""
import json, sys
import numpy as np
from edge import kernels
from edge.detect.ewma import EwmaZ, ewma_z_kernel
d = EwmaZ(2, tau_s=60.0, threshold=4.0, warmup=3)
idx = np.array([0, 1, 0, 1, 0, 1, 0], np.int32)  # int32 point indexes: no build was made for them
t = np.arange(7, dtype=np.int64) * 10**9
x = np.array([1.0, 2.0, 1.1, 2.1, 0.9, 1.9, 9.0])
score, flag = np.empty(7), np.empty(7, np.bool_)
try:
    ewma_z_kernel(idx, t, x, np.ones(7, np.bool_), d.mean, d.var, d.last_t, d.count, d.tau_s, d.threshold,
                  d.warmup, True, score, flag)
except TypeError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({**kernels.status(), "numba": "numba" in sys.modules, "flags": flag.tolist(),
                  "count": d.count.tolist()}))
"""


def test_a_call_the_build_does_not_cover_falls_back_to_the_jit_or_is_refused_when_required(build):
    got = _python(UNCOVERED, TWIN_KERNELS="auto", TWIN_KERNEL_DIR=str(build))
    fallback = got.pop("fallback")
    assert got == {"mode": "aot", "numba": True, "flags": [False] * 6 + [True], "count": [4, 3]}
    assert fallback.startswith("edge.detect.ewma.ewma_z_kernel(<i41C, <i81C, <f81C")
    assert fallback.endswith("is not in the ahead-of-time build")
    strict = _python(UNCOVERED, TWIN_KERNELS="aot", TWIN_KERNEL_DIR=str(build))
    assert strict["error"].startswith("kernel edge.detect.ewma.ewma_z_kernel called with (<i41C, ")
    assert strict["error"].endswith("which the ahead-of-time build does not cover (TWIN_KERNELS=aot)")


def test_the_agent_on_a_build_flags_a_spike_without_loading_llvm(build, tmp_path, mosquitto):
    cfg = gateway_config(tmp_path, mosquitto.url, mosquitto.url, gateway="gw-aot")
    events = Listener(mosquitto.url, topics.events("acme", "gw-aot"))
    status = Listener(mosquitto.url, topics.status("acme", "gw-aot"))
    edge = EdgeProcess(tmp_path, cfg, env={"TWIN_KERNELS": "aot", "TWIN_KERNEL_DIR": str(build)})
    edge.start()
    try:
        edge.wait_log("uplink: connected")
        edge.wait_log("source sensors: connected")
        assert "detector kernels compiled ahead of time" in edge.log()
        t0 = 1_767_225_600 * S
        values = [4.0 + 0.05 * math.sin(i / 3) for i in range(420)]
        values[400] = 30.0  # after 300 samples of history, when the default detector judges levels
        publish_readings(mosquitto.url, [Reading("trailer-001", "supply_air", t0 + i * S, v)
                                         for i, v in enumerate(values)])
        anomalies = wait_until(lambda: [e for e in map(decode_event, events.payloads())
                                        if isinstance(e, AnomalyEvent)], timeout=30, what="the spike's event")
        assert [(e.point, e.start_ns, e.peak_value, e.detectors) for e in anomalies] == [
            ("supply_air", t0 + 400 * S, 30.0, ["novelty", "novelty.record", "novelty.residual"])]
        counters = wait_until(lambda: [c for c in (decode(p, GatewayStatus).counters for p in status.payloads())
                                       if c.get("samples_in", 0) >= 420], timeout=30, what="status counters")
        assert counters[-1]["kernels_ahead_of_time"] == 1
        maps = Path(f"/proc/{edge.proc.pid}/maps").read_text()
        assert "llvmlite" not in maps and "numba" not in maps
    finally:
        edge.stop()
        events.close()
        status.close()


def test_compile_without_a_compiler_fails_saying_what_it_needs_and_leaves_no_build(tmp_path):
    r = subprocess.run([sys.executable, "-m", "twin", "edge", "compile", "--out", str(tmp_path / "k")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "CC": str(tmp_path / "no-such-cc")})
    assert r.returncode == 1
    assert f"kernels: build in {tmp_path / 'k'} failed" in r.stderr
    assert "it needs a C compiler, Python's headers and a writable directory" in r.stderr
    assert not (tmp_path / "k" / "kernels.json").exists()
