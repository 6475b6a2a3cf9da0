"""From per-point detector specs (the asset-type catalogue's ``detectors:`` lists) to one ``Ensemble``.

Each point lists ``{kind: ..., <parameters>}``; every kind used by any point becomes one detector with
per-point parameter arrays, so a tick still costs one kernel pass per kind. A point that does not list a
kind gets that detector disabled (it neither scores nor fires for it). Parameters a point leaves out take
the detector's default (its constructor's keyword default).

For a catalogue type: ``build_detectors([p.detectors for p in asset_type.points.values()])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge.detect.base import Detector, constructor_params
from edge.detect.cusum import Cusum
from edge.detect.ensemble import Ensemble
from edge.detect.ewma import EwmaZ
from edge.detect.limits import Limits
from edge.detect.novelty import Novelty
from edge.detect.page_hinkley import PageHinkley
from edge.detect.robust import RobustZ
from edge.detect.spike import Spike
from edge.detect.stuck import Stuck

#: Kind name -> detector class; this order is the bit order of the ensemble's mask.
KINDS: dict[str, type[Detector]] = {
    "ewma_z": EwmaZ,
    "robust_z": RobustZ,
    "cusum": Cusum,
    "page_hinkley": PageHinkley,
    "spike": Spike,
    "stuck": Stuck,
    "limits": Limits,
    "novelty": Novelty,
}

#: What a point gets on a gateway when its asset type says nothing, and what ``twin detect run`` uses without a
#: config: the calibrated, scale-free ``novelty`` detector (records, calibrated forecast residuals with daily and
#: weekly cycles, shape memory, regime changes, stuck-after-moving; see ``novelty.py``). The older kinds stay
#: available by name.
DEFAULT_DETECTORS: list[dict[str, Any]] = [{"kind": "novelty"}]


def spec_dict(spec: Any) -> dict[str, Any]:
    """A ``DetectorSpec`` (pydantic, extra fields allowed) or a plain mapping, as a dict."""
    if hasattr(spec, "model_dump"):
        return dict(spec.model_dump())
    if isinstance(spec, Mapping):
        return dict(spec)
    raise TypeError(f"detector spec must be a mapping with 'kind', got {type(spec).__name__}")


def build_detectors(
    specs_per_point: Sequence[Sequence[Any]], point_names: Sequence[str] | None = None
) -> Ensemble:
    """One ensemble for ``len(specs_per_point)`` points; point ``i`` runs the detectors listed at ``i``.

    ``point_names`` only make error messages say which point ("point 'supply_air': ...").
    """
    n = len(specs_per_point)
    chosen: dict[str, dict[int, dict[str, Any]]] = {}
    for i, specs in enumerate(specs_per_point):
        p = i if point_names is None else repr(point_names[i])
        for j, raw in enumerate(specs):
            spec = spec_dict(raw)
            kind = spec.pop("kind", None)
            if kind not in KINDS:
                known = ", ".join(KINDS)
                raise ValueError(f"point {p}: detectors[{j}]: unknown kind {kind!r} (known: {known})")
            allowed = constructor_params(KINDS[kind])
            unknown = sorted(set(spec) - set(allowed))
            if unknown:
                raise ValueError(
                    f"point {p}: detectors[{j}] ({kind}): unknown parameter(s) {', '.join(unknown)} "
                    f"(known: {', '.join(allowed)})"
                )
            if i in chosen.setdefault(kind, {}):
                raise ValueError(f"point {p}: detector kind {kind!r} listed twice; give it once")
            chosen[kind][i] = {k: v for k, v in spec.items() if v is not None}
    if not chosen:  # nothing configured anywhere: keep a valid, silent ensemble
        chosen = {"ewma_z": {}}
    detectors: list[Detector] = []
    enabled: list[np.ndarray] = []
    for kind, cls in KINDS.items():
        if kind not in chosen:
            continue
        per_point = chosen[kind]
        defaults = constructor_params(cls)
        kwargs = {
            name: np.array([per_point.get(p, {}).get(name, default) for p in range(n)])
            for name, default in defaults.items()
        }
        try:
            detectors.append(cls(n, **kwargs))
        except ValueError as exc:
            raise ValueError(f"{kind}: {exc}") from None
        on = np.zeros(n, np.bool_)
        on[list(per_point)] = True
        enabled.append(on)
    return Ensemble(detectors, enabled)


def default_specs(n_points: int) -> list[list[dict[str, Any]]]:
    """``DEFAULT_DETECTORS`` for every one of ``n_points`` points (copies, safe to edit)."""
    return [[dict(spec) for spec in DEFAULT_DETECTORS] for _ in range(n_points)]
