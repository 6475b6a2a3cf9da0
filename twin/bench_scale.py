"""``twin bench ingest --workers 1,2,3``: ingest scale-out on the clustered engine (issue 24), in one run.

For each worker count N: a fresh 3-node NATS JetStream cluster (``simulators.rig.nats``, real ``nats-server``
processes), N ``twin cloud ingest`` workers with ``TWIN_INGEST_ENGINE=nats``, each holding its 12/N partitions;
the workers are paused (SIGSTOP) while a backlog goes into the stream, then resumed, and the clock runs until
the registry has every batch as written. Per worker: messages it received (its own ``ingest_messages`` counter),
points it wrote, its CPU; per point: the workers' CPU summed. With the engine handing each worker only its share,
received messages sum to the backlog for every N (no fan-out) and the CPU per point stays flat.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twin.bench_cloud import Servers, _cpu_s, _influx_count, _stop, _twin_process, telemetry_payloads

PARTITIONS = 12


def _counters(log_path: Path) -> dict:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if "ingest counters" in ln]
    return json.loads(json.loads(lines[-1])["msg"].removeprefix("ingest counters ")) if lines else {}


async def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Into the engine as the gateways' MQTT front would put them (``twin.v1...``, mapped to partitions by the
    server), each acknowledged by the stream."""
    import nats

    nc = await nats.connect(url.split(","))
    js = nc.jetstream(timeout=30)
    for i in range(0, len(messages), 200):
        acks = [js.publish(t.replace("/", "."), p) for t, p in messages[i:i + 200]]
        await asyncio.gather(*acks)
    await nc.close()


def measure_workers(servers: Servers, n: int, *, messages: int, points_per_message: int, n_series: int,
                    series_per_message: int, work: Path) -> dict[str, Any]:
    import psycopg

    from simulators.rig.nats import NatsCluster

    db, pg_url = servers.new_databases(f"scale{n}")
    warm = telemetry_payloads(math.ceil(n_series / series_per_message), series_per_message, n_series,
                              series_per_message, seed=3)
    backlog = telemetry_payloads(messages, points_per_message, n_series, series_per_message, first_seq=1)
    cluster = NatsCluster(3, partitions=PARTITIONS)
    procs, logs = [], []
    try:
        cluster.start()
        env = {"TWIN_DATABASE_URL": pg_url, "TWIN_STORE": "influx", "TWIN_INFLUX_URL": servers.front.url,
               "TWIN_INFLUX_BUCKET": f"{db}/autogen", "TWIN_INFLUX_DATABASE": db, "TWIN_MQTT_URL": cluster.mqtt_urls[0],
               "TWIN_INGEST_ENGINE": "nats", "TWIN_NATS_URL": cluster.url, "TWIN_INGEST_LEASE_TTL_S": "6",
               "TWIN_INGEST_COUNTERS_INTERVAL_S": "0.5", "TWIN_INGEST_PARTITIONS": str(n)}
        for k in range(n):
            logs.append(work / f"ingest-{db}-{k}.log")
            procs.append(_twin_process(["cloud", "ingest"], logs[-1], {
                **env, "TWIN_INGEST_PARTITION": str(k), "TWIN_INGEST_CLIENT_ID": f"bench-{k}"}))
        deadline = time.monotonic() + 120
        while not all(_counters(lp).get("ingest_partitions_held") == PARTITIONS // n for lp in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not split the partitions:\n{logs[0].read_text()[-3000:]}")
            time.sleep(0.2)
        asyncio.run(_publish(cluster.url, warm))
        total_batches = len(warm) + len(backlog)
        with psycopg.connect(servers.pg.conninfo(db), autocommit=True) as conn:
            def seen() -> int:
                return conn.execute("SELECT COALESCE(SUM(high_seq + 1), 0) FROM ingest_epochs").fetchone()[0]

            deadline = time.monotonic() + 60
            while seen() < len(warm):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"warm-up batches not ingested:\n{logs[0].read_text()[-3000:]}")
                time.sleep(0.2)
            deadline = time.monotonic() + 30  # the counters lines (every 0.5 s) must show the warm-up too
            while sum((before := [_counters(lp) for lp in logs])[k].get("ingest_messages", 0) for k in range(n)) \
                    < len(warm) and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in procs:
                os.kill(p.pid, signal.SIGSTOP)
            tp = time.perf_counter()
            asyncio.run(_publish(cluster.url, backlog))
            publish_s = time.perf_counter() - tp
            cpu0 = [_cpu_s(p.pid) for p in procs]
            t0 = time.perf_counter()
            for p in procs:
                os.kill(p.pid, signal.SIGCONT)
            deadline = time.monotonic() + 900
            while (k := seen()) < total_batches:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingest stopped at {k} of {total_batches} batches")
                time.sleep(0.02)
            dt = time.perf_counter() - t0
        cpu = [_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        for p in procs:
            _stop(p)  # its last counters line is written at exit
        after = [_counters(lp) for lp in logs]
        points = messages * points_per_message
        stored = _influx_count(servers.influx, db)
        if stored != points + len(warm) * series_per_message:
            raise RuntimeError(f"InfluxDB holds {stored} points, expected {points + len(warm) * series_per_message}")
    finally:
        for p in procs:
            _stop(p)
        cluster.close()
    servers.influx.drop_database(db)
    received = [a["ingest_messages"] - b["ingest_messages"] for a, b in zip(after, before, strict=True)]
    written = [a["ingest_points_written"] - b["ingest_points_written"] for a, b in zip(after, before, strict=True)]
    return {"workers": n, "messages": messages, "points": points, "seconds": dt, "points_per_s": points / dt,
            "received": received, "points_written": written, "points_per_s_per_worker": [w / dt for w in written],
            "cpu_s": cpu, "cpu_us_per_point": 1e6 * sum(cpu) / points, "publish_msg_per_s": messages / publish_s,
            "bytes_per_message": sum(len(p) for _, p in backlog) / messages}


def run_scale_bench(harness, workers: list[int], *, messages: int = 600, points_per_message: int = 2000,
                    series: int = 1200, series_per_message: int = 20) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="twin-bench-scale-"))
    kw = {"messages": messages, "points_per_message": points_per_message, "n_series": series,
          "series_per_message": series_per_message, "work": work}
    with Servers(harness) as servers:
        runs = [measure_workers(servers, n, **kw) for n in workers]
    return {"runs": runs, "gateways": math.ceil(series / series_per_message), "partitions": PARTITIONS}


def scale_rows(f: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    rows = []
    base = f["runs"][0]["cpu_us_per_point"]
    for r in f["runs"]:
        n = r["workers"]
        rows += [
            (f"{n} worker(s): messages received per worker", " / ".join(f"{m:,}" for m in r["received"]),
             f"sum {sum(r['received']):,} of {r['messages']:,} (no fan-out)"),
            (f"{n} worker(s): points/s per worker",
             " / ".join(f"{v / 1e3:,.0f} k" for v in r["points_per_s_per_worker"]),
             f"all together {r['points_per_s'] / 1e3:,.0f} k points/s"),
            (f"{n} worker(s): workers' CPU per point", f"{r['cpu_us_per_point']:.2f} µs",
             f"{r['cpu_us_per_point'] / base:.2f}× the 1-worker cost (must not grow with N)"),
        ]
    rows.append(("the engine: backlog acknowledged by the R3 stream (one publisher, 200 in flight)",
                 " / ".join(f"{r['publish_msg_per_s']:,.0f}" for r in f["runs"]) + " msg/s",
                 f"per run; {f['runs'][0]['bytes_per_message'] / 1e3:,.1f} kB per message"))
    notes = (f"`twin cloud ingest` workers with TWIN_INGEST_ENGINE=nats on a fresh 3-node NATS JetStream cluster "
             f"(nats-server 2.9, real processes on loopback; R3 work-queue stream, {f['partitions']} partitions) per "
             f"worker count; {f['gateways']} gateways; a backlog of {f['runs'][0]['messages']:,} zlib JSON batches of "
             "2,000 points published while the workers are paused, the clock from their resume until the registry "
             "has every batch; InfluxDB 1.6 through the v2 front and PostgreSQL as for `twin bench ingest`. "
             "Received = each worker's own ingest_messages counter. Everything shares 2 cores: with N workers "
             "the aggregate rate is bounded by the one influxd and the cores, not by the engine; the per-point "
             "cost is the figure that shows whether the split adds work.")
    return rows, notes
