"""The asset-type catalogue: what points an asset has, their units and ranges, and how the edge
watches them. Shared by edge (which detectors run) and cloud (what a twin looks like).

Types are YAML files; the ones shipped with the platform live in ``models/types/`` (every gateway has them).
A process may know more: a pack installed beside the cloud registers its type here (``register_type``), and a
gateway learns the types it does not ship from its configuration (``asset_types``). A field marked ``personal``
(a driver or patient id) is pseudonymised before it is stored.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

TYPES_DIR = Path(__file__).with_name("types")


class DetectorSpec(BaseModel):
    """One edge detector on a point; parameters beyond ``kind`` go to the detector unchanged."""

    model_config = ConfigDict(extra="allow")
    kind: str


class PointSpec(BaseModel):
    """A point of an asset type. ``kind: text`` points carry strings (an id, a state name) beside the numeric
    time series; ``personal: true`` marks data about a person, pseudonymised before it is stored."""

    model_config = ConfigDict(extra="forbid")
    unit: str
    kind: Literal["number", "text"] = "number"
    description: str = ""
    normal_range: tuple[float, float] | None = None
    physical_range: tuple[float, float] | None = None
    personal: bool = False
    detectors: list[DetectorSpec] = Field(default_factory=list)


class LocalRule(BaseModel):
    """A threshold held for a time, evaluated on the gateway so the alarm exists while offline."""

    model_config = ConfigDict(extra="forbid")
    name: str
    point: str
    above: float | None = None
    below: float | None = None
    for_s: float = Field(ge=0)
    severity: Literal["low", "medium", "high", "critical"] = "high"

    @model_validator(mode="after")
    def _one_limit(self) -> LocalRule:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"rule {self.name}: give exactly one of 'above' or 'below'")
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def firings(self, t_ns: list[int], values: list[float | None]) -> list[tuple[int, int, float]]:
        """The rule's meaning, as a plain reference: (condition start, fire time, value at firing) for each
        time the limit is crossed and held ``for_s``. Strict comparison; a missing value is skipped. The
        gateway runs a compiled version of exactly this; the cloud re-runs this one to explain an alarm."""
        out = []
        since = fired = -1
        hold = int(self.for_s * 1e9)
        for t, v in zip(t_ns, values, strict=True):
            if v is None or v != v:
                continue
            if not (v > self.limit if self.above is not None else v < self.limit):
                since = fired = -1
                continue
            if since < 0:
                since = t
            if fired < 0 and t - since >= hold:
                fired = t
                out.append((since, t, v))
        return out


class AssetType(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    description: str = ""
    points: dict[str, PointSpec]
    local_rules: list[LocalRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_points(self) -> AssetType:
        for rule in self.local_rules:
            if rule.point not in self.points:
                raise ValueError(f"rule {rule.name}: unknown point {rule.point!r}")
        return self


def load_type(path: Path | str) -> AssetType:
    data: Any = yaml.safe_load(Path(path).read_text())
    return AssetType.model_validate(data)


@cache
def shipped_types() -> dict[str, AssetType]:
    """The types in ``models/types/``: what every gateway knows without being told."""
    types = (load_type(p) for p in sorted(TYPES_DIR.glob("*.yaml")))
    return {t.id: t for t in types}


_registered: dict[str, AssetType] = {}


def register_type(asset_type: AssetType) -> None:
    """Add a type beside the shipped ones in this process (a pack's ``type.yaml``); again with the same id
    replaces it. A shipped type cannot be redefined: gateways run the shipped definition."""
    if asset_type.id in shipped_types():
        raise ValueError(f"asset type {asset_type.id!r} is shipped with the platform and cannot be redefined")
    _registered[asset_type.id] = asset_type


def builtin_types() -> dict[str, AssetType]:
    """Every type this process knows without a tenant: the shipped ones and those registered by packs."""
    return {**shipped_types(), **_registered}


def get_type(type_id: str) -> AssetType:
    found = shipped_types().get(type_id) or _registered.get(type_id)
    if found is None:
        known = ", ".join(sorted(builtin_types()))
        raise KeyError(f"unknown asset type {type_id!r} (known: {known})")
    return found
