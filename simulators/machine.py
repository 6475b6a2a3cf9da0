"""Rotating-machine physics: a motor or pump on rolling bearings that wears out, with the truth known.

Predictive-maintenance rules and the edge's vibration features have to be judged against a bearing
whose defect frequencies, onset and failure time are known; recorded run-to-failure traces give the
failure time but never the onset, and nothing with the geometry we want. So this module simulates:

- **Acceleration blocks** (g, e.g. 25.6 kHz, 1 s) as a DAQ snapshot at any point of the machine's life:
  shaft harmonics (1x imbalance, 2x misalignment, 3x looseness that grows late in life), broadband
  noise, and bearing-defect impulses at BPFO / BPFI / 2·BSF that ring a structural resonance
  (e.g. 4 kHz, damping ratio 5 %). An outer-race defect sits in the load zone, so its impulses are
  steady; an inner-race defect turns with the shaft (amplitude modulated at f_r → sidebands); a ball
  defect turns with the cage (modulated at FTF). Impulse intervals jitter by ~2 % of a period (rolling
  elements slip), and their mean rate can sit ``slip_fraction`` below the geometric line (default 0:
  exactly on it; real bearings run 1-2 % below).
- **Slow points** a PLC or a smart sensor would report every few seconds: bearing temperature,
  motor current and speed, all driven by load and by the same degradation.
- **Degradation**: nothing until ``onset_s``, then an exponential growth of the defect severity
  ``(exp(g·x) - 1)/(exp(g) - 1)`` with ``x`` the fraction of the onset → failure interval, reaching 1 at
  ``failure_s`` — the true failure time, so the true RUL at any t is ``failure_s - t``. With
  ``stop_at_failure`` the machine trips there: speed and current drop to zero and it cools down.

Time ``t_s`` is seconds since the start of the observed life (t0). Everything is deterministic per
seed: a block depends only on (seed, t_s rounded to the millisecond), slow points on (seed, grid).
The raw waveform is not published over MQTT (25.6 k samples/s per axis is a job for the edge, which
computes features from it); scenarios publish the slow points: ``MachineScenario`` is the trailer
scenario YAML plus an optional top-level ``machines:`` list (``twin sim machines``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.wire import Quality
from simulators.devices import interleave, publish_readings
from simulators.scenario import (
    NumberedEntry,
    Scenario,
    ScenarioResult,
    ScenarioRun,
    Seconds,
    _start_ns,
    asset_seed,
    build_trailers,
    ground_truth,
)
from simulators.trailer import simulate_fleet

ASSET_TYPE = "rotating-machine"
SLOW_POINTS: tuple[str, ...] = ("bearing_temp", "motor_current", "speed")
"""The slow points a machine reports (the asset type also lists the edge's vibration features)."""

G = 9.80665
_NS = 1_000_000_000
_DAY_S = 86_400.0
DefectKind = Literal["outer_race", "inner_race", "ball", "none"]


class BearingFrequencies(NamedTuple):
    """Characteristic defect frequencies, Hz, for one shaft speed."""

    ftf: float  # fundamental train (cage)
    bpfo: float  # ball pass, outer race
    bpfi: float  # ball pass, inner race
    bsf: float  # ball spin


def bearing_frequencies(shaft_hz: float, n_balls: int, ball_diameter: float, pitch_diameter: float,
                        contact_angle_deg: float = 0.0) -> BearingFrequencies:
    """FTF, BPFO, BPFI, BSF from geometry (any length unit, the same for both diameters).

    >>> bearing_frequencies(1800 / 60, 8, 10.0, 50.0, 0.0)
    BearingFrequencies(ftf=12.0, bpfo=96.0, bpfi=144.0, bsf=72.0)
    """
    k = ball_diameter / pitch_diameter * math.cos(math.radians(contact_angle_deg))
    return BearingFrequencies(
        ftf=round(shaft_hz / 2 * (1 - k), 12),
        bpfo=round(n_balls * shaft_hz / 2 * (1 - k), 12),
        bpfi=round(n_balls * shaft_hz / 2 * (1 + k), 12),
        bsf=round(pitch_diameter / (2 * ball_diameter) * shaft_hz * (1 - k * k), 12),
    )


class MachineParams(BaseModel):
    """True parameters of one machine; defaults are a ~15 kW, 4-pole, 60 Hz motor-pump set.

    The default bearing is the domain notes' worked example (8 balls, d = 10 mm, D = 50 mm, contact angle 0), so at
    1800 rpm FTF/BPFO/BPFI/BSF are 12/96/144/72 Hz. Amplitudes are in g; healthy vibration is ISO 10816
    zone A/B for a group 2 machine (~1 mm/s RMS), near failure it reaches zone C/D.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Bearing geometry (the asset type has no place for it yet)
    n_balls: int = Field(8, ge=3, description="rolling elements")
    ball_diameter_mm: float = Field(10.0, gt=0)
    pitch_diameter_mm: float = Field(50.0, gt=0)
    contact_angle_deg: float = Field(0.0, ge=0, lt=90)
    # Drive
    sync_rpm: float = Field(1800.0, gt=0, description="synchronous speed (4-pole at 60 Hz)")
    rated_slip: float = Field(0.025, ge=0, lt=0.2, description="speed drop at full load, fraction of sync")
    rated_current_a: float = Field(28.0, gt=0, description="motor current at full load, A")
    magnetising_fraction: float = Field(0.35, ge=0, lt=1, description="no-load current / rated current")
    # Load: a daily cycle around a mean, phase drawn from the seed
    load_mean: float = Field(0.75, ge=0, le=1, description="mean load, fraction of rated")
    load_swing: float = Field(0.15, ge=0, le=1, description="amplitude of the load cycle")
    load_period_s: float = Field(_DAY_S, gt=0)
    # Acceleration block
    sample_rate_hz: float = Field(25_600.0, gt=0)
    block_s: float = Field(1.0, gt=0)
    harmonic_g: tuple[float, float, float] = Field((0.025, 0.010, 0.002), description="1x, 2x, 3x, g")
    noise_g: float = Field(0.02, ge=0, description="broadband noise, g RMS")
    resonance_hz: float = Field(4000.0, gt=0, description="structural resonance the impacts ring")
    damping_ratio: float = Field(0.05, gt=0, lt=1)
    # Defect and degradation
    defect: DefectKind = "outer_race"
    defect_peak_g: float = Field(3.0, ge=0, description="impact peak at failure, full load, g")
    slip_fraction: float = Field(0.0, ge=0, lt=0.1, description="impact rate below the geometric line")
    jitter_fraction: float = Field(0.02, ge=0, lt=0.2, description="impact-to-impact interval jitter, fraction")
    onset_s: float = Field(20 * _DAY_S, ge=0, description="defect appears (severity starts above 0)")
    failure_s: float = Field(30 * _DAY_S, gt=0, description="severity reaches 1: functional failure")
    growth: float = Field(4.0, gt=0, description="exponential shape of the severity curve")
    looseness_gain: float = Field(6.0, ge=0, description="1x-3x amplitude multiplier added at severity 1")
    noise_gain: float = Field(1.0, ge=0, description="broadband noise multiplier added at severity 1")
    stop_at_failure: bool = True
    # Slow points
    ambient_c: float = Field(25.0, description="daily mean ambient, °C")
    ambient_swing_c: float = Field(4.0, ge=0)
    bearing_rise_k: float = Field(30.0, ge=0, description="bearing above ambient at full load, K")
    defect_rise_k: float = Field(25.0, ge=0, description="extra bearing temperature at severity 1, K")
    thermal_tau_s: float = Field(1800.0, gt=0, description="bearing housing time constant, s")
    defect_current_a: float = Field(1.5, ge=0, description="extra current (friction) at severity 1, A")
    noise_c: float = Field(0.1, ge=0)
    noise_a: float = Field(0.15, ge=0)
    noise_rpm: float = Field(0.5, ge=0)
    quantum_c: float = Field(0.1, ge=0)
    quantum_a: float = Field(0.01, ge=0)
    quantum_rpm: float = Field(0.1, ge=0)
    bad_quality_prob: float = Field(1e-4, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> MachineParams:
        if self.failure_s <= self.onset_s:
            raise ValueError("failure_s must be after onset_s")
        if self.ball_diameter_mm >= self.pitch_diameter_mm:
            raise ValueError("ball_diameter_mm must be smaller than pitch_diameter_mm")
        if self.resonance_hz >= self.sample_rate_hz / 2:
            raise ValueError("resonance_hz must be below the Nyquist frequency (sample_rate_hz / 2)")
        return self

    @property
    def block_samples(self) -> int:
        return round(self.sample_rate_hz * self.block_s)


def _quantise(v: np.ndarray, quantum: float) -> np.ndarray:
    if quantum <= 0:
        return v
    decimals = max(0, -math.floor(math.log10(quantum)) + 1)
    return np.round(np.round(v / quantum) * quantum, decimals)


def _lag(x: np.ndarray, alpha: float, y0: float) -> np.ndarray:
    """First-order lag y[i] = a·y[i-1] + (1-a)·x[i]: sequential, so a plain loop over floats."""
    out = np.empty(len(x))
    y, b = y0, 1.0 - alpha
    for i, xi in enumerate(x.tolist()):
        y = alpha * y + b * xi
        out[i] = y
    return out


class Machine:
    """One simulated machine. ``block(t)`` is a vibration snapshot, ``slow_points`` the slow sensors.

    >>> m = Machine("pump-001", MachineParams(), seed=1)
    >>> m.block(25 * 86400.0).shape
    (25600,)
    >>> round(m.true_rul_s(29 * 86400.0))
    86400
    """

    def __init__(self, asset_id: str, params: MachineParams | None = None, seed: int = 0) -> None:
        self.asset_id = asset_id
        self.params = params or MachineParams()
        self.seed = seed
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        self._load_phase = float(rng.uniform(0, 2 * math.pi))
        self._ambient_phase = float(rng.uniform(0, 2 * math.pi))

    # --- truth along the life ---------------------------------------------------------------------

    @property
    def failure_s(self) -> float:
        """Seconds after t0 at which the machine functionally fails (inf for a healthy bearing)."""
        return math.inf if self.params.defect == "none" else self.params.failure_s

    def true_rul_s(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Remaining useful life at ``t_s``: failure time minus t, never below zero."""
        rul = np.maximum(self.failure_s - np.asarray(t_s, float), 0.0)
        return float(rul) if rul.ndim == 0 else rul

    def severity(self, t_s: float | np.ndarray) -> np.ndarray:
        """Defect severity: 0 before onset, 1 at failure, growing exponentially in between (and beyond)."""
        p = self.params
        t = np.asarray(t_s, float)
        if p.defect == "none":
            return np.zeros(t.shape)
        x = np.maximum(t - p.onset_s, 0.0) / (p.failure_s - p.onset_s)
        return np.expm1(p.growth * x) / math.expm1(p.growth)

    def running(self, t_s: float | np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, float)
        return ~(self.params.stop_at_failure & (t >= self.failure_s))

    def load(self, t_s: float | np.ndarray) -> np.ndarray:
        """Load, fraction of rated: a daily cycle (phase from the seed); 0 once tripped."""
        p = self.params
        t = np.asarray(t_s, float)
        cycle = p.load_mean + p.load_swing * np.sin(2 * math.pi * t / p.load_period_s + self._load_phase)
        return np.where(self.running(t), np.clip(cycle, 0.0, 1.0), 0.0)

    def shaft_hz(self, t_s: float | np.ndarray) -> np.ndarray:
        """Shaft speed: synchronous minus slip, which grows with load (and with friction from the defect)."""
        p = self.params
        effective = self.load(t_s) + 0.05 * self.severity(t_s)
        return np.where(self.running(t_s), p.sync_rpm / 60.0 * (1.0 - p.rated_slip * effective), 0.0)

    def defect_hz(self, t_s: float) -> BearingFrequencies:
        """Geometric defect frequencies at the speed the shaft turns at ``t_s``."""
        p = self.params
        return bearing_frequencies(float(self.shaft_hz(t_s)), p.n_balls, p.ball_diameter_mm,
                                   p.pitch_diameter_mm, p.contact_angle_deg)

    # --- acceleration blocks ----------------------------------------------------------------------

    @cached_property
    def _ring(self) -> np.ndarray:
        """One unit impact ringing the resonance down to 1e-3 of its peak."""
        p = self.params
        sigma = p.damping_ratio * 2 * math.pi * p.resonance_hz
        wd = 2 * math.pi * p.resonance_hz * math.sqrt(1 - p.damping_ratio**2)
        tau = np.arange(math.ceil(math.log(1e3) / sigma * p.sample_rate_hz)) / p.sample_rate_hz
        h = np.exp(-sigma * tau) * np.sin(wd * tau)
        return h / np.abs(h).max()

    def _impacts(self, rng: np.random.Generator, t_s: float, f_r: float, amp: float) -> np.ndarray:
        """Impact train convolved with the resonance, for the ``block_samples`` starting at ``t_s``."""
        p = self.params
        n, fs = p.block_samples, p.sample_rate_hz
        ring = self._ring
        tail = len(ring)
        f = self.defect_hz(t_s)
        rate = {"outer_race": f.bpfo, "inner_race": f.bpfi, "ball": 2 * f.bsf}[p.defect] * (1 - p.slip_fraction)
        period = 1.0 / rate
        # Impacts from `tail` samples before the block so the block starts mid-ringing, as a real one does.
        # Slip varies, so impacts wander around their ideal times: an AR(1) deviation (correlation 0.9 from
        # one impact to the next) whose step-to-step change is ``jitter_fraction`` of a period. It smears
        # the envelope's higher harmonics more than the fundamental, as in measured spectra.
        k = np.arange(math.floor(-tail / fs / period) - 1, math.ceil(n / fs / period) + 1)
        rho, memory = 0.9, 64
        spread = p.jitter_fraction / math.sqrt(2 * (1 - rho)) * math.sqrt(1 - rho * rho)
        white = rng.normal(0.0, spread, len(k) + memory - 1)
        deviation = np.convolve(white, rho ** np.arange(memory), mode="valid")
        times = (k + rng.uniform(0, 1) + deviation) * period
        idx = np.round(times * fs).astype(np.int64) + tail
        keep = (idx >= 0) & (idx < n + tail)
        idx, times = idx[keep], times[keep]
        phase = rng.uniform(0, 2 * math.pi)
        if p.defect == "inner_race":  # the defect turns through the load zone once per shaft turn
            amps = amp * (0.5 + 0.5 * np.cos(2 * math.pi * f_r * times + phase))
        elif p.defect == "ball":  # the ball turns with the cage
            amps = amp * (0.5 + 0.5 * np.cos(2 * math.pi * f.ftf * times + phase))
        else:
            amps = np.full(len(idx), amp)
        amps = amps * rng.uniform(0.8, 1.2, len(idx))  # impact strength scatters
        # Sum of shifted rings: sparse impacts make this cheaper than an FFT convolution.
        where = (idx[:, None] + np.arange(tail)).ravel()
        out = np.bincount(where, weights=(amps[:, None] * ring).ravel(), minlength=n + 2 * tail)
        return out[tail:tail + n]

    def block(self, t_s: float) -> np.ndarray:
        """One acceleration block (g) starting at ``t_s`` seconds into the life; vectorised, ~1-2 ms."""
        if t_s < 0:
            raise ValueError("t_s is seconds since t0 and must be >= 0")
        p = self.params
        n, fs = p.block_samples, p.sample_rate_hz
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, round(t_s * 1000))))
        sev = float(self.severity(t_s))
        noise = p.noise_g * (1.0 + p.noise_gain * min(sev, 2.0))
        out = rng.standard_normal(n) * noise
        if not bool(self.running(t_s)):
            return out * 0.2  # tripped: only what the neighbourhood shakes in
        f_r = float(self.shaft_hz(t_s))
        load_factor = 0.25 + float(self.load(t_s))
        # Shaft phase from the block's own start (random): huge arguments would slow sin() down.
        theta = (2 * math.pi * f_r / fs) * np.arange(n) + rng.uniform(0, 2 * math.pi)
        s, c = np.sin(theta), np.cos(theta)
        loose = 1.0 + p.looseness_gain * min(sev, 2.0)
        a1, a2, a3 = p.harmonic_g
        # 1x, 2x, 3x from one sin/cos pair (double and triple angle): imbalance, misalignment, looseness.
        out += a1 * (1 + 0.5 * (loose - 1)) * s
        out += a2 * loose * (2 * s * c * math.cos(0.7) + (1 - 2 * s * s) * math.sin(0.7))
        out += a3 * loose**2 * (3 * s - 4 * s**3)
        if p.defect != "none" and sev > 0:
            out += self._impacts(rng, t_s, f_r, p.defect_peak_g * sev * load_factor)
        return out

    # --- slow points ------------------------------------------------------------------------------

    def slow_truth(self, t_s: np.ndarray) -> dict[str, np.ndarray]:
        """True bearing temperature (°C), motor current (A) and speed (rpm) on a regular grid ``t_s``."""
        p = self.params
        t = np.asarray(t_s, float)
        sev = np.where(self.running(t), np.minimum(self.severity(t), 2.0), 0.0)
        load = self.load(t)
        on = self.running(t)
        ambient = p.ambient_c + p.ambient_swing_c * np.sin(2 * math.pi * t / _DAY_S + self._ambient_phase)
        target = ambient + on * (p.bearing_rise_k * (0.3 + 0.7 * load) + p.defect_rise_k * sev)
        dt = float(t[1] - t[0]) if len(t) > 1 else 1.0
        y0 = float(target[0])  # the machine has been running at its first load for a while
        temp = _lag(target - ambient, math.exp(-dt / p.thermal_tau_s), y0 - float(ambient[0])) + ambient
        active = p.rated_current_a * math.sqrt(1 - p.magnetising_fraction**2) * load
        current = np.where(on, np.hypot(p.rated_current_a * p.magnetising_fraction, active)
                           + p.defect_current_a * sev, 0.0)
        return {"bearing_temp": temp, "motor_current": current, "speed": self.shaft_hz(t) * 60.0,
                "load": load, "severity": sev}

    def slow_points(self, t0_ns: int, duration_s: float, period_s: float = 10.0, *,
                    start_s: float = 0.0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """What the slow sensors report: {point: (t_ns int64, values float64, quality int8)}.

        Samples at life times ``start_s + k·period_s`` for ``k·period_s < duration_s``, stamped
        ``t0_ns + life time``: t0 is when the observed life began.
        """
        if period_s <= 0 or duration_s < period_s:
            raise ValueError("period_s must be positive and duration_s at least one period")
        p = self.params
        n = int(duration_s // period_s)
        t = start_s + np.arange(n) * period_s
        t_ns = t0_ns + np.round(t * _NS).astype(np.int64)
        truth = self.slow_truth(t)
        on = self.running(t)
        ss = np.random.SeedSequence(self.seed, spawn_key=(2, round(start_s * 1000), round(period_s * 1000)))
        rngs = [np.random.default_rng(s) for s in ss.spawn(len(SLOW_POINTS) + 1)]
        flags = rngs[0].random((len(SLOW_POINTS), n)) < p.bad_quality_prob
        spec = {"bearing_temp": (p.noise_c, p.quantum_c), "motor_current": (p.noise_a, p.quantum_a),
                "speed": (p.noise_rpm, p.quantum_rpm)}
        out = {}
        for j, (point, rng) in enumerate(zip(SLOW_POINTS, rngs[1:], strict=True)):
            noise, quantum = spec[point]
            v = truth[point] + (rng.normal(0.0, noise, n) if noise > 0 else 0.0)
            if point != "bearing_temp":  # a tripped machine reads a clean zero
                v = np.where(on, np.maximum(v, 0.0), 0.0)
            quality = np.where(flags[j], Quality.BAD, Quality.GOOD).astype(np.int8)
            out[point] = (t_ns, _quantise(v, quantum), quality)
        return out

    def ground_truth(self, t0_ns: int) -> dict:
        """The asset and its fault as a scenario's ``ground_truth.json`` lists them."""
        p = self.params
        fault = {"asset": self.asset_id, "kind": f"bearing_{p.defect}", "start_ns": t0_ns + round(p.onset_s * _NS),
                 "end_ns": t0_ns + round(p.failure_s * _NS), "failure_ns": t0_ns + round(p.failure_s * _NS),
                 "params": {"growth": p.growth, "defect_hz": self.defect_hz(p.onset_s)._asdict()}}
        return {"asset": {"id": self.asset_id, "type": ASSET_TYPE, "seed": self.seed, "params": p.model_dump()},
                "faults": [] if p.defect == "none" else [fault]}


def velocity_rms_mm_s(block: np.ndarray, sample_rate_hz: float, band_hz: tuple[float, float] = (10.0, 1000.0)
                      ) -> float:
    """Broadband RMS velocity (mm/s) of an acceleration block (g) in the ISO 10816 band, by FFT integration.

    The reference the edge's feature and the ISO zones are checked against.
    """
    n = len(block)
    spec = np.fft.rfft(block * G)
    f = np.fft.rfftfreq(n, 1 / sample_rate_hz)
    inside = (f >= band_hz[0]) & (f <= band_hz[1])
    vel = spec[inside] / (2j * math.pi * f[inside])
    # Parseval on a one-sided spectrum: every bin inside the band is a positive frequency.
    return float(math.sqrt(2 * np.sum(np.abs(vel) ** 2)) / n * 1000.0)


def envelope_spectrum(block: np.ndarray, sample_rate_hz: float, band_hz: tuple[float, float], *, pad: int = 1
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, magnitude) of the squared Hilbert envelope of ``block`` band-passed to ``band_hz``.

    Envelope analysis (Randall & Antoni 2011) by FFT alone: zero the spectrum outside the band and at
    negative frequencies (the analytic signal), back-transform, square the magnitude, transform again
    (Hann-windowed). Magnitudes are amplitudes of the envelope's sinusoidal components. ``pad`` > 1
    zero-pads the last transform: finer bins interpolate the same spectrum (resolution stays 1/block_s).
    """
    n = len(block)
    spec = np.fft.fft(block)
    f = np.fft.fftfreq(n, 1 / sample_rate_hz)
    spec[(f < band_hz[0]) | (f > band_hz[1])] = 0.0  # negative frequencies go too: analytic signal
    env = np.abs(np.fft.ifft(2 * spec)) ** 2
    # Hann window: a line between two bins loses at most 15 % instead of 36 %, so the largest line is the
    # strongest component rather than the one nearest a bin centre.
    window = np.hanning(n)
    mag = np.abs(np.fft.rfft((env - env.mean()) * window, n * pad)) / window.sum()
    return np.fft.rfftfreq(n * pad, 1 / sample_rate_hz), mag


# ---------------------------------------------------------------------------------------------------
# Scenarios with machines: the trailer scenario YAML plus an optional top-level ``machines:`` list


class MachineEntry(NumberedEntry):
    """One machine (``id``) or ``count`` numbered ones (``{prefix}-001`` ...); onset and failure from the
    scenario start (seconds, or 90s / 15m / 36h / 2d), needed unless ``defect`` is none."""

    entry: ClassVar[str] = "machine"
    prefix: str = "pump"
    defect: DefectKind = "none"
    onset: Seconds | None = None
    failure: Seconds | None = None

    @model_validator(mode="after")
    def _check(self) -> MachineEntry:
        if self.defect != "none" and (self.onset is None or self.failure is None):
            raise ValueError(f"machine entry {self.id or self.prefix}: a {self.defect} defect needs onset and failure")
        return self

    def machine_params(self) -> MachineParams:
        extra: dict[str, Any] = {"defect": self.defect}
        if self.onset is not None:
            extra["onset_s"] = self.onset
        if self.failure is not None:
            extra["failure_s"] = self.failure
        return MachineParams(**(self.params | extra))


class MachineScenario(ScenarioRun):
    """A scenario whose fleet may hold trailers (``fleet``/``faults`` as in ``scenario.py``) and machines.

    Machines publish their slow points (bearing_temp, motor_current, speed) every ``machine_period``
    (default ``sample_period``); their raw vibration waveform is NOT published (25.6 k samples/s per axis
    is an edge job). Their bearing faults go into ``ground_truth.json`` with ``failure_ns``.
    """

    machine_period: Seconds | None = None
    fleet: list[dict[str, Any]] = Field(default_factory=list)
    faults: list[dict[str, Any]] = Field(default_factory=list)
    machines: list[MachineEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_assets(self) -> MachineScenario:
        if not self.fleet and not self.machines:
            raise ValueError(f"scenario {self.name}: no trailers (fleet) and no machines")
        if self.fleet:
            self.trailer_scenario()  # validates the trailer part and that asset ids do not repeat there
        ids = [m.asset_id for m in self.build_machines()]
        if self.fleet:
            ids += [a for a, _ in self.trailer_scenario().assets()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"scenario {self.name}: asset ids repeat")
        return self

    def trailer_scenario(self) -> Scenario:
        return Scenario.model_validate(self.model_dump(exclude={"machines", "machine_period"}))

    def build_machines(self) -> list[Machine]:
        numbered: dict[str, int] = {}
        out = []
        for entry in self.machines:
            params = entry.machine_params()
            if entry.id is not None:
                names = [entry.id]
            else:
                assert entry.count is not None
                first = numbered.get(entry.prefix, 0)
                numbered[entry.prefix] = first + entry.count
                names = [f"{entry.prefix}-{i:03d}" for i in range(first + 1, first + entry.count + 1)]
            out += [Machine(name, params, asset_seed(self.seed, name)) for name in names]
        return out


def load_machine_scenario(path: Path | str) -> MachineScenario:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return MachineScenario.model_validate(data)


def run_machine_scenario(scenario: MachineScenario, out_dir: Path | str, *, broker_url: str | None = None,
                         publish: bool = True, on_progress: Callable[[int, int], None] | None = None
                         ) -> ScenarioResult:
    """Like ``scenario.run_scenario``, with machines: one ground truth, one time-ordered publication."""
    t0_ns = _start_ns(scenario)  # type: ignore[arg-type]  # reads mode, sample_period and start only
    series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    runs = []
    if scenario.fleet:
        trailer_sc = scenario.trailer_scenario()
        trailers = build_trailers(trailer_sc, t0_ns)
        runs = simulate_fleet(trailers, t0_ns, scenario.duration, scenario.sample_period, step_s=scenario.step)
        truth = ground_truth(trailer_sc, trailers, runs, t0_ns)
        series |= {(r.asset_id, point): tuple(s) for r in runs for point, s in r.points.items()}  # type: ignore[misc]
    else:
        truth = {"scenario": scenario.name, "seed": scenario.seed, "mode": scenario.mode, "start_ns": t0_ns,
                 "end_ns": t0_ns + round(scenario.duration * _NS), "sample_period_s": scenario.sample_period,
                 "topic_template": scenario.topic_template, "style": scenario.style, "assets": [], "faults": [],
                 "events": []}
    period = scenario.machine_period or scenario.sample_period
    truth["machine_period_s"] = period
    for m in scenario.build_machines():
        part = m.ground_truth(t0_ns)
        truth["assets"].append(part["asset"])
        truth["faults"] += part["faults"]
        series |= {(m.asset_id, p): s for p, s in m.slow_points(t0_ns, scenario.duration, period).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    n = sum(len(s[0]) for s in series.values())
    broker = broker_url or scenario.broker
    report = None
    if publish and broker:
        report = publish_readings(
            broker, interleave(series), qos=scenario.qos, style=scenario.style,
            topic_template=scenario.topic_template, rate=scenario.rate, realtime=scenario.mode == "realtime",
            on_progress=None if on_progress is None else lambda sent: on_progress(sent, n))
    return ScenarioResult(runs, truth, report, n)
