"""How fast the edge detectors are, on one core, against a plain-Python loop and river.

The stream interleaves ``n_points`` points round-robin (a gateway polling 1,000 points at 10 Hz), values
are per-point Gaussian noise with rare spikes, fed in ticks of ``tick`` samples (10,000 = one second of
that gateway). Throughputs are the best of ``repeats`` full passes after a warm-up pass, each from cold
detector state, in wall time; CPU time of the thread is reported beside it because a shared machine
steals wall time. Polled points share one sampling interval, which lets the kernels reuse one exp();
the "irregular" row shows the cost when every interval differs (report-by-exception sources).

First-tick latency after a restart is measured in a fresh interpreter: import, build the default
ensemble for ``n_points``, run one tick — with the numba cache warm (the normal restart) and cold
(``NUMBA_CACHE_DIR`` pointing to an empty directory: a first boot or an upgrade).

Run: ``python -m edge.detect.bench [--json out.json]``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge import kernels
from edge.detect.ewma import ewma_z_kernel
from edge.detect.registry import build_detectors, default_specs

_REPO = Path(__file__).resolve().parents[2]

_LATENCY_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from edge.detect.registry import build_detectors, default_specs
t_import = time.perf_counter()
P = {n_points}
n = {tick}
ens = build_detectors(default_specs(P))
idx = np.tile(np.arange(P, dtype=np.int64), n // P + 1)[:n]
t = np.full(n, 1_700_000_000_000_000_000, np.int64)
x = np.random.default_rng(0).normal(size=n)
score, mask = ens.update(idx, t, x, np.ones(n, bool))
t1 = time.perf_counter()
print('{{"import_s": %.6f, "first_tick_s": %.6f, "total_s": %.6f}}' % (t_import - t0, t1 - t_import, t1 - t0))
"""


def make_stream(n_points: int, n_samples: int, seed: int = 0, jitter: bool = False):
    """Round-robin stream: (idx, t_ns, x, ok). ``jitter`` gives every sample its own interval."""
    rng = np.random.default_rng(seed)
    rounds = n_samples // n_points
    n = rounds * n_points
    idx = np.tile(np.arange(n_points, dtype=np.int64), rounds)
    t = np.repeat(np.arange(rounds, dtype=np.int64) * 100_000_000, n_points) + 1_700_000_000_000_000_000
    if jitter:
        t += rng.integers(0, 20_000_000, size=n)
    level = rng.normal(0.0, 10.0, size=n_points)
    x = level[idx] + rng.normal(size=n)
    spikes = rng.random(n) < 1e-4
    x[spikes] += 20.0
    return idx, t, x, np.ones(n, np.bool_)


def _best(run: Callable[[], None], repeats: int) -> tuple[float, float]:
    """(best wall seconds, best thread CPU seconds) over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        run()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.thread_time() - c0)
    return min(walls), min(cpus)


def _ticks(n: int, tick: int):
    return [(lo, min(n, lo + tick)) for lo in range(0, n, tick)]


def _bench_ewma_kernel(stream, n_points: int, tick: int, repeats: int) -> tuple[float, float]:
    idx, t, x, ok = stream
    spans = _ticks(idx.shape[0], tick)
    score = np.empty(tick)
    flag = np.empty(tick, np.bool_)
    params = (np.full(n_points, 600.0), np.full(n_points, 6.0), np.full(n_points, 30, np.int64))

    def run() -> None:
        mean, var = np.zeros(n_points), np.zeros(n_points)
        last_t, count = np.zeros(n_points, np.int64), np.zeros(n_points, np.int64)
        for lo, hi in spans:
            m = hi - lo
            ewma_z_kernel(idx[lo:hi], t[lo:hi], x[lo:hi], ok[lo:hi], mean, var, last_t, count, *params, True,
                          score[:m], flag[:m])

    run()  # warm-up: compile or load from cache, touch the data
    return _best(run, repeats)


def _bench_ensemble(stream, n_points: int, tick: int, repeats: int) -> tuple[float, float]:
    idx, t, x, ok = stream
    spans = _ticks(idx.shape[0], tick)

    def run() -> None:
        ens = build_detectors(default_specs(n_points))
        for lo, hi in spans:
            ens.update(idx[lo:hi], t[lo:hi], x[lo:hi], ok[lo:hi])

    run()
    return _best(run, repeats)


def python_ewma_z(idx, t_ns, x, tau_s=600.0, threshold=6.0, warmup=30) -> list[bool]:
    """The same EWMA z-score as ``ewma_z_kernel``, in plain Python: the baseline to beat."""
    state: dict[int, list[float]] = {}
    flags = []
    for p, ti, xi in zip(idx.tolist(), t_ns.tolist(), x.tolist(), strict=True):
        s = state.get(p)
        if s is None:
            state[p] = [xi, 0.0, ti, 1]
            flags.append(False)
            continue
        mean, var, last, c = s
        d = xi - mean
        flags.append(c >= warmup and abs(d) / math.sqrt(var + 1e-12) >= threshold)
        a = 1.0 - math.exp(-max(ti - last, 0) * 1e-9 / tau_s)
        if c < warmup and a < 1.0 / (c + 1):
            a = 1.0 / (c + 1)
        s[0] = mean + a * d
        s[1] = (1.0 - a) * (var + d * a * d)
        s[2] = ti
        s[3] = c + 1
    return flags


def _bench_river(stream, n_samples: int, n_models: int = 10) -> float | None:
    try:
        from river.anomaly import HalfSpaceTrees
    except ImportError:
        return None
    idx, _, x, _ = stream
    sel = np.flatnonzero(idx < n_models)[:n_samples]
    lo, hi = float(x[sel].min()), float(x[sel].max())
    models = {p: HalfSpaceTrees(seed=p, limits={"x": (lo, hi)}) for p in range(n_models)}
    pts, vals = idx[sel].tolist(), x[sel].tolist()
    t0 = time.perf_counter()
    for p, v in zip(pts, vals, strict=True):
        m = models[p]
        m.score_one({"x": v})
        m.learn_one({"x": v})
    return len(pts) / (time.perf_counter() - t0)


def first_tick_latency(n_points: int, tick: int, cold: bool, kernel_dir: str | None = None) -> dict[str, float]:
    """Seconds from a fresh interpreter's first line to the first tick scored (see the module docstring);
    with ``kernel_dir``, on the kernels built there ahead of time (``twin edge compile``), else numba's JIT."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["TWIN_KERNELS"] = "aot" if kernel_dir else "jit"
    if kernel_dir:
        env["TWIN_KERNEL_DIR"] = kernel_dir
    script = _LATENCY_SCRIPT.format(n_points=n_points, tick=tick)
    with tempfile.TemporaryDirectory() as cache_dir:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache_dir
        w0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=_REPO, capture_output=True,
                             text=True, check=True, timeout=600)
        wall = time.perf_counter() - w0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    return res


def run_bench(json_out: str | None = None, *, n_points: int = 1000, n_samples: int = 10_000_000,
              tick: int = 10_000, python_samples: int = 300_000, river_samples: int = 20_000,
              repeats: int = 3, latency: bool = True, quiet: bool = False) -> dict:
    """Measure what the module docstring says; print a rich table; return (and optionally save) figures."""
    from rich.console import Console
    from rich.table import Table

    stream = make_stream(n_points, n_samples)
    n = stream[0].shape[0]
    res: dict = {"n_points": n_points, "n_samples": n, "tick": tick, "repeats": repeats,
                 "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "kernels": kernels.mode()}
    wall, cpu = _bench_ewma_kernel(stream, n_points, tick, repeats)
    res["ewma_kernel_sps"], res["ewma_kernel_sps_cpu"] = n / wall, n / cpu
    jittered = make_stream(n_points, n_samples, jitter=True)
    wall, cpu = _bench_ewma_kernel(jittered, n_points, tick, repeats)
    res["ewma_kernel_irregular_sps"], res["ewma_kernel_irregular_sps_cpu"] = n / wall, n / cpu
    wall, cpu = _bench_ensemble(stream, n_points, tick, repeats)
    res["ensemble_sps"], res["ensemble_sps_cpu"] = n / wall, n / cpu
    res["ensemble_detectors"] = build_detectors(default_specs(1)).names
    wall, cpu = _bench_ensemble(jittered, n_points, tick, repeats)
    res["ensemble_irregular_sps"], res["ensemble_irregular_sps_cpu"] = n / wall, n / cpu

    m = min(python_samples, n)
    t0 = time.perf_counter()
    python_ewma_z(stream[0][:m], stream[1][:m], stream[2][:m])
    res["python_z_sps"] = m / (time.perf_counter() - t0)
    res["python_z_samples"] = m
    res["ewma_vs_python"] = res["ewma_kernel_sps"] / res["python_z_sps"]
    river_sps = _bench_river(stream, river_samples)
    res["river_hst_sps"] = river_sps
    if river_sps is not None:
        res["ewma_vs_river_hst"] = res["ewma_kernel_sps"] / river_sps
    if latency:
        first_tick_latency(n_points, tick, cold=False)  # make sure the default cache is populated
        res["restart_warm_cache"] = first_tick_latency(n_points, tick, cold=False)
        res["restart_cold_cache"] = first_tick_latency(n_points, tick, cold=True)
        with tempfile.TemporaryDirectory() as kernel_dir:
            subprocess.run([sys.executable, "-m", "twin", "edge", "compile", "--out", kernel_dir], cwd=_REPO,
                           check=True, capture_output=True, timeout=900)
            res["restart_ahead_of_time"] = first_tick_latency(n_points, tick, cold=False, kernel_dir=kernel_dir)

    if not quiet:
        table = Table(title=f"edge.detect on one core: {n:,} samples, {n_points:,} points interleaved, "
                            f"ticks of {tick:,}")
        table.add_column("what")
        table.add_column("samples/s (wall, best)", justify="right")
        table.add_column("samples/s (CPU)", justify="right")
        table.add_column("note")
        table.add_row("EWMA z-score kernel", f"{res['ewma_kernel_sps'] / 1e6:.1f} M",
                      f"{res['ewma_kernel_sps_cpu'] / 1e6:.1f} M", "target >= 50 M")
        table.add_row("  irregular timestamps", f"{res['ewma_kernel_irregular_sps'] / 1e6:.1f} M",
                      f"{res['ewma_kernel_irregular_sps_cpu'] / 1e6:.1f} M", "an exp() per sample")
        table.add_row("default ensemble", f"{res['ensemble_sps'] / 1e6:.1f} M",
                      f"{res['ensemble_sps_cpu'] / 1e6:.1f} M",
                      "+".join(res["ensemble_detectors"]) + " + combine; target >= 10 M")
        table.add_row("  irregular timestamps", f"{res['ensemble_irregular_sps'] / 1e6:.1f} M",
                      f"{res['ensemble_irregular_sps_cpu'] / 1e6:.1f} M", "")
        table.add_row("plain-Python EWMA z-score", f"{res['python_z_sps'] / 1e6:.2f} M", "",
                      f"{m:,} samples; kernel is {res['ewma_vs_python']:.0f}x faster")
        if river_sps is None:
            table.add_row("river HalfSpaceTrees", "-", "", "river not installed")
        else:
            table.add_row("river HalfSpaceTrees", f"{river_sps / 1e3:.1f} k", "",
                          f"score+learn, {river_samples:,} samples; "
                          f"kernel is {res['ewma_vs_river_hst']:,.0f}x faster")
        for key, label in (("restart_warm_cache", "first tick, warm cache"),
                           ("restart_cold_cache", "first tick, cold cache"),
                           ("restart_ahead_of_time", "first tick, kernels built ahead of time")):
            if key in res:
                r = res[key]
                table.add_row(label, "", "",
                              f"{r['total_s']:.2f} s in-process (import {r['import_s']:.2f} s, build+tick "
                              f"{r['first_tick_s']:.2f} s); process {r['process_wall_s']:.2f} s")
        console = Console()
        if not console.is_terminal:  # piped to a file: do not squeeze the table into 80 columns
            console = Console(width=140)
        console.print(table)
        if river_sps is None:
            print("river not installed")
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--tick", type=int, default=10_000)
    args = ap.parse_args()
    run_bench(args.json, n_samples=args.samples, tick=args.tick)
