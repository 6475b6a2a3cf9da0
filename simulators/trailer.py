"""Refrigerated-trailer physics: what a reefer's sensors would report, with injected faults and the truth.

The twin has to learn a trailer's thermal constants and the cold-chain rules have to be judged against
faults whose windows are known; recorded traces give neither, so this module simulates them.

Model (all temperatures in °C, heat flows in W, heat capacities in J/K, conductances in W/K)::

    C_air   dT_air/dt   = UA (T_amb - T_air) + H (T_cargo - T_air) + Q_door + Q_heater - Q_cool
    C_cargo dT_cargo/dt = H (T_air - T_cargo)
    Q_door  = UA_door (T_amb - T_air)       while a door is open
    supply air → T_air + (Q_heater - Q_cool) / G   through a first-order evaporator lag

The air node stands for the air, the evaporator and the inner liner; the cargo node for the load. The
linear part is stepped with its exact discretisation (matrix exponential), so any step is stable and a
compressor-failed run follows the analytic exponentials to rounding. A thermostat with hysteresis runs
the compressor on supply air for perishable setpoints and on return air for frozen ones (Carrier T-363).
Defrost follows a timer (Carrier counts compressor run time; a timer keeps the ground truth simple).

The time loop is the only sequential part: inputs, faults and sensor effects are computed as numpy
arrays over the whole run, and the loop steps a whole fleet at once (or plain floats for one trailer,
where numpy's per-call overhead would dominate; the arithmetic, and so every result, is identical).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalogue import get_type
from models.wire import Quality

ASSET_TYPE = "refrigerated-trailer"
POINTS: tuple[str, ...] = tuple(p for p, spec in get_type(ASSET_TYPE).points.items()
                                if spec.kind == "number" and p != "mode")
"""The points a trailer samples, in the catalogue's order; ``mode`` is reported on change (``simulators.obedient``)."""
MODES: tuple[str, ...] = ("start_stop", "continuous")  # by their code on the wire (the type's writable ``mode``)
CONTINUOUS_BAND_C = 0.2  # continuous run modulates instead of cycling: the thermostat's band narrows to this, K

FaultKind = Literal[
    "compressor_failure",
    "compressor_degradation",
    "door_open",
    "power_loss",
    "defrost_stuck",
    "sensor_drift",
    "sensor_stuck",
    "sensor_dropout",
]
SENSOR_FAULTS = frozenset({"sensor_drift", "sensor_stuck", "sensor_dropout"})
_FAULT_DEFAULTS: dict[str, tuple[str, float | bool]] = {
    "compressor_degradation": ("factor", 0.5),
    "sensor_drift": ("rate_per_h", 0.5),
    "power_loss": ("silent", True),
}
_NS = 1_000_000_000
_DAY_S = 86_400.0


class TrailerParams(BaseModel):
    """True physical and sensor parameters of one trailer; defaults are a loaded 13.6 m reefer trailer.

    Calibration and tests read these as the truth the twin should recover.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Control
    setpoint_c: float = Field(4.0, description="thermostat setpoint, °C (chilled ≈ 4, frozen ≈ -20)")
    control: Literal["auto", "supply", "return"] = Field(
        "auto", description="controlled air: auto = supply for setpoints ≥ -10 °C, else return"
    )
    hysteresis_c: float = Field(1.0, gt=0, description="cool above setpoint + h, stop below setpoint - h, K")
    mode: Literal["start_stop", "continuous"] = Field(
        "start_stop", description="start-stop cycles within ±hysteresis; continuous holds ±CONTINUOUS_BAND_C"
    )
    # Thermal
    air_heat_capacity_j_per_k: float = Field(2.0e6, gt=0, description="air, evaporator and liner, J/K")
    cargo_heat_capacity_j_per_k: float = Field(3.5e7, gt=0, description="the load, J/K")
    ua_w_per_k: float = Field(150.0, ge=0, description="insulation conductance box ↔ ambient, W/K")
    cargo_air_w_per_k: float = Field(300.0, ge=0, description="cargo ↔ air exchange, W/K (0 = empty box)")
    cooling_capacity_w: float = Field(10_000.0, ge=0, description="heat removed while the compressor runs, W")
    airflow_w_per_k: float = Field(3600.0, gt=0, description="evaporator fans ṁ·cp (supply/return gap), W/K")
    evaporator_tau_s: float = Field(120.0, gt=0, description="lag of supply air behind its target, s")
    initial_air_c: float | None = Field(None, description="air temperature at t0, °C (None = setpoint)")
    initial_cargo_c: float | None = Field(None, description="cargo temperature at t0, °C (None = setpoint)")
    # Defrost
    defrost_interval_s: float = Field(6 * 3600.0, ge=0, description="between defrost starts, s (0 = never)")
    defrost_first_s: float | None = Field(None, ge=0, description="first start after t0, s (None: interval)")
    defrost_duration_s: float = Field(1500.0, ge=0, description="length of a defrost, s")
    defrost_heat_w: float = Field(1500.0, ge=0, description="heater power reaching the air in defrost, W")
    # Doors
    door_ua_w_per_k: float = Field(400.0, ge=0, description="infiltration conductance, door open, W/K")
    door_openings_per_day: float = Field(0.0, ge=0, description="random deliveries (Poisson), per day")
    door_open_mean_s: float = Field(300.0, gt=0, description="mean length of a random door opening, s")
    # Ambient day curve
    ambient_mean_c: float = Field(25.0, description="daily mean ambient, °C")
    ambient_amplitude_c: float = Field(6.0, ge=0, description="half the daily swing, K")
    ambient_peak_hour_utc: float = Field(15.0, ge=0, lt=24, description="hour of the daily maximum, UTC")
    # Compressor current
    compressor_current_a: float = Field(14.0, ge=0, description="running current at 30 °C ambient, A")
    current_per_ambient_k: float = Field(0.01, description="relative current change per K above 30 °C")
    # Sensors
    noise_c: float = Field(0.05, ge=0, description="temperature sensor noise, standard deviation, K")
    noise_a: float = Field(0.1, ge=0, description="current sensor noise, standard deviation, A")
    quantum_c: float = Field(0.1, ge=0, description="temperature resolution, K (0 = none)")
    quantum_a: float = Field(0.1, ge=0, description="current resolution, A (0 = none)")
    bad_quality_prob: float = Field(1e-4, ge=0, le=1, description="chance a sample is flagged bad")
    gaps_per_day: float = Field(0.0, ge=0, description="random communication gaps (all points), per day")
    gap_mean_s: float = Field(600.0, gt=0, description="mean length of a random gap, s")

    @property
    def controls_supply(self) -> bool:
        return self.control == "supply" or (self.control == "auto" and self.setpoint_c >= -10.0)


class Fault(BaseModel):
    """An injected fault over [start_ns, end_ns) in simulated time; fields beyond the window by kind.

    ``point`` names the sensor for sensor faults; ``factor`` is the capacity multiplier of a
    degradation; ``rate_per_h`` the drift in the point's unit per hour; ``silent`` whether sensors stop
    reporting during a power loss.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    start_ns: int
    end_ns: int
    point: str | None = None
    factor: float | None = Field(None, ge=0)
    rate_per_h: float | None = None
    silent: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") in _FAULT_DEFAULTS:
            name, value = _FAULT_DEFAULTS[data["kind"]]
            if data.get(name) is None:
                data = {**data, name: value}
        return data

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if self.end_ns <= self.start_ns:
            raise ValueError(f"{self.kind}: end_ns must be after start_ns")
        if (self.kind in SENSOR_FAULTS) != (self.point is not None):
            raise ValueError(f"{self.kind}: 'point' is required for sensor faults and only for them")
        if self.point is not None and self.point not in POINTS:
            raise ValueError(f"{self.kind}: unknown point {self.point!r} (points: {', '.join(POINTS)})")
        return self

    def params(self) -> dict[str, str | float | bool]:
        """The kind-specific fields, as the ground truth records them."""
        return self.model_dump(exclude={"kind", "start_ns", "end_ns"}, exclude_none=True)


class Series(NamedTuple):
    """What one sensor reported: parallel arrays, gaps already removed."""

    t_ns: np.ndarray  # int64
    values: np.ndarray  # float64
    quality: np.ndarray  # int8, models.wire.Quality


class Interval(NamedTuple):
    """A normal-operation event (scheduled defrost, random door opening) a rule must not call a fault."""

    kind: str
    start_ns: int
    end_ns: int


@dataclass
class TrailerRun:
    """One trailer's simulated run: the sensors' view, the truth on the sample grid, and the events."""

    asset_id: str
    params: TrailerParams
    t_ns: np.ndarray
    points: dict[str, Series]
    truth: dict[str, np.ndarray]
    events: list[Interval] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


class Trailer:
    """One simulated reefer trailer. ``run`` simulates it alone; ``simulate_fleet`` steps many at once.

    >>> run = Trailer("trailer-001", TrailerParams(setpoint_c=4.0), seed=1).run(0, 3600, 60)
    >>> run.points["supply_air"].values.shape
    (60,)
    """

    def __init__(self, asset_id: str, params: TrailerParams | None = None, seed: int = 0,
                 faults: Sequence[Fault] = ()) -> None:
        self.asset_id = asset_id
        self.params = params or TrailerParams()
        self.seed = seed
        self.faults = list(faults)

    def run(self, t0_ns: int, duration_s: float, sample_period_s: float = 60.0, *,
            step_s: float = 10.0) -> TrailerRun:
        return simulate_fleet([self], t0_ns, duration_s, sample_period_s, step_s=step_s)[0]


# ---------------------------------------------------------------------------------------------------
# Schedules: where each trailer is in defrost, door-open, fault windows (seconds after t0)


@dataclass
class _Schedule:
    defrost: list[tuple[float, float]]
    doors: list[tuple[float, float]]  # random openings plus door_open faults
    failed: list[tuple[float, float]]
    power: list[tuple[float, float]]
    stuck_defrost: list[tuple[float, float]]
    degraded: list[tuple[float, float, float]]  # (start, end, capacity factor)
    events: list[Interval]


def _random_intervals(rng: np.random.Generator, per_day: float, mean_s: float,
                      duration_s: float) -> list[tuple[float, float]]:
    n = int(rng.poisson(per_day * duration_s / _DAY_S))
    starts = np.sort(rng.uniform(0.0, duration_s, n))
    lengths = rng.exponential(mean_s, n)
    return [(float(a), float(a + b)) for a, b in zip(starts, lengths, strict=True)]


def _schedule(tr: Trailer, rng: np.random.Generator, t0_ns: int, duration_s: float) -> _Schedule:
    p = tr.params
    defrost: list[tuple[float, float]] = []
    if p.defrost_interval_s > 0 and p.defrost_duration_s > 0:
        t = p.defrost_interval_s if p.defrost_first_s is None else p.defrost_first_s
        while t < duration_s:
            defrost.append((t, t + p.defrost_duration_s))
            t += p.defrost_interval_s
    doors = _random_intervals(rng, p.door_openings_per_day, p.door_open_mean_s, duration_s)

    def ns(t: float) -> int:
        return t0_ns + round(t * _NS)

    events = [Interval("defrost", ns(a), ns(b)) for a, b in defrost]
    events += [Interval("door_open", ns(a), ns(b)) for a, b in doors]
    events.sort(key=lambda e: e.start_ns)

    def window(f: Fault) -> tuple[float, float]:
        return (f.start_ns - t0_ns) / _NS, (f.end_ns - t0_ns) / _NS

    by = {k: [window(f) for f in tr.faults if f.kind == k] for k in
          ("compressor_failure", "door_open", "power_loss", "defrost_stuck")}
    degraded = [(*window(f), float(f.factor)) for f in tr.faults
                if f.kind == "compressor_degradation" and f.factor is not None]
    return _Schedule(defrost, doors + by["door_open"], by["compressor_failure"], by["power_loss"],
                     by["defrost_stuck"], degraded, events)


def _within(t: np.ndarray, windows: Sequence[tuple[float, ...]]) -> np.ndarray:
    mask = np.zeros(t.shape, bool)
    for w in windows:
        mask |= (t >= w[0]) & (t < w[1])
    return mask


def _ambient_c(p: TrailerParams, t0_ns: int, t_s: np.ndarray) -> np.ndarray:
    day_s = (t0_ns % (86_400 * _NS)) / _NS
    phase = (day_s + t_s - p.ambient_peak_hour_utc * 3600.0) * (2 * math.pi / _DAY_S)
    return p.ambient_mean_c + p.ambient_amplitude_c * np.cos(phase)


@dataclass
class _Inputs:
    """Per-step drivers of one trailer, shape (steps,): everything the thermostat does not decide."""

    ambient_c: np.ndarray
    door_w_per_k: np.ndarray
    heat_w: np.ndarray
    capacity_w: np.ndarray
    defrost: np.ndarray
    door: np.ndarray


def _inputs(p: TrailerParams, s: _Schedule, t0_ns: int, t_s: np.ndarray) -> _Inputs:
    power = _within(t_s, s.power)
    defrost = (_within(t_s, s.defrost) | _within(t_s, s.stuck_defrost)) & ~power
    door = _within(t_s, s.doors)
    capacity = np.full(t_s.shape, p.cooling_capacity_w)
    for a, b, factor in s.degraded:
        capacity[(t_s >= a) & (t_s < b)] *= factor
    capacity[defrost | power | _within(t_s, s.failed)] = 0.0
    return _Inputs(
        ambient_c=_ambient_c(p, t0_ns, t_s),
        door_w_per_k=door * p.door_ua_w_per_k,
        heat_w=defrost * p.defrost_heat_w,
        capacity_w=capacity,
        defrost=defrost,
        door=door,
    )


# ---------------------------------------------------------------------------------------------------
# Plant: exact discretisation of the linear part, then the sequential thermostat loop


def _expm(m: np.ndarray) -> np.ndarray:
    """Matrix exponential of a stack of small matrices (scaling and squaring of a Taylor series)."""
    norm = float(np.abs(m).sum(axis=-1).max(initial=0.0))
    squarings = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0 else 0
    a = m / 2.0**squarings
    eye = np.broadcast_to(np.eye(m.shape[-1]), m.shape)
    out, term = eye.copy(), eye.copy()
    for i in range(1, 20):
        term = term @ a / i
        out = out + term
    for _ in range(squarings):
        out = out @ out
    return out


def _coefficients(params: Sequence[TrailerParams], dt: float) -> dict[str, np.ndarray]:
    """Step coefficients per trailer: x' = Ad x + b_amb T_amb + b_q Q, exact for inputs held over dt."""
    n = len(params)
    m = np.zeros((n, 4, 4))
    for i, p in enumerate(params):
        ca, cc = p.air_heat_capacity_j_per_k, p.cargo_heat_capacity_j_per_k
        ua, h = p.ua_w_per_k, p.cargo_air_w_per_k
        m[i, :2, :] = [[-(ua + h) / ca, h / ca, ua / ca, 1 / ca], [h / cc, -h / cc, 0.0, 0.0]]
    e = _expm(m * dt)
    alpha = np.array([math.exp(-dt / p.evaporator_tau_s) for p in params])
    sp = np.array([p.setpoint_c for p in params])
    hyst = np.array([p.hysteresis_c if p.mode == "start_stop" else min(p.hysteresis_c, CONTINUOUS_BAND_C)
                     for p in params])
    w_supply = np.array([1.0 if p.controls_supply else 0.0 for p in params])
    return {
        "a11": e[:, 0, 0], "a12": e[:, 0, 1], "a21": e[:, 1, 0], "a22": e[:, 1, 1],
        "bamb1": e[:, 0, 2], "bamb2": e[:, 1, 2], "bq1": e[:, 0, 3], "bq2": e[:, 1, 3],
        "alpha": alpha, "beta": 1.0 - alpha,
        "inv_g": np.array([1.0 / p.airflow_w_per_k for p in params]),
        "w_supply": w_supply, "w_return": 1.0 - w_supply, "hi": sp + hyst, "lo": sp - hyst,
    }


def _integrate(k: dict, state: list, cols: Sequence) -> list[list]:
    """Step the plant over the rows of ``cols``; returns the state at the start of each step.

    Written so the same code runs on floats (one trailer) and on arrays (a fleet). ``state`` is
    [T_air, T_cargo, T_supply, calling] and is updated in place for the next chunk.
    """
    a11, a12, a21, a22 = k["a11"], k["a12"], k["a21"], k["a22"]
    bq1, bq2, alpha, beta, inv_g = k["bq1"], k["bq2"], k["alpha"], k["beta"], k["inv_g"]
    w_s, w_r, hi, lo = k["w_supply"], k["w_return"], k["hi"], k["lo"]
    ta, tc, ts, calling = state
    rec_a, rec_c, rec_s, rec_q = [], [], [], []
    for amb, f1, f2, door, heat, cap in zip(*cols, strict=True):
        ctrl = w_s * ts + w_r * ta
        calling = (ctrl > hi) | (calling & (ctrl >= lo))
        cool = calling * cap
        rec_a.append(ta)
        rec_c.append(tc)
        rec_s.append(ts)
        rec_q.append(cool)
        q = heat - cool
        q_air = q + door * (amb - ta)
        ts = alpha * ts + beta * (ta + q * inv_g)
        ta, tc = a11 * ta + a12 * tc + f1 + bq1 * q_air, a21 * ta + a22 * tc + f2 + bq2 * q_air
    state[:] = [ta, tc, ts, calling]
    return [rec_a, rec_c, rec_s, rec_q]


_SCALAR_MAX = 8
"""Up to this many trailers, plain-float loops per trailer beat one numpy loop over the fleet."""
_CHUNK_VALUES = 1 << 21
"""Steps times trailers per chunk of time: bounds memory for big fleets and long runs."""


def _simulate_plants(trailers: Sequence[Trailer], scheds: Sequence[_Schedule], t0_ns: int, n_samples: int,
                     sub: int, dt: float) -> list[dict[str, np.ndarray]]:
    """The truth at each sample instant, per trailer: temperatures, cooling power, ambient, defrost, door."""
    params = [t.params for t in trailers]
    coef = _coefficients(params, dt)
    init_a = np.array([p.setpoint_c if p.initial_air_c is None else p.initial_air_c for p in params])
    init_c = np.array([p.setpoint_c if p.initial_cargo_c is None else p.initial_cargo_c for p in params])
    scalar = len(trailers) <= _SCALAR_MAX
    if scalar:
        coefs = [{name: float(v[i]) for name, v in coef.items()} for i in range(len(trailers))]
        states = [[float(a), float(c), float(a), False] for a, c in zip(init_a, init_c, strict=True)]
    else:
        batch_state = [init_a, init_c, init_a.copy(), np.zeros(len(trailers), bool)]
    names = ("air_c", "cargo_c", "supply_air_c", "cooling_w")
    pieces: list[dict[str, list[np.ndarray]]] = [{} for _ in trailers]
    per_chunk = max(1, _CHUNK_VALUES // (sub * len(trailers)))
    for first in range(0, n_samples, per_chunk):
        t_s = np.arange(first * sub, min(n_samples, first + per_chunk) * sub) * dt
        inputs = [_inputs(p, sc, t0_ns, t_s) for p, sc in zip(params, scheds, strict=True)]
        drivers = [[u.ambient_c, coef["bamb1"][i] * u.ambient_c, coef["bamb2"][i] * u.ambient_c,
                    u.door_w_per_k, u.heat_w, u.capacity_w] for i, u in enumerate(inputs)]
        if scalar:
            recs = [[np.asarray(r[::sub], float) for r in _integrate(k, st, [c.tolist() for c in d])]
                    for k, st, d in zip(coefs, states, drivers, strict=True)]
        else:
            cols = [np.stack(c, axis=1) for c in zip(*drivers, strict=True)]
            rec = [np.asarray(r[::sub], float) for r in _integrate(coef, batch_state, cols)]
            recs = [[r[:, i] for r in rec] for i in range(len(trailers))]
        for piece, rec_i, u in zip(pieces, recs, inputs, strict=True):
            sampled = [*rec_i, u.ambient_c[::sub], u.defrost[::sub], u.door[::sub]]
            for name, values in zip((*names, "ambient_c", "defrost", "door_open"), sampled, strict=True):
                piece.setdefault(name, []).append(values)
    return [{name: np.concatenate(v) for name, v in piece.items()} for piece in pieces]


# ---------------------------------------------------------------------------------------------------
# Sensors: noise, quantisation, sensor faults, gaps and quality flags, vectorised over the run


def _quantise(v: np.ndarray, quantum: float) -> np.ndarray:
    if quantum <= 0:
        return v
    decimals = max(0, -math.floor(math.log10(quantum)) + 1)
    # The second rounding makes 4.300000000000001 print as 4.3 on the wire.
    return np.round(np.round(v / quantum) * quantum, decimals)


def _sense(tr: Trailer, t_ns: np.ndarray, t_s: np.ndarray, truth: dict[str, np.ndarray],
           seeds: Sequence[np.random.SeedSequence]) -> dict[str, Series]:
    p = tr.params
    gap_rng, flag_rng, *point_rngs = (np.random.default_rng(s) for s in seeds)
    silent = _within(t_s, _random_intervals(gap_rng, p.gaps_per_day, p.gap_mean_s, float(t_s[-1]) + 1.0))
    for f in tr.faults:
        if f.kind == "power_loss" and f.silent:
            silent |= (t_ns >= f.start_ns) & (t_ns < f.end_ns)
    flags = flag_rng.random((len(POINTS), len(t_s))) < p.bad_quality_prob
    true_values = {
        "supply_air": (truth["supply_air_c"], p.noise_c, p.quantum_c),
        "return_air": (truth["air_c"], p.noise_c, p.quantum_c),
        "setpoint": (np.full(len(t_s), p.setpoint_c), 0.0, p.quantum_c),
        "door": (truth["door_open"].astype(float), 0.0, 0.0),
        "compressor_current": (truth["compressor_current_a"], p.noise_a, p.quantum_a),
        "ambient": (truth["ambient_c"], p.noise_c, p.quantum_c),
    }
    out: dict[str, Series] = {}
    for j, (point, rng) in enumerate(zip(POINTS, point_rngs, strict=True)):
        true, noise, quantum = true_values[point]
        v = true + rng.normal(0.0, noise, len(t_s)) if noise > 0 else true.copy()
        faults = [f for f in tr.faults if f.point == point]
        for f in faults:
            if f.kind == "sensor_drift":
                inside = (t_ns >= f.start_ns) & (t_ns < f.end_ns)
                v[inside] += float(f.rate_per_h or 0.0) * (t_ns[inside] - f.start_ns) / (3600.0 * _NS)
        if point == "compressor_current":
            v = np.maximum(v, 0.0)
        v = _quantise(v, quantum)
        keep = ~silent
        for f in faults:
            inside = (t_ns >= f.start_ns) & (t_ns < f.end_ns)
            if f.kind == "sensor_stuck" and inside.any():
                v[inside] = v[np.argmax(inside)]
            elif f.kind == "sensor_dropout":
                keep &= ~inside
        quality = np.where(flags[j], Quality.BAD, Quality.GOOD).astype(np.int8)
        out[point] = Series(t_ns[keep], v[keep], quality[keep])
    return out


def simulate_fleet(trailers: Sequence[Trailer], t0_ns: int, duration_s: float, sample_period_s: float = 60.0,
                   *, step_s: float = 10.0) -> list[TrailerRun]:
    """Simulate trailers side by side from ``t0_ns`` for ``duration_s``, sampling every ``sample_period_s``.

    The physics steps at ``sample_period_s / ceil(sample_period_s / step_s)``. Each trailer draws from its
    own seed, so its data do not depend on which other trailers share the batch.
    """
    if sample_period_s <= 0 or step_s <= 0:
        raise ValueError("sample_period_s and step_s must be positive")
    n_samples = int(duration_s // sample_period_s)
    if n_samples < 1:
        raise ValueError(f"duration_s={duration_s} is shorter than one sample period ({sample_period_s} s)")
    sub = max(1, math.ceil(sample_period_s / step_s - 1e-9))
    dt = sample_period_s / sub
    sample_t = np.arange(n_samples) * sample_period_s
    t_ns = t0_ns + np.round(sample_t * _NS).astype(np.int64)

    seeds = [np.random.SeedSequence(tr.seed).spawn(3 + len(POINTS)) for tr in trailers]
    scheds = [_schedule(tr, np.random.default_rng(s[0]), t0_ns, duration_s)
              for tr, s in zip(trailers, seeds, strict=True)]
    truths = _simulate_plants(trailers, scheds, t0_ns, n_samples, sub, dt)

    runs = []
    for tr, sc, truth, s in zip(trailers, scheds, truths, seeds, strict=True):
        p = tr.params
        running = truth["cooling_w"] > 0
        truth["compressor_on"] = running
        truth["compressor_current_a"] = (running * p.compressor_current_a
                                         * (1.0 + p.current_per_ambient_k * (truth["ambient_c"] - 30.0)))
        points = _sense(tr, t_ns, sample_t, truth, s[1:])
        runs.append(TrailerRun(tr.asset_id, p, t_ns, points, truth, sc.events, list(tr.faults)))
    return runs
