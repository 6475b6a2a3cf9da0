"""Excursion counting and verdicts: the domain notes' WHO and FSANZ checks, and the logger semantics
(single vs cumulative, inclusive limits, hold until the next reading, re-firing) one behaviour per test."""

from __future__ import annotations

import numpy as np

from cloud.rules.coldchain import Boundary, Profile, evaluate, load_profile

S = 10**9
MIN = 60 * S
H = 3600 * S
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z


def steps(*legs: tuple[float, float], every_min: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Readings every ``every_min`` minutes: (hours, °C) legs one after the other."""
    temps: list[float] = []
    for hours, temp in legs:
        temps += [temp] * round(hours * 60 / every_min)
    return T0 + np.arange(len(temps)) * every_min * MIN, np.array(temps)


def one(after: str, mode: str, above: float = 30.0) -> Profile:
    return Profile(name="t", boundaries=[Boundary(name="b", above=above, after=after, mode=mode, severity="high")])


def fired(ev) -> list[float]:
    return [(a.fired_at_ns - T0) / H for a in ev.alarms]


def test_who_type_1_cumulative_fires_at_14_h_and_counts_630_min():
    t, temps = steps((4, 31.0), (2, 20.0), (3, 31.0), (2, 20.0), (3.5, 31.0))
    ev = evaluate(t, temps, load_profile("who-type-1"))
    assert [(a.boundary, (a.fired_at_ns - T0) / H, a.counter_s) for a in ev.alarms] == [("heat-total", 14.0, 36000.0)]
    heat_total = next(r for r in ev.boundaries if r.boundary.name == "heat-total")
    assert heat_total.out_of_range_s == 630 * 60
    assert ev.verdict.result == "fail"
    assert ev.verdict.reasons[0] == "heat-total: ≥ 30.0 °C for 10h cumulative, reached at 2024-01-01T14:00:00Z"


def test_who_type_1_constant_29_9_for_12_h_raises_no_alarm():
    t, temps = steps((12, 29.9))
    ev = evaluate(t, temps, load_profile("who-type-1"))
    assert ev.alarms == []
    assert [r.out_of_range_s for r in ev.boundaries] == [0.0, 0.0, 0.0]


def test_single_event_counter_restarts_when_back_in_range():
    t, temps = steps((0.5, 31.0), (0.5, 20.0), (0.5, 31.0), (0.5, 20.0))
    assert evaluate(t, temps, one("1h", "single")).alarms == []
    assert fired(evaluate(t, temps, one("1h", "cumulative"))) == [1.5]


def test_single_event_fires_once_a_run_is_long_enough():
    t, temps = steps((1, 20.0), (1.5, 31.0), (1, 20.0))
    ev = evaluate(t, temps, one("1h", "single"))
    assert fired(ev) == [2.0]
    assert (ev.alarms[0].excursion_start_ns - T0) / H == 1.0


def test_reading_exactly_at_the_limit_counts():
    t, temps = steps((1, 30.0))
    assert fired(evaluate(t, temps, one("1h", "single"))) == [1.0]


def test_a_reading_holds_until_the_next_one():
    # Two readings two hours apart: the first (31 °C) holds for the whole 2 h, so the 1 h alarm fires
    # one hour in, between readings (and again as the counter refills at the second reading).
    t = T0 + np.array([0, 2]) * H
    ev = evaluate(t, np.array([31.0, 20.0]), one("1h", "single"))
    assert fired(ev) == [1.0, 2.0]
    assert ev.boundaries[0].out_of_range_s == 7200.0


def test_the_last_reading_holds_for_the_median_spacing():
    # Readings every 10 min, the last one hot: it holds 10 min, so a 10 min alarm fires at its end.
    t, temps = steps((1, 20.0), (10 / 60, 31.0))
    ev = evaluate(t, temps, one("10m", "single"))
    assert fired(ev) == [1 + 10 / 60]
    assert (ev.end_ns - T0) / MIN == 70
    assert evaluate(t, temps, one("11m", "single")).alarms == []


def test_a_long_excursion_fires_again_each_time_the_counter_refills():
    t, temps = steps((3.5, 31.0))
    ev = evaluate(t, temps, one("1h", "single"))
    assert fired(ev) == [1.0, 2.0, 3.0]
    assert [a.occurrence for a in ev.alarms] == [1, 2, 3]
    assert [a.out_of_range_s for a in ev.alarms] == [3600.0, 7200.0, 10800.0]
    assert ev.verdict.reasons == ["b: ≥ 30.0 °C for 1h single, reached at 2024-01-01T01:00:00Z (fired 3 times)"]


def test_one_long_held_reading_can_fire_several_times():
    t = T0 + np.array([0, 5]) * H
    assert fired(evaluate(t, np.array([31.0, 20.0]), one("2h", "cumulative"))) == [2.0, 4.0]


def test_cumulative_counter_continues_after_firing_with_the_remainder():
    t, temps = steps((1.5, 31.0), (1, 20.0), (0.5, 31.0))
    assert fired(evaluate(t, temps, one("1h", "cumulative"))) == [1.0, 3.0]


def test_zero_delay_fires_as_each_excursion_starts():
    t, temps = steps((1, 4.0), (1, 6.0), (1, 4.0), (0.5, 6.0))
    ev = evaluate(t, temps, load_profile("fda-cold-holding"))
    assert fired(ev) == [1.0, 3.0]
    assert [a.counter_s for a in ev.alarms] == [0.0, 0.0]


def test_fda_cold_holding_at_exactly_5_degrees_complies():
    t, temps = steps((4, 5.0))
    ev = evaluate(t, temps, load_profile("fda-cold-holding"))
    assert (ev.verdict.result, ev.alarms) == ("pass", [])


def test_fsanz_1_5_h_cumulative_may_be_refrigerated():
    t, temps = steps((1, 4.0), (0.5, 20.0), (1, 4.0), (1, 25.0), (1, 3.0))
    ev = evaluate(t, temps, load_profile("fsanz-2h-4h"))
    assert (ev.verdict.result, ev.verdict.disposition, ev.alarms) == ("pass", "refrigerate", [])
    assert [r.out_of_range_s for r in ev.boundaries] == [5400.0, 5400.0]


def test_fsanz_3_h_cumulative_is_use_only():
    t, temps = steps((1, 4.0), (2, 20.0), (1, 4.0), (1, 25.0), (1, 3.0))
    ev = evaluate(t, temps, load_profile("fsanz-2h-4h"))
    assert (ev.verdict.result, ev.verdict.disposition) == ("fail", "use-only")
    assert [(a.boundary, (a.fired_at_ns - T0) / H) for a in ev.alarms] == [("use-only", 3.0)]


def test_fsanz_4_h_cumulative_is_discard():
    t, temps = steps((1, 4.0), (2, 20.0), (1, 4.0), (2, 25.0), (1, 3.0))
    ev = evaluate(t, temps, load_profile("fsanz-2h-4h"))
    assert (ev.verdict.result, ev.verdict.disposition) == ("fail", "discard")
    assert [(a.boundary, (a.fired_at_ns - T0) / H) for a in ev.alarms] == [("use-only", 3.0), ("discard", 6.0),
                                                                            ("use-only", 6.0)]


def test_fsanz_60_degrees_and_above_is_not_danger_zone_time():
    t, temps = steps((5, 60.0))
    assert evaluate(t, temps, load_profile("fsanz-2h-4h")).alarms == []


def test_paused_readings_neither_count_nor_restart_a_single_counter():
    t, temps = steps((0.5, 31.0), (0.5, 40.0), (0.5, 31.0))
    paused = np.zeros(t.size, bool)
    paused[3:6] = True  # the middle half hour: a recognised defrost
    ev = evaluate(t, temps, one("1h", "single"), paused=paused)
    assert fired(ev) == [1.5]
    assert (ev.paused_s, ev.boundaries[0].out_of_range_s) == (1800.0, 3600.0)


def test_mkt_over_limit_fails_with_the_window_named():
    t, temps = steps((24, 5.0), (8, 14.0), (24, 5.0), every_min=30)
    ev = evaluate(t, temps, load_profile("usp-cct"))
    assert ev.alarms == []
    assert round(ev.mkt_c, 2) == 7.03  # the whole record would pass: the window is what catches it
    assert round(ev.window.mkt_c, 2) == 9.14
    assert ev.verdict.reasons == ["MKT 9.14 °C over 24h ending 2024-01-02T08:00:00Z exceeds the limit 8.0 °C"]


def test_mkt_at_the_limit_passes():
    t, temps = steps((48, 8.0), every_min=30)
    ev = evaluate(t, temps, load_profile("usp-cct"))
    assert (ev.verdict.result, ev.window.mkt_c) == ("pass", 8.0)


def test_notification_alarms_do_not_fail_a_shipment():
    p = Profile(name="t", boundaries=[Boundary(name="warm", above=6.0, after="30m", mode="single",
                                               severity="notification")])
    t, temps = steps((1, 7.0))
    ev = evaluate(t, temps, p)
    assert (ev.verdict.result, len(ev.alarms)) == ("pass", 2)
