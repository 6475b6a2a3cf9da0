"""Cloud benchmarks against real servers started by the rig (``simulators.rig``, as the tests do): ingest
throughput beside raw InfluxDB ``/write``, API latency under concurrent clients, and end-to-end latency sensor → API.

Every figure that is compared with another is measured in the same run, on the same servers: the
machine is shared and noisy, absolute numbers move between runs, ratios much less.

Paths. Debian's InfluxDB 1.6 has no ``/api/v2/write``; the platform (influxdb-client) writes through the
rig's test- and bench-only v2 front, a Python HTTP proxy. Here that front runs in a process of its own (as it
would be a separate hop in any deployment), so the bench's own client and poller do not share its GIL.
Raw ``/write`` is measured both directly on influxd and through that front; the platform is compared
with raw through the same front, the path it actually uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import paho.mqtt.client as mqtt

from models import topics

TENANT = "bench"
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
S = 1_000_000_000
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


# -- processes and resources ------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children (``--api-workers``: the API is in the children)."""
    kids = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):  # each thread's children
        with contextlib.suppress(OSError):
            kids.update(int(c) for c in children.read_text().split())
    total = _cpu_s(pid)
    for k in kids:
        with contextlib.suppress(OSError):
            total += _tree_cpu_s(k)
    return total


class Servers:
    """Mosquitto, influxd (+ a front process) and PostgreSQL for one bench run."""

    def __init__(self, harness, *, postgres: bool = True) -> None:
        self.harness = harness
        self.broker = harness.MosquittoServer()
        self.influx = harness.InfluxServer()
        self.pg = harness.PostgresServer() if postgres else None
        self.front = self.influx.front  # the v2 write front, a process of its own (its CPU is read from /proc)

    def __enter__(self) -> Servers:
        try:
            self.broker.start()
            self.influx.start()
            if self.pg is not None:
                self.pg.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.broker, self.influx, self.pg):
            if s is not None:
                s.close()

    @property
    def influxd_pid(self) -> int:
        return self.influx._proc.pid  # the bench reads its CPU time from /proc

    def new_databases(self, prefix: str) -> tuple[str, str]:
        """A fresh InfluxDB database and PostgreSQL database (its SQLAlchemy URL)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.influx.create_database(name)
        if self.pg is None:
            return name, ""
        self.pg.create_database(name)
        return name, self.pg.url_for(name)


def _twin_process(argv: list[str], log_path: Path, env: dict[str, str], root: Path | None = None
                  ) -> subprocess.Popen:
    """``python -m twin …`` of this Python (installed or this checkout), or from ``root``: the directory that
    holds another tree's packages (a baseline checkout), which ``-m`` then imports first."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "twin", *argv], stdout=log, stderr=subprocess.STDOUT,
                                cwd=root, env={**os.environ, "TWIN_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                                               **env})
    finally:
        log.close()


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_log(proc: subprocess.Popen, log_path: Path, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{needle!r} not in {log_path}:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _influx_count(influx, db: str) -> int:
    res = influx.query("SELECT count(value) FROM telemetry", db=db)
    series = res["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


# -- raw /write --------------------------------------------------------------------------------------
def _series_keys(n_series: int, points_per_asset: int = 10) -> list[tuple[str, str]]:
    return [(f"asset-{i // points_per_asset:04d}", f"p{i % points_per_asset:02d}") for i in range(n_series)]


def raw_bodies(n_points: int, n_series: int = 1000, batch: int = 5000, seed: int = 1) -> list[bytes]:
    """Line protocol as the platform writes it (same measurement, tags and fields), 5,000 points a body,
    every series once per timestamp."""
    rng = random.Random(seed)
    keys = [f"telemetry,asset={a},point={p},tenant={TENANT}" for a, p in _series_keys(n_series)]
    lines = []
    for k in range(n_points):
        i, t = k % n_series, k // n_series
        lines.append(f"{keys[i]} value={round(rng.uniform(-20, 40), 2)!r},quality=0i {T0 + t * S}")
    return ["\n".join(lines[j:j + batch]).encode() for j in range(0, len(lines), batch)]


def raw_write_rate(url: str, path: str, bodies: list[bytes], gzip_level: int | None) -> dict[str, float]:
    """One keep-alive client posting ``bodies`` back to back; bodies are compressed before the clock starts."""
    payloads = [gzip.compress(b, gzip_level) for b in bodies] if gzip_level else bodies
    headers = {"Content-Encoding": "gzip"} if gzip_level else {}
    points = sum(b.count(b"\n") + 1 for b in bodies)
    with httpx.Client(base_url=url, timeout=60) as c:
        c.post(path, content=payloads[0], headers=headers).raise_for_status()  # warm-up: connection, series
        t0 = time.perf_counter()
        for p in payloads[1:]:
            r = c.post(path, content=p, headers=headers)
            if r.status_code != 204:
                raise RuntimeError(f"raw write to {url}{path}: HTTP {r.status_code} {r.text[:300]}")
        dt = time.perf_counter() - t0
    timed = points - (bodies[0].count(b"\n") + 1)
    return {"points": timed, "seconds": dt, "points_per_s": timed / dt}


def measure_raw(servers: Servers, n_points: int, repeats: int) -> dict[str, Any]:
    """Median over ``repeats`` of each path and encoding, interleaved so drift hits all of them alike."""
    bodies = raw_bodies(n_points)
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for via in ("direct", "front"):
            for enc in ("plain", "gzip"):
                db, _ = servers.new_databases(f"raw_{via}_{enc}")
                if via == "direct":
                    url, path = servers.influx.raw_url, f"/write?db={db}&precision=n"
                else:
                    url, path = servers.front.url, f"/api/v2/write?org=-&bucket={db}/autogen&precision=ns"
                r = raw_write_rate(url, path, bodies, 1 if enc == "gzip" else None)
                runs.setdefault(f"{via}_{enc}", []).append(r["points_per_s"])
                servers.influx.drop_database(db)
    return {k: statistics.median(v) for k, v in runs.items()} | {"runs": runs, "points": n_points}


# -- platform ingest ---------------------------------------------------------------------------------
def telemetry_payloads(n_messages: int, points_per_message: int, n_series: int, series_per_message: int,
                       seed: int = 2, first_seq: int = 0) -> list[tuple[str, bytes]]:
    """Gateways' batches as the edge sends them (zlib JSON): ``n_series`` spread over gateways of
    ``series_per_message`` series each; every message carries all of its gateway's series."""
    rng = random.Random(seed)
    per_series = points_per_message // series_per_message
    keys = _series_keys(n_series)
    gateways = [f"gw-{g:03d}" for g in range(math.ceil(n_series / series_per_message))]
    seq = dict.fromkeys(gateways, first_seq)
    out = []
    for m in range(n_messages):
        g = m % len(gateways)
        gw = gateways[g]
        s = seq[gw]
        seq[gw] += 1
        series = []
        for asset, point in keys[g * series_per_message:(g + 1) * series_per_message]:
            t = [T0 + (s * per_series + i) * S // 10 for i in range(per_series)]
            series.append({"asset": asset, "point": point, "t_ns": t,
                           "values": [round(rng.uniform(-20, 40), 2) for _ in range(per_series)],
                           "quality": [0] * per_series})
        body = {"v": "v1", "kind": "telemetry", "tenant": TENANT, "gateway": gw, "seq": s,
                "sent_ns": time.time_ns(), "series": series}
        out.append((topics.telemetry(TENANT, gw), zlib.compress(json.dumps(body).encode(), 1)))
    return out


def _publish_all(broker, messages: list[tuple[str, bytes]], timeout: float = 120) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1) for t, p in messages]
        for i in infos:
            i.wait_for_publish(timeout)
    finally:
        c.disconnect()
        c.loop_stop()


def _ingest_env(servers: Servers, db: str, pg_url: str, front_url: str, extra: dict[str, str] | None) -> dict:
    return {"TWIN_DATABASE_URL": pg_url, "TWIN_STORE": "influx", "TWIN_INFLUX_URL": front_url,
            "TWIN_INFLUX_BUCKET": f"{db}/autogen", "TWIN_INFLUX_DATABASE": db, "TWIN_MQTT_URL": servers.broker.url,
            "TWIN_INGEST_CLIENT_ID": f"bench-{db}", **(extra or {})}


def measure_ingest(servers: Servers, *, messages: int, points_per_message: int, n_series: int,
                   series_per_message: int, work: Path, extra_env: dict[str, str] | None = None,
                   profile: Path | None = None, code: Path | None = None) -> dict[str, Any]:
    """One ingest worker (``twin cloud ingest``) draining a backlog that waits in the broker.

    The worker starts, subscribes and takes one warm-up batch per gateway (connections open, series and
    assets known: steady state), then is paused (SIGSTOP) while the backlog is published, and resumed:
    the clock runs from SIGCONT until the registry has recorded the last batch as written (it does so
    after InfluxDB acknowledged its points). The count in InfluxDB is checked afterwards.
    """
    import psycopg

    db, pg_url = servers.new_databases("ingest")
    # seq 0 of every gateway is a warm-up batch of one sample per series; the backlog continues from seq 1.
    warm = telemetry_payloads(math.ceil(n_series / series_per_message), series_per_message, n_series,
                              series_per_message, seed=3)
    backlog = telemetry_payloads(messages, points_per_message, n_series, series_per_message, first_seq=1)
    log_path = work / f"ingest-{db}.log"
    proc = _twin_process(["cloud", "ingest"], log_path, _ingest_env(servers, db, pg_url, servers.front.url,
                                                                     extra_env), root=code)
    spy = None
    try:
        _wait_log(proc, log_path, "subscribed")
        time.sleep(0.5)  # the SUBACK follows the log line
        _publish_all(servers.broker, warm)
        total_batches = len(warm) + len(backlog)
        with psycopg.connect(servers.pg.conninfo(db), autocommit=True) as conn:
            def seen() -> int:
                try:
                    # Batches written, gap-free from seq 0 per gateway: the high-water marks say how many.
                    return conn.execute("SELECT COALESCE(SUM(high_seq + 1), 0) FROM ingest_epochs").fetchone()[0]
                except psycopg.errors.UndefinedTable:
                    return 0

            deadline = time.monotonic() + 30
            while seen() < len(warm):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"warm-up batches not ingested:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGSTOP)
            _publish_all(servers.broker, backlog)
            cpu = {"ingest": _cpu_s(proc.pid), "influxd": _cpu_s(servers.influxd_pid),
                   "front": _cpu_s(servers.front.pid)}
            t0 = time.perf_counter()
            os.kill(proc.pid, signal.SIGCONT)
            if profile is not None:  # py-spy cannot attach to a stopped process: from the resume on
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", str(profile),
                                        "-f", "raw", "-r", "200", "-p", str(proc.pid)],
                                       stdout=subprocess.DEVNULL, stderr=open(work / "py-spy.log", "wb"))  # noqa: SIM115
            deadline = time.monotonic() + 600
            while (n := seen()) < total_batches:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ingest stopped at {n} of {total_batches} batches:\n"
                                       f"{log_path.read_text()[-3000:]}")
                time.sleep(0.02)
            dt = time.perf_counter() - t0
        cpu = {k: _cpu_s(pid) - cpu[k] for k, pid in (("ingest", proc.pid), ("influxd", servers.influxd_pid),
                                                        ("front", servers.front.pid))}
        points = messages * points_per_message
        stored = _influx_count(servers.influx, db)
        expected = points + len(warm) * series_per_message
        if stored != expected:
            raise RuntimeError(f"InfluxDB holds {stored} points, expected {expected}")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        _stop(proc)
    servers.influx.drop_database(db)
    return {"messages": messages, "points": points, "points_per_message": points_per_message,
            "series": n_series, "series_per_message": series_per_message, "seconds": dt,
            "points_per_s": points / dt, "cpu_s": cpu,
            "ingest_cpu_us_per_point": 1e6 * cpu["ingest"] / points}


def run_ingest_bench(harness, *, messages: int = 500, points_per_message: int = 2000, series: int = 1000,
                     series_per_message: int = 100, raw_points: int = 1_000_000, repeats: int = 3,
                     profile: Path | None = None) -> dict[str, Any]:
    """Raw ``/write`` (both paths, both encodings), then the platform with its default gzip level 1 and
    with compression off, then raw again to see how far the servers drifted during the run."""
    work = Path(tempfile.mkdtemp(prefix="twin-bench-ingest-"))
    kw = {"messages": messages, "points_per_message": points_per_message, "n_series": series,
          "series_per_message": series_per_message, "work": work}
    with Servers(harness) as servers:
        raw = measure_raw(servers, raw_points, repeats)
        ing = measure_ingest(servers, **kw, profile=profile)
        ing_plain = measure_ingest(servers, **kw, extra_env={"TWIN_INFLUX_GZIP_LEVEL": "0"})
        raw_after = measure_raw(servers, raw_points, 1)
    return {"raw": raw, "raw_after": raw_after, "ingest": ing, "ingest_plain": ing_plain,
            "vs_front_raw": ing["points_per_s"] / raw["front_gzip"],
            "plain_vs_front_raw": ing_plain["points_per_s"] / raw["front_plain"],
            "best_vs_best_front_raw": max(ing["points_per_s"], ing_plain["points_per_s"])
            / max(raw["front_plain"], raw["front_gzip"]),
            "best_vs_best_direct_raw": max(ing["points_per_s"], ing_plain["points_per_s"])
            / max(raw["direct_plain"], raw["direct_gzip"])}


# -- percentiles -------------------------------------------------------------------------------------
def pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else math.nan



def ingest_rows(f: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    raw, ing, plain = f["raw"], f["ingest"], f["ingest_plain"]

    def k(v: float) -> str:
        return f"{v / 1e3:,.0f} k points/s"

    def cpu(r: dict) -> str:
        return (f"worker {r['ingest_cpu_us_per_point']:.2f} µs, influxd {1e6 * r['cpu_s']['influxd'] / r['points']:.2f}"
                f" µs, front {1e6 * r['cpu_s']['front'] / r['points']:.2f} µs")

    shape = f"{ing['messages']:,} × {ing['points_per_message']:,}-point batches"
    rows = [
        ("raw /write to influxd, plain", k(raw["direct_plain"]), "MEASURED.md: ~510 k/s"),
        ("raw /write to influxd, gzip", k(raw["direct_gzip"]), "MEASURED.md: ~467 k/s"),
        ("raw /write through the v2 front, plain", k(raw["front_plain"]), "the platform's path"),
        ("raw /write through the v2 front, gzip", k(raw["front_gzip"]), "the platform's path"),
        (f"platform, one ingest worker, gzip 1 (default), {shape}", k(ing["points_per_s"]),
         "≥ 100 k points/s per worker"),
        ("  ÷ raw through the front, gzip", f"{100 * f['vs_front_raw']:.0f} %", "≥ 50 %"),
        (f"platform, one ingest worker, gzip off, {shape}", k(plain["points_per_s"]), "≥ 100 k points/s per worker"),
        ("  ÷ raw through the front, plain", f"{100 * f['plain_vs_front_raw']:.0f} %", "≥ 50 %"),
        ("best platform ÷ best raw direct to influxd", f"{100 * f['best_vs_best_direct_raw']:.0f} %", "reported"),
        ("CPU per point, platform gzip 1", cpu(ing), "reported"),
        ("CPU per point, platform gzip off", cpu(plain), "reported"),
        ("raw /write through the front after the platform runs",
         f"plain {k(f['raw_after']['front_plain'])}, gzip {k(f['raw_after']['front_gzip'])}", "drift check"),
    ]
    reps = len(raw["runs"]["direct_plain"])
    notes = (f"Raw: one httpx keep-alive client, 5,000-point line-protocol bodies over {ing['series']:,} series "
             f"(built, and gzip-1 compressed, before the clock starts), median of {reps} interleaved runs, a fresh "
             "database each. Platform: `twin cloud ingest` (registry on PostgreSQL; influxdb-client through the "
             "TEST-ONLY v2 front, which runs in its own process) drains a backlog of zlib JSON TelemetryBatch "
             f"messages ({ing['series_per_message']} series per gateway) queued in Mosquitto while the worker was "
             "paused (SIGSTOP), after a warm-up batch per gateway; the clock runs from SIGCONT until the registry "
             "has recorded the last batch as written, and the InfluxDB count is checked after. Debian's InfluxDB "
             "1.6 has no /api/v2/write, hence the front: the platform is compared with raw through the front, same "
             "encoding. All of it shares 2 cores: the worker's CPU is CPU influxd does not get.")
    return rows, notes


# -- API latency -------------------------------------------------------------------------------------
API_KEY = "bench-admin-key"
DAY_S = 86_400


def _latency_summary(lat_s: list[float], errors: int, seconds: float) -> dict[str, float]:
    ms = np.asarray(lat_s, dtype=float) * 1e3
    return {"requests": len(lat_s), "errors": errors, "seconds": seconds, "rps": len(lat_s) / seconds,
            "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99), "max_ms": float(ms.max())
            if len(ms) else math.nan}


async def _load(url: str, clients: int, duration_s: float, rate_per_client: float | None) -> dict[str, float]:
    """``clients`` concurrent clients for ``duration_s``. Closed loop (``rate_per_client`` None): each sends
    its next request when the last one is answered. Paced: each sends at its own steady rate and latency
    counts from when the request was due, so a server that falls behind is charged for the wait."""
    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, limits=limits,
                                 timeout=30) as c:
        await asyncio.gather(*(c.get(url) for _ in range(clients)))  # open every connection first
        start = time.perf_counter()
        end = start + duration_s

        async def client(i: int) -> None:
            nonlocal errors
            due = start + (i / clients / rate_per_client if rate_per_client else 0.0)
            while due < end:
                if rate_per_client:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                else:
                    due = time.perf_counter()
                r = await c.get(url)
                done = time.perf_counter()
                if r.status_code == 200:
                    lat.append(done - due)
                else:
                    errors += 1
                due = due + 1.0 / rate_per_client if rate_per_client else done

        await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - start
    return _latency_summary(lat, errors, seconds)


def _wrk(url: str, clients: int, duration_s: float, rate_per_client: float | None = None) -> dict[str, float] | None:
    """Load from ``wrk`` (C, two threads): far less client CPU than Python on a 2-core box. Closed loop,
    or with ``rate_per_client`` each connection waits a random think time (mean 1/rate) after each answer."""
    import shutil

    exe = shutil.which("wrk")
    if exe is None:
        return None
    script = []
    if rate_per_client:
        lua = Path(tempfile.mkstemp(suffix=".lua")[1])
        period_ms = 1000.0 / rate_per_client
        lua.write_text(f"function delay()\n  return math.random({period_ms * 0.5:.0f}, {period_ms * 1.5:.0f})\nend\n")
        script = ["-s", str(lua)]
    out = subprocess.run([exe, "-t2", f"-c{clients}", f"-d{max(1, round(duration_s))}s", "--latency",
                          "--timeout", "60s", *script, "-H", f"Authorization: Bearer {API_KEY}", url],
                         capture_output=True, text=True, timeout=duration_s + 120).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}

    def ms(token: str) -> float:
        num = token.rstrip("umsh")
        return float(num) * unit[token[len(num):]]

    res: dict[str, float] = {"client": "wrk"}  # type: ignore[dict-item]
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            res[f"p{parts[0][:-1]}_ms"] = ms(parts[1])
        elif line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif "requests in" in line:
            res["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            res["errors"] = int(parts[-1])
    res.setdefault("errors", 0)
    if "rps" not in res:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    return res


def _one_day(asset: str, point: str, end_ns: int, gateway: str = "gw-api") -> list[tuple[str, bytes]]:
    """A day of 1 Hz samples of one point, plus a sample of a few other points at the end, as the edge
    sends them (2,000 samples a batch)."""
    t = [end_ns - (DAY_S - i) * S for i in range(1, DAY_S + 1)]
    v = [round(4.0 + 2.0 * math.sin(i / 600.0), 3) for i in range(DAY_S)]
    out = []
    for seq, j in enumerate(range(0, DAY_S, 2000)):
        series = [{"asset": asset, "point": point, "t_ns": t[j:j + 2000], "values": v[j:j + 2000],
                   "quality": [0] * len(t[j:j + 2000])}]
        if j + 2000 >= DAY_S:
            series += [{"asset": asset, "point": p, "t_ns": [t[-1]], "values": [float(k)], "quality": [0]}
                       for k, p in enumerate(("return_air", "setpoint", "door", "compressor_current", "ambient"))]
        body = {"v": "v1", "kind": "telemetry", "tenant": TENANT, "gateway": gateway, "seq": seq,
                "sent_ns": time.time_ns(), "series": series}
        out.append((topics.telemetry(TENANT, gateway), zlib.compress(json.dumps(body).encode(), 1)))
    return out


def _metric(api: httpx.Client, name: str) -> float:
    for line in api.get("/metrics").raise_for_status().text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run_api_bench(harness, *, clients: int = 50, duration_s: float = 10.0, rate_per_client: float = 1.0,
                  root: Path | None = None, api_workers: int = 1) -> dict[str, Any]:
    """One API replica (``twin cloud run``, one process unless ``api_workers`` > 1) with a day of 1 Hz data
    for one point. ``root``: run the replica from another checkout (a baseline measured in the same run)."""
    from simulators.rig.servers import free_port

    asset, point = "trailer-0001", "supply_air"
    work = Path(tempfile.mkdtemp(prefix="twin-bench-api-"))
    with Servers(harness) as servers:
        db, pg_url = servers.new_databases("api")
        port = free_port()
        env = {**_ingest_env(servers, db, pg_url, servers.front.url, None), "TWIN_API_PORT": str(port),
               "TWIN_BOOTSTRAP_API_KEY": API_KEY, "TWIN_BOOTSTRAP_TENANT": TENANT,
               # All clients share one key: its rate limit (200/s by default) would answer 429s, not the API.
               "TWIN_API_RATE_PER_S": "1000000", "TWIN_API_RATE_BURST": "1000000"}
        if api_workers > 1:
            env["TWIN_API_WORKERS"] = str(api_workers)
        log_path = work / "cloud.log"
        proc = _twin_process(["cloud", "run"], log_path, env, root)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    # API worker processes have no ingest of their own (None): the parent's is up before them
                    if httpx.get(f"{base}/health", timeout=2).json().get("ingest") in (
                            "connected", None if api_workers > 1 else "connected"):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"twin cloud run did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            time.sleep(0.5)  # the subscription follows the connection
            end_ns = time.time_ns() // S * S
            batches = _one_day(asset, point, end_ns)
            _publish_all(servers.broker, batches)
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
            deadline = time.monotonic() + 120
            count_path = (f"/api/v1/assets/{asset}/telemetry?point={point}&start={end_ns - DAY_S * S}&end={end_ns + 1}"
                          f"&every={DAY_S + 1}s&agg=count")

            def arrived() -> bool:
                if api_workers <= 1:
                    return _metric(api, "twin_ingest_batches_written") >= len(batches)
                r = api.get(count_path)
                return r.status_code == 200 and sum(v or 0 for v in r.json()["values"]) >= DAY_S

            while not arrived():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the day of data did not arrive:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            twin_path = f"/api/v1/twins/{asset}"
            if api.get(twin_path).status_code != 200:
                twin_path = f"/api/v1/assets/{asset}/latest"
            every_s = DAY_S // 500  # 172 s: a day in 500 windows... plus one partial
            query_path = (f"/api/v1/assets/{asset}/telemetry?point={point}&start={end_ns - DAY_S * S}"
                          f"&end={end_ns + 1}&every={every_s + 1}s&agg=mean")
            windows = len(api.get(query_path).raise_for_status().json()["values"])
            api.close()
            # The same aggregate straight to influxd: what InfluxDB alone gives 50 clients asking it.
            influxql = (f"SELECT mean(value) FROM telemetry WHERE tenant = '{TENANT}' AND asset = '{asset}' AND "
                        f"point = '{point}' AND time >= {end_ns - DAY_S * S} AND time < {end_ns + 1} "
                        f"GROUP BY time({(every_s + 1) * 1_000_000}u) fill(none)")
            direct = _wrk(f"{servers.influx.raw_url}/query?" + urlencode({"db": db, "q": influxql, "epoch": "ns"}),
                          clients, duration_s)
            out: dict[str, Any] = {"clients": clients, "duration_s": duration_s, "rate_per_client": rate_per_client,
                                   "api_workers": api_workers,
                                   "twin_path": twin_path.replace(asset, "{asset}"), "query_windows": windows,
                                   "query_samples": DAY_S, "influxd_direct": direct}
            for name, path in (("twin", twin_path), ("query", query_path)):
                cpu0, t0 = _tree_cpu_s(proc.pid), time.perf_counter()
                sat = _wrk(base + path, clients, duration_s) or asyncio.run(
                    _load(base + path, clients, duration_s, None))
                sat["server_cpu_pct"] = 100 * (_tree_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0)
                paced = _wrk(base + path, clients, duration_s, rate_per_client) or asyncio.run(
                    _load(base + path, clients, duration_s, rate_per_client))
                out[name] = {"saturated": sat, "paced": paced}
        finally:
            _stop(proc)
    return out


def _cpu_ms(r: dict) -> float:
    """Server CPU time per answered request (ms): what a request costs, whatever else loads the machine."""
    return 10 * r["server_cpu_pct"] / r["rps"] if r.get("rps") else math.nan


def api_rows(f: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    n, rate = f["clients"], f["rate_per_client"]

    def lat(r: dict) -> str:
        err = f", {r['errors']} errors" if r.get("errors") else ""
        return f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['rps']:,.0f} req/s{err}"

    rows = []
    for name, label, target in (("twin", f"GET {f['twin_path']}", "p99 < 20 ms"),
                                ("query", f"one day of 1 Hz → {f['query_windows']} means", "p99 < 100 ms")):
        r = f[name]
        rows.append((f"{label}, {n} clients back to back", lat(r["saturated"]) +
                     f" (server {r['saturated']['server_cpu_pct']:.0f} % CPU)", target))
        rows.append((f"{label}, {n} clients, ~{rate:g} req/s each", lat(r["paced"]), target))
    if f.get("more_workers"):
        m = f["more_workers"]
        for name, label, target in (("twin", f"GET {f['twin_path']}", "p99 < 20 ms"),
                                    ("query", f"one day of 1 Hz → {f['query_windows']} means", "p99 < 100 ms")):
            r = m[name]
            rows.append((f"{label}, `--api-workers {m['api_workers']}`, {n} clients back to back",
                         lat(r["saturated"]) + f" (server {r['saturated']['server_cpu_pct']:.0f} % CPU)", target))
            rows.append((f"{label}, `--api-workers {m['api_workers']}`, {n} clients, ~{rate:g} req/s each",
                         lat(r["paced"]), target))
    if f.get("baseline"):
        b = f["baseline"]
        for name, label in (("twin", f"GET {f['twin_path']}"),
                            ("query", f"one day of 1 Hz → {f['query_windows']} means")):
            for kind, what in (("saturated", "back to back"), ("paced", f"~{rate:g} req/s each")):
                r, was = f[name][kind], b[name][kind]
                cpu = f"; server CPU per request {_cpu_ms(was):.2f} → {_cpu_ms(r):.2f} ms" \
                    if kind == "saturated" else ""
                rows.append((f"  before → after ({b['label']}), {label}, {what}",
                             f"p50 {was['p50_ms']:.1f} → {r['p50_ms']:.1f} ms, p99 {was['p99_ms']:.1f} → "
                             f"{r['p99_ms']:.1f} ms, {was['rps']:,.0f} → {r['rps']:,.0f} req/s{cpu}",
                             "same run, same machine"))
    if f.get("influxd_direct"):
        d = f["influxd_direct"]
        rows.append((f"  the same aggregate straight to influxd /query, {n} clients back to back",
                     f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, {d['rps']:,.0f} req/s",
                     "reference: InfluxDB alone"))
    client = "wrk (-t2)" if f["twin"]["saturated"].get("client") == "wrk" else "Python asyncio + httpx"
    notes = ("One API replica: `twin cloud run` (one uvicorn process unless `--api-workers` says, registry on "
             "PostgreSQL, InfluxDB reads over "
             "/query through the test front in its own process) with one day of 1 Hz samples of one point ingested "
             f"through the platform. Back to back: {n} keep-alive connections each sending its next request when "
             f"the last is answered ({client}), for {f['duration_s']:g} s: its req/s is the replica's throughput, "
             f"and its latency is mostly queueing ({n} ÷ throughput). The per-key rate limit is lifted (all clients "
             f"share one key). Paced: {n} clients each waiting a random 0.5–1.5 × {1 / rate:g} s after each answer "
             f"({client}). Identical queries in flight "
             "at once share one InfluxDB round trip (the store's single-flight), which is why the API can answer "
             "the same aggregate faster than influxd alone.")
    if f.get("baseline"):
        notes += (f" Before → after: revision `{f['baseline']['label']}` measured first in the same run, on the same "
                  "machine, servers and Python environment (so it has uvloop and httptools too); the machine is "
                  "shared and noisy, so compare the ratios rather than the absolutes. Server CPU per request is the "
                  "server's CPU time over the requests it answered.")
    return rows, notes


# -- end to end ----------------------------------------------------------------------------------------
E2E_POINTS = ("supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient")


def _sensors(broker, assets: list[str], probe: str, duration_s: float, probe_hz: float, stop) -> None:
    """Every trailer reports its 6 points at 1 Hz (background load); the probe trailer's supply air also
    goes out at ``probe_hz``, stamped with the wall clock as a sensor stamps it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect(broker.host, broker.port)
    c.loop_start()
    start = time.monotonic()
    next_probe = next_all = start
    k = 0
    try:
        while not stop.is_set() and time.monotonic() - start < duration_s:
            now = time.monotonic()
            if now >= next_all:
                t = time.time_ns()
                for a in assets:
                    for j, p in enumerate(E2E_POINTS):
                        if a == probe and p == "supply_air":
                            continue
                        c.publish(f"sim/{a}/{p}", json.dumps({"t": t, "v": 4.0 + 0.1 * ((k + j) % 7)}), qos=1)
                next_all += 1.0
            if now >= next_probe:
                c.publish(f"sim/{probe}/supply_air", json.dumps({"t": time.time_ns(), "v": 4.0 + 0.01 * (k % 50)}),
                          qos=1)
                next_probe += 1.0 / probe_hz
                k += 1
            time.sleep(max(0.0, min(next_all, next_probe) - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()


def run_e2e_bench(harness, *, trailers: int = 20, duration_s: float = 30.0, probe_hz: float = 4.0,
                  poll_ms: float = 20.0) -> dict[str, Any]:
    """Sensor → site MQTT → ``twin edge run`` → cloud broker → ``twin cloud run`` ingest → InfluxDB → API.

    A poller asks the API for the probe point's new samples every ``poll_ms``; a sample's latency is when
    the API first returned it minus the time the sensor stamped on it (same clock: one machine)."""
    import threading

    from simulators.rig.processes import CloudProcess, EdgeProcess, gateway_config

    assets = [f"trailer-{i:03d}" for i in range(1, trailers + 1)]
    probe = assets[0]
    work = Path(tempfile.mkdtemp(prefix="twin-bench-e2e-"))
    lat_ms: list[float] = []
    with Servers(harness) as servers:
        db, pg_url = servers.new_databases("e2e")
        cloud = CloudProcess(work, servers.broker.url, pg_url, servers.front.url, db, api_key=API_KEY, tenant="acme")
        edge = EdgeProcess(work / "edge", gateway_config(work / "edge", servers.broker.url, servers.broker.url,
                                                         assets=assets))
        stop = threading.Event()
        try:
            cloud.start()
            cloud.wait_ready()
            edge.start()
            edge.wait_log("source sensors: connected")
            edge.wait_log("uplink: connected")
            sensors = threading.Thread(target=_sensors, args=(servers.broker, assets, probe, duration_s + 10,
                                                              probe_hz, stop), daemon=True)
            sensors.start()
            with cloud.client() as api:
                t_start = time.time_ns()
                last = t_start
                warm_until = time.monotonic() + 10  # the agent's detectors warm up; queues reach steady state
                polls = 0
                end = time.monotonic() + 10 + duration_s
                while time.monotonic() < end:
                    r = api.get(f"/api/v1/assets/{probe}/telemetry", params={
                        "point": "supply_air", "start": last + 1, "end": time.time_ns() + 60 * S})
                    seen = time.time_ns()
                    polls += 1
                    if r.status_code == 200:
                        t = r.json()["t_ns"]
                        if t:
                            if time.monotonic() > warm_until:
                                lat_ms += [(seen - x) / 1e6 for x in t]
                            last = t[-1]
                    time.sleep(poll_ms / 1000)
            stop.set()
            sensors.join(10)
        finally:
            stop.set()
            edge.stop()
            cloud.stop()
    return {"trailers": trailers, "points": trailers * len(E2E_POINTS), "duration_s": duration_s,
            "probe_hz": probe_hz, "poll_ms": poll_ms, "samples": len(lat_ms), "polls": polls,
            "p50_ms": pct(lat_ms, 50), "p90_ms": pct(lat_ms, 90), "p99_ms": pct(lat_ms, 99),
            "max_ms": max(lat_ms) if lat_ms else math.nan}


def e2e_rows(f: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    rows = [
        ("load", f"{f['trailers']} trailers × 6 points at 1 Hz, probe point at {f['probe_hz']:g} Hz", "reported"),
        ("sensor stamp → sample returned by the API", f"p50 {f['p50_ms']:.0f} ms, p90 {f['p90_ms']:.0f} ms, "
         f"p99 {f['p99_ms']:.0f} ms ({f['samples']} samples)", "reported"),
    ]
    notes = ("Everything real and on one machine: simulated sensors publish JSON to Mosquitto, `twin edge run` "
             "(detectors on, 100 ms tick, SQLite outbox) uplinks batches to the same broker, `twin cloud run` "
             "ingests them into InfluxDB (through the test v2 front) and PostgreSQL, and a client polls "
             f"`GET /api/v1/assets/{{asset}}/telemetry` every {f['poll_ms']:g} ms for new samples of the probe "
             "point; the first 10 s are warm-up. The poll interval adds about half of itself to each figure.")
    return rows, notes
