"""simulators/person.py: the Hovorka model's steady state, deterministic people, a CGM that behaves like one."""

from __future__ import annotations

import numpy as np

from simulators.person import HOVORKA, _flux, basal_insulin, draw_params, series, simulate_people


def test_the_basal_insulin_holds_each_person_at_their_target_glucose():
    p = draw_params(np.random.default_rng(0), 5)
    target = np.array([5.5, 6.0, 7.0, 8.0, 9.5])
    i_b = basal_insulin(p, target)
    assert np.all(i_b > 0) and np.allclose(_flux(p, target, i_b), 0.0, atol=1e-9)
    assert HOVORKA["SIT"] == 51.2e-4 and HOVORKA["EGP0"] == 0.0161 and HOVORKA["tmaxI"] == 55.0  # Hovorka 2004


def test_people_are_deterministic_per_seed_and_their_cgm_behaves_like_one():
    a, b = simulate_people(3, days=2, seed=9), simulate_people(3, days=2, seed=9)
    assert np.array_equal(a.cgm, b.cgm, equal_nan=True) and a.events == b.events
    ok = np.isfinite(a.cgm)
    assert 0.85 < ok.mean() < 1.0                                 # dropouts, but most readings arrive
    assert a.cgm[ok].min() >= 40 and a.cgm[ok].max() <= 400       # the sensor's reporting range
    assert a.truth_mgdl.min() > 40 and a.truth_mgdl.max() < 500   # physiological
    meals = sum(len(m) for m in a.events["carbs"])
    assert meals >= 3 * 3 * 2 and all(v > 0 for m in a.events["bolus"] for _, v in m)
    sent = series(a)
    assert len(sent[(a.subjects[0], "glucose")][0]) == int(ok[0].sum())  # a missing reading is not sent
    assert set(p for _, p in sent) == {"glucose", "basal_rate", "bolus", "carbs", "heart_rate", "steps"}
