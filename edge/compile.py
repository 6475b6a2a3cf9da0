"""``twin edge compile``: build the edge's numba kernels into one extension module, ahead of time.

Run once per gateway install (and again after an upgrade; a stale build is noticed and ignored, see
``edge.kernels``). It needs numba and a C compiler on the machine that builds, which may be the gateway
itself; the agent that loads the build needs neither.

The signatures come from running the agent's own detection code (``PointWatch``'s ensemble with every
detector kind and a multivariate baseline, the event tracker, local rules, vibration features) over a
few ticks built by the agent's sample buffer, so the argument types are the ones the agent passes.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

# The modules whose ``@kernel`` functions go into the build (their sources are hashed into the manifest).
KERNEL_MODULES = (
    "edge.detect.ewma", "edge.detect.robust", "edge.detect.cusum", "edge.detect.page_hinkley",
    "edge.detect.spike", "edge.detect.stuck", "edge.detect.limits", "edge.detect.novelty", "edge.detect.multivariate",
    "edge.detect.ensemble", "edge.detect.events", "edge.rules", "edge.vibration",
)


def exercise() -> dict[str, np.ndarray]:
    """Call every kernel the way the agent does, so numba records the signatures to build, on a stream with
    gaps, NaN, bad quality, spikes and a drift. Returns what the kernels computed: the same call on the build
    and on the JIT must return the same (tests/test_kernels_aot.py)."""
    from edge.buffer import SampleBuffer
    from edge.detect.ensemble import Ensemble
    from edge.detect.events import EventTracker
    from edge.detect.multivariate import Mspc, MspcGroup, fit
    from edge.detect.registry import KINDS, build_detectors, default_specs
    from edge.rules import LocalRules
    from edge.vibration import BearingGeometry, VibrationFeatures
    from models.catalogue import LocalRule

    rng = np.random.default_rng(11)
    n = 8
    plain = build_detectors([[{"kind": k} for k in KINDS] for _ in range(n)])
    base = fit(rng.normal(size=(300, 3)), t_ns=np.arange(300, dtype=np.int64) * 1_000_000_000, smooth_tau_s=3.0)
    full = Ensemble([*plain.detectors, MspcGroup(n, [Mspc(n, base, [0, 1, 2], max_age_s=30.0)])],
                    [*plain.enabled, np.arange(n) < 3])
    default = build_detectors(default_specs(n))
    trackers = [EventTracker(n, ens.names, min_samples=1, cooldown_s=5.0) for ens in (full, default)]
    rules = LocalRules([("a", LocalRule(name="hot", point="p1", above=2.5, for_s=1.0), 1),
                        ("a", LocalRule(name="cold", point="p2", below=-3.0, for_s=0.0), 2)], n)
    buffer = SampleBuffer()
    scores, masks, events, firings = [], [], [], []
    for k in range(400):
        for p in range(n):
            if k % 50 == 7 and p == 6:
                continue  # a gap
            x = rng.normal() + (6.0 if 200 <= k < 215 and p in (1, 4) else 0.0) + (0.02 * k if p == 5 else 0.0)
            buffer.append(p, 10**18 + (k * n + p) * 10**8, float("nan") if rng.random() < 0.01 else x,
                          int(rng.random() < 0.01))
        tick = buffer.swap()
        ok = tick.quality == 0
        for ens, tracker in zip((full, default), trackers, strict=True):
            score, mask = ens.update(tick.idx, tick.t_ns, tick.x, ok)
            if ens is full:
                scores.append(score.copy())
                masks.append(mask.copy())
            events += [repr(e) for e in tracker.update(tick.idx, tick.t_ns, tick.x, ok, score, mask)]
            ens.score(tick.idx, tick.t_ns, tick.x, ok)
            ens.learn(tick.idx, tick.t_ns, tick.x, ok)
        for det in plain.detectors:  # the detectors alone, as offline scoring and backtests call them
            det.update(tick.idx, tick.t_ns, tick.x, ok)
            det.score(tick.idx, tick.t_ns, tick.x, ok)
        firings += [(f.start_ns, f.fired_ns, f.value) for f in rules.evaluate(tick)]
    vib = VibrationFeatures(25_600.0, BearingGeometry(n_balls=9, ball_diameter=7.9, pitch_diameter=34.5))
    block = rng.normal(size=(2, 4_096))
    feat = [vib.compute(block, 24.5), vib.compute(block, np.array([25.0, 24.0])),
            VibrationFeatures(25_600.0, vib.bearing, band_hz=(2_000.0, 4_000.0)).compute(block, 25.0)]
    return {"score": np.concatenate(scores), "mask": np.concatenate(masks), "events": np.array(events),
            "firings": np.array(firings, dtype=np.float64), "feat": np.concatenate(feat)}


def numba_type_key(t) -> str:
    """``edge.kernels.type_key`` of a value numba typed as ``t``."""
    from numba import types
    from numba.np.numpy_support import as_dtype

    if isinstance(t, types.Array):
        return f"{as_dtype(t.dtype).str}{t.ndim}{t.layout}{'' if t.mutable else 'r'}"
    if isinstance(t, (types.Boolean, types.Integer, types.Float)):
        return as_dtype(t).str
    raise TypeError(f"no ahead-of-time export for arguments of type {t}")


def build(out_dir: Path, log=print) -> Path:
    """Compile the kernels into ``out_dir`` (a build there is replaced atomically); returns the manifest."""
    os.environ["TWIN_KERNELS"] = "jit"  # the build itself compiles with numba
    from numba import core
    from numba.pycc import CC

    from edge import kernels

    if kernels.mode() != "jit":
        raise RuntimeError("edge.compile must run in a process whose kernels are numba's (TWIN_KERNELS=jit)")
    modules = [importlib.import_module(m) for m in KERNEL_MODULES]
    t0 = time.perf_counter()
    exercise()
    log(f"signatures recorded in {time.perf_counter() - t0:.1f} s")
    cc = CC(kernels.MODULE_NAME)
    exports: dict[str, dict[str, str]] = {}
    n = 0
    for module in modules:
        for attr, obj in vars(module).items():
            if not isinstance(obj, core.registry.CPUDispatcher) or obj.py_func.__module__ != module.__name__:
                continue
            name = f"{module.__name__}.{obj.py_func.__qualname__}"
            for sig in obj.signatures:
                export = f"k{n}_{attr}"
                cc.export(export, sig)(obj.py_func)
                exports.setdefault(name, {})[",".join(numba_type_key(t) for t in sig)] = export
                n += 1
    sources = [str(Path(sys.modules[m].__file__).resolve().relative_to(kernels.PACKAGE_ROOT)) for m in KERNEL_MODULES]
    digest = kernels.sources_digest(sources)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        cc.output_dir = tmp
        t0 = time.perf_counter()
        cc.compile()
        log(f"{n} kernel signatures of {len(exports)} kernels compiled in {time.perf_counter() - t0:.1f} s")
        file = f"kernels-{digest[:12]}{suffix}"
        shutil.move(str(Path(tmp) / f"{kernels.MODULE_NAME}{suffix}"), out_dir / file)
        manifest = {"file": file, "digest": digest, "sources": sources, "python": sys.implementation.cache_tag,
                    "numpy": np.__version__, "numba": importlib.import_module("numba").__version__,
                    "kernels": exports}
        tmp_manifest = Path(tmp) / kernels.MANIFEST
        tmp_manifest.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp_manifest, out_dir / kernels.MANIFEST)
    for old in out_dir.glob(f"kernels-*{suffix}"):
        if old.name != file:
            old.unlink()
    return out_dir / kernels.MANIFEST


if __name__ == "__main__":
    from edge.kernels import kernel_dir

    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else kernel_dir()))
