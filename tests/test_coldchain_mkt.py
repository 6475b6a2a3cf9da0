"""Mean kinetic temperature: the domain notes' published examples, interval weighting, the rolling
window, and the property that MKT is never below the time-weighted mean."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.rules.coldchain import hold_durations_ns, mkt_c, rolling_mkt, time_weighted_mean_c

H = 3600 * 10**9
T0 = 1_700_000_000 * 10**9


def test_mkt_of_isopharm_example_is_15_68_not_the_known_wrong_10_10():
    temps, hours = [20.0, 2.0, 25.0], [2, 4, 1]
    assert round(mkt_c(temps, hours), 2) == 15.68
    assert round(time_weighted_mean_c(temps, hours), 2) == 10.43


def test_mkt_of_isopharm_example_from_hourly_readings_matches_the_weighted_form():
    temps = [20.0] * 2 + [2.0] * 4 + [25.0]
    t = T0 + np.arange(7) * H
    assert round(mkt_c(temps, hold_durations_ns(t)), 2) == 15.68


def test_mkt_of_a_constant_25_is_25():
    assert mkt_c([25.0] * 10) == 25.0


def test_mkt_of_hourly_4_4_4_4_16_is_8_11():
    assert round(mkt_c([4.0, 4.0, 4.0, 4.0, 16.0]), 2) == 8.11


def test_uneven_spacing_weights_each_reading_by_how_long_it_held():
    # 20 °C read once and held 2 h, 2 °C held 4 h, then 25 °C hourly (the last holds the median spacing, 1 h).
    t = T0 + np.array([0, 2, 6, 7, 8, 9]) * H
    temps = [20.0, 2.0, 25.0, 25.0, 25.0, 25.0]
    assert hold_durations_ns(t).tolist() == [2 * H, 4 * H, H, H, H, H]
    assert round(mkt_c(temps, hold_durations_ns(t)), 2) == round(mkt_c([20.0, 2.0, 25.0], [2, 4, 4]), 2) == 19.58
    assert round(mkt_c(temps), 2) == 22.70  # unweighted: the 2 °C hours would count once, not four times


def test_last_reading_holds_for_the_median_spacing():
    t = T0 + np.array([0, 60, 120, 600]) * 10**9
    assert hold_durations_ns(t).tolist() == [60 * 10**9, 60 * 10**9, 480 * 10**9, 60 * 10**9]


def test_a_larger_activation_energy_weighs_warm_readings_more():
    temps = [2.0, 2.0, 2.0, 20.0]
    assert round(mkt_c(temps, delta_h_kj_mol=60.0), 2) == 9.48
    assert round(mkt_c(temps), 2) == 10.79
    assert round(mkt_c(temps, delta_h_kj_mol=120.0), 2) == 12.61


def test_frozen_product_does_not_underflow():
    assert round(mkt_c([-80.0, -70.0]), 2) == -72.52


def test_rolling_window_finds_the_warmest_24_hours_and_where_they_lie():
    temps = np.full(72, 5.0)
    temps[30:34] = 20.0  # a 4 h excursion on day two
    t = T0 + np.arange(72) * H
    w = rolling_mkt(t, temps, 24 * 3600)
    assert w.complete
    assert round(w.mkt_c, 2) == round(mkt_c([20.0] * 4 + [5.0] * 20), 2) == 9.98
    assert (w.end_ns - w.start_ns) == 24 * H
    assert w.start_ns <= T0 + 30 * H and w.end_ns >= T0 + 34 * H


def test_rolling_window_longer_than_the_record_covers_the_whole_record():
    t = T0 + np.arange(12) * H
    w = rolling_mkt(t, np.full(12, 6.0), 24 * 3600)
    assert (w.mkt_c, w.start_ns, w.end_ns, w.complete) == (6.0, T0, T0 + 12 * H, False)


temps_st = st.lists(st.floats(-60.0, 60.0, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(temps_st, st.data())
def test_mkt_is_never_below_the_time_weighted_mean(temps, data):
    weights = data.draw(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=len(temps), max_size=len(temps)))
    delta_h = data.draw(st.floats(10.0, 200.0))
    assert mkt_c(temps, weights, delta_h) >= time_weighted_mean_c(temps, weights)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.floats(-30.0, 50.0, allow_nan=False)), min_size=2, max_size=30),
       st.integers(1, 36))
def test_rolling_window_maximum_matches_brute_force_and_is_not_below_its_mean(readings, window_steps):
    step_s = 600  # gaps and window in whole 10-minute steps: the median spacing is a multiple of 5 minutes,
    # so every window edge that can be optimal lies on a 5-minute grid
    gaps, temps = zip(*readings, strict=True)
    window_s = window_steps * step_s
    t = T0 + np.cumsum(np.array((0, *gaps[1:]), np.int64)) * step_s * 10**9
    temps = np.array(temps)
    w = rolling_mkt(t, temps, window_s)
    hold = hold_durations_ns(t)
    end = int(t[-1] + hold[-1])
    if not w.complete:
        return
    best = -np.inf
    for start in range(int(t[0]), end - window_s * 10**9 + 1, step_s // 2 * 10**9):
        stop = start + window_s * 10**9
        overlap = np.minimum(t + hold, stop) - np.maximum(t, start)
        keep = overlap > 0
        best = max(best, mkt_c(temps[keep], overlap[keep]))
    assert abs(w.mkt_c - best) < 1e-9
    overlap = np.minimum(t + hold, w.end_ns) - np.maximum(t, w.start_ns)
    keep = overlap > 0
    assert w.mkt_c >= time_weighted_mean_c(temps[keep], overlap[keep])
