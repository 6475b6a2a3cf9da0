"""The calibrated thermal twin of a refrigerated trailer: learn its constants from its own history,
forecast its supply air with an uncertainty band, and answer what-if questions (compressor off, door
open, hotter day, new setpoint) with the time left before the load leaves its range.

No published thermal time constant for a reefer box exists (domain notes), so it has to be learned.
The model has the structure of the physics (and of ``simulators/trailer.py``): a lumped air node (air,
evaporator, liner) exchanging heat with ambient through the walls, with the cargo node, with ambient
through an open door, and losing heat to the evaporator while the compressor runs; supply air is the
air minus the evaporator's pull, seen through a first-order sensor/evaporator lag::

    dTa/dt = a (T_amb - Ta) + h (Tc - Ta) + d·door (T_amb - Ta) - q·on
    dTc/dt = k (Ta - Tc)
    dTs/dt = (Ta - g·on - Ts) / tau

Temperatures alone fix every heat flow only relative to a heat capacity, so the constants are learned
per unit of the air node's capacity C_a: ``a = UA/C_a``, ``h = H/C_a``, ``k = H/C_cargo``,
``q = Q_cool/C_a``, ``d = UA_door/C_a``; scale-free ratios (``Q_cool/UA`` in K, ``UA_door/UA``) and
watts (given C_a) follow. Fitting is output-error least squares over the whole record (scipy), with the
measured compressor state and door as inputs and the cargo as a hidden state; stretches with heat the
model does not know of (defrost heaters) are left out and the air state is re-read from the sensors
after them. Linear between input changes, so each step is the exact matrix-exponential discretisation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import expm
from scipy.optimize import least_squares
from scipy.signal import lfilter

_NS = 1_000_000_000
PARAMS = ("a", "h", "k", "q", "d", "g", "tau")
"""a, h, k, d in 1/s; q in K/s; g in K; tau in s — see the module docstring."""
_BOUNDS = {"a": (1e-8, 0.1), "h": (1e-8, 0.1), "k": (1e-10, 0.1), "q": (1e-6, 1.0), "d": (1e-9, 0.1),
           "g": (1e-3, 50.0), "tau": (1.0, 3600.0)}
_START = {"a": 1e-4, "h": 1e-4, "k": 1e-5, "q": 3e-3, "d": 1e-4, "g": 2.0, "tau": 100.0}


class ThermalFitError(ValueError):
    """The history cannot be fitted (too short, a point missing); the message says what to supply."""


@dataclass(frozen=True)
class TrailerHistory:
    """One trailer's record on one time grid (the supply-air samples): every input the model needs."""

    t_ns: np.ndarray
    supply_c: np.ndarray
    return_c: np.ndarray
    ambient_c: np.ndarray
    door: np.ndarray  # 0/1
    compressor_on: np.ndarray  # fraction of each sample interval the compressor ran (0, 0.5 at a switch, 1)
    setpoint_c: np.ndarray

    @classmethod
    def from_samples(cls, samples: Mapping[str, Any], off_current_a: float = 1.0) -> TrailerHistory:
        """From point series (``.t_ns``, ``.values``: the store's or the simulator's). The compressor runs
        when point ``compressor_on`` says so, else when its current is at least ``off_current_a``."""
        need = ["supply_air", "return_air", "ambient", "setpoint"]
        missing = [p for p in need if p not in samples]
        if "compressor_on" not in samples and "compressor_current" not in samples:
            missing.append("compressor_current")
        if missing:
            raise ThermalFitError(f"history lacks point(s) {', '.join(missing)}")
        pts = {name: _clean(s) for name, s in samples.items()}
        grid = pts["supply_air"][0]
        door = _held(*pts["door"], grid) if "door" in pts else np.zeros(grid.size)
        if "compressor_on" in pts:
            on = _held(*pts["compressor_on"], grid) >= 0.5
        else:
            on = _held(*pts["compressor_current"], grid) >= off_current_a
        duty = on.astype(float)
        duty[:-1][on[:-1] != on[1:]] = 0.5  # switched somewhere inside the interval: halfway on average
        return cls(grid, pts["supply_air"][1], _held(*pts["return_air"], grid), _held(*pts["ambient"], grid),
                   np.nan_to_num(door) >= 0.5, duty, _held(*pts["setpoint"], grid))

    def window(self, start_ns: int, end_ns: int) -> TrailerHistory:
        keep = (self.t_ns >= start_ns) & (self.t_ns < end_ns)
        return TrailerHistory(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Scenario:
    """A what-if over the forecast horizon; the default is "carry on as now"."""

    compressor_off: bool = False
    door_open_s: float = 0.0  # the door opens now for this long
    ambient_offset_c: float = 0.0
    setpoint_c: float | None = None  # a new setpoint for the thermostat


@dataclass(frozen=True)
class Forecast:
    """Supply air ahead (central and a band), cargo, and the first crossing of the limit, if any."""

    scenario: Scenario
    t_ns: np.ndarray
    supply_c: np.ndarray
    supply_lo_c: np.ndarray
    supply_hi_c: np.ndarray
    air_c: np.ndarray
    cargo_c: np.ndarray
    ambient_c: np.ndarray  # what the forecast assumed
    limit_c: float | None
    excursion_ns: int | None  # central forecast reaches the limit
    earliest_ns: int | None  # the band's warm edge reaches it
    latest_ns: int | None  # the band's cold edge reaches it (None: not within the horizon)

    def time_to_excursion_s(self) -> float | None:
        return None if self.excursion_ns is None else (self.excursion_ns - int(self.t_ns[0])) / _NS


@dataclass
class ThermalModel:
    """Fitted constants (see :data:`PARAMS`), their standard errors, and what a forecast needs."""

    params: dict[str, float]
    stderr: dict[str, float]
    residual_c: float  # RMS of the fit's supply/return residuals
    hysteresis_c: float  # thermostat half-band learned from the switching points
    controls_supply: bool
    cargo_c: float  # hidden cargo temperature at the end of the fitted record
    fitted_until_ns: int
    n_samples: int
    covariance: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    warnings: list[str] = field(default_factory=list)

    # -- what the constants mean -----------------------------------------------------------------
    @property
    def tau_ambient_s(self) -> float:
        """Air node's time constant to ambient, C_a/UA."""
        return 1.0 / self.params["a"]

    @property
    def tau_box_s(self) -> float:
        """Whole box (air + cargo) to ambient, (C_a + C_cargo)/UA: how fast a loaded box drifts."""
        p = self.params
        return (1.0 + p["h"] / p["k"]) / p["a"]

    @property
    def cooling_lift_k(self) -> float:
        """Q_cool/UA: how far below ambient a running compressor could hold the empty box."""
        return self.params["q"] / self.params["a"]

    @property
    def door_ratio(self) -> float:
        """UA_door/UA: an open door leaks this many times the walls' heat."""
        return self.params["d"] / self.params["a"]

    def watts(self, air_heat_capacity_j_per_k: float) -> dict[str, float]:
        """Absolute values once one heat capacity is known (from the box's size and build)."""
        c, p = air_heat_capacity_j_per_k, self.params
        return {"ua_w_per_k": p["a"] * c, "cargo_air_w_per_k": p["h"] * c, "cooling_capacity_w": p["q"] * c,
                "door_ua_w_per_k": p["d"] * c, "cargo_heat_capacity_j_per_k": p["h"] * c / p["k"]}

    def to_dict(self) -> dict[str, Any]:
        """For ``TwinService.merge_model`` (JSON)."""
        return {"kind": "reefer-thermal-v1", "params": self.params, "stderr": self.stderr,
                "residual_c": self.residual_c, "hysteresis_c": self.hysteresis_c,
                "controls_supply": self.controls_supply, "cargo_c": self.cargo_c,
                "fitted_until_ns": self.fitted_until_ns, "n_samples": self.n_samples,
                "covariance": self.covariance.tolist(), "tau_ambient_s": self.tau_ambient_s,
                "tau_box_s": self.tau_box_s, "cooling_lift_k": self.cooling_lift_k, "door_ratio": self.door_ratio,
                "warnings": self.warnings}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThermalModel:
        return cls(dict(d["params"]), dict(d["stderr"]), d["residual_c"], d["hysteresis_c"], d["controls_supply"],
                   d["cargo_c"], d["fitted_until_ns"], d["n_samples"], np.asarray(d["covariance"], float),
                   list(d.get("warnings", [])))

    # -- looking ahead ---------------------------------------------------------------------------
    def state_at_end(self, history: TrailerHistory) -> np.ndarray:
        """[air, cargo, supply] at the end of ``history``: air and supply as measured; the cargo (hidden)
        carried by the model from where the fit left it through whatever the record adds after the fit
        (a record ending before the fit's end takes the cargo as the fit left it)."""
        newer = history.window(self.fitted_until_ns, int(history.t_ns[-1]) + 1)
        cargo = self.cargo_c
        if newer.t_ns.size >= 2:
            cargo = float(_simulate(self.params, newer, _x0(newer, self.cargo_c), None)[-1, 1])
        return np.array([history.return_c[-1], cargo, history.supply_c[-1]])

    def forecast(self, history: TrailerHistory, horizon_s: float, scenario: Scenario | None = None,
                 limit_c: float | None = 8.0, step_s: float = 30.0, band_draws: int = 40,
                 seed: int = 0) -> Forecast:
        """Supply air for ``horizon_s`` after the end of ``history`` under ``scenario``.

        Ambient ahead repeats the last day's curve (or holds the last reading on a shorter record); the
        thermostat runs on the learned hysteresis unless the scenario stops the compressor. The band is
        the 5-95 % spread over parameter draws from the fit's covariance, widened by the residual RMS.
        """
        sc = scenario or Scenario()
        x0 = self.state_at_end(history)
        t_start = int(history.t_ns[-1])
        n = max(1, math.ceil(horizon_s / step_s))
        t_ns = t_start + np.round(np.arange(n + 1) * step_s * _NS).astype(np.int64)
        ambient = _ambient_ahead(history, t_ns) + sc.ambient_offset_c
        door = (t_ns - t_start) < sc.door_open_s * _NS
        setpoint = float(history.setpoint_c[-1]) if sc.setpoint_c is None else sc.setpoint_c
        central = self._run(self.params, x0, ambient, door, setpoint, sc, step_s)
        rng = np.random.default_rng(seed)
        names = list(PARAMS)
        draws = []
        if self.covariance.size and band_draws > 0:
            for row in self._draws(rng, band_draws):
                try:
                    run = self._run(dict(zip(names, np.exp(row), strict=True)), x0, ambient, door, setpoint, sc,
                                    step_s)[:, 2]
                except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                    continue
                if np.isfinite(run).all():
                    draws.append(run)
        spread = np.array(draws) if draws else central[None, :, 2]
        lo = np.minimum(np.percentile(spread, 5, axis=0), central[:, 2]) - 1.645 * self.residual_c
        hi = np.maximum(np.percentile(spread, 95, axis=0), central[:, 2]) + 1.645 * self.residual_c
        return Forecast(sc, t_ns, central[:, 2], lo, hi, central[:, 0], central[:, 1], ambient, limit_c,
                        _crossing(t_ns, central[:, 2], limit_c), _crossing(t_ns, hi, limit_c),
                        _crossing(t_ns, lo, limit_c))

    def _draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` log-parameter draws from the fit's covariance, made valid first: symmetric, negative eigenvalues
        (rounding) at zero, and each draw inside the fit's bounds. A model kept from before ``fit`` pinned the
        parameters at a bound had a log-variance of 10^6 there, whose draws overflowed: no forecast at all
        (the demo's predictive alert, lost on a loaded CI machine)."""
        names = list(PARAMS)
        cov = self.covariance[:7, :7]
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        cov = (v * np.clip(w, 0.0, None)) @ v.T
        logs = rng.multivariate_normal(np.log([self.params[p] for p in names]), cov, n, check_valid="ignore")
        return np.clip(logs, np.log([_BOUNDS[p][0] for p in names]), np.log([_BOUNDS[p][1] for p in names]))

    def _run(self, p: Mapping[str, float], x0: np.ndarray, ambient: np.ndarray, door: np.ndarray,
             setpoint: float, sc: Scenario, step_s: float) -> np.ndarray:
        """Closed-loop run (thermostat with hysteresis) or compressor held off; rows [air, cargo, supply]."""
        mats = {False: _discrete(p, step_s, False), True: _discrete(p, step_s, True)}
        hi, lo = setpoint + self.hysteresis_c, setpoint - self.hysteresis_c
        x = x0.astype(float).copy()
        calling = False
        out = np.empty((ambient.size, 3))
        for i in range(ambient.size):
            out[i] = x
            ctrl = x[2] if self.controls_supply else x[0]
            calling = not sc.compressor_off and (ctrl > hi or (calling and ctrl >= lo))
            phi, gam = mats[bool(door[i])]
            x = phi @ x + gam @ np.array([ambient[i], 1.0 if calling else 0.0])
        return out


def fit(history: TrailerHistory, exclude: Iterable[tuple[int, int]] = (), settle_s: float = 600.0) -> ThermalModel:
    """Learn a trailer's constants from its history: a day sampled every ~10 s (a compressor run lasts
    minutes; at one-minute samples the switching times are too uncertain and cooling comes out low,
    which ``ThermalModel.warnings`` then says).

    ``exclude`` lists (start_ns, end_ns) windows with heat the model does not know of — defrosts
    (``cloud.rules.coldchain.reefer`` recognises them) — which are skipped along with ``settle_s``
    after each, while the supply air's lag settles.
    """
    if history.t_ns.size < 120:
        raise ThermalFitError(f"need at least 120 samples to fit (got {history.t_ns.size}); a day is best")
    for name in ("supply_c", "return_c", "ambient_c", "setpoint_c"):
        if not np.all(np.isfinite(getattr(history, name))):
            raise ThermalFitError(f"history.{name}: missing values (is the point reported from the start?)")
    windows = list(exclude)
    skip = np.zeros(history.t_ns.size, bool)
    reset = np.zeros(history.t_ns.size, bool)
    for a, b in windows:
        skip |= (history.t_ns >= a) & (history.t_ns < b + round(settle_s * _NS))
        after = np.flatnonzero(history.t_ns >= b)
        if after.size:
            reset[after[0]] = True
    names = list(PARAMS)

    def residuals(theta: np.ndarray) -> np.ndarray:
        p = dict(zip(names, np.exp(theta[:7]), strict=True))
        x = _simulate(p, history, _x0(history, theta[7]), reset)
        r = np.concatenate((x[:, 0] - history.return_c, x[:, 2] - history.supply_c))
        return r[np.concatenate((~skip, ~skip))]

    theta0 = np.append(np.log([_START[p] for p in names]), float(np.median(history.return_c)))
    lower = np.append(np.log([_BOUNDS[p][0] for p in names]), -80.0)
    upper = np.append(np.log([_BOUNDS[p][1] for p in names]), 80.0)
    sol = least_squares(residuals, theta0, bounds=(lower, upper), method="trf", x_scale="jac", max_nfev=400)
    r = sol.fun
    rms = float(np.sqrt(np.mean(r**2)))
    # Residuals are autocorrelated (slow model errors sampled often): scale the covariance by the
    # integrated autocorrelation time, i.e. count only effectively independent residuals, or the
    # band would be far too narrow.
    inflate = _autocorrelation_time(r[: r.size // 2]) if r.size > 8 else 1.0
    jtj = sol.jac.T @ sol.jac
    cov = np.linalg.pinv(jtj) * rms**2 * inflate
    # A parameter the data pins at a bound (no coupling to the cargo seen, no door opened) is not identified: its
    # variance from the Jacobian is meaningless (10^6 in log space was seen). It is held at its value in the band.
    pinned = np.flatnonzero((sol.x[:7] - lower[:7] < 1e-3) | (upper[:7] - sol.x[:7] < 1e-3))
    cov[pinned, :] = 0.0
    cov[:, pinned] = 0.0
    params = dict(zip(names, np.exp(sol.x[:7]).tolist(), strict=True))
    stderr = {p: params[p] * math.sqrt(max(cov[i, i], 0.0)) for i, p in enumerate(names)}
    end_state = _simulate(params, history, _x0(history, sol.x[7]), reset)[-1]
    controls_supply = float(np.median(history.setpoint_c)) >= -10.0
    return ThermalModel(params, stderr, rms, _hysteresis(history, controls_supply), controls_supply,
                        float(end_state[1]), int(history.t_ns[-1]), int(history.t_ns.size), cov,
                        _sampling_warnings(history))


# ---------------------------------------------------------------------------------------------------


def _continuous(p: Mapping[str, float], door: bool) -> tuple[np.ndarray, np.ndarray]:
    a, h, k, q, d, g, tau = (p[n] for n in PARAMS)
    dd = d if door else 0.0
    m = np.array([[-(a + h + dd), h, 0.0], [k, -k, 0.0], [1.0 / tau, 0.0, -1.0 / tau]])
    return m, np.array([[a + dd, -q], [0.0, 0.0], [0.0, -g / tau]])


def _modal(p: Mapping[str, float], dt: float, door: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray] | None:
    """Exact zero-order-hold step in eigen-coordinates: (e^{λdt}, V, V⁻¹, Γ), or None when degenerate.

    The system matrix has real eigenvalues (air and cargo exchange heat symmetrically; supply air only
    follows), so Φ = V e^{Λdt} V⁻¹ and Γ = V (e^{Λdt}-1)/Λ V⁻¹ B: cheaper than a general expm.
    """
    m, b = _continuous(p, door)
    lam, vec = np.linalg.eig(m)
    if np.iscomplexobj(lam) or np.min(np.abs(np.subtract.outer(lam, lam)) + np.eye(3)) < 1e-9 * np.abs(lam).max():
        return None
    inv = np.linalg.inv(vec)
    return np.exp(lam * dt), vec, inv, (vec * (np.expm1(lam * dt) / lam)) @ inv @ b


def _discrete(p: Mapping[str, float], dt: float, door: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold step: x' = Φ x + Γ [T_amb, on]."""
    modal = _modal(p, dt, door)
    if modal is not None:
        el, vec, inv, gam = modal
        return (vec * el) @ inv, gam
    m, b = _continuous(p, door)
    full = np.zeros((5, 5))
    full[:3, :3], full[:3, 3:] = m, b
    e = expm(full * dt)
    return e[:3, :3], e[:3, 3:]


def _simulate(p: Mapping[str, float], hist: TrailerHistory, x0: np.ndarray,
              reset: np.ndarray | None) -> np.ndarray:
    """The model driven by the record's own inputs; rows [air, cargo, supply] at each sample.

    Between changes of door state, sample spacing or a reset the model is linear and time-invariant,
    so each stretch runs as three first-order recursions in the model's eigen-coordinates (scipy's
    ``lfilter``, in C) instead of a Python loop per sample: fitting calls this hundreds of times.
    """
    t = hist.t_ns
    n = t.size
    dts = np.append(np.diff(t), 0) / _NS
    u = np.stack((hist.ambient_c, np.asarray(hist.compressor_on, float)), axis=1)
    door = hist.door.astype(bool)
    cut = np.zeros(n, bool)
    cut[0] = True
    cut[1:] |= (door[1:] != door[:-1]) | (dts[1:] != dts[:-1])
    if reset is not None:
        cut |= reset
    starts = [*np.flatnonzero(cut).tolist(), n]
    out = np.empty((n, 3))
    x = np.asarray(x0, float).copy()
    cache: dict[tuple[float, bool], Any] = {}
    for a, b in itertools.pairwise(starts):
        if reset is not None and reset[a]:
            x = np.array([hist.return_c[a], x[1], hist.supply_c[a]])
        key = (float(dts[a]), bool(door[a]))
        if key not in cache:
            cache[key] = _modal(p, *key) or _discrete(p, *key)
        step = cache[key]
        if len(step) == 2:  # degenerate eigenvalues: step plainly
            phi, gam = step
            for i in range(a, b):
                out[i] = x
                x = phi @ x + gam @ u[i]
            continue
        el, vec, inv, gam = step
        w = (u[a:b] @ gam.T) @ inv.T  # inputs in eigen-coordinates, one row per step
        z = np.empty((b - a, 3))
        z[0] = inv @ x
        if b - a > 1:
            powers = el[None, :] ** np.arange(1, b - a)[:, None]
            for j in range(3):
                z[1:, j] = powers[:, j] * z[0, j] + lfilter([1.0], [1.0, -el[j]], w[:-1, j])
        out[a:b] = z @ vec.T
        x = vec @ (el * z[-1] + w[-1])
    return out


def _x0(hist: TrailerHistory, cargo_c: float) -> np.ndarray:
    return np.array([hist.return_c[0], float(cargo_c), hist.supply_c[0]])


def _sampling_warnings(hist: TrailerHistory) -> list[str]:
    """Compressor runs only a few samples long: where inside a sample it switched is unknown, and
    those timing errors bias the fit (at one-minute samples of three-minute runs, cooling comes out
    about half the truth on the simulator)."""
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0.0], np.asarray(hist.compressor_on) > 0.75,
                                                          [0.0])))))[::2]
    if runs.size and float(np.median(runs)) < 10:
        return [f"compressor runs last a median {float(np.median(runs)):g} samples: sample faster (10 s) or "
                "report the compressor state on change, or expect cooling capacity biased low"]
    return []


def _autocorrelation_time(r: np.ndarray) -> float:
    """1 + 2 Σ acf(k), summed until the autocorrelation first drops below zero (Geyer's initial sequence)."""
    x = r - r.mean()
    n = x.size
    spec = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[:n]
    acf = acf / acf[0] if acf[0] > 0 else np.zeros(n)
    negative = np.flatnonzero(acf < 0)
    stop = int(negative[0]) if negative.size else n
    return float(max(1.0, 1.0 + 2.0 * acf[1:stop].sum()))


def _hysteresis(hist: TrailerHistory, controls_supply: bool) -> float:
    """Half the thermostat band: control air where the compressor starts, above the setpoint."""
    ctrl = hist.supply_c if controls_supply else hist.return_c
    on = np.asarray(hist.compressor_on) > 0.75  # fully on (0.5 marks the interval it switched in)
    starts = np.flatnonzero(on[1:] & ~on[:-1])  # the sample before each start
    if starts.size == 0:
        return 1.0
    return float(max(0.1, np.median(ctrl[starts] - hist.setpoint_c[starts])))


def _ambient_ahead(hist: TrailerHistory, t_ns: np.ndarray) -> np.ndarray:
    """Tomorrow looks like today: the reading 24 h before each instant, or the last one."""
    day = 86_400 * _NS
    if hist.t_ns[-1] - hist.t_ns[0] < day:
        return np.full(t_ns.size, float(hist.ambient_c[-1]))
    back = t_ns - day * np.ceil((t_ns - hist.t_ns[-1]) / day).astype(np.int64)
    return np.interp(back.astype(float), hist.t_ns.astype(float), hist.ambient_c)


def _crossing(t_ns: np.ndarray, v: np.ndarray, limit_c: float | None) -> int | None:
    """First instant at or above the limit, interpolated between steps; None if never."""
    if limit_c is None:
        return None
    over = np.flatnonzero(v >= limit_c)
    if over.size == 0:
        return None
    i = int(over[0])
    if i == 0:
        return int(t_ns[0])
    frac = (limit_c - v[i - 1]) / (v[i] - v[i - 1])
    return int(t_ns[i - 1] + round(frac * (t_ns[i] - t_ns[i - 1])))


def _clean(series: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(series.t_ns, np.int64)
    v = np.array([np.nan if x is None else x for x in series.values], float)
    keep = np.isfinite(v)
    quality = getattr(series, "quality", None)
    if quality is not None and len(quality) == len(t):
        keep &= np.asarray(quality) != 2  # models.wire.Quality.BAD
    return t[keep], v[keep]


def _held(t_ns: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(t_ns, grid, side="right") - 1
    out = values[np.clip(idx, 0, None)].astype(float) if t_ns.size else np.full(grid.size, np.nan)
    out[idx < 0] = np.nan
    return out
