"""Edge agent footprint: a real ``twin edge run`` process pinned to one core, fed over MQTT by simulated
trailers, measured from outside (``/proc``) while a subscriber on the cloud topic counts every sample
and its latency. Zero loss is checked by count: delivered == published."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from rich.progress import Progress

from models import topics

POINTS = ("supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def _rss_split_mb(pid: int) -> tuple[float, float]:
    """(anonymous, file-backed) resident MB: the file part is mostly LLVM's code pages (libllvmlite.so),
    clean and reclaimable, the anonymous part is what the agent allocated."""
    rollup = {line.split(":")[0]: int(line.split()[1]) for line in
              Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]}
    anon = rollup.get("Anonymous", 0) / 1024
    return anon, rollup.get("Rss", 0) / 1024 - anon


def _rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


class _Counter:
    """Counts samples arriving on the cloud telemetry topic, and their sensor→cloud latency. Plays ingest's part
    towards the agent too: says each batch is committed, as ingest does once it is written (the agent keeps
    batches until then, and sends no more than a window ahead)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self._committed_topic = topic.rsplit("/", 1)[0] + "/committed"
        self.samples = 0
        self.latencies: list[np.ndarray] = []
        self.to_commit: list[np.ndarray] = []  # sensor time -> batch committed at the edge (sent_ns)
        self.seqs: set[int] = set()
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on
        ready = threading.Event()
        self.c.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.c.on_subscribe = lambda *_: ready.set()
        self.c.connect(host, port)
        self.c.loop_start()
        ready.wait(10)

    def _on(self, c, u, m) -> None:
        now = time.time_ns()
        raw = m.payload
        b = json.loads(zlib.decompress(raw) if raw[:1] == b"x" else raw)  # no validation: keep the meter light
        c.publish(self._committed_topic, json.dumps({"v": "v1", "kind": "committed", "epoch": b.get("epoch", ""),
                                                    "telemetry": [b["seq"]]}).encode(), qos=1)
        with self._lock:
            if b["seq"] in self.seqs:
                return  # a re-send after reconnect: the cloud drops it by sequence number too
            self.seqs.add(b["seq"])
            t = np.concatenate([np.asarray(s["t_ns"], np.int64) for s in b["series"]])
            self.samples += t.size
            self.latencies.append((now - t) / 1e6)
            self.to_commit.append((b["sent_ns"] - t) / 1e6)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _publisher_process(host: str, port: int, assets: list[str], rate_hz: float, duration_s: float, sent,
                       core: int | None) -> None:
    """The sensors, in their own process (and core): the meter must not slow them down, nor they the meter."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    box = [0]
    _publish(host, port, assets, rate_hz, duration_s, box, threading.Event())
    sent.value = box[0]


def _publish(host: str, port: int, assets: list[str], rate_hz: float, duration_s: float, sent: list[int],
             stop: threading.Event) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(2000)
    c.connect(host, port)
    c.loop_start()
    period = 1.0 / rate_hz
    next_t = time.monotonic()
    end = next_t + duration_s
    infos = []
    k = 0
    while not stop.is_set() and next_t < end:
        now_ns = time.time_ns()
        for i, a in enumerate(assets):
            v = {p: round(4.0 + 0.1 * ((k + i + j) % 7), 2) for j, p in enumerate(POINTS)}
            infos.append(c.publish(f"bench/{a}/all", json.dumps({"t": now_ns, "v": v}), qos=1))
        sent[0] += len(assets)
        k += 1
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def run_edge_bench(harness, *, points: int, rate_hz: float, duration_s: float, core: int,
                   python: str | None = None, env: dict[str, str] | None = None) -> dict:
    """``python``: the agent's interpreter, e.g. a venv with only ``assettwin[edge]`` installed, as a gateway
    has (the dev venv also holds scipy, which numba imports when present, ~15 MB). ``env``: extra environment
    for the agent (``TWIN_KERNELS``, ``TWIN_KERNEL_DIR``)."""
    n_assets = math.ceil(points / len(POINTS))
    assets = [f"trailer-{i:04d}" for i in range(1, n_assets + 1)]
    broker = harness.MosquittoServer()
    broker.start()
    work = Path(tempfile.mkdtemp(prefix="twin-bench-edge-"))
    cfg = {
        "tenant": "bench", "gateway": "gw-bench", "uplink": {"url": broker.url},
        "outbox": {"path": str(work / "outbox.sqlite")}, "state_dir": str(work / "state"),
        "tick_ms": 100, "status_interval_s": 5,
        "assets": [{"id": a, "type": "refrigerated-trailer"} for a in assets],
        "sources": [{"type": "mqtt", "name": "sensors", "link": {"url": broker.url}, "subscriptions": [
            {"topic": "bench/+/all", "asset": "{1}", "point": "*", "payload": "json_map", "value_path": "v",
             "ts_path": "t"}]}],
    }
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "edge.log", "wb")  # noqa: SIM115 - the child's log
    cmd = [python or sys.executable, "-m", "twin", "edge", "run", "--config", str(work / "gateway.yaml")]
    if (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(core), *cmd]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TWIN_LOG_FORMAT": "json", **(env or {})})
    counter = _Counter(broker.host, broker.port, topics.telemetry("bench", "gw-bench"))
    try:
        deadline = time.monotonic() + 60
        while b"source sensors: connected" not in (work / "edge.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "edge.log").read_text()[-2000:])
            time.sleep(0.1)
        ctx = mp.get_context("spawn")
        sent = ctx.Value("q", 0)
        other_core = 0 if core != 0 else 1
        pub = ctx.Process(target=_publisher_process, args=(broker.host, broker.port, assets, rate_hz, duration_s,
                                                           sent, other_core if (os.cpu_count() or 1) > 1 else None))
        pub.start()
        time.sleep(min(5.0, duration_s / 4))  # warm-up: connections, first compiles, steady queues
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        rss_max = 0.0
        with Progress(transient=True) as bar:
            task = bar.add_task("edge agent under load", total=duration_s)
            while pub.is_alive():
                rss_max = max(rss_max, _rss_mb(proc.pid))
                bar.update(task, completed=min(duration_s, time.monotonic() - t0 + 5))
                pub.join(0.5)
        t1 = time.monotonic()
        if pub.exitcode != 0:
            raise RuntimeError(f"the sensor publisher failed (exit code {pub.exitcode}): the machine is too "
                               "loaded to offer the load; nothing recorded")
        published = sent.value * len(POINTS)
        deadline = time.monotonic() + 60
        while counter.samples < published and time.monotonic() < deadline:
            time.sleep(0.05)
        # CPU until the last sample is out, over the seconds of load offered: work the agent deferred
        # (a backlog behind a slow broker) is counted, not hidden after the window.
        cpu1 = _cpu_s(proc.pid)
        rss_anon, rss_file = _rss_split_mb(proc.pid)
        time.sleep(1.0)
        lat = np.concatenate(counter.latencies) if counter.latencies else np.array([math.nan])
        return {
            "points": n_assets * len(POINTS), "rate_hz": rate_hz, "duration_s": duration_s,
            "offered_per_s": n_assets * len(POINTS) * rate_hz, "published": published,
            "delivered": counter.samples, "lost": published - counter.samples,
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": max(rss_max, _rss_mb(proc.pid, "VmHWM")),
            "rss_anon_mb": rss_anon, "rss_file_mb": rss_file, "agent_python": cmd[cmd.index("-m") - 1],
            "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
            "messages_per_s": n_assets * rate_hz,
            "to_commit_p50_ms": float(np.percentile(np.concatenate(counter.to_commit), 50)),
            "kernels": "ahead of time" if b"detector kernels compiled ahead of time" in (work / "edge.log").read_bytes()
            else "numba JIT",
        }
    finally:
        counter.close()
        proc.terminate()
        proc.wait(30)
        log.close()
        broker.close()


def block_stage_rate(channels: int = 4, sample_rate_hz: float = 25_600.0, blocks: int = 50,
                     per_tick: int = 5) -> dict[str, float]:
    """The agent's block path on one core (CPU time): ``blocks`` wire frames of a worn simulated bearing decoded and
    drained through ``edge.blocks.BlockStage`` ``per_tick`` at a time, as ticks do; compile and warm-up excluded."""
    from edge.blocks import POINTS, BlockStage
    from models.machine import MachineProfile
    from models.waveform import decode, encode
    from simulators.machine import Machine, MachineParams
    from simulators.waveforms import machine_frame

    params = MachineParams(sample_rate_hz=sample_rate_hz, onset_s=0.0, failure_s=30 * 86_400.0)
    machine = Machine("bench-1", params, seed=1)
    wire = [encode(machine_frame(machine, 0, 20 * 86_400.0 + 3600.0 * i, channels)) for i in range(per_tick)]
    index = {("bench-1", p): i for i, p in enumerate(POINTS)}
    stage = BlockStage({"bench-1": MachineProfile()}, index)
    out: list[tuple] = []
    for w in wire:  # compile / load the kernels, plan the bands
        stage.put(decode(w))
    stage.drain(lambda *a: out.append(a))
    t0 = time.process_time()
    done = 0
    while done < blocks:
        for w in wire:
            stage.put(decode(w))
        done += stage.drain(lambda *a: out.append(a))
    cpu = time.process_time() - t0
    n = round(sample_rate_hz * params.block_s)
    return {"blocks": done, "cpu_s": cpu, "samples_per_s": done * channels * n / cpu,
            "realtime_factor": done * params.block_s / cpu}
