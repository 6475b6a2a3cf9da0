"""The trailer simulator as a specification: its physics, its faults and its sensors, no servers needed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from simulators import trailer as trailer_module
from simulators.trailer import Fault, Trailer, TrailerParams, simulate_fleet

T0 = 1_748_822_400 * 10**9  # 2025-06-02T00:00Z
H = 3600 * 10**9
CLEAN = {"noise_c": 0.0, "noise_a": 0.0, "quantum_c": 0.0, "quantum_a": 0.0, "bad_quality_prob": 0.0}
STILL = {"ambient_amplitude_c": 0.0, "ambient_mean_c": 30.0, "defrost_interval_s": 0.0}


def failed_run(params: TrailerParams, hours: float, period_s: float = 60.0, **extra_faults: int):
    faults = [Fault(kind="compressor_failure", start_ns=T0, end_ns=T0 + round(hours * H))]
    if extra_faults.get("door"):
        faults.append(Fault(kind="door_open", start_ns=T0, end_ns=T0 + round(hours * H)))
    return Trailer("t", params, seed=1, faults=faults).run(T0, hours * 3600, period_s)


def elapsed_s(run) -> np.ndarray:
    return (run.t_ns - T0) / 1e9


def test_failed_compressor_empty_box_warms_with_time_constant_c_air_over_ua():
    p = TrailerParams(setpoint_c=4.0, cargo_air_w_per_k=0.0, **STILL, **CLEAN)
    run = failed_run(p, 24)
    tau = p.air_heat_capacity_j_per_k / p.ua_w_per_k
    expected = 30.0 + (4.0 - 30.0) * np.exp(-elapsed_s(run) / tau)
    np.testing.assert_allclose(run.truth["air_c"], expected, rtol=0, atol=1e-9)
    fitted = -1 / np.polyfit(elapsed_s(run), np.log((30.0 - run.truth["air_c"]) / 26.0), 1)[0]
    assert fitted == pytest.approx(tau, rel=1e-6)


def test_failed_compressor_loaded_box_follows_the_two_mass_solution():
    p = TrailerParams(setpoint_c=4.0, **STILL, **CLEAN)
    run = failed_run(p, 72)
    ca, cc, ua, h = (p.air_heat_capacity_j_per_k, p.cargo_heat_capacity_j_per_k, p.ua_w_per_k,
                     p.cargo_air_w_per_k)
    # Closed form: eigenvalues of the 2x2 system, modes fitted to the initial gap to ambient.
    tr, det = -(ua + h) / ca - h / cc, ua * h / (ca * cc)
    lam = np.array([(tr + math.sqrt(tr * tr - 4 * det)) / 2, (tr - math.sqrt(tr * tr - 4 * det)) / 2])
    modes = np.array([[h / ca, h / ca], lam + (ua + h) / ca])  # columns are eigenvectors
    c = np.linalg.solve(modes, [4.0 - 30.0, 4.0 - 30.0])
    gap = modes @ (c[:, None] * np.exp(lam[:, None] * elapsed_s(run)[None, :]))
    np.testing.assert_allclose(run.truth["air_c"], 30.0 + gap[0], atol=1e-6)
    np.testing.assert_allclose(run.truth["cargo_c"], 30.0 + gap[1], atol=1e-6)
    # After the fast mode has died out the cargo approaches ambient with the slow time constant.
    late = elapsed_s(run) > 24 * 3600
    slope = np.polyfit(elapsed_s(run)[late], np.log(30.0 - run.truth["cargo_c"][late]), 1)[0]
    assert slope == pytest.approx(lam[0], rel=1e-3)
    # ≈ the cargo's capacity behind the exchange and the insulation in series
    assert -1 / lam[0] == pytest.approx(cc * (1 / ua + 1 / h), rel=0.05)


def test_open_door_raises_air_temperature_at_door_conductance_times_gap_over_c_air():
    p = TrailerParams(setpoint_c=4.0, **STILL, **CLEAN)
    closed, opened = failed_run(p, 1, period_s=10), failed_run(p, 1, period_s=10, door=1)
    rate = (opened.truth["air_c"][1] - closed.truth["air_c"][1]) / 10.0
    expected = p.door_ua_w_per_k * (30.0 - 4.0) / p.air_heat_capacity_j_per_k
    assert rate == pytest.approx(expected, rel=0.01)
    assert opened.points["door"].values.min() == 1.0


def _outside_defrost_and_recovery(run) -> np.ndarray:
    """Samples outside defrosts and the pull-down until the compressor first stops after each."""
    keep = np.ones(len(run.t_ns), bool)
    defrost, on = run.truth["defrost"], run.truth["compressor_on"]
    i = 0
    while i < len(defrost):
        if defrost[i]:
            j = i
            while j < len(defrost) and (defrost[j] or on[j]):
                j += 1
            keep[i:j] = False
            i = j
        i += 1
    return keep


@pytest.mark.parametrize(("setpoint_c", "controlled"), [(4.0, "supply_air_c"), (-20.0, "air_c")])
def test_thermostat_holds_controlled_air_within_setpoint_plus_minus_hysteresis(setpoint_c, controlled):
    p = TrailerParams(setpoint_c=setpoint_c)
    run = Trailer("t", p, seed=3).run(T0, 3 * 86400, 60)
    air = run.truth[controlled][_outside_defrost_and_recovery(run)]
    step_overshoot = 0.15  # the thermostat acts once per 10 s step; the air moves < 0.15 K in one
    assert air.min() >= setpoint_c - p.hysteresis_c - step_overshoot
    assert air.max() <= setpoint_c + p.hysteresis_c + step_overshoot
    assert air.max() - air.min() > 2 * p.hysteresis_c - 0.2  # it really cycles across the band
    assert run.truth["compressor_on"].mean() == pytest.approx(0.3 if setpoint_c > 0 else 0.7, abs=0.1)


def test_defrost_cycles_start_at_the_configured_period_and_warm_the_supply_air():
    p = TrailerParams(setpoint_c=4.0, defrost_interval_s=4 * 3600, defrost_first_s=3600,
                      defrost_duration_s=1500)
    run = Trailer("t", p, seed=4).run(T0, 2 * 86400, 60)
    d = run.truth["defrost"].astype(int)
    starts = (run.t_ns[np.flatnonzero(np.diff(d) == 1) + 1] - T0) / H
    np.testing.assert_array_equal(starts, np.arange(1, 48, 4))
    assert [(e.start_ns - T0) / H for e in run.events if e.kind == "defrost"] == list(np.arange(1, 48, 4))
    current = run.points["compressor_current"]
    for s in starts:
        window = (run.t_ns >= T0 + s * H) & (run.t_ns < T0 + s * H + 1500 * 10**9)
        assert run.truth["supply_air_c"][window].max() > p.setpoint_c + p.hysteresis_c + 1.0
        in_window = (current.t_ns >= T0 + s * H) & (current.t_ns < T0 + s * H + 1500 * 10**9)
        assert current.values[in_window].max() < 0.5  # compressor off: only noise around zero


def test_same_seed_gives_identical_readings_and_another_seed_other_noise():
    p = TrailerParams(door_openings_per_day=6, gaps_per_day=2, bad_quality_prob=0.01)
    a, b, c = (Trailer("t", p, seed=s).run(T0, 86400, 60) for s in (11, 11, 12))
    for point in a.points:
        for x, y in zip(a.points[point], b.points[point], strict=True):
            np.testing.assert_array_equal(x, y)
    assert a.events == b.events
    assert not np.array_equal(a.points["return_air"].values[:100], c.points["return_air"].values[:100])


def test_a_trailer_gives_the_same_data_alone_or_in_a_fleet():
    trailers = [Trailer(f"t{i}", TrailerParams(setpoint_c=(4.0, -20.0)[i % 2]), seed=i) for i in range(10)]
    fleet = simulate_fleet(trailers, T0, 86400, 60)  # ten trailers: stepped as one numpy batch
    for tr, together in zip(trailers, fleet, strict=True):
        alone = tr.run(T0, 86400, 60)
        for key in alone.truth:
            np.testing.assert_array_equal(alone.truth[key], together.truth[key])
        np.testing.assert_array_equal(alone.points["supply_air"].values, together.points["supply_air"].values)


def test_stuck_sensor_repeats_one_value_over_its_window_only():
    f = Fault(kind="sensor_stuck", point="supply_air", start_ns=T0 + 2 * H, end_ns=T0 + 5 * H)
    s = Trailer("t", TrailerParams(), seed=5, faults=[f]).run(T0, 8 * 3600, 60).points["supply_air"]
    inside = (s.t_ns >= f.start_ns) & (s.t_ns < f.end_ns)
    assert inside.sum() == 180 and np.unique(s.values[inside]).size == 1
    assert np.unique(s.values[~inside]).size > 10


def test_sensor_drift_offset_grows_linearly_at_its_rate():
    f = Fault(kind="sensor_drift", point="return_air", start_ns=T0 + H, end_ns=T0 + 5 * H, rate_per_h=0.8)
    run = Trailer("t", TrailerParams(**CLEAN), seed=6, faults=[f]).run(T0, 6 * 3600, 60)
    offset = run.points["return_air"].values - run.truth["air_c"]
    inside = (run.t_ns >= f.start_ns) & (run.t_ns < f.end_ns)
    expected = np.where(inside, 0.8 * (run.t_ns - f.start_ns) / H, 0.0)
    np.testing.assert_allclose(offset, expected, atol=1e-12)


def test_sensor_dropout_removes_samples_of_its_point_in_its_window():
    f = Fault(kind="sensor_dropout", point="ambient", start_ns=T0 + H, end_ns=T0 + 2 * H)
    run = Trailer("t", TrailerParams(bad_quality_prob=0.0), seed=7, faults=[f]).run(T0, 3 * 3600, 60)
    t = run.points["ambient"].t_ns
    assert len(t) == 180 - 60 and not ((t >= f.start_ns) & (t < f.end_ns)).any()
    assert len(run.points["supply_air"].t_ns) == 180


def test_power_loss_stops_cooling_and_silences_every_sensor():
    f = Fault(kind="power_loss", start_ns=T0 + H, end_ns=T0 + 3 * H)
    run = Trailer("t", TrailerParams(), seed=8, faults=[f]).run(T0, 4 * 3600, 60)
    inside = (run.t_ns >= f.start_ns) & (run.t_ns < f.end_ns)
    assert not run.truth["compressor_on"][inside].any()
    assert run.truth["air_c"][inside][-1] > run.truth["air_c"][inside][0] + 2.0
    for s in run.points.values():
        assert not ((s.t_ns >= f.start_ns) & (s.t_ns < f.end_ns)).any()


def test_compressor_failure_reads_zero_current_and_degradation_scales_capacity():
    failed = Fault(kind="compressor_failure", start_ns=T0 + H, end_ns=T0 + 3 * H)
    worn = Fault(kind="compressor_degradation", start_ns=T0 + 4 * H, end_ns=T0 + 12 * H, factor=0.4)
    p = TrailerParams(**CLEAN)
    run = Trailer("t", p, seed=9, faults=[failed, worn]).run(T0, 12 * 3600, 60)
    cur = run.points["compressor_current"]
    assert cur.values[(cur.t_ns >= failed.start_ns) & (cur.t_ns < failed.end_ns)].max() == 0.0
    in_worn = (run.t_ns >= worn.start_ns) & run.truth["compressor_on"]
    assert in_worn.any()
    np.testing.assert_array_equal(run.truth["cooling_w"][in_worn], 0.4 * p.cooling_capacity_w)


def test_defrost_stuck_keeps_the_heater_on_and_the_compressor_off_for_its_window():
    f = Fault(kind="defrost_stuck", start_ns=T0 + 2 * H, end_ns=T0 + 4 * H)
    run = Trailer("t", TrailerParams(defrost_interval_s=0), seed=10, faults=[f]).run(T0, 5 * 3600, 60)
    inside = (run.t_ns >= f.start_ns) & (run.t_ns < f.end_ns)
    assert run.truth["defrost"][inside].all() and not run.truth["defrost"][~inside].any()
    assert not run.truth["compressor_on"][inside].any()
    assert run.truth["supply_air_c"][inside].max() > 10.0


def test_temperatures_and_current_are_quantised_to_their_resolution():
    run = Trailer("t", TrailerParams(), seed=2).run(T0, 86400, 60)
    for point in ("supply_air", "return_air", "ambient", "compressor_current", "setpoint"):
        tenths = run.points[point].values * 10
        np.testing.assert_array_equal(tenths, np.round(tenths))
        assert all(len(repr(v).split(".")[1]) == 1 for v in run.points[point].values[:200].tolist())


def test_rare_bad_quality_flags_and_gaps_appear_at_their_rates():
    p = TrailerParams(bad_quality_prob=0.01, gaps_per_day=3, gap_mean_s=1200)
    run = Trailer("t", p, seed=13).run(T0, 7 * 86400, 60)
    s = run.points["return_air"]
    assert np.mean(s.quality == 2) == pytest.approx(0.01, rel=0.25)
    assert set(np.unique(s.quality).tolist()) == {0, 2}
    missing = 1 - len(s.t_ns) / len(run.t_ns)
    assert missing == pytest.approx(3 * 7 * 1200 / (7 * 86400), rel=0.6)


def test_a_week_at_one_sample_per_minute_simulates_in_well_under_a_second():
    trailer = Trailer("t", TrailerParams(), seed=1)
    start = time.perf_counter()
    run = trailer.run(T0, 7 * 86400, 60)
    seconds = time.perf_counter() - start
    assert len(run.t_ns) == 7 * 1440
    assert seconds < 1.0, f"a simulated week took {seconds:.2f} s"


def test_stepping_in_chunks_of_time_changes_nothing(monkeypatch):
    trailer = Trailer("t", TrailerParams(door_openings_per_day=8), seed=14)
    whole = trailer.run(T0, 86400, 60)
    monkeypatch.setattr(trailer_module, "_CHUNK_VALUES", 6 * 97)  # 97 samples a chunk
    chunked = trailer.run(T0, 86400, 60)
    for key in whole.truth:
        np.testing.assert_array_equal(whole.truth[key], chunked.truth[key])
