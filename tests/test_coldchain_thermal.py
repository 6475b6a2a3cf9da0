"""The calibrated thermal twin against a simulated trailer whose true constants are known.

One simulated day with four deliveries (door openings) trains the model; samples are every 10 s
because a compressor run lasts about three minutes: at one-minute samples where inside a sample it
switched is unknown and the fit's cooling capacity comes out about half the truth (the model says so
in ``warnings``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloud.rules.coldchain import Profile, iso
from cloud.rules.coldchain.reefer import assess_trailer
from cloud.thermal import PARAMS, Scenario, ThermalFitError, ThermalModel, TrailerHistory, fit
from simulators.trailer import Fault, Trailer, TrailerParams

S = 10**9
MIN = 60 * S
H = 3600 * S
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z, ambient peaks at 15:00
TRUE = TrailerParams()
CA = TRUE.air_heat_capacity_j_per_k
DOORS = [Fault(kind="door_open", start_ns=T0 + round(h * H), end_ns=T0 + round(h * H) + m * MIN)
         for h, m in ((3, 15), (9.5, 20), (14, 10), (20, 25))]
FAILURE = Fault(kind="compressor_failure", start_ns=T0 + 32 * H, end_ns=T0 + 35 * H)  # day two, 08:00-11:00
WHAT_IF_AT = T0 + 39 * H  # day two, 15:00: the warmest hour, between defrosts (every 6 h from 06:00)


def simulate(*faults: Fault, hours: float = 48, seed: int = 1):
    return Trailer("trailer-1", TRUE, seed=seed, faults=[*DOORS, *faults]).run(T0, hours * 3600, 10)


@pytest.fixture(scope="module")
def world():
    run = simulate(FAILURE)
    history = TrailerHistory.from_samples(run.points)
    assessment = assess_trailer(run.points, Profile(name="none"))
    defrosts = [(e.start_ns, e.end_ns) for e in assessment.events]
    model = fit(history.window(T0, T0 + 24 * H), exclude=defrosts)
    return run, history, assessment, model


def within(value: float, truth: float, tolerance: float) -> bool:
    return abs(value / truth - 1) <= tolerance


def test_one_day_recovers_time_constant_cooling_and_door_gain_within_10_percent(world):
    _, _, _, m = world
    assert within(m.tau_ambient_s, CA / TRUE.ua_w_per_k, 0.10)  # 13 333 s
    assert within(m.params["q"], TRUE.cooling_capacity_w / CA, 0.10)
    assert within(m.params["d"], TRUE.door_ua_w_per_k / CA, 0.10)
    assert within(m.cooling_lift_k, TRUE.cooling_capacity_w / TRUE.ua_w_per_k, 0.10)  # 66.7 K
    assert within(m.door_ratio, TRUE.door_ua_w_per_k / TRUE.ua_w_per_k, 0.10)  # 2.67
    assert within(m.params["g"], TRUE.cooling_capacity_w / TRUE.airflow_w_per_k, 0.10)  # supply-return gap
    assert within(m.params["tau"], TRUE.evaporator_tau_s, 0.10)
    assert m.hysteresis_c == 1.0
    assert m.warnings == []


def test_watts_follow_once_the_air_heat_capacity_is_known(world):
    w = world[3].watts(CA)
    assert within(w["ua_w_per_k"], TRUE.ua_w_per_k, 0.10)
    assert within(w["cooling_capacity_w"], TRUE.cooling_capacity_w, 0.10)
    assert within(w["door_ua_w_per_k"], TRUE.door_ua_w_per_k, 0.10)


def test_one_minute_samples_are_flagged():
    run = Trailer("trailer-1", TRUE, seed=1, faults=DOORS).run(T0, 6 * 3600, 60)
    model = fit(TrailerHistory.from_samples(run.points))
    assert model.warnings[0].startswith("compressor runs last a median 2 samples")


def test_forecast_after_a_compressor_failure_predicts_the_excursion(world):
    """From the moment the live rule calls the failure (~30 min in), forecast with the compressor off.

    Tolerance 5 min: the air is then ~2 K above setpoint and ~20 min from 8 °C, and the least certain
    constant (cargo coupling, ±30 % from one normal day) moves the air's equilibrium and so that time
    by ~10 %, 2 min; 5 min is that with margin for the ambient forecast. The band must contain it.
    """
    run, history, assessment, model = world
    called = next(a.fired_at_ns for a in assessment.alarms if a.rule == "coldchain:compressor-failure")
    assert FAILURE.start_ns < called < FAILURE.start_ns + 40 * MIN
    f = model.forecast(history.window(T0, called + 1), 6 * 3600, Scenario(compressor_off=True), limit_c=8.0)
    truth = run.truth["supply_air_c"]
    actual = int(run.t_ns[np.argmax((run.t_ns >= FAILURE.start_ns) & (truth >= 8.0))])
    assert abs(f.excursion_ns - actual) <= 5 * MIN
    assert f.earliest_ns <= actual <= f.latest_ns


def test_the_live_failure_alarm_says_when_the_load_leaves_range(world):
    run, _, _, model = world
    got = assess_trailer(run.points, Profile(name="none"), thermal=model)
    failure = next(a for a in got.alarms if a.rule == "coldchain:compressor-failure")
    forecast = failure.evidence["forecast"]
    assert (forecast["limit_c"], forecast["horizon_s"]) == (8.0, 43200.0)
    actual = int(run.t_ns[np.argmax((run.t_ns >= FAILURE.start_ns) & (run.truth["supply_air_c"] >= 8.0))])
    assert forecast["excursion_at"] == iso(forecast["excursion_ns"])
    assert abs(forecast["excursion_ns"] - actual) <= 5 * MIN
    assert forecast["earliest_ns"] <= actual <= forecast["latest_ns"]


def test_what_if_compressor_off_agrees_with_the_physics(world):
    """From normal running, "what if the compressor stopped now": against the same trailer simulated
    with its compressor failing at that instant, and against the air node's own closed form.

    ±10 % for both. At 15:00 the air's equilibrium with the compressor off (~12 °C) is far above the
    limit, so the cargo coupling's ±30 % moves the time by under 10 % (seeds 1-5: -6 % to +3 %). The
    closed form leaves out the supply air's lag, the cargo's drift and the ambient's.
    """
    _, history, _, model = world
    f = model.forecast(history.window(T0, WHAT_IF_AT + 1), 6 * 3600, Scenario(compressor_off=True))
    failed = simulate(FAILURE, Fault(kind="compressor_failure", start_ns=WHAT_IF_AT, end_ns=WHAT_IF_AT + 6 * H),
                      hours=42)
    actual = int(failed.t_ns[np.argmax((failed.t_ns >= WHAT_IF_AT) & (failed.truth["supply_air_c"] >= 8.0))])
    assert within(f.time_to_excursion_s(), (actual - WHAT_IF_AT) / S, 0.10)
    # Closed form: the air relaxes to Teq = (a·T_amb + h·T_cargo)/(a + h) with time constant 1/(a + h)
    # (the cargo barely moves in an hour); supply air follows it.
    p = model.params
    ambient = float(f.ambient_c[f.t_ns <= f.excursion_ns].mean())
    t_eq = (p["a"] * ambient + p["h"] * f.cargo_c[0]) / (p["a"] + p["h"])
    closed = np.log((t_eq - f.air_c[0]) / (t_eq - 8.0)) / (p["a"] + p["h"])
    assert within(f.time_to_excursion_s(), closed, 0.10)


def test_a_hotter_day_brings_the_excursion_forward(world):
    _, history, _, model = world
    h = history.window(T0, WHAT_IF_AT + 1)
    now = model.forecast(h, 6 * 3600, Scenario(compressor_off=True)).time_to_excursion_s()
    hot = model.forecast(h, 6 * 3600, Scenario(compressor_off=True, ambient_offset_c=10.0)).time_to_excursion_s()
    assert hot < 0.75 * now


def test_carrying_on_as_now_holds_the_setpoint(world):
    _, history, _, model = world
    f = model.forecast(history.window(T0, WHAT_IF_AT + 1), 3 * 3600)
    assert f.excursion_ns is None
    assert abs(float(f.supply_c.mean()) - TRUE.setpoint_c) < 0.5


def test_what_if_setpoint_change(world):
    _, history, _, model = world
    f = model.forecast(history.window(T0, WHAT_IF_AT + 1), 3 * 3600, Scenario(setpoint_c=2.0))
    assert abs(float(f.supply_c[-120:].mean()) - 2.0) < 0.3  # the last hour


def test_what_if_door_open_matches_the_simulated_delivery(world):
    _, history, _, model = world
    f = model.forecast(history.window(T0, WHAT_IF_AT + 1), 2 * 3600, Scenario(door_open_s=1800))
    opened = simulate(FAILURE, Fault(kind="door_open", start_ns=WHAT_IF_AT, end_ns=WHAT_IF_AT + 30 * MIN), hours=42)
    ahead = (opened.t_ns >= WHAT_IF_AT) & (opened.t_ns < WHAT_IF_AT + 2 * H)
    assert abs(float(f.air_c.max()) - float(opened.truth["air_c"][ahead].max())) < 0.3


def test_the_model_round_trips_through_the_twins_json(world):
    _, history, _, model = world
    again = ThermalModel.from_dict(json.loads(json.dumps(model.to_dict())))
    h = history.window(T0, WHAT_IF_AT + 1)
    a = model.forecast(h, 3600, Scenario(compressor_off=True))
    b = again.forecast(h, 3600, Scenario(compressor_off=True))
    assert (a.excursion_ns, a.earliest_ns, a.latest_ns) == (b.excursion_ns, b.earliest_ns, b.latest_ns)


def test_a_parameter_the_data_does_not_pin_down_leaves_the_forecast_and_its_band_whole(world):
    """Seen in the demo: a day without the cargo's coupling in it put ``k`` at its lower bound with a log-variance
    of 1.6e6, beside a covariance with a negative eigenvalue (``d``: no door opened). The band's draws
    overflowed and the whole forecast raised, so the trailer's predictive alert never came. Now the draws stay
    inside the fit's bounds: the same central forecast, a finite band around it."""
    _, history, assessment, model = world
    called = next(a.fired_at_ns for a in assessment.alarms if a.rule == "coldchain:compressor-failure")
    d = model.to_dict()
    cov = np.array(d["covariance"])
    k, door = list(PARAMS).index("k"), list(PARAMS).index("d")
    cov[k, k], cov[door, door] = 1.57e6, -2.2e-10
    unsure = ThermalModel.from_dict({**d, "covariance": cov.tolist()})
    h = history.window(T0, called + 1)
    f = unsure.forecast(h, 6 * 3600, Scenario(compressor_off=True), limit_c=8.0)
    g = model.forecast(h, 6 * 3600, Scenario(compressor_off=True), limit_c=8.0)
    assert f.excursion_ns == g.excursion_ns and np.array_equal(f.supply_c, g.supply_c)
    assert np.isfinite(f.supply_lo_c).all() and np.isfinite(f.supply_hi_c).all()
    assert f.earliest_ns <= f.excursion_ns <= f.latest_ns


def test_too_short_a_history_is_refused(world):
    _, history, _, _ = world
    with pytest.raises(ThermalFitError, match="need at least 120 samples to fit"):
        fit(history.window(T0, T0 + 10 * MIN))
