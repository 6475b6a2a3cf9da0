"""What a live cold-chain alarm is, apart from the rules that find one: the samples the rules read (``SeriesLike``,
``clean``, ``held_at``), their thresholds (``ReeferRuleSettings``), an alarm and its evidence (``LiveAlarm``,
``classify``), a recognised defrost (``ReeferEvent``), and who owned the load when (``ProfileSpan``). Shared by the
trailer rules (``reefer``) and the predictive alarm (``predict``), so neither imports the other's rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloud.rules.coldchain.excursions import Evaluation, iso
from cloud.rules.coldchain.profiles import Profile
from models.wire import Quality


class SeriesLike(Protocol):
    """What the store (``cloud.store.Series``) and the simulator both return for one point."""

    t_ns: Any
    values: Any


class ReeferRuleSettings(BaseModel):
    """Thresholds of the live reefer rules. Defaults follow the domain notes where they give a number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_point: str = Field("supply_air", description="the point judged against the profile")
    off_current_a: float = Field(1.0, description="compressor current below this: not running, A")
    calling_margin_c: float = Field(2.0, description="control air this far above setpoint: it must be cooling")
    compressor_confirm_s: float = Field(900.0, description="warm with no current this long: compressor failure")
    defrost_gap_c: float = Field(0.2, description="median supply minus return above this: heaters on, K")
    supply_lag_s: float = Field(120.0, description="evaporator lag of supply air; corrects the gap while warming")
    defrost_max_s: float = Field(7200.0, description="longer than this is a stuck defrost (Carrier AL60: 2 h)")
    defrost_warmup_s: float = Field(1200.0, description="heaters warm the air past the margin within this")
    defrost_recovery_s: float = Field(1800.0, description="after a defrost, pulldown paused at most this long")
    door_max_s: float = Field(1200.0, description="door open this long raises door-open-long")
    stuck_s: float = Field(1800.0, description="one value this long while the neighbour sensor moves: stuck")
    stuck_neighbour_range_c: float = Field(0.5, description="how much the neighbour must move meanwhile, K")
    late_after_s: float = Field(600.0, description="alarms found this long after they fired are marked late")
    forecast_limit_c: float = Field(8.0, description="with a thermal model: when the product air reaches this")
    predict_margin_c: float = Field(1.2, description="control air this far above setpoint, compressor off: forecast")
    predict_confirm_s: float = Field(300.0, description="that long before the forecast is believed worth making")
    predict_horizon_s: float = Field(4 * 3600.0, description="how far the predictive alert looks ahead")
    power_gap_s: float = Field(900.0, description="no point reported this long: the unit may have lost power")
    power_rise_c: float = Field(1.0, description="air this much warmer when data returns: it was not cooling")


CLASSIFICATIONS = {
    "compressor-failure": "compressor_failure", "door-open-long": "door_open", "defrost-stuck": "defrost_stuck",
    "sensor-range": "sensor_fault", "sensor-stuck": "sensor_fault", "power-loss": "power_loss",
    "excursion-predicted": "excursion_predicted",
}
"""Rule family -> what happened, in the simulator's fault vocabulary; a profile boundary is ``excursion``."""
PREDICTED_RULE = "coldchain:excursion-predicted"
SOURCE = "coldchain"
"""The ``source`` a cold-chain alert's evidence names (``cloud.rules.explain`` recomputes by it)."""


@dataclass(frozen=True)
class LiveAlarm:
    """An alert ready for ``AlertService.raise_alert(tenant, asset, rule, severity, title, evidence, at_ns)``."""

    rule: str
    severity: str
    fired_at_ns: int
    title: str
    evidence: dict[str, Any]

    @property
    def classification(self) -> str:
        return self.evidence.get("classification") or classify(self.rule)


def classify(rule: str) -> str:
    """``coldchain:sensor-stuck:supply_air`` -> ``sensor_fault``; a profile boundary -> ``excursion``."""
    family = rule.split(":")[1] if rule.startswith("coldchain:") and ":" in rule else rule
    return CLASSIFICATIONS.get(family, "excursion")


@dataclass(frozen=True)
class ReeferEvent:
    """Recognised normal operation (a defrost): shown to operators, never alerted."""

    kind: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class ProfileSpan:
    """Who owned the product in the container over [from_ns, to_ns) (None: still), and by which profile it is
    judged there: a shipment's (``lots`` None: every lot on board but those in ``exclude``, whose products name a
    profile of their own) or one lot's product (``lots``: that lot).
    Its excursions are rules of their own (``coldchain:<profile>:<boundary>:<shipment>[:<lot>]``), so two
    shipments in one trailer never share an alert, and the quarantine reaches only what the span judged."""

    profile: Profile
    from_ns: int
    to_ns: int | None
    shipment: str
    lots: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    def mask(self, grid: np.ndarray) -> np.ndarray:
        m = grid >= self.from_ns
        return m & (grid < self.to_ns) if self.to_ns is not None else m

    @property
    def suffix(self) -> str:
        return f":{self.shipment}" + (f":{','.join(self.lots)}" if self.lots else "")


@dataclass
class ReeferAssessment:
    alarms: list[LiveAlarm] = field(default_factory=list)
    events: list[ReeferEvent] = field(default_factory=list)
    evaluation: Evaluation | None = None


def clean(series: SeriesLike) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns, values) with missing values and BAD-quality samples dropped, in time order."""
    t = np.asarray(series.t_ns, np.int64)
    v = np.array(series.values, float)  # None (a store's missing value) becomes NaN
    keep = np.isfinite(v)
    quality = getattr(series, "quality", None)
    if quality is not None and len(quality) == len(t):
        keep &= np.asarray(quality) != Quality.BAD
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def held_at(t_ns: np.ndarray, values: np.ndarray, grid_ns: np.ndarray) -> np.ndarray:
    """Each grid instant's last reading at or before it (a reading holds until the next); NaN before any."""
    if t_ns.size == 0:
        return np.full(grid_ns.shape, np.nan)
    idx = np.searchsorted(t_ns, grid_ns, side="right") - 1
    out = values[np.clip(idx, 0, None)].astype(float)
    out[idx < 0] = np.nan
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs of a boolean array."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _evidence(rule: str, start_ns: int, end_ns: int | None, values: dict[str, Any],
              thresholds: dict[str, Any]) -> dict[str, Any]:
    return {"rule": rule, "window": {"start": iso(start_ns), "end": iso(end_ns) if end_ns is not None else None,
                                     "start_ns": start_ns, "end_ns": end_ns},
            "values": values, "thresholds": thresholds}
