"""Which detectors watch which point, and how their flags become anomaly events.

Built from the asset types in ``models`` (plus per-asset overrides in the gateway config); the whole
tick goes through each detector kernel in one call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.buffer import Tick
from edge.config import GatewayConfig
from edge.detect import EwmaZ
from models.wire import Quality

_DISABLED = np.inf


class PointWatch:
    def __init__(self, cfg: GatewayConfig, points: list[tuple[str, str]]) -> None:
        self.points = points
        self.ewma = EwmaZ(len(points))
        self.reconfigure(cfg, points)

    def reconfigure(self, cfg: GatewayConfig, points: list[tuple[str, str]]) -> None:
        """Apply detector parameters live; learned state of unchanged points is kept."""
        overrides = {a.id: a.detectors for a in cfg.assets}
        types = {a.id: a.asset_type for a in cfg.assets}
        for i, (asset, point) in enumerate(points):
            specs = overrides.get(asset, {}).get(point)
            if specs is None:
                specs = types[asset].points[point].detectors
            ewma = next((s for s in specs if s.kind == "ewma_z"), None)
            extra = ewma.model_extra if ewma is not None else {}
            self.ewma.tau_s[i] = float(extra.get("tau_s", 600.0))
            self.ewma.threshold[i] = float(extra.get("threshold", 6.0)) if ewma is not None else _DISABLED
            self.ewma.warmup[i] = int(extra.get("warmup", 30))

    def process(self, tick: Tick) -> list[tuple[int, int, int | None, float, float, list[str]]]:
        ok = tick.quality == Quality.GOOD
        score, flag = self.ewma.update(tick.idx, tick.t_ns, tick.x, ok)
        if not flag.any():
            return []
        events = []
        hit = np.flatnonzero(flag)
        for p in np.unique(tick.idx[hit]).tolist():
            rows = hit[tick.idx[hit] == p]
            peak = rows[np.argmax(score[rows])]
            events.append((p, int(tick.t_ns[rows].min()), int(tick.t_ns[rows].max()), float(score[peak]),
                           float(tick.x[peak]), [self.ewma.name]))
        return events

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"ewma.{k}": v for k, v in self.ewma.state().items()})
        tmp.replace(path)  # atomic: a crash mid-save leaves the previous state intact

    def load(self, path: Path) -> None:
        with np.load(path) as z:
            st = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith("ewma.")}
        if st["mean"].shape[0] != len(self.points):
            raise ValueError("saved state has a different point layout")
        params = {k: getattr(self.ewma, k) for k in ("tau_s", "threshold", "warmup")}
        self.ewma.load_state(st)
        for k, v in params.items():  # configuration wins over saved parameters
            setattr(self.ewma, k, v)
