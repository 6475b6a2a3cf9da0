"""The pack seam: what a kind of asset means to the cloud, behind one small interface (see README.md).

The rule runner schedules packs, the explain route asks them to recompute an alert, the what-if route asks
them a question: none of those knows a kind of asset. A pack with no rules yet (``assess`` returning None) is a
valid pack; so is one without a what-if model (``question = None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel


class NotRecomputable(Exception):
    """The alert's evidence lacks what a recomputation needs (e.g. raised before it was recorded); says why."""


class SimulationError(ValueError):
    """The question cannot be answered for this asset (no model, not enough history); says why."""


@dataclass(frozen=True)
class Alarm:
    """What a pack's rules found: an alert for ``AlertService.raise_alert`` (one open alert per asset and rule;
    a repeat refreshes it). ``evidence["source"]`` names the rule family whose pack can explain it."""

    rule: str
    severity: str
    title: str
    evidence: dict[str, Any]
    at_ns: int


@dataclass
class Assessment:
    """One assessment of one asset: alerts to raise or refresh, and (rule, why) of open alerts to resolve."""

    alarms: list[Alarm] = field(default_factory=list)
    resolved: list[tuple[str, str]] = field(default_factory=list)


class RuleContext(Protocol):
    """What the rule runner lends a pack: its look-back window, its options by name (a pack reads those it
    knows), counters it may add to, and when an asset's gateway was offline (from its status messages)."""

    window_s: float
    options: Mapping[str, Any]
    counters: dict[str, int]

    def asset_offline(self, tenant: str, asset: str) -> list[tuple[int, int | None]] | None: ...

    def written_from(self, tenant: str, asset: str) -> int | None:
        """The earliest sample time written for the asset since the last cycle (None: not known): a pack
        that judges history reads back at least to there, so late data of any age is judged."""
        ...


class Pack:
    """Subclass once per kind of asset and register it in ``cloud.packs.PACKS`` (or load its folder)."""

    type_id: ClassVar[str]
    sources: ClassVar[tuple[str, ...]] = ()
    not_compared: ClassVar[Mapping[str, str]] = {}
    question: ClassVar[type[BaseModel] | None] = None
    counter_names: ClassVar[tuple[str, ...]] = ()
    folder: ClassVar[Path | None] = None
    """Where its panel, README and sample config are; set when it is registered."""

    def __init__(self, platform: Any, rules: RuleContext | None = None) -> None:
        self.platform = platform
        self.rules = rules

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        """Judge the asset's data as of ``now_ns``; None when there was nothing to judge."""
        return None

    def explain(self, alert: dict) -> dict | None:
        """The evidence the alert's rule finds on the stored data now (None: it no longer fires)."""
        raise NotRecomputable(f"the {self.type_id} pack does not recompute its alerts")

    def what_if(self, tenant: str, asset: str, question: BaseModel, now_ns: int) -> dict[str, Any]:
        raise SimulationError(f"no what-if model for asset type {self.type_id!r}")

    @classmethod
    def panel(cls) -> Path | None:
        """Its dashboard panel (an ES module), if it has one."""
        path = cls.folder / "panel.js" if cls.folder else None
        return path if path is not None and path.is_file() else None
