"""The RUL model's public prediction calls, determinism, training-only normalisation and the fleet prior, on a
small synthetic C-MAPSS-shaped fleet (``tests/test_pdm_rul.synthetic_rows``; the real data stay out)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cloud.pdm.data import from_array
from cloud.pdm.features import ConditionNormaliser
from cloud.pdm.model import RulModel, RulParams
from cloud.pdm.prior import BINS, deconvolve_fraction, deconvolve_remaining, row_weights
from tests.test_pdm_rul import synthetic_rows

QUICK = RulParams(max_iter=30, n_folds=3, min_samples_leaf=20)


@pytest.fixture(scope="module")
def train():
    return from_array(synthetic_rows(30, 1)[0])


@pytest.fixture(scope="module")
def test_rows():
    return synthetic_rows(8, 2, truncate=True)[0]


@pytest.fixture(scope="module")
def model(train):
    return RulModel(QUICK).fit(train)


def test_predict_history_is_predict_for_one_engine_with_an_ordered_interval(model, test_rows):
    traj = from_array(test_rows)
    pred = model.predict(traj)
    for i, unit in enumerate(traj.units):
        rows = test_rows[test_rows[:, 0] == unit]
        rul, lo, hi = model.predict_history(rows[::-1])  # any row order
        assert (rul, lo, hi) == (pred.rul[i], pred.lower[i], pred.upper[i])
        assert 0.0 <= lo <= rul <= hi
        assert model.predict_history(rows[:, 1:]) == (rul, lo, hi)  # 25 columns: no unit column
    with pytest.raises(ValueError, match="at least one row"):
        model.predict_history(np.zeros((0, 26)))


def test_predict_each_cycle_is_the_estimate_the_engine_had_at_each_cycle(model, test_rows):
    traj = from_array(test_rows)
    each = model.predict_each_cycle(traj)
    assert len(each.rul) == len(traj.unit) and np.all((each.lower <= each.rul) & (each.rul <= each.upper))
    last = model.predict(traj)
    np.testing.assert_array_equal(each.rul[traj.last_rows()], last.rul)
    rows = test_rows[test_rows[:, 0] == traj.units[0]]
    k = 17  # the history cut at cycle k gives the estimate of row k
    assert model.predict_history(rows[: k + 1])[0] == pytest.approx(each.rul[k], abs=1e-9)


def test_training_is_deterministic(model, train, test_rows):
    again = RulModel(QUICK).fit(train)
    np.testing.assert_array_equal(again.predict(from_array(test_rows)).rul, model.predict(from_array(test_rows)).rul)
    np.testing.assert_array_equal(again.offsets, model.offsets)


def test_per_regime_normalisation_uses_training_statistics_only():
    train = from_array(synthetic_rows(12, 3, conditions=6)[0])
    other = synthetic_rows(5, 4, conditions=6, truncate=True)[0]
    other[:, 5:] += 7.0  # a shifted fleet must not move the training statistics
    norm = ConditionNormaliser().fit(train)
    mean, std = norm.mean_.copy(), norm.std_.copy()
    traj = from_array(other)
    z = norm.transform(traj)
    np.testing.assert_array_equal(norm.mean_, mean)
    np.testing.assert_array_equal(norm.std_, std)
    c = norm.condition(traj.settings)
    expect = ((traj.sensors - mean[c]) / std[c])[:, norm.sensors_]
    np.testing.assert_allclose(z, expect, rtol=1e-12)
    assert np.all(z.mean(axis=0) > 1.0)  # the shift shows, in training units


def test_fraction_prior_recovers_the_design_that_made_the_ages():
    rng = np.random.default_rng(5)
    lives = rng.integers(130, 360, 300).astype(float)
    ages = rng.permutation(lives) * rng.uniform(0.5, 0.9, 300)  # observed at 50-90 % of life
    f = deconvolve_fraction(ages, lives)
    assert len(f) == BINS and f.sum() == pytest.approx(1.0)
    assert f[45:95].sum() > 0.85 and f[:30].sum() < 0.03
    g = deconvolve_remaining(ages, lives)
    assert g.sum() == pytest.approx(1.0) and len(g) > BINS


def test_fraction_weights_count_every_engine_once():
    traj = from_array(synthetic_rows(6, 7)[0])
    w = row_weights(traj, np.full(BINS, 1.0 / BINS))
    assert w.mean() == pytest.approx(1.0)
    per_engine = np.add.reduceat(w, traj.starts[:-1])
    np.testing.assert_allclose(per_engine, per_engine[0], rtol=0.03)  # flat prior: each engine weighs alike
    np.testing.assert_array_equal(row_weights(traj, None), np.ones(len(traj.unit)))


def test_a_prior_weighted_model_estimates_beyond_the_cap_for_young_engines(train, test_rows):
    # Two folds on 15 engines: weighted binning in scikit-learn's gradient boosting (a weighted percentile per
    # bin edge and feature) made this one test take 30-45 s on 30 engines and three folds.
    params = replace(QUICK, cap=40.0, prior="fraction", n_folds=2)
    traj = from_array(test_rows)
    young = traj.cycle[traj.last_rows()] * 0 + 10.0  # a fleet observed at 10 cycles: ~100 left on average
    m = RulModel(params).fit(train.subset(train.units[:15]), observed=young)
    assert m.prior is not None and m.cv["weighted"] is True
    first = from_array(test_rows[test_rows[:, 1] <= 10])
    pred = m.predict(first)
    assert np.all(pred.rul > params.cap + 30) and np.all(pred.rul_capped == params.cap)
    assert np.all((pred.lower <= pred.rul) & (pred.rul <= pred.upper))
    with pytest.raises(ValueError, match="prior design"):
        RulModel(replace(QUICK, prior="bogus")).fit(train, observed=young)
