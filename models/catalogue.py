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


OpcUaDataType = Literal["Double", "Float", "Int16", "Int32", "Int64", "UInt16", "UInt32", "Boolean", "String"]


class OpcUaWrite(BaseModel):
    """How a value is written over OPC-UA: a Write of the Value attribute with this data type (a server refuses a
    Double sent to an Int16 node: BadTypeMismatch). ``node``: a NodeId or browse path template (``{asset}`` is the
    asset id; ``nsu=<uri>;`` keeps it independent of the server's namespace numbering); none: the node the gateway's
    OPC-UA source reads the confirming point from."""

    model_config = ConfigDict(extra="forbid")
    data_type: OpcUaDataType = "Double"
    node: str | None = None


class MqttWrite(BaseModel):
    """How a value is written over MQTT: a publish to the device's ``topic`` (``{asset}`` is the asset id) with
    ``payload`` as the body, ``{value}`` replaced by the value as JSON. The device confirms by reporting the point."""

    model_config = ConfigDict(extra="forbid")
    topic: str = Field(min_length=1)
    payload: str = '{"v": {value}}'
    qos: Literal[0, 1, 2] = 1


class WritableSpec(BaseModel):
    """A property the cloud may set on a device (desired state). ``point``: the reported point that confirms it
    (default: the property's own name); ``tolerance``: how close the reported value must come to count as applied.
    ``opcua`` and ``mqtt`` say how it is written through each kind of source; a gateway uses the one whose source
    serves the asset. ``confirm_s``: how long the device has to report the value back."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["number", "integer", "boolean"] = "number"
    unit: str
    range: tuple[float, float] | None = None
    description: str = ""
    point: str | None = None
    tolerance: float = Field(default=1e-6, ge=0)
    confirm_s: float = Field(default=15.0, gt=0, le=600)
    guard: Literal["load_profile"] | None = None
    """``load_profile``: a value outside the profile of the load in custody (a cold-chain shipment) needs the
    operator's explicit confirmation, and is recorded as confirmed."""
    opcua: OpcUaWrite | None = None
    mqtt: MqttWrite | None = None

    @model_validator(mode="after")
    def _one_way_at_least(self) -> WritableSpec:
        if self.opcua is None and self.mqtt is None:
            raise ValueError("a writable property says how it is written: opcua, mqtt or both")
        return self

    def check(self, value: object) -> float:
        """The value as the device takes it; ValueError saying why it is not acceptable (type, range)."""
        if isinstance(value, bool):
            if self.type != "boolean":
                raise ValueError(f"expected a {self.type}, got a boolean")
            return float(value)
        if not isinstance(value, int | float) or value != value:
            raise ValueError(f"expected a {self.type}, got {type(value).__name__}")
        if self.type == "integer" and float(value) != int(value):
            raise ValueError(f"expected an integer, got {value}")
        if self.type == "boolean" and value not in (0, 1):
            raise ValueError(f"expected a boolean (0 or 1), got {value}")
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            raise ValueError(f"{value} {self.unit} is outside {self.range[0]:g}..{self.range[1]:g} {self.unit}")
        return float(value)


class CommandSpec(BaseModel):
    """An action that is not state (start a defrost, reset an alarm): a fixed value written over OPC-UA or a
    publish over MQTT; it succeeds when the device accepts it (Write status Good, broker PUBACK)."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    value: float | str | bool = 1
    opcua: OpcUaWrite | None = None
    mqtt: MqttWrite | None = None


class AssetType(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    description: str = ""
    points: dict[str, PointSpec]
    local_rules: list[LocalRule] = Field(default_factory=list)
    writable: dict[str, WritableSpec] = Field(default_factory=dict)
    commands: dict[str, CommandSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules_name_points(self) -> AssetType:
        for rule in self.local_rules:
            if rule.point not in self.points:
                raise ValueError(f"rule {rule.name}: unknown point {rule.point!r}")
        for name, w in self.writable.items():
            if (w.point or name) not in self.points:
                raise ValueError(f"writable {name}: unknown point {w.point or name!r} to confirm it")
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
