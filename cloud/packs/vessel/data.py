"""What the vessel rules read: the pack's configuration, and an engine's history as steady windows.

Marine engineers compare an engine with itself and with its shop test only at steady load: a cylinder's
exhaust temperature during a load change says nothing about its injector. So the history is read as
10-minute means (from the store, or computed from raw samples the same way InfluxDB's ``GROUP BY time`` does,
aligned to the epoch) and cut into hour-long windows; a window is *steady* when every 10-minute mean of shaft
power is within ``power_tolerance`` of their mean, speed within ``speed_tolerance``, and the load above
``min_load``. Each steady window becomes one row: its end time, load, speed and the mean of every point.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_PATH = Path(__file__).with_name("config.yaml")
POWER, SPEED = "me_shaft_power", "me_speed"
CYLINDER_POINT = re.compile(r"me_exh_temp_cyl(\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineSpec(_Strict):
    mcr_kw: float = Field(gt=0)
    mcr_rpm: float = Field(gt=0)


class ShopTest(_Strict):
    """The engine's shop-test curves against load (shaft power / MCR), interpolated linearly between points."""

    load: tuple[float, ...]
    exh_temp_c: tuple[float, ...]
    scav_bar: tuple[float, ...]
    tc_rpm: tuple[float, ...]

    @model_validator(mode="after")
    def _same_length(self) -> ShopTest:
        n = len(self.load)
        if n < 2 or any(len(getattr(self, k)) != n for k in ("exh_temp_c", "scav_bar", "tc_rpm")):
            raise ValueError("shop_test: load, exh_temp_c, scav_bar and tc_rpm need the same 2 or more points")
        if any(b <= a for a, b in zip(self.load, self.load[1:], strict=False)):
            raise ValueError("shop_test: load must rise")
        return self

    def at(self, curve: Literal["exh_temp_c", "scav_bar", "tc_rpm"], load: np.ndarray) -> np.ndarray:
        """The curve at ``load``; beyond the tested range, NaN (the shop test says nothing there)."""
        x = np.asarray(load, float)
        y = np.interp(x, self.load, getattr(self, curve))
        return np.where((x >= self.load[0]) & (x <= self.load[-1]), y, np.nan)


class SteadySpec(_Strict):
    bin_s: float = Field(gt=0)
    window_bins: int = Field(ge=2)
    min_load: float = Field(ge=0, le=1)
    power_tolerance: float = Field(gt=0)
    speed_tolerance: float = Field(gt=0)


class CylinderSpec(_Strict):
    medium_k: float = Field(gt=0)
    high_k: float = Field(gt=0)
    hold_windows: int = Field(ge=1)
    resolve_k: float = Field(gt=0)
    recent_h: float = Field(gt=0)


class PerformanceSpec(_Strict):
    history_days: float = Field(gt=0)
    half_life_days: float | None = Field(gt=0)
    min_windows: int = Field(ge=3)
    min_span_days: float = Field(ge=0)
    exhaust_rise_limit_k: float = Field(gt=0)
    scavenge_drop_limit_pct: float = Field(gt=0)
    horizon_days: float = Field(gt=0)
    significance: float = Field(gt=0.5, lt=1)
    n_boot: int = Field(ge=50)


class ShaftSpec(_Strict):
    group: Literal[1, 2]
    foundation: Literal["rigid", "flexible"]
    min_speed_ratio: float = Field(ge=0, le=1)
    history_days: float = Field(gt=0)
    horizon_days: float = Field(gt=0)
    min_windows: int = Field(ge=10)
    temperature_rise_k: float = Field(gt=0)
    n_boot: int = Field(ge=50)


class VesselConfig(_Strict):
    """Everything the vessel rules judge against (``config.yaml``): shop test, limits, what counts as steady."""

    engine: EngineSpec
    shop_test: ShopTest
    steady: SteadySpec
    cylinders: CylinderSpec
    performance: PerformanceSpec
    shaft: ShaftSpec


@cache
def default_config() -> VesselConfig:
    return VesselConfig.model_validate(yaml.safe_load(CONFIG_PATH.read_text()))


@dataclass
class Bins:
    """Means of every point over a common grid of ``every_ns`` bins starting at ``t_ns`` (NaN: no data)."""

    t_ns: np.ndarray
    every_ns: int
    values: dict[str, np.ndarray]



def grid(start_ns: int, end_ns: int, every_ns: int) -> np.ndarray:
    """Bin starts aligned to the epoch (as InfluxDB groups by time) covering [start_ns, end_ns)."""
    first = start_ns // every_ns * every_ns
    return np.arange(first, end_ns, every_ns, dtype=np.int64)


def bins_from_samples(series: Mapping[str, tuple[Sequence[int], Sequence[float | None]]], start_ns: int,
                      end_ns: int, every_ns: int) -> Bins:
    """Bin means of raw samples in [start_ns, end_ns): what ``read_bins`` gets from the store for the same data."""
    t = grid(start_ns, end_ns, every_ns)
    out = {}
    for point, (ts, vs) in series.items():
        ts_a = np.asarray(ts, np.int64)
        vs_a = np.array([np.nan if v is None else v for v in vs], float) if not isinstance(vs, np.ndarray) \
            else vs.astype(float)
        keep = (ts_a >= start_ns) & (ts_a < end_ns) & np.isfinite(vs_a)
        idx = (ts_a[keep] - t[0]) // every_ns
        total = np.bincount(idx, weights=vs_a[keep], minlength=len(t))
        count = np.bincount(idx, minlength=len(t))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[point] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return Bins(t, every_ns, out)


def read_bins(store, tenant: str, asset: str, points: Sequence[str], start_ns: int, end_ns: int,
              every_ns: int) -> Bins:
    """The store's ``every_ns`` means of ``points`` over [start_ns, end_ns), one query per point."""
    t = grid(start_ns, end_ns, every_ns)
    out = {}
    for point in points:
        ser = store.query_window(tenant, asset, point, start_ns, end_ns, every_ns, "mean")
        col = np.full(len(t), np.nan)
        for ti, v in zip(ser.t_ns, ser.values, strict=True):
            i = (int(ti) - int(t[0])) // every_ns
            if v is not None and 0 <= i < len(t) and math.isfinite(v):
                col[i] = v
        out[point] = col
    return Bins(t, every_ns, out)


@dataclass
class Windows:
    """Steady windows, one row each: ``t_ns`` (window end), ``load`` (power / MCR), ``speed`` (rpm) and the
    window mean of every point in ``values``."""

    t_ns: np.ndarray
    load: np.ndarray
    speed: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t_ns)

    def take(self, keep: np.ndarray) -> Windows:
        return Windows(self.t_ns[keep], self.load[keep], self.speed[keep], {k: v[keep] for k, v in self.values.items()})

    def ending_in(self, after_ns: int, until_ns: int) -> Windows:
        """The windows whose end is in (after_ns, until_ns]."""
        return self.take((self.t_ns > after_ns) & (self.t_ns <= until_ns))

    def then(self, later: Windows) -> Windows:
        """These windows followed by ``later``'s."""
        return Windows(np.concatenate([self.t_ns, later.t_ns]), np.concatenate([self.load, later.load]),
                       np.concatenate([self.speed, later.speed]),
                       {p: np.concatenate([v, later.values.get(p, np.full(len(later), np.nan))])
                        for p, v in self.values.items()})


def steady_windows(bins: Bins, engine: EngineSpec, steady: SteadySpec) -> Windows:
    """The steady windows of ``bins`` (see the module docstring). Windows are aligned to the epoch (whole hours
    by default), so the same hour is the same window whatever range was read; partial ones are left out."""
    k = steady.window_bins
    span = k * bins.every_ns
    skip = int((-(bins.t_ns[0] % span) % span) // bins.every_ns) if len(bins.t_ns) else 0
    if skip:
        bins = Bins(bins.t_ns[skip:], bins.every_ns, {p: v[skip:] for p, v in bins.values.items()})
    n = len(bins.t_ns) // k * k
    empty = np.zeros(0)
    if n == 0 or POWER not in bins.values or SPEED not in bins.values:
        return Windows(np.zeros(0, np.int64), empty, empty, {p: empty for p in bins.values})

    def shaped(a: np.ndarray) -> np.ndarray:
        return a[:n].reshape(-1, k)

    power, speed = shaped(bins.values[POWER]), shaped(bins.values[SPEED])
    with np.errstate(invalid="ignore"):
        p_mean, s_mean = power.mean(axis=1), speed.mean(axis=1)
        ok = np.isfinite(p_mean) & np.isfinite(s_mean) & (s_mean > 0)
        ok &= p_mean / engine.mcr_kw >= steady.min_load
        ok &= (power.max(axis=1) - power.min(axis=1)) <= 2 * steady.power_tolerance * np.where(ok, p_mean, 1.0)
        ok &= (speed.max(axis=1) - speed.min(axis=1)) <= 2 * steady.speed_tolerance * np.where(ok, s_mean, 1.0)
    t_end = bins.t_ns[:n].reshape(-1, k)[:, -1] + bins.every_ns
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty window's mean is NaN, which is what it is
        means = {p: np.nanmean(shaped(v), axis=1) for p, v in bins.values.items()}
    return Windows(t_end[ok], (p_mean / engine.mcr_kw)[ok], s_mean[ok], {p: v[ok] for p, v in means.items()})


def cylinders(points: Sequence[str]) -> list[tuple[int, str]]:
    """(cylinder number, point) of the exhaust temperature points, by number."""
    found = [(int(m.group(1)), p) for p in points if (m := CYLINDER_POINT.match(p))]
    return sorted(found)

