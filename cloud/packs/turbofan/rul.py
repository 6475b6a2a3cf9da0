"""Remaining useful life live: an engine's stored cycles → the ``twin pdm`` model → an estimate per cycle.

Why it is built this way:
- **The offline model, unchanged.** The estimate at a cycle is ``RulModel.predict`` (``cloud.pdm``, its public
  call) on the engine's cycles up to that one, so the live figure at an engine's last cycle *is* the offline
  prediction for the same rows, to the bit (tests/test_rul_live.py holds it to that).
- **Inputs are the 24 points of the type, nothing else.** A cycle counts when all of them have arrived at its
  timestamp; cycles are numbered by their order in time. Ground truth (an operator's recorded failure cycle)
  only ever reaches the dashboard.
- **History in the time-series store** (points ``rul``, ``rul_lower``, ``rul_upper``, ``rul_cycle`` of the
  asset, at the cycle's time): one value per cycle is a time series like any other, kept, rolled up and read
  back with the same machinery, and a recomputation rewrites the same timestamps (idempotent) — no schema
  change. The latest estimate also goes on the twin's model (``model.rul``), read by ``GET /twins/{asset}``.
- **The alert** fires when the interval's lower bound falls to the maintenance horizon (``crossings``) and is
  re-armed only once the bound is ``REARM_CYCLES`` back above it: a bound wobbling on the horizon is one
  crossing, not an alert per cycle.

The model comes from ``TWIN_RUL_MODEL``: a ``twin pdm train --out`` registry (the model named like the
C-MAPSS set in the asset id, e.g. FD001 for ``engine-FD001-test-007``, or its only model), a model's
directory (its active version) or a version directory. Loading unpickles it: point it at a registry you trust.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.store.base import Rows

log = logging.getLogger("cloud.packs.turbofan")

POINTS: tuple[str, ...] = ("setting_1", "setting_2", "setting_3", *(f"s_{i}" for i in range(1, 22)))
"""The model's inputs, in the C-MAPSS column order (``models/types/turbofan.yaml``)."""
OUT_POINTS = ("rul", "rul_lower", "rul_upper", "rul_cycle")
RULE = "rul-horizon"
SOURCE = "rul"
DEFAULT_HORIZON_CYCLES = 30.0
"""Plan maintenance when the engine may have this few cycles left (90 % interval's lower bound)."""
REARM_CYCLES = 10.0
MODEL_ENV = "TWIN_RUL_MODEL"
_HISTORY_LIMIT = 1_000_000
_DATASET = re.compile(r"FD00\d", re.IGNORECASE)


def crossings(lower: np.ndarray, horizon: float, crossed: bool = False, rearm: float = REARM_CYCLES
              ) -> tuple[list[tuple[int, str]], bool]:
    """Walk the lower bounds in cycle order: ("cross", i) where it first falls to ``horizon`` or below,
    ("rearm", i) where, after a crossing, it rises above ``horizon + rearm``. Returns (events, crossed)."""
    events: list[tuple[int, str]] = []
    for i, lo in enumerate(np.asarray(lower, float).tolist()):
        if not crossed and lo <= horizon:
            crossed = True
            events.append((i, "cross"))
        elif crossed and lo > horizon + rearm:
            crossed = False
            events.append((i, "rearm"))
    return events, crossed


@dataclass(frozen=True)
class Estimates:
    """Per cycle (ascending): cycle number, its time, the estimate and its interval."""

    cycle: np.ndarray
    t_ns: np.ndarray
    rul: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def read_cycles(store, tenant: str, asset: str, end_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns (n,), values (n, 24)) of the complete cycles stored for the asset, oldest first, up to ``end_ns``
    (inclusive). A timestamp that lacks a point (a cycle still arriving) or holds a non-number is left out."""
    end = (2**63 - 1) if end_ns is None else end_ns + 1
    cols: dict[str, dict[int, float]] = {}
    common: set[int] | None = None
    for point in POINTS:
        ser = store.query_range(tenant, asset, point, 0, end, _HISTORY_LIMIT)
        got = {int(t): v for t, v in zip(ser.t_ns, ser.values, strict=True) if v is not None}
        cols[point] = got
        common = set(got) if common is None else common & set(got)
        if not common:
            return np.zeros(0, np.int64), np.zeros((0, len(POINTS)))
    t = np.array(sorted(common or ()), np.int64)
    x = np.array([[cols[p][ti] for p in POINTS] for ti in t.tolist()], float).reshape(len(t), len(POINTS))
    ok = np.isfinite(x).all(axis=1)
    return t[ok], x[ok]


def estimate(model, t_ns: np.ndarray, x: np.ndarray, first: int = 0) -> Estimates:
    """The model's estimate at every cycle from index ``first`` on, each from the engine's cycles up to it alone.

    One ``predict`` per cycle, on that engine only: the window features sum over a call's rows
    (``cloud.pdm.features``), so a trajectory predicted behind others differs in its last bits, which can tip a
    tree's split; alone, it is exactly what ``predict`` gives for the engine offline (~3 ms a cycle)."""
    from cloud.pdm.data import Trajectories

    n = len(t_ns)
    out = np.zeros((max(n - first, 0), 3))
    unit = np.ones(n, np.int64)
    cycle = np.arange(1, n + 1, dtype=np.int64)
    settings, sensors = np.ascontiguousarray(x[:, :3]), np.ascontiguousarray(x[:, 3:])
    for k in range(first, n):
        pred = model.predict(Trajectories(unit[:k + 1], cycle[:k + 1], settings[:k + 1], sensors[:k + 1]))
        out[k - first] = (pred.rul[0], pred.lower[0], pred.upper[0])
    return Estimates(cycle[first:], t_ns[first:], out[:, 0], out[:, 1], out[:, 2])


def to_rows(tenant: str, asset: str, est: Estimates) -> Rows:
    rows = Rows()
    t = est.t_ns.tolist()
    good = [0] * len(t)
    for point, values in zip(OUT_POINTS, (est.rul, est.lower, est.upper, est.cycle), strict=True):
        rows.extend_series(tenant, asset, point, t, [float(v) for v in values], good)
    return rows


class ModelSource:
    """The RUL model for an asset, loaded once per version directory (``TWIN_RUL_MODEL``, see the module)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else os.environ.get(MODEL_ENV, "")
        self._loaded: dict[Path, tuple[Any, dict[str, Any]]] = {}
        self._complained: set[str] = set()

    def for_asset(self, asset: str) -> tuple[Any, dict[str, Any]] | None:
        """(model, {"name", "version", "coverage"}) or None: no model configured or none fits the asset."""
        if not self.path:
            return None
        from cloud.pdm.registry import load_model_dir, resolve

        hint = _DATASET.search(asset)
        try:
            vdir = resolve(self.path, hint.group(0).upper() if hint else None)
        except (LookupError, OSError) as exc:
            if asset not in self._complained:
                self._complained.add(asset)
                log.warning("rul: no model for %s: %s", asset, exc)
            return None
        if vdir not in self._loaded:
            model = load_model_dir(vdir)
            about = {"name": vdir.parent.name, "version": vdir.name,
                     "coverage": float(getattr(model.params, "coverage", 0.9))}
            self._loaded[vdir] = (model, about)
            log.info("rul: model %s %s loaded from %s", about["name"], about["version"], vdir)
        return self._loaded[vdir]


def horizon_of(model_doc: dict[str, Any]) -> tuple[float, str]:
    """The asset's maintenance horizon in cycles and where it came from (set on the twin, or the default)."""
    h = (model_doc.get("rul_settings") or {}).get("horizon_cycles")
    return (float(h), "asset") if h is not None else (DEFAULT_HORIZON_CYCLES, "pack default")


def evidence(asset: str, est: Estimates, i: int, horizon: float, horizon_from: str, about: dict[str, Any]
             ) -> dict[str, Any]:
    """What an auditor needs to see why the alert fired at cycle ``est.cycle[i]``."""
    lo, rul, hi, cyc = float(est.lower[i]), float(est.rul[i]), float(est.upper[i]), int(est.cycle[i])
    cov = round(100 * about["coverage"])
    return {"source": SOURCE, "rule": RULE, "cycle": cyc, "t_ns": int(est.t_ns[i]), "now_ns": int(est.t_ns[i]),
            "rul": rul, "lower": lo, "upper": hi, "coverage": about["coverage"],
            "horizon_cycles": horizon, "horizon_from": horizon_from, "rearm_cycles": REARM_CYCLES,
            "model": {"name": about["name"], "version": about["version"]},
            "points": list(POINTS),
            "explanation": (f"At cycle {cyc}, {asset} has an estimated {rul:.0f} cycles left; the {cov} % interval "
                            f"[{lo:.0f}, {hi:.0f}] reaches down to {lo:.0f}, at or below its maintenance horizon of "
                            f"{horizon:g} cycles ({horizon_from}): plan its maintenance now.")}
