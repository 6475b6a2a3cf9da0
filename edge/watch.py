"""Which detectors watch which point, and how their flags become anomaly events.

Built from the asset types in ``models`` (plus per-asset overrides in the gateway config): one
``Ensemble`` over all of the gateway's points, so a tick costs one kernel pass per detector kind,
followed by the ``EventTracker`` that debounces flags into events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.buffer import Tick
from edge.config import GatewayConfig
from edge.detect import KINDS, Ensemble, EventTracker, build_detectors
from edge.detect.base import constructor_params, load_npz, save_npz
from edge.detect.events import AnomalyEvent
from edge.detect.multivariate import Mspc, MspcBaseline, MspcGroup
from edge.detect.novelty import Novelty
from models.wire import Quality

EVENT_MIN_SAMPLES = 1
EVENT_COOLDOWN_S = 60.0
# Just under the 0.5 of a flag: keeps a ``novelty`` event open through the samples that continue it (they score
# 0.4998..0.5); other kinds' unflagged samples score under it but for a hair below their threshold.
EVENT_RELEASE = 0.4995


def point_specs(cfg: GatewayConfig, points: list[tuple[str, str]]) -> list[list]:
    """Per point, the detector specs in force: the asset's override, else the asset type's."""
    overrides = {a.id: a.detectors for a in cfg.assets}
    types = {a.id: a.asset_type for a in cfg.assets}
    out = []
    for asset, point in points:
        specs = overrides.get(asset, {}).get(point)
        out.append(specs if specs is not None else types[asset].points[point].detectors)
    return out


def mspc_group(cfg: GatewayConfig, points: list[tuple[str, str]]) -> MspcGroup:
    """The multivariate detector of every asset with a baseline in ``cfg.baselines``."""
    index = {p: i for i, p in enumerate(points)}
    members = []
    for asset, b in cfg.baselines.items():
        base = MspcBaseline(mean=np.array(b.mean), scale=np.array(b.scale),
                            loadings=np.ascontiguousarray(np.array(b.loadings, np.float64).reshape(len(b.points), -1)),
                            eigvals=np.array(b.eigvals), t2_limit=b.t2_limit, spe_limit=b.spe_limit,
                            smooth_tau_s=b.smooth_tau_s)
        members.append(Mspc(len(points), base, [index[(asset, p)] for p in b.points], max_age_s=b.max_age_s))
    return MspcGroup(len(points), members)


def event_names(ens: Ensemble) -> list[str]:
    """The event tracker's bit names: the ensemble's detectors, then ``novelty``'s channels (``novelty.record``...),
    so an event says which channel saw it."""
    names = list(ens.names)
    if Novelty.name in names:
        names += [f"{Novelty.name}.{c}" for c in Novelty.CHANNELS]
    return names


class PointWatch:
    def __init__(self, cfg: GatewayConfig, points: list[tuple[str, str]]) -> None:
        self.points = points
        self.ensemble = self._build(cfg)
        self.events = EventTracker(len(points), event_names(self.ensemble), min_samples=EVENT_MIN_SAMPLES,
                                   cooldown_s=EVENT_COOLDOWN_S, release=EVENT_RELEASE)

    def _build(self, cfg: GatewayConfig) -> Ensemble:
        names = [f"{a}/{p}" for a, p in self.points]
        ens = build_detectors(point_specs(cfg, self.points), names)
        if not cfg.baselines:
            return ens
        group = mspc_group(cfg, self.points)
        on = np.zeros(len(self.points), np.bool_)
        for m in group.members:
            on[m.builder.columns] = True
        return Ensemble([*ens.detectors, group], [*ens.enabled, on])

    def reconfigure(self, cfg: GatewayConfig, points: list[tuple[str, str]]) -> None:
        """Apply new detector settings live. What a detector kind has learned is kept when the kind runs
        on; its parameters come from the new configuration. Raises ValueError for a bad spec."""
        new = self._build(cfg)
        _carry_learned(self.ensemble, new)
        if new.names != self.ensemble.names:
            self.events = EventTracker(len(points), event_names(new), min_samples=EVENT_MIN_SAMPLES,
                                       cooldown_s=EVENT_COOLDOWN_S, release=EVENT_RELEASE)
        self.ensemble = new

    def carry_from(self, old: PointWatch) -> None:
        """Take what ``old`` (another point layout: assets added, removed or retyped) learned about each (asset,
        point) this watch also has, where the same detector kind runs on it; new points start cold, and events
        in progress start over. Parameters stay this watch's."""
        rows = {p: i for i, p in enumerate(old.points)}
        take = np.array([rows.get(p, -1) for p in self.points], np.int64)
        keep = take >= 0
        prev = {d.name: d for d in old.ensemble.detectors}
        n_old, n_new = len(old.points), len(self.points)
        for det in self.ensemble.detectors:
            fresh = det.state()
            if det.name not in prev or not fresh:
                continue
            learned = prev[det.name].state()
            params = _parameter_keys(det)
            carried = {}
            for key, arr in fresh.items():
                was = learned.get(key)
                if key in params or was is None or arr.ndim == 0 or arr.shape[0] != n_new \
                        or was.shape != (n_old, *arr.shape[1:]):
                    carried[key] = arr
                    continue
                out = arr.copy()
                out[keep] = was[take[keep]]
                carried[key] = out
            det.load_state(carried)
        self.ensemble._refresh_scale()

    def process(self, tick: Tick) -> list[AnomalyEvent]:
        ok = tick.quality == Quality.GOOD
        score, mask = self.ensemble.update(tick.idx, tick.t_ns, tick.x, ok)
        if not mask.any() and not self.events.phase.any():
            return []  # nothing flagged and no event in progress: the common tick costs nothing more
        names = self.ensemble.names
        if Novelty.name in names and mask.any():  # the channels behind novelty's flags, as bits after the detectors
            novelty = self.ensemble.detectors[names.index(Novelty.name)]
            mask = mask | (novelty.why_bits(mask.shape[0]) << len(names))
        return self.events.update(tick.idx, tick.t_ns, tick.x, ok, score, mask)

    def save(self, path: Path) -> None:
        st = {f"ens.{k}": v for k, v in self.ensemble.state().items()}
        st.update({f"evt.{k}": v for k, v in self.events.state().items()})
        save_npz(path, st)

    def load(self, path: Path) -> None:
        st = load_npz(path)
        ens = {k[4:]: v for k, v in st.items() if k.startswith("ens.")}
        evt = {k[4:]: v for k, v in st.items() if k.startswith("evt.")}
        if np.asarray(ens["enabled"]).shape[-1] != len(self.points):
            raise ValueError("saved state has a different point layout")
        # Rebuilt from the kinds it was saved with, which may differ from this configuration's: a baseline pushed
        # from the cloud (mspc) is not in gateway.yaml and arrives again, retained, only after start-up.
        kinds = {**KINDS, MspcGroup.name: MspcGroup}
        names = [str(n) for n in ens["names"]]
        unknown = sorted(set(names) - set(kinds))
        if unknown:
            raise ValueError(f"saved state has detector kinds this agent does not know: {', '.join(unknown)}")
        saved = Ensemble([kinds[n](len(self.points)) for n in names])
        saved.load_state(ens)
        _carry_learned(saved, self.ensemble)  # learned state from disk, parameters from the configuration
        if [str(n) for n in evt["names"]] == event_names(self.ensemble):  # else events in progress start over
            self.events.load_state(evt)


def _parameter_keys(det) -> set[str]:
    """The state arrays that are parameters (the configuration's), not what was learned: the constructor's
    keywords, a kernel detector's ``params``, and ``prm``, where novelty packs its parameters."""
    keys = set(constructor_params(type(det))) | set(getattr(det, "params", ()))
    return keys | {"prm"} if isinstance(det, Novelty) else keys


def _carry_learned(old: Ensemble, new: Ensemble) -> None:
    """Copy each detector's learned arrays from ``old`` into ``new`` where the kind exists in both."""
    prev = {d.name: d for d in old.detectors}
    for det in new.detectors:
        if det.name not in prev:
            continue
        fresh = det.state()
        carried = dict(prev[det.name].state())
        for p in _parameter_keys(det):
            if p in fresh:
                carried[p] = fresh[p]
        det.load_state(carried)
    new._refresh_scale()
