"""The rotating-machine simulator as a specification: bearing kinematics, envelope lines, wear, slow points."""

from __future__ import annotations

import math
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from models.catalogue import load_type
from simulators.machine import (
    SLOW_POINTS,
    Machine,
    MachineParams,
    MachineScenario,
    bearing_frequencies,
    envelope_spectrum,
    load_machine_scenario,
    run_machine_scenario,
    velocity_rms_mm_s,
)
from simulators.scenario import load_scenario, run_scenario

DAY = 86_400.0
FS = 25_600.0
BAND = (3000.0, 5000.0)  # around the default 4 kHz resonance
T0 = 1_748_822_400 * 10**9


def envelope_peak(m: Machine, t_s: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(frequency of the largest envelope line in 20-500 Hz, frequencies, magnitudes in that range)."""
    f, mag = envelope_spectrum(m.block(t_s), FS, BAND, pad=4)  # 0.25 Hz bins: no scalloping loss
    sel = (f >= 20) & (f <= 500)
    return float(f[sel][np.argmax(mag[sel])]), f[sel], mag[sel]


def line_to_floor(f: np.ndarray, mag: np.ndarray, at_hz: float) -> float:
    """Largest magnitude within 1 Hz (the 1 s block's resolution) of ``at_hz``, over the range's median."""
    near = np.abs(f - at_hz) <= 1.0
    return float(mag[near].max() / np.median(mag))


def test_defect_frequencies_match_the_domain_notes_example():
    f = bearing_frequencies(1800 / 60, n_balls=8, ball_diameter=10, pitch_diameter=50, contact_angle_deg=0)
    assert f == (12.0, 96.0, 144.0, 72.0)  # FTF, BPFO, BPFI, BSF
    assert Machine("m", MachineParams()).params.n_balls == 8  # defaults are that bearing


def test_defect_frequencies_match_the_cwru_6205_bearing_multipliers():
    # Case Western's published multiples of shaft speed for the SKF 6205-2RS (9 balls, 7.94 / 39.04 mm);
    # they list the ball fault at 2 x BSF.
    f = bearing_frequencies(1.0, 9, 7.94, 39.04)
    assert (f.bpfi, f.bpfo, f.ftf, 2 * f.bsf) == pytest.approx((5.4152, 3.5848, 0.39828, 4.7135), abs=6e-4)


def test_contact_angle_pulls_the_race_frequencies_together():
    straight, angled = bearing_frequencies(30, 8, 10, 50, 0), bearing_frequencies(30, 8, 10, 50, 40)
    k = 0.2 * math.cos(math.radians(40))
    assert angled.bpfo == pytest.approx(4 * 30 * (1 - k), rel=1e-12)
    assert straight.bpfo < angled.bpfo < angled.bpfi < straight.bpfi


def test_outer_race_fault_is_the_largest_envelope_line_at_bpfo():
    m = Machine("pump-001", MachineParams(), seed=11)
    for t in (22 * DAY, 26 * DAY, 29.5 * DAY):  # early, mid and late in the defect's life
        peak_hz, f, mag = envelope_peak(m, t)
        bpfo = m.defect_hz(t).bpfo
        assert abs(peak_hz - bpfo) <= 1.0, (t / DAY, peak_hz, bpfo)  # 1 s block: resolution 1 Hz
        assert line_to_floor(f, mag, bpfo) > 10


def test_healthy_block_has_no_bpfo_line():
    m = Machine("pump-001", MachineParams(), seed=11)
    for t in (0.0, 5 * DAY, 19.9 * DAY):
        _, f, mag = envelope_peak(m, t)
        assert line_to_floor(f, mag, m.defect_hz(t).bpfo) < 4


def test_inner_race_fault_shows_bpfi_with_shaft_sidebands():
    m = Machine("pump-002", MachineParams(defect="inner_race"), seed=3)
    t = 27 * DAY
    peak_hz, f, mag = envelope_peak(m, t)
    bpfi, f_r = m.defect_hz(t).bpfi, float(m.shaft_hz(t))
    assert abs(peak_hz - bpfi) <= 1.0
    for line in (bpfi - f_r, bpfi + f_r, f_r):
        assert line_to_floor(f, mag, line) > 8, line
    assert line_to_floor(f, mag, m.defect_hz(t).bpfo) < 4


def test_blocks_and_slow_points_are_deterministic_per_seed():
    a, b, c = (Machine("m", MachineParams(), seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.block(25 * DAY), b.block(25 * DAY))
    assert not np.array_equal(a.block(25 * DAY), c.block(25 * DAY))
    assert not np.array_equal(a.block(25 * DAY), a.block(25 * DAY + 60))
    sa, sb = a.slow_points(T0, 3600, 10), b.slow_points(T0, 3600, 10)
    for point in SLOW_POINTS:
        for x, y in zip(sa[point], sb[point], strict=True):
            np.testing.assert_array_equal(x, y)


def test_severity_runs_from_zero_at_onset_to_one_at_failure_and_rul_is_exact():
    p = MachineParams(onset_s=10 * DAY, failure_s=40 * DAY, growth=3.0)
    m = Machine("m", p)
    assert float(m.severity(0.0)) == 0.0 and float(m.severity(10 * DAY)) == 0.0
    assert float(m.severity(40 * DAY)) == pytest.approx(1.0, abs=1e-12)
    assert float(m.severity(25 * DAY)) == pytest.approx(math.expm1(1.5) / math.expm1(3.0), rel=1e-12)
    assert m.failure_s == 40 * DAY
    assert m.true_rul_s(39 * DAY) == DAY and m.true_rul_s(41 * DAY) == 0.0
    np.testing.assert_array_equal(m.true_rul_s(np.array([0.0, 40 * DAY])), [40 * DAY, 0.0])


def test_vibration_grows_monotonically_from_onset_to_failure_at_constant_load():
    m = Machine("m", MachineParams(load_swing=0.0), seed=2)
    times = np.linspace(20 * DAY, 29.99 * DAY, 12)
    rms = np.array([np.sqrt(np.mean(m.block(t) ** 2)) for t in times])
    assert np.all(np.diff(rms) > -0.02 * rms[:-1]), rms  # non-decreasing up to 2 % block-to-block noise
    assert rms[-1] > 10 * rms[0]


def test_vibration_trends_up_over_life_under_a_varying_load():
    m = Machine("m", MachineParams(), seed=4)
    healthy = np.array([np.sqrt(np.mean(m.block(t) ** 2)) for t in np.linspace(0, 19.9 * DAY, 10)])
    assert healthy.max() / healthy.min() < 1.1  # before onset only noise and load move it
    times = np.linspace(21 * DAY, 29.99 * DAY, 30)
    rms = np.array([np.sqrt(np.mean(m.block(t) ** 2)) for t in times])
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(times), rank(rms))[0, 1] > 0.95  # Spearman
    assert rms[-1] > 10 * healthy.mean()


def test_velocity_rms_of_a_pure_tone_is_the_analytic_value():
    t = np.arange(int(FS)) / FS
    block = 0.1 * np.sin(2 * math.pi * 50 * t)  # 0.1 g at 50 Hz
    expected = 0.1 * 9.80665 / (2 * math.pi * 50) / math.sqrt(2) * 1000
    assert velocity_rms_mm_s(block, FS) == pytest.approx(expected, rel=1e-9)


def test_velocity_moves_from_iso_zone_a_to_zone_c_over_life():
    m = Machine("m", MachineParams(), seed=1)
    assert velocity_rms_mm_s(m.block(DAY), FS) < 1.4  # group 2 rigid: A/B at 1.4 mm/s
    assert velocity_rms_mm_s(m.block(29.9 * DAY), FS) > 2.8  # beyond B/C


def test_slow_points_follow_load_and_wear_and_read_zero_once_tripped():
    p = MachineParams(load_swing=0.0, bad_quality_prob=0.0, ambient_swing_c=0.0)
    m = Machine("m", p, seed=9)
    out = m.slow_points(T0, 31 * DAY, 600)
    t_ns, temp, q = out["bearing_temp"]
    assert len(t_ns) == 31 * 144 and t_ns[0] == T0 and np.all(np.diff(t_ns) == 600 * 10**9)
    assert q.dtype == np.int8 and not q.any()
    life = (t_ns - T0) / 1e9
    healthy, worn, tripped = life < 20 * DAY, (life > 29.9 * DAY) & (life < 30 * DAY), life > 30.5 * DAY
    # Steady state: ambient + rise * (0.3 + 0.7 load), plus the defect's friction near failure.
    expected_healthy = p.ambient_c + p.bearing_rise_k * (0.3 + 0.7 * p.load_mean)
    assert np.median(temp[healthy]) == pytest.approx(expected_healthy, abs=0.1)
    assert temp[worn].mean() - expected_healthy == pytest.approx(p.defect_rise_k, rel=0.15)
    rated, mag = p.rated_current_a, p.magnetising_fraction
    current = math.hypot(rated * mag, rated * math.sqrt(1 - mag**2) * p.load_mean)
    assert np.median(out["motor_current"][1][healthy]) == pytest.approx(current, abs=0.05)
    assert np.median(out["speed"][1][healthy]) == pytest.approx(1800 * (1 - 0.025 * 0.75), abs=0.3)
    assert not out["speed"][1][tripped].any() and not out["motor_current"][1][tripped].any()


def test_slow_points_window_later_in_life_matches_the_same_truth():
    m = Machine("m", MachineParams(bad_quality_prob=0.0, noise_c=0, noise_a=0, noise_rpm=0,
                                   quantum_c=0, quantum_a=0, quantum_rpm=0), seed=9)
    late = m.slow_points(T0, 3600, 60, start_s=25 * DAY)
    assert late["speed"][0][0] == T0 + 25 * 86_400 * 10**9
    np.testing.assert_allclose(late["speed"][1], m.shaft_hz(25 * DAY + np.arange(60) * 60.0) * 60, rtol=1e-12)


def test_a_block_takes_a_few_milliseconds():
    m = Machine("m", MachineParams(), seed=1)
    m.block(25 * DAY)
    times = []
    for i in range(30):
        start = time.perf_counter()
        m.block(25 * DAY + i)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.010  # ~2 ms measured on 2 shared cores; a loose bound for busy CI


def test_ground_truth_names_the_fault_window_and_the_failure_time():
    m = Machine("pump-007", MachineParams(onset_s=3600, failure_s=7200), seed=1)
    truth = m.ground_truth(T0)
    (fault,) = truth["faults"]
    assert fault["kind"] == "bearing_outer_race" and fault["asset"] == "pump-007"
    assert (fault["start_ns"], fault["end_ns"], fault["failure_ns"]) == (
        T0 + 3600 * 10**9, T0 + 7200 * 10**9, T0 + 7200 * 10**9)
    assert truth["asset"]["type"] == "rotating-machine"


def test_rotating_machine_asset_type_lists_the_slow_points():
    t = load_type(Path(__file__).parents[1] / "models" / "types" / "rotating_machine.yaml")
    assert t.id == "rotating-machine"
    assert set(SLOW_POINTS) <= set(t.points)
    assert t.points["speed"].unit == "rpm"


SCENARIOS = Path(__file__).parents[1] / "simulators" / "scenarios"


def test_pump_scenario_writes_bearing_faults_with_failure_times(tmp_path):
    sc = load_machine_scenario(SCENARIOS / "pump-bearing-wear.yaml")
    result = run_machine_scenario(sc, tmp_path, publish=False)
    truth = result.ground_truth
    assert [a["id"] for a in truth["assets"]] == ["pump-001", "pump-002", "pump-003"]
    t0 = truth["start_ns"]
    kinds = {f["asset"]: (f["kind"], f["start_ns"] - t0, f["failure_ns"] - t0) for f in truth["faults"]}
    assert kinds == {"pump-001": ("bearing_outer_race", 12 * 86_400 * 10**9, 27 * 86_400 * 10**9),
                     "pump-002": ("bearing_inner_race", 20 * 86_400 * 10**9, 40 * 86_400 * 10**9)}
    assert result.n_readings == 3 * 3 * 30 * 1440  # machines x slow points x minutes
    assert (tmp_path / "ground_truth.json").is_file()


def test_trailer_scenarios_run_unchanged_through_the_machine_runner(tmp_path):
    path = SCENARIOS / "trailer-faults.yaml"
    plain = run_scenario(load_scenario(path), tmp_path / "a", publish=False)
    mixed = run_machine_scenario(load_machine_scenario(path), tmp_path / "b", publish=False)
    assert mixed.n_readings == plain.n_readings
    assert {k: v for k, v in mixed.ground_truth.items() if k != "machine_period_s"} == plain.ground_truth


def test_mixed_fleet_publishes_trailer_and_machine_points_in_time_order(mosquitto, tmp_path):
    prefix = f"mx{uuid.uuid4().hex[:8]}"
    sc = MachineScenario.model_validate({
        "name": "mixed", "seed": 1, "duration": "1h", "sample_period": "60s", "style": "bare",
        "topic_template": prefix + "/{asset}/{point}",
        "fleet": [{"id": "trailer-001"}],
        "machines": [{"id": "pump-001", "defect": "outer_race", "onset": "10m", "failure": "2h"}],
    })
    got: list[str] = []
    done, subscribed = threading.Event(), threading.Event()
    expected = 60 * 6 + 60 * 3  # trailer points + machine slow points, one a minute for an hour

    def on_message(client, userdata, msg) -> None:
        got.append(msg.topic)
        if len(got) >= expected:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{prefix}")
    sub.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        result = run_machine_scenario(sc, tmp_path, broker_url=mosquitto.url)
        assert done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert result.report is not None and result.report.acked == result.n_readings == expected
    assert sum(t.startswith(f"{prefix}/pump-001/") for t in got) == 180
    assert {t.split("/")[2] for t in got if "/pump-001/" in t} == set(SLOW_POINTS)
    assert [f["kind"] for f in result.ground_truth["faults"]] == ["bearing_outer_race"]
