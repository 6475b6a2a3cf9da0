"""Vessel physics: a ship's main engine and shaft line over voyages, with injected faults and the truth known.

The vessel pack's rules read an engine the way its engineers do — a cylinder against the others at the same
load, the engine against its shop test, the shaft line against the vibration zones — and have to be judged on
faults whose onset, cylinder and bearing are known. Recorded engine logs give none of that, so this module
simulates a two-stroke, six-cylinder, low-speed main engine (a 6S60ME-C class: MCR 14,280 kW at 105 rpm) driving
a fixed-pitch propeller:

- **Voyages.** Port stays (engine stopped), manoeuvring out and in (telegraph orders dead slow to full
  manoeuvring, stops between), and sea passages at a service speed drawn per passage (55-85 % MCR on the clean
  propeller curve), entered and left through a load-up / slow-down ramp.
- **Propeller law.** Shaft power = MCR · (n / n_MCR)³ · (1 + hull fouling) · (1 + weather): a fouled hull and a
  head sea make the propeller heavy (more power at the same speed) and the ship slower.
- **Sea state.** A Beaufort number per passage; the weather's added resistance wanders (an Ornstein-Uhlenbeck
  process, 6 h memory) and waves shake power and speed from one minute to the next.
- **Engine.** Exhaust temperature after each cylinder, scavenge air pressure, turbocharger speed and fuel index
  follow the engine's load through its performance tables (what a shop test measures), plus this engine's own
  offsets (each cylinder a few kelvin off the mean: a healthy engine is not perfectly balanced). Temperatures
  lag their targets (minutes running, most of an hour cooling down in port).
- **Drift.** The hull and the turbocharger foul slowly on every voyage (``*_fouling_per_day``): a fouled
  turbocharger gives less scavenge air, so exhaust temperatures rise at the same load.
- **Shaft line.** Intermediate bearings and the aft stern tube bearing warm with speed; broadband vibration
  velocity grows with speed squared and with the sea.

Faults (``VesselFault``), each with its ground truth:

- ``fuel_injector``: one cylinder's exhaust temperature deviates (``deviation_k``, default +70 K: a worn nozzle
  dribbles and burns late; negative for a clogged one), reached over ``ramp_s``, until the end of the fault
  (the injector is replaced).
- ``turbocharger_fouling``: fouling grows ``fouling_per_day`` (default 0.12 a day) from start to end, and stays:
  scavenge pressure falls (-12 % at fouling 1), exhaust temperatures rise (+45 K) and the turbocharger slows.
- ``shaft_bearing_wear``: one intermediate bearing wears like a rolling machine's does, severity
  ``(exp(g·x) - 1) / (exp(g) - 1)`` over the fault window (1 at its end, the failure time, and 1 after it): its
  temperature (+30 K at failure) and vibration (+9 mm/s at full speed) rise.

Everything is deterministic per seed; time ``t_s`` is seconds since the run's start ``t0``.

>>> run = Vessel("vessel-001", VesselParams(), seed=3).simulate(0, 86400.0, 60.0)
>>> sorted(run.points) == sorted(POINTS)
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalogue import get_type
from models.wire import Quality
from simulators.devices import PublishReport, interleave, publish_readings
from simulators.scenario import NumberedEntry, ScenarioRun, Seconds, _start_ns, asset_seed

ASSET_TYPE = "vessel"
POINTS: tuple[str, ...] = tuple(get_type(ASSET_TYPE).points)
"""The points a vessel reports, in the catalogue's order."""
CYLINDERS: tuple[str, ...] = tuple(p for p in POINTS if p.startswith("me_exh_temp_cyl"))
BEARINGS = (1, 2)
"""The intermediate shaft bearings a ``shaft_bearing_wear`` fault may name (each has a temperature and a vibration)."""
FaultKind = Literal["fuel_injector", "turbocharger_fouling", "shaft_bearing_wear"]
_NS = 1_000_000_000
_DAY_S = 86_400.0
_H = 3600.0

LOAD_GRID = (0.0, 0.10, 0.25, 0.50, 0.75, 0.85, 1.00)
"""Engine load (shaft power / MCR) at which the performance tables are given; the shop test runs 25-100 %."""

Table = tuple[float, float, float, float, float, float, float]


class VesselParams(BaseModel):
    """True parameters of one vessel; defaults are a ~4,500 TEU container ship with a 6S60ME-C class engine.

    The engine's performance tables are what its shop test would measure on a clean turbocharger (the vessel
    pack's default shop-test curves hold the same figures from 25 % load up); below 25 % they extend to idling.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Engine
    mcr_kw: float = Field(14_280.0, gt=0, description="maximum continuous rating, kW")
    mcr_rpm: float = Field(105.0, gt=0, description="engine speed at MCR, rpm")
    exh_temp_c: Table = Field((120.0, 215.0, 262.0, 283.0, 318.0, 334.0, 358.0),
                              description="exhaust gas temperature after the valves at LOAD_GRID, degC")
    scav_bar: Table = Field((0.0, 0.25, 0.72, 1.62, 2.62, 3.02, 3.52), description="scavenge air, bar gauge")
    tc_rpm: Table = Field((900.0, 4200.0, 7400.0, 10_900.0, 13_400.0, 14_200.0, 15_200.0),
                          description="turbocharger speed, rpm")
    fuel_index: Table = Field((8.0, 17.0, 28.0, 46.0, 63.0, 70.0, 81.0),
                              description="fuel index on the propeller curve, %; scales with fuel per stroke")
    cylinder_spread_k: float = Field(5.0, ge=0, description="s.d. of each cylinder's fixed exhaust offset, K")
    engine_offset_k: float = Field(4.0, ge=0, description="s.d. of the engine's exhaust offset from its table, K")
    scav_offset: float = Field(0.015, ge=0, description="s.d. of the engine's relative scavenge offset")
    exh_tau_s: float = Field(240.0, gt=0, description="exhaust thermocouple and manifold lag running, s")
    cool_tau_s: float = Field(2700.0, gt=0, description="cooling down with the engine stopped, s")
    stopped_exh_c: float = Field(70.0, description="exhaust temperature the stopped, pre-heated engine settles at")
    # Ship and voyages
    v_mcr_kn: float = Field(21.5, gt=0, description="speed through the water at MCR on a clean hull, kn")
    service_load: tuple[float, float] = Field((0.55, 0.85), description="passage load range, clean propeller curve")
    port_h: tuple[float, float] = Field((10.0, 30.0), description="port stay, hours (uniform)")
    passage_h: tuple[float, float] = Field((30.0, 110.0), description="sea passage, hours (uniform)")
    manoeuvre_h: tuple[float, float] = Field((1.0, 2.5), description="manoeuvring in or out, hours")
    beaufort: tuple[int, int] = Field((2, 7), description="sea state range per passage (uniform integers)")
    # Drift
    hull_fouling_0: tuple[float, float] = Field((0.0, 0.06), description="hull fouling at t0 (uniform)")
    hull_fouling_per_day: float = Field(3e-4, ge=0, description="propeller curve heavier by this a day")
    tc_fouling_0: tuple[float, float] = Field((0.0, 0.08), description="turbocharger fouling at t0 (uniform)")
    tc_fouling_per_day: float = Field(0.003, ge=0, description="normal turbocharger fouling a day (1: fully)")
    # Shaft line
    engine_room_c: float = Field(38.0, description="engine room at sea, degC (port: 6 K less)")
    sea_water_c: tuple[float, float] = Field((10.0, 28.0), description="sea water per passage (uniform)")
    bearing_rise_k: float = Field(11.0, ge=0, description="intermediate bearing above the room at MCR, K")
    stern_tube_rise_k: float = Field(16.0, ge=0, description="stern tube bearing above sea water + 8 K at MCR, K")
    bearing_tau_s: float = Field(2400.0, gt=0, description="bearing housing time constant, s")
    vib_base_mm_s: float = Field(0.25, ge=0, description="vibration at any speed (auxiliaries, hull), mm/s")
    vib_speed_mm_s: float = Field(1.9, ge=0, description="vibration added at MCR speed (~ speed squared), mm/s")
    vib_scatter: float = Field(0.06, ge=0, description="relative scatter of one reading")
    wear_temp_k: float = Field(30.0, ge=0, description="bearing temperature added at wear severity 1, K")
    wear_vib_mm_s: float = Field(9.0, ge=0, description="vibration added at wear severity 1 and MCR speed, mm/s")
    # Sensors
    noise_exh_k: float = Field(1.5, ge=0)
    noise_bar: float = Field(0.01, ge=0)
    noise_tc_rpm: float = Field(25.0, ge=0)
    noise_temp_k: float = Field(0.1, ge=0)
    bad_quality_prob: float = Field(1e-4, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> VesselParams:
        for name in ("exh_temp_c", "scav_bar", "tc_rpm", "fuel_index"):
            if any(b < a for a, b in zip(getattr(self, name), getattr(self, name)[1:], strict=False)):
                raise ValueError(f"{name}: the table must not fall with load")
        for name in ("service_load", "port_h", "passage_h", "manoeuvre_h", "beaufort", "hull_fouling_0",
                     "tc_fouling_0", "sea_water_c"):
            lo, hi = getattr(self, name)
            if hi < lo:
                raise ValueError(f"{name}: give (low, high), got ({lo}, {hi})")
        if not (self.service_load[0] >= 0.2 and self.service_load[1] <= 1.0):
            raise ValueError("service_load: between 0.2 and 1.0 of MCR")
        return self


@dataclass(frozen=True)
class VesselFault:
    """An injected fault over [start_ns, end_ns); see the module docstring for what each kind does."""

    kind: FaultKind
    start_ns: int
    end_ns: int
    cylinder: int | None = None
    bearing: int | None = None
    deviation_k: float = 70.0
    ramp_s: float = 6 * _H
    fouling_per_day: float = 0.12
    growth: float = 4.0

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ValueError(f"{self.kind}: the fault must end after it starts")
        if self.kind == "fuel_injector" and (self.cylinder is None or not 1 <= self.cylinder <= len(CYLINDERS)):
            raise ValueError(f"fuel_injector: cylinder must be 1..{len(CYLINDERS)}, got {self.cylinder!r}")
        if self.kind == "shaft_bearing_wear" and self.bearing not in BEARINGS:
            raise ValueError(f"shaft_bearing_wear: bearing must be one of {BEARINGS}, got {self.bearing!r}")

    def params(self) -> dict[str, Any]:
        """What the ground truth records of this fault's parameters."""
        if self.kind == "fuel_injector":
            return {"cylinder": self.cylinder, "deviation_k": self.deviation_k, "ramp_s": self.ramp_s}
        if self.kind == "turbocharger_fouling":
            return {"fouling_per_day": self.fouling_per_day}
        return {"bearing": self.bearing, "growth": self.growth, "failure_ns": self.end_ns}


@dataclass(frozen=True)
class Segment:
    """One stretch of the voyage plan: ``port``, ``manoeuvring`` or ``sea_passage``, in seconds from t0."""

    kind: Literal["port", "manoeuvring", "sea_passage"]
    start_s: float
    end_s: float
    load: float = 0.0  # sea passage: service load on the clean propeller curve
    beaufort: int = 0
    sea_water_c: float = 20.0


@dataclass
class VesselRun:
    """What one vessel reported (``points``: {point: (t_ns, values, quality)}) and what was really going on."""

    asset_id: str
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    truth: dict[str, np.ndarray]  # load, speed_rpm, hull_fouling, tc_fouling, wear_1, wear_2, injector_k_cylN
    segments: list[Segment]
    faults: list[VesselFault] = field(default_factory=list)


def _interp(load: np.ndarray, table: Table) -> np.ndarray:
    return np.interp(load, LOAD_GRID, table)


def _lag(target: np.ndarray, alpha: np.ndarray, y0: float) -> np.ndarray:
    """First-order lag with a per-step factor: y[i] = a[i]·y[i-1] + (1 - a[i])·x[i] (a plain loop over floats)."""
    out = np.empty(len(target))
    y = y0
    for i, (x, a) in enumerate(zip(target.tolist(), alpha.tolist(), strict=True)):
        y = a * y + (1.0 - a) * x
        out[i] = y
    return out


def _ou(rng: np.random.Generator, n: int, dt: float, tau: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck path of ``n`` steps with memory ``tau`` and unit standard deviation."""
    a = math.exp(-dt / tau)
    shocks = rng.normal(0.0, math.sqrt(1 - a * a), n)
    out = np.empty(n)
    y = float(rng.normal())
    for i, s in enumerate(shocks.tolist()):
        y = a * y + s
        out[i] = y
    return out


class Vessel:
    """One simulated vessel: its voyage plan, engine and shaft line, and the faults injected into it."""

    def __init__(self, asset_id: str, params: VesselParams | None = None, seed: int = 0,
                 faults: list[VesselFault] | None = None) -> None:
        self.asset_id = asset_id
        self.params = params or VesselParams()
        self.seed = seed
        self.faults = list(faults or [])
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        p = self.params
        self.cylinder_offset_k = rng.normal(0.0, p.cylinder_spread_k, len(CYLINDERS))
        self.engine_offset_k = float(rng.normal(0.0, p.engine_offset_k))
        self.scav_offset = float(rng.normal(0.0, p.scav_offset))
        self.hull_fouling_0 = float(rng.uniform(*p.hull_fouling_0))
        self.tc_fouling_0 = float(rng.uniform(*p.tc_fouling_0))
        self.bearing_offset_k = rng.normal(0.0, 1.5, 3)

    # --- voyage plan ------------------------------------------------------------------------------

    def plan(self, duration_s: float) -> list[Segment]:
        """Port → manoeuvring → passage → manoeuvring → port … covering [0, duration_s], entered at a random
        point of its first stretch (a run does not start as the ship leaves port)."""
        p = self.params
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        order = ("port", "manoeuvring", "sea_passage", "manoeuvring")
        k = int(rng.integers(0, 4))
        segments: list[Segment] = []
        t = 0.0
        first = True
        while t < duration_s:
            kind = order[k % 4]
            hours = {"port": p.port_h, "manoeuvring": p.manoeuvre_h, "sea_passage": p.passage_h}[kind]
            length = float(rng.uniform(*hours)) * _H
            if first:  # enter the first stretch somewhere along it
                length *= float(rng.uniform(0.2, 1.0))
                first = False
            seg = Segment(kind, t, t + length)  # type: ignore[arg-type]
            if kind == "sea_passage":
                seg = Segment("sea_passage", t, t + length, load=float(rng.uniform(*p.service_load)),
                              beaufort=int(rng.integers(p.beaufort[0], p.beaufort[1] + 1)),
                              sea_water_c=float(rng.uniform(*p.sea_water_c)))
            segments.append(seg)
            t += length
            k += 1
        return segments

    def _orders(self, t_s: np.ndarray, segments: list[Segment]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rpm ordered, Beaufort, sea water °C) per sample from the plan."""
        p = self.params
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2,)))
        rpm = np.zeros(len(t_s))
        bf = np.full(len(t_s), 3.0)
        sea = np.full(len(t_s), 20.0)
        manoeuvre_rpm = p.mcr_rpm * np.array([0.0, 0.29, 0.43, 0.57, 0.71])  # stop, dead slow … full manoeuvring
        for i, seg in enumerate(segments):
            inside = (t_s >= seg.start_s) & (t_s < seg.end_s)
            prev = segments[i - 1] if i else None
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            weather = next((s for s in (seg, nxt, prev) if s and s.kind == "sea_passage"), None)
            if weather is not None:
                bf[inside] = weather.beaufort
                sea[inside] = weather.sea_water_c
            if seg.kind == "sea_passage":
                service = p.mcr_rpm * seg.load ** (1 / 3)
                start_rpm = manoeuvre_rpm[-1]
                # load-up from full manoeuvring over 45 min, slow-down over the last 30 min
                up = np.clip((t_s - seg.start_s) / 2700.0, 0.0, 1.0)
                down = np.clip((seg.end_s - t_s) / 1800.0, 0.0, 1.0)
                ramp = np.minimum(up, down)
                rpm[inside] = (start_rpm + (service - start_rpm) * ramp)[inside]
            elif seg.kind == "manoeuvring":
                t = seg.start_s
                while t < seg.end_s:
                    step = float(rng.uniform(4.0, 15.0)) * 60.0
                    order = float(rng.choice(manoeuvre_rpm, p=[0.15, 0.2, 0.25, 0.2, 0.2]))
                    rpm[(t_s >= t) & (t_s < min(t + step, seg.end_s))] = order
                    t += step
        return rpm, bf, sea

    # --- faults -----------------------------------------------------------------------------------

    def _fault_arrays(self, t0_ns: int, t_s: np.ndarray) -> dict[str, np.ndarray]:
        n = len(t_s)
        out = {f"injector_k_cyl{c}": np.zeros(n) for c in range(1, len(CYLINDERS) + 1)}
        out |= {"tc_fault": np.zeros(n), "wear_1": np.zeros(n), "wear_2": np.zeros(n)}
        for f in self.faults:
            a = (f.start_ns - t0_ns) / _NS
            b = (f.end_ns - t0_ns) / _NS
            inside = (t_s >= a) & (t_s < b)
            if f.kind == "fuel_injector":
                out[f"injector_k_cyl{f.cylinder}"] += np.where(
                    inside, f.deviation_k * np.clip((t_s - a) / max(f.ramp_s, 1.0), 0.0, 1.0), 0.0)
            elif f.kind == "turbocharger_fouling":
                out["tc_fault"] += f.fouling_per_day / _DAY_S * np.clip(t_s - a, 0.0, b - a)  # grows, then stays
            else:
                x = np.clip((t_s - a) / (b - a), 0.0, 1.0)  # failed at the end: it stays so until repaired
                out[f"wear_{f.bearing}"] += np.where(t_s >= a, np.expm1(f.growth * x) / math.expm1(f.growth), 0.0)
        return out

    # --- the run ----------------------------------------------------------------------------------

    def simulate(self, t0_ns: int, duration_s: float, period_s: float = 60.0) -> VesselRun:
        """Samples every ``period_s`` over ``duration_s``: each reading is the sensor's one-period average."""
        if period_s <= 0 or duration_s < period_s:
            raise ValueError("period_s must be positive and duration_s at least one period")
        p = self.params
        n = int(duration_s // period_s)
        t_s = np.arange(n) * period_s
        t_ns = t0_ns + np.round(t_s * _NS).astype(np.int64)
        segments = self.plan(duration_s)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(3,)))
        order, bf, sea_c = self._orders(t_s, segments)
        faults = self._fault_arrays(t0_ns, t_s)

        # speed follows the telegraph through the governor (a minute's lag) and wobbles in a seaway
        speed = _lag(order, np.full(n, math.exp(-period_s / 60.0)), float(order[0]))
        running = speed > 1.0
        speed = np.where(running, speed + rng.normal(0.0, 1.0, n) * 0.06 * bf, 0.0)
        speed = np.clip(speed, 0.0, None)
        running = speed > 1.0
        hull = self.hull_fouling_0 + p.hull_fouling_per_day * t_s / _DAY_S
        weather = np.clip(0.02 * (bf - 2.0) + (0.015 + 0.004 * bf) * _ou(rng, n, period_s, 6 * _H), -0.02, None)
        waves = rng.normal(0.0, 1.0, n) * 0.004 * bf
        rel = speed / p.mcr_rpm
        power = p.mcr_kw * rel**3 * (1.0 + hull) * (1.0 + weather) * (1.0 + waves)
        load = power / p.mcr_kw
        tc_f = self.tc_fouling_0 + p.tc_fouling_per_day * t_s / _DAY_S + faults["tc_fault"]

        # engine performance at this load (the propeller curve's speed for this load: fuel per stroke)
        on_curve_rel = np.cbrt(np.clip(load, 1e-9, None))
        per_stroke = np.where(running, on_curve_rel / np.maximum(rel, 1e-3), 1.0)
        injector_dev = np.stack([faults[f"injector_k_cyl{c}"] for c in range(1, len(CYLINDERS) + 1)])
        fuel = _interp(load, p.fuel_index) * per_stroke * (1.0 + 0.02 * tc_f
                                                          + 0.0002 * np.abs(injector_dev).sum(axis=0))
        fuel = np.where(running, fuel + rng.normal(0.0, 0.2, n), 0.0)
        scav = np.where(running, _interp(load, p.scav_bar) * (1.0 - 0.12 * tc_f) * (1.0 + self.scav_offset)
                        + rng.normal(0.0, p.noise_bar, n), 0.0)
        tc_target = np.where(running, _interp(load, p.tc_rpm) * (1.0 - 0.04 * tc_f), 0.0)
        tc = _lag(tc_target, np.full(n, math.exp(-period_s / 300.0)), float(tc_target[0]))
        tc = np.where(tc > 50.0, tc + rng.normal(0.0, p.noise_tc_rpm, n), 0.0)

        alpha_run = math.exp(-period_s / p.exh_tau_s)
        alpha_stop = math.exp(-period_s / p.cool_tau_s)
        alpha = np.where(running, alpha_run, alpha_stop)
        common = np.where(running, _interp(load, p.exh_temp_c) + 45.0 * tc_f + self.engine_offset_k, p.stopped_exh_c)
        exh = {}
        for c, point in enumerate(CYLINDERS):
            target = common + np.where(running, self.cylinder_offset_k[c] + injector_dev[c], 0.0)
            exh[point] = _lag(target, alpha, float(target[0])) + rng.normal(0.0, p.noise_exh_k, n)

        ship = np.where(running, p.v_mcr_kn * rel * (1.0 - 0.35 * hull) * (1.0 - 0.5 * np.clip(weather, 0, None))
                        + rng.normal(0.0, 0.05, n), 0.0)

        room = np.where(running, p.engine_room_c, p.engine_room_c - 6.0)
        alpha_b = np.full(n, math.exp(-period_s / p.bearing_tau_s))
        bearing_temp, vib = {}, {}
        for j, b in enumerate(BEARINGS):
            wear = faults[f"wear_{b}"] + 0.05 * faults[f"wear_{3 - b}"]  # a worn bearing loads its neighbour a little
            target = room + self.bearing_offset_k[j] + rel**1.5 * (p.bearing_rise_k + p.wear_temp_k * wear / 0.85)
            bearing_temp[b] = _lag(target, alpha_b, float(target[0])) + rng.normal(0.0, p.noise_temp_k, n)
            base = (p.vib_base_mm_s + p.vib_speed_mm_s * (0.9 + 0.1 * j) * rel**2) * (1.0 + 0.03 * bf * np.abs(waves))
            v = (base + p.wear_vib_mm_s * wear * rel**2) * np.exp(rng.normal(0.0, p.vib_scatter, n))
            vib[b] = np.where(running, v, 0.08 * np.exp(rng.normal(0.0, 0.2, n)))
        st_target = sea_c + 8.0 + self.bearing_offset_k[2] + p.stern_tube_rise_k * rel**1.5
        stern = _lag(st_target, alpha_b, float(st_target[0])) + rng.normal(0.0, p.noise_temp_k, n)

        values = {"me_speed": (speed, 0.1), "me_shaft_power": (np.where(running, power * (1 + rng.normal(0, 0.004, n)),
                                                                         0.0), 1.0),
                  "me_fuel_index": (fuel, 0.1), "me_scav_air_pressure": (scav, 0.01), "me_tc_speed": (tc, 10.0),
                  **{pt: (exh[pt], 0.5) for pt in CYLINDERS}, "ship_speed": (np.clip(ship, 0.0, None), 0.1),
                  "shaft_bearing_1_temp": (bearing_temp[1], 0.1), "shaft_bearing_2_temp": (bearing_temp[2], 0.1),
                  "stern_tube_temp": (stern, 0.1), "shaft_vib_1": (vib[1], 0.01), "shaft_vib_2": (vib[2], 0.01)}
        missing = set(POINTS) ^ set(values)
        assert not missing, f"simulator and asset type disagree on {sorted(missing)}"
        flags = rng.random((len(POINTS), n)) < p.bad_quality_prob
        points = {}
        for j, point in enumerate(POINTS):
            v, quantum = values[point]
            v = np.clip(v, 0.0, None) if point != "stern_tube_temp" else v
            points[point] = (t_ns, _quantise(v, quantum), np.where(flags[j], Quality.BAD, Quality.GOOD).astype(np.int8))
        truth = {"load": load, "speed_rpm": speed, "hull_fouling": hull, "tc_fouling": tc_f, "beaufort": bf,
                 "wear_1": faults["wear_1"], "wear_2": faults["wear_2"], "running": running.astype(float),
                 **{k: v for k, v in faults.items() if k.startswith("injector_k")}}
        return VesselRun(self.asset_id, points, truth, segments, list(self.faults))

    def ground_truth(self, t0_ns: int, run: VesselRun) -> dict[str, Any]:
        """The vessel, its faults and its voyage stretches as a scenario's ``ground_truth.json`` lists them."""
        p = self.params
        return {
            "asset": {"id": self.asset_id, "type": ASSET_TYPE, "seed": self.seed, "params": p.model_dump(),
                      "cylinder_offset_k": [round(float(x), 3) for x in self.cylinder_offset_k],
                      "hull_fouling_0": self.hull_fouling_0, "tc_fouling_0": self.tc_fouling_0},
            "faults": [{"asset": self.asset_id, "kind": f.kind, "start_ns": f.start_ns, "end_ns": f.end_ns,
                        **({"failure_ns": f.end_ns} if f.kind == "shaft_bearing_wear" else {}),
                        "params": f.params()} for f in self.faults],
            "events": [{"asset": self.asset_id, "kind": s.kind, "start_ns": t0_ns + round(s.start_s * _NS),
                        "end_ns": t0_ns + round(s.end_s * _NS),
                        **({"load": round(s.load, 4), "beaufort": s.beaufort} if s.kind == "sea_passage" else {})}
                       for s in run.segments],
        }


def _quantise(v: np.ndarray, quantum: float) -> np.ndarray:
    decimals = max(0, -math.floor(math.log10(quantum)) + 1)
    return np.round(np.round(v / quantum) * quantum, decimals)


# ---------------------------------------------------------------------------------------------------
# Scenarios: the run settings every scenario file shares, plus ``vessels:`` and their ``faults:``


class VesselEntry(NumberedEntry):
    """One vessel (``id``) or ``count`` numbered ones (``{prefix}-001`` …), with their parameters."""

    entry: ClassVar[str] = "vessel"
    prefix: str = "vessel"


class VesselFaultSpec(BaseModel):
    """A fault on one vessel, placed by offset from the scenario start (seconds, or 90s / 15m / 36h / 2d)."""

    model_config = ConfigDict(extra="forbid")
    vessel: str
    kind: FaultKind
    start: Seconds
    duration: Seconds = Field(gt=0)
    cylinder: int | None = Field(None, ge=1, le=len(CYLINDERS))
    bearing: int | None = None
    deviation_k: float = 70.0
    ramp: Seconds = 6 * _H
    fouling_per_day: float = Field(0.12, gt=0)
    growth: float = Field(4.0, gt=0)

    def fault(self, t0_ns: int) -> VesselFault:
        start = t0_ns + round(self.start * _NS)
        return VesselFault(kind=self.kind, start_ns=start, end_ns=start + round(self.duration * _NS),
                           cylinder=self.cylinder, bearing=self.bearing, deviation_k=self.deviation_k,
                           ramp_s=self.ramp, fouling_per_day=self.fouling_per_day, growth=self.growth)


class VesselScenario(ScenarioRun):
    """A fleet of vessels over voyages, with their faults (``twin sim vessels``)."""

    vessels: list[VesselEntry] = Field(min_length=1)
    faults: list[VesselFaultSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _faults_name_vessels(self) -> VesselScenario:
        ids = [a for a, _ in self.assets()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"scenario {self.name}: vessel ids repeat")
        for i, f in enumerate(self.faults):
            if f.vessel not in ids:
                raise ValueError(f"scenario {self.name}: faults[{i}]: unknown vessel {f.vessel!r}")
            try:
                f.fault(0)  # kind-specific checks (an injector names its cylinder) at load, not at run
            except ValueError as exc:
                raise ValueError(f"scenario {self.name}: faults[{i}]: {exc}") from None
        return self

    def assets(self) -> list[tuple[str, VesselParams]]:
        numbered: dict[str, int] = {}
        out = []
        for entry in self.vessels:
            params = VesselParams(**entry.params)
            if entry.id is not None:
                out.append((entry.id, params))
                continue
            assert entry.count is not None
            first = numbered.get(entry.prefix, 0)
            numbered[entry.prefix] = first + entry.count
            out += [(f"{entry.prefix}-{i:03d}", params) for i in range(first + 1, first + entry.count + 1)]
        return out

    def build(self, t0_ns: int) -> list[Vessel]:
        faults: dict[str, list[VesselFault]] = {}
        for f in self.faults:
            faults.setdefault(f.vessel, []).append(f.fault(t0_ns))
        return [Vessel(a, p, asset_seed(self.seed, a), faults.get(a, [])) for a, p in self.assets()]


@dataclass
class VesselScenarioResult:
    runs: list[VesselRun]
    ground_truth: dict[str, Any]
    report: PublishReport | None
    n_readings: int


def load_vessel_scenario(path: Path | str) -> VesselScenario:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return VesselScenario.model_validate(data)


def simulate_vessels(scenario: VesselScenario, t0_ns: int) -> tuple[list[VesselRun], dict[str, Any]]:
    """Every vessel's run and the scenario's ground truth, without publishing or writing anything."""
    vessels = scenario.build(t0_ns)
    runs = [v.simulate(t0_ns, scenario.duration, scenario.sample_period) for v in vessels]
    truth: dict[str, Any] = {
        "scenario": scenario.name, "seed": scenario.seed, "mode": scenario.mode, "start_ns": t0_ns,
        "end_ns": t0_ns + round(scenario.duration * _NS), "sample_period_s": scenario.sample_period,
        "topic_template": scenario.topic_template, "style": scenario.style, "assets": [], "faults": [], "events": []}
    for v, r in zip(vessels, runs, strict=True):
        part = v.ground_truth(t0_ns, r)
        truth["assets"].append(part["asset"])
        truth["faults"] += part["faults"]
        truth["events"] += part["events"]
    return runs, truth


def run_vessel_scenario(scenario: VesselScenario, out_dir: Path | str, *, broker_url: str | None = None,
                        publish: bool = True, on_progress: Callable[[int, int], None] | None = None
                        ) -> VesselScenarioResult:
    """Like ``scenario.run_scenario`` for vessels: ground truth first, then every reading in time order."""
    t0_ns = _start_ns(scenario)  # type: ignore[arg-type]  # reads mode, sample_period and start only
    runs, truth = simulate_vessels(scenario, t0_ns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    series = {(r.asset_id, point): s for r in runs for point, s in r.points.items()}
    n = sum(len(s[0]) for s in series.values())
    broker = broker_url or scenario.broker
    report = None
    if publish and broker:
        report = publish_readings(
            broker, interleave(series), qos=scenario.qos, style=scenario.style,
            topic_template=scenario.topic_template, rate=scenario.rate, realtime=scenario.mode == "realtime",
            on_progress=None if on_progress is None else lambda sent: on_progress(sent, n))
    return VesselScenarioResult(runs, truth, report, n)
