"""Edge vibration features as a specification: bearing kinematics, ISO velocity, impulsiveness, envelope lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.vibration import FEATURES, BearingGeometry, VibrationFeatures, bearing_frequencies, realtime_factor
from simulators.machine import G, Machine, MachineParams, velocity_rms_mm_s

FS = 25_600.0
DAY = 86_400.0
BEARING = BearingGeometry(n_balls=8, ball_diameter=10.0, pitch_diameter=50.0, contact_angle_deg=0.0)
T = np.arange(round(FS)) / FS  # one second


def col(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURES.index(name)]


def extractor(**kw) -> VibrationFeatures:
    return VibrationFeatures(FS, BEARING, **kw)


def test_defect_frequencies_match_the_domain_notes_example():
    f = bearing_frequencies(1800 / 60, n_balls=8, ball_diameter=10.0, pitch_diameter=50.0, contact_angle_deg=0.0)
    assert (f.ftf, f.bpfo, f.bpfi, f.bsf) == (12.0, 96.0, 144.0, 72.0)  # exactly, no rounding


def test_contact_angle_enters_through_cos_alpha():
    k = 10.0 / 50.0 * math.cos(math.radians(40.0))
    f = bearing_frequencies(30.0, 8, 10.0, 50.0, 40.0)
    assert f.bpfo == pytest.approx(8 * 30.0 / 2 * (1 - k), rel=1e-14)
    assert f.bpfi == pytest.approx(8 * 30.0 / 2 * (1 + k), rel=1e-14)
    assert f.ftf == pytest.approx(30.0 / 2 * (1 - k), rel=1e-14)
    assert f.bsf == pytest.approx(50.0 / (2 * 10.0) * 30.0 * (1 - k * k), rel=1e-14)


def test_impossible_geometry_is_refused():
    with pytest.raises(ValueError, match="below the pitch diameter"):
        bearing_frequencies(30.0, 8, 60.0, 50.0)


def test_velocity_rms_of_a_sine_equals_the_analytic_value():
    amplitude = 10.0  # m/s² peak
    block = amplitude * np.sin(2 * np.pi * 159.3 * T + 0.3)[None, :]
    expected = amplitude / (2 * np.pi * 159.3) / math.sqrt(2) * 1000.0  # mm/s RMS: 7.0646
    assert col(extractor().compute(block, 30.0), "velocity_rms_mm_s")[0] == pytest.approx(expected, rel=1e-3)


def test_velocity_rms_is_within_1_percent_for_any_sine_in_the_band():
    freqs = np.array([10.5, 12.3, 20.7, 55.5, 100.0, 333.3, 612.8, 987.0, 995.5])
    phases = np.linspace(0.0, np.pi, 7)
    block = np.array([10.0 * np.sin(2 * np.pi * f * T + p) for f in freqs for p in phases])
    expected = np.repeat(10.0 / (2 * np.pi * freqs) / math.sqrt(2) * 1000.0, len(phases))
    got = col(extractor().compute(block, 30.0), "velocity_rms_mm_s")
    assert np.max(np.abs(got / expected - 1.0)) < 0.01


def test_velocity_band_excludes_what_lies_outside_10_to_1000_hz():
    block = (10.0 * np.sin(2 * np.pi * 5.0 * T) + 10.0 * np.sin(2 * np.pi * 2000.0 * T))[None, :]
    assert col(extractor().compute(block, 30.0), "velocity_rms_mm_s")[0] == pytest.approx(0.0, abs=1e-9)


def test_velocity_rms_agrees_with_the_simulators_reference():
    m = Machine("pump-001", MachineParams(), seed=3)
    for t in (2 * DAY, 27 * DAY):
        block_g = m.block(t)
        got = col(extractor().compute(block_g * G, m.shaft_hz(t)), "velocity_rms_mm_s")[0]
        # the reference has no window: a shaft line between bins leaks up to 2 % there
        assert got == pytest.approx(velocity_rms_mm_s(block_g, FS), rel=0.03)


def test_crest_factor_and_kurtosis_of_a_sine():
    block = 3.0 * np.sin(2 * np.pi * 100.0 * T)[None, :]  # 256 samples a period: a sample sits on each peak
    f = extractor().compute(block, 30.0)
    assert col(f, "crest_factor")[0] == pytest.approx(math.sqrt(2), rel=1e-12)
    assert col(f, "kurtosis")[0] == pytest.approx(1.5, rel=1e-12)
    assert col(f, "accel_rms")[0] == pytest.approx(3.0 / math.sqrt(2), rel=1e-12)
    assert col(f, "accel_peak")[0] == pytest.approx(3.0, rel=1e-12)


def test_kurtosis_of_gaussian_noise_is_three_and_an_offset_changes_nothing():
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 2.0, (4, 25_600 * 4))
    k = col(extractor().compute(noise, 30.0), "kurtosis")
    assert np.all(np.abs(k - 3.0) < 0.1), k  # sd of the estimate is sqrt(24 / n) = 0.015
    shifted = extractor().compute(noise + 9.81, 30.0)  # a MEMS sensor's gravity offset
    np.testing.assert_allclose(shifted[:, 1:5], extractor().compute(noise, 30.0)[:, 1:5], rtol=1e-9)


def test_channels_are_independent_rows_of_one_batch():
    rng = np.random.default_rng(1)
    block = rng.normal(0.0, 1.0, (3, 25_600))
    block[1, ::267] += 15.0
    ex = extractor()
    batch = ex.compute(block, np.array([29.0, 29.5, 30.0]))
    for c, shaft in enumerate((29.0, 29.5, 30.0)):
        np.testing.assert_array_equal(batch[c], ex.compute(block[c:c + 1], shaft)[0])


def _outer_race_block(rng: np.random.Generator, bpfo_hz: float, resonance_hz: float = 5000.0) -> np.ndarray:
    """Impacts at BPFO (1 % jitter) ringing a resonance, shaft harmonics and broadband noise, m/s²."""
    x = 0.5 * np.sin(2 * np.pi * 30.0 * T) + 0.3 * rng.normal(size=T.size)
    ring_t = np.arange(256) / FS
    ring = np.exp(-2 * np.pi * 0.05 * resonance_hz * ring_t) * np.sin(2 * np.pi * resonance_hz * ring_t)
    period = FS / bpfo_hz
    for k in range(int(T.size / period)):
        i = round(k * period + rng.normal(0.0, 0.01 * period))
        if 0 <= i < T.size - ring.size:
            x[i:i + ring.size] += 4.0 * ring
    return x


def test_synthetic_outer_race_fault_is_found_at_bpfo_in_its_resonance_band():
    rng = np.random.default_rng(5)
    bpfo = bearing_frequencies(30.0, *BEARING).bpfo
    f = extractor().compute(_outer_race_block(rng, bpfo)[None, :], 30.0)
    assert abs(col(f, "band_center_hz")[0] - 5000.0) <= 800.0  # spectral kurtosis found the ringing band
    others = max(col(f, "env_bpfi")[0], col(f, "env_bsf")[0], col(f, "env_ftf")[0])
    assert col(f, "env_bpfo")[0] > 0.5
    assert col(f, "env_bpfo")[0] > 3 * others  # 3 x BPFO = 288 Hz = 2 x BPFI on this bearing: BPFI shares it


def test_simulated_outer_race_fault_dominates_the_envelope_at_bpfo():
    m = Machine("pump-001", MachineParams(defect="outer_race"), seed=11)
    t = np.array([22.0, 26.0, 29.5]) * DAY  # early, mid and late in the defect's life
    f = extractor().compute(np.vstack([m.block(ti) * G for ti in t]), m.shaft_hz(t))
    bpfo = col(f, "env_bpfo")
    assert np.all(bpfo > 0.3), bpfo
    assert np.all(bpfo > 3 * np.maximum(col(f, "env_bpfi"), col(f, "env_bsf"))), f[:, 7:]


def test_simulated_inner_race_fault_shows_at_bpfi_not_bpfo():
    m = Machine("pump-002", MachineParams(defect="inner_race"), seed=11)
    t = np.array([22.0, 26.0, 29.5]) * DAY
    f = extractor().compute(np.vstack([m.block(ti) * G for ti in t]), m.shaft_hz(t))
    assert np.all(col(f, "env_bpfi") > 2.5 * col(f, "env_bpfo")), f[:, 7:]


def test_healthy_bearing_has_no_defect_line_and_low_kurtosis():
    m = Machine("pump-003", MachineParams(defect="none"), seed=11)
    t = np.array([1.0, 15.0, 29.0]) * DAY
    f = extractor().compute(np.vstack([m.block(ti) * G for ti in t]), m.shaft_hz(t))
    assert np.all(f[:, 7:] < 0.06), f[:, 7:]
    assert np.all(col(f, "kurtosis") < 3.5)


def test_a_fixed_demodulation_band_is_used_as_given():
    rng = np.random.default_rng(5)
    block = _outer_race_block(rng, 96.0)[None, :]
    f = extractor(band_hz=(4000.0, 6000.0)).compute(block, 30.0)
    assert col(f, "band_center_hz")[0] == pytest.approx(5000.0, abs=0.5)
    assert col(f, "env_bpfo")[0] > 0.4


def test_four_channels_at_25_6_khz_run_at_least_20_times_real_time_on_one_core():
    assert realtime_factor(channels=4, sample_rate_hz=FS, blocks=10) >= 20.0
