"""Remaining-useful-life models as a specification: metrics, target, grouped CV, causal features, intervals,
registry and the ``twin pdm`` round trip — on a small C-MAPSS-shaped fleet the tests make (the real data
stay out of the suite)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cloud.pdm.data import from_array, rul_target
from cloud.pdm.features import ConditionNormaliser, window_features
from cloud.pdm.model import (
    RulModel,
    RulParams,
    _conformal_offsets,
    beyond_cap,
    evaluate_dataset,
    grouped_folds,
    out_of_fold,
    phm_score,
    rmse,
)
from cloud.pdm.prior import UNIFORM, row_weights
from cloud.pdm.registry import ModelRegistry, resolve
from twin.pdm_cli import app

CONDITIONS = np.array([[0.0, 0.0, 100.0], [10.0, 0.25, 100.0], [20.0, 0.7, 100.0], [25.0, 0.62, 60.0],
                       [35.0, 0.84, 100.0], [42.0, 0.84, 100.0]])
QUICK = RulParams(max_iter=40, n_folds=3, min_samples_leaf=20)


def synthetic_rows(n_units: int, seed: int, conditions: int = 1, truncate: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(rows in the 26-column layout, true RUL at each unit's last row): engines with a life of 80-160
    cycles whose sensors drift with an exponential wear on top of condition offsets and noise; six sensors
    never move. ``truncate`` stops each engine 10-70 % of its life before failure, like a test set."""
    fleet = np.random.default_rng(0)  # the engine type: the same for train and test sets
    sens = fleet.normal(0.0, 1.0, 21)
    sens[[0, 4, 9, 15, 17, 18]] = 0.0
    cond_offset = fleet.normal(0.0, 20.0, (len(CONDITIONS), 21))
    rng = np.random.default_rng(seed)
    rows, ruls = [], []
    for u in range(1, n_units + 1):
        life = int(rng.integers(80, 161))
        stop = life - int(rng.integers(int(0.1 * life), int(0.7 * life))) if truncate else life
        c = np.arange(1, stop + 1)
        wear = np.expm1(3.0 * c / life) / np.expm1(3.0)
        cond = rng.integers(0, conditions, stop)
        settings = CONDITIONS[cond] + rng.normal(0.0, 0.002, (stop, 3))
        noise = rng.normal(0.0, 0.3, (stop, 21)) * (sens != 0)
        sensors = 100.0 + cond_offset[cond] + 4.0 * wear[:, None] * sens + noise
        rows.append(np.column_stack([np.full(stop, u), c, settings, sensors]))
        ruls.append(life - stop)
    return np.vstack(rows), np.array(ruls, float)


def write_cmapss(directory: Path, dataset: str = "FD001", conditions: int = 1) -> None:
    train, _ = synthetic_rows(40, 1, conditions)
    test, rul = synthetic_rows(12, 2, conditions, truncate=True)
    np.savetxt(directory / f"train_{dataset}.txt", train, fmt="%.4f")
    np.savetxt(directory / f"test_{dataset}.txt", test, fmt="%.4f")
    np.savetxt(directory / f"RUL_{dataset}.txt", rul, fmt="%d")


# --- metrics and target ---------------------------------------------------------------------------


def test_rmse_on_a_hand_computed_example():
    assert rmse(np.array([10.0, 20.0, 30.0]), np.array([12.0, 20.0, 25.0])) == pytest.approx(math.sqrt(29 / 3))


def test_phm_score_charges_late_predictions_more_than_early_ones():
    # d = predicted - true = -2, 0, +5: exp(2/13) - 1 + 0 + exp(5/10) - 1
    got = phm_score(np.array([10.0, 20.0, 30.0]), np.array([12.0, 20.0, 25.0]))
    assert got == pytest.approx(math.exp(2 / 13) - 1 + math.exp(0.5) - 1, rel=1e-12)
    assert phm_score(np.array([110.0]), np.array([100.0])) == pytest.approx(math.e - 1, rel=1e-12)  # 10 late
    assert phm_score(np.array([87.0]), np.array([100.0])) == pytest.approx(math.e - 1, rel=1e-12)  # 13 early
    assert phm_score(np.array([50.0]), np.array([50.0])) == 0.0


def test_target_is_piecewise_linear_with_the_cap():
    rows = np.zeros((7, 26))
    rows[:, 0] = [1, 1, 1, 1, 1, 2, 2]
    rows[:, 1] = [1, 2, 3, 4, 5, 1, 2]
    traj = from_array(rows[::-1])  # any row order: sorted by unit and cycle
    np.testing.assert_array_equal(rul_target(traj, cap=3), [3, 3, 2, 1, 0, 1, 0])
    np.testing.assert_array_equal(rul_target(traj, cap=None), [4, 3, 2, 1, 0, 1, 0])


# --- conditions, features, CV ---------------------------------------------------------------------


@pytest.mark.parametrize("conditions", [1, 6])
def test_operating_conditions_are_found_from_the_settings(conditions):
    traj = from_array(synthetic_rows(20, 3, conditions)[0])
    norm = ConditionNormaliser().fit(traj)
    assert len(norm.centres_) == conditions
    assert len(norm.sensors_) == 15  # the six constant sensors are dropped
    z = norm.transform(traj)
    for c in range(conditions):  # standardised within each condition
        rows = z[norm.condition(traj.settings) == c]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, rtol=1e-9)


def test_window_features_use_only_cycles_up_to_their_own():
    traj = from_array(synthetic_rows(3, 4)[0])
    norm = ConditionNormaliser().fit(traj)
    full, names = window_features(norm.transform(traj), traj)
    unit = traj.units[1]
    rows = np.flatnonzero(traj.unit == unit)
    for k in (0, 4, 37, len(rows) - 1):  # the engine cut at its k-th cycle gives the same row
        cut = from_array(np.column_stack([traj.unit, traj.cycle, traj.settings, traj.sensors])[rows[: k + 1]])
        part, _ = window_features(norm.transform(cut), cut)
        # equal up to rounding: window sums are differences of running sums over the whole file
        np.testing.assert_allclose(part[-1], full[rows[k]], rtol=1e-7, atol=1e-6)
    assert len(names) == full.shape[1]


def test_grouped_cv_never_splits_an_engine_across_folds():
    traj = from_array(synthetic_rows(23, 5)[0])
    folds = grouped_folds(traj, 5)
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == sorted(traj.units.tolist())  # each engine validated exactly once
    for train_units, val_units in folds:
        assert not set(train_units) & set(val_units)
        assert set(train_units) | set(val_units) == set(traj.units.tolist())


def test_out_of_fold_prediction_comes_from_a_model_that_never_saw_the_engine(monkeypatch):
    traj = from_array(synthetic_rows(12, 6)[0])
    trained_on: list[set[int]] = []
    import cloud.pdm.model as model_mod

    real = model_mod._fold_task

    def spy(t, params, train_units, val_units):
        trained_on.append(set(train_units.tolist()))
        if val_units is not None:
            assert not set(train_units.tolist()) & set(val_units.tolist())
        return real(t, params, train_units, val_units)

    monkeypatch.setattr(model_mod, "_fold_task", spy)
    oof = out_of_fold(traj, QUICK)
    assert len(trained_on) == 3 and oof.shape == (len(traj.unit), 2) and np.all(np.isfinite(oof))
    assert np.all(oof[:, 0] <= QUICK.cap) and np.all(oof[:, 1] >= oof[:, 0])  # capped, then extended
    assert all(len(s) == 8 for s in trained_on)  # 12 engines, 3 folds: 8 to train on each time


# --- model, intervals, registry -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> RulModel:
    return RulModel(QUICK).fit(from_array(synthetic_rows(40, 1)[0]))


def test_prediction_is_one_row_per_engine_at_its_last_cycle_with_an_interval_around_it(fitted):
    rows, true = synthetic_rows(12, 2, truncate=True)
    pred = fitted.predict(from_array(rows))
    np.testing.assert_array_equal(pred.unit, np.arange(1, 13))
    assert np.all((pred.lower <= pred.rul) & (pred.rul <= pred.upper))
    assert np.all(pred.lower >= 0.0) and np.all(pred.rul_capped <= QUICK.cap) and np.all(pred.rul >= pred.rul_capped)
    assert rmse(pred.rul_capped, np.minimum(true, QUICK.cap)) < 25.0  # it learned something: the spread is ~30
    assert fitted.cv["folds"] == 3 and fitted.cv["engines"] == 40
    assert 0.8 <= fitted.cv["coverage"] <= 1.0  # 90 % split-conformal on its own residuals


def test_the_interval_is_calibrated_on_engines_each_truncated_once_not_on_all_their_rows():
    # a long-lived engine (300 cycles) estimated 30 short at every cycle, a short-lived one (60) 30 long: by rows the
    # long one is 5/6 of the residuals and sets both quartiles; truncated once at random, each engine weighs alike
    rows = np.vstack([np.column_stack([np.full(n, u), np.arange(1, n + 1), np.zeros((n, 24))])
                      for u, n in ((1, 300), (2, 60))])
    traj = from_array(rows)
    true = rul_target(traj, None)
    pred = true - np.where(traj.unit == 1, 30.0, -30.0)
    params = replace(QUICK, cap=400.0, interval_bins=1, coverage=0.5)
    np.testing.assert_array_equal(_conformal_offsets(pred, true, params)[0], [0.0, 30.0])
    np.testing.assert_array_equal(_conformal_offsets(pred, true, params, row_weights(traj, UNIFORM))[0], [-30.0, 30.0])


def test_a_model_takes_its_interval_from_held_out_engines_and_covers_nine_in_ten_truncated_ones(fitted):
    train = from_array(synthetic_rows(40, 1)[0])
    oof = out_of_fold(train, QUICK)
    expect = _conformal_offsets(oof[:, 1], rul_target(train, None), QUICK, row_weights(train, UNIFORM))
    np.testing.assert_array_equal(fitted.offsets, expect)
    rows, true = synthetic_rows(300, 11, truncate=True)  # engines stopped 10-70 % of their life before failure
    pred = fitted.predict(from_array(rows))
    assert 0.87 <= np.mean((true >= pred.lower) & (true <= pred.upper)) <= 0.93


def test_registry_keeps_versions_metrics_hash_and_an_active_pointer(tmp_path, fitted):
    reg = ModelRegistry(tmp_path / "reg")
    v1 = reg.register("FD001", fitted, metrics={"rmse": 1.0}, data_sha256="ab" * 32, data_file="train_FD001.txt")
    v2 = reg.register("FD001", fitted, metrics={"rmse": 2.0}, data_sha256="cd" * 32)
    assert (v1, v2) == ("v0001", "v0002")
    assert reg.active("FD001") == "v0002" and reg.versions("FD001") == ["v0001", "v0002"]
    meta = reg.meta("FD001", "v0001")
    assert meta["metrics"] == {"rmse": 1.0}
    assert meta["data"] == {"file": "train_FD001.txt", "sha256": "ab" * 32}
    assert RulParams.from_dict(meta["params"]) == QUICK
    reg.activate("FD001", "v0001")
    assert reg.meta("FD001")["version"] == "v0001"
    assert resolve(tmp_path / "reg") == tmp_path / "reg" / "FD001" / "v0001"
    with pytest.raises(LookupError, match="no version v0009"):
        reg.activate("FD001", "v0009")
    rows, _ = synthetic_rows(4, 2, truncate=True)
    np.testing.assert_array_equal(reg.load("FD001").predict(from_array(rows)).rul, fitted.predict(from_array(rows)).rul)


# --- beyond the cap --------------------------------------------------------------------------------


def test_beyond_cap_is_the_fleets_expected_remaining_life_faded_in_below_the_cap():
    lives = np.array([100.0, 150.0, 200.0, 250.0])
    # at age 50 the engines that lived >= 50 + 125 are 200 and 250: E[L - 50 | L >= 175] = 175, 50 past the cap
    got = beyond_cap(np.array([125.0, 115.0, 105.0, 60.0]), np.full(4, 50.0), lives, cap=125.0, ramp=20.0)
    np.testing.assert_allclose(got, [175.0, 115.0 + 0.5 * 50.0, 105.0, 60.0])
    # at age 150 no training engine lived 275 cycles: nothing to extend with; ramp 0 switches it off
    np.testing.assert_array_equal(beyond_cap(np.array([125.0]), np.array([150.0]), lives, 125.0, 20.0), [125.0])
    np.testing.assert_array_equal(beyond_cap(np.array([125.0]), np.array([50.0]), lives, 125.0, 0.0), [125.0])
    # an engine near the end of the longest life: only that one counts (E[250 - 120 | L >= 245] = 130)
    np.testing.assert_allclose(beyond_cap(np.array([125.0]), np.array([120.0]), lives, 125.0, 20.0), [130.0])


def test_extended_estimates_get_an_interval_bin_of_their_own():
    params = replace(QUICK, interval_bins=2, coverage=0.5)
    pred = np.array([10.0, 20.0, 100.0, 110.0, 150.0, 160.0, 170.0, 180.0])
    true = pred + np.array([-1.0, 1.0, -5.0, 5.0, -40.0, -20.0, 20.0, 40.0])
    off = _conformal_offsets(pred, true, params)
    assert off.shape == (3, 2)
    # n = 4 in the extended bin: quantile ranks floor(5 * 0.25) = 1 and ceil(5 * 0.75) = 4 of the sorted residuals
    np.testing.assert_array_equal(off[2], [-40.0, 40.0])
    np.testing.assert_array_equal(off[0], [-1.0, 1.0])  # n = 2: the extremes


def test_a_young_healthy_engine_is_estimated_beyond_the_cap_and_scored_both_ways(tmp_path):
    write_cmapss(tmp_path)
    # the test fleet, plus an engine stopped after 5 of its cycles (its whole life ahead: 80-160 cycles)
    train, _ = synthetic_rows(1, 9)
    young = train[:5].copy()
    young[:, 0] = 13
    np.savetxt(tmp_path / "test_FD001.txt", np.vstack([np.loadtxt(tmp_path / "test_FD001.txt"), young]), fmt="%.4f")
    life = len(train)
    rul = np.append(np.loadtxt(tmp_path / "RUL_FD001.txt"), life - 5)
    np.savetxt(tmp_path / "RUL_FD001.txt", rul, fmt="%d")
    params = replace(QUICK, cap=60.0, extend_ramp=20.0)  # lives of 80-160: a young engine has far more than 60 left
    model = RulModel(params).fit(from_array(synthetic_rows(40, 1)[0]))
    pred = model.predict(from_array(np.loadtxt(tmp_path / "test_FD001.txt")))
    assert pred.rul_capped[-1] > 55.0 and pred.rul[-1] > 60.0 + 30.0  # fleet lives average ~120: ~115 left
    assert pred.lower[-1] <= rul[-1] <= pred.upper[-1]
    off = RulModel(replace(params, extend_ramp=0.0)).fit(from_array(synthetic_rows(40, 1)[0]))
    default = off.predict(from_array(np.loadtxt(tmp_path / "test_FD001.txt")))  # by default: the capped estimate
    np.testing.assert_array_equal(default.rul, default.rul_capped)
    np.testing.assert_array_equal(default.rul_capped, pred.rul_capped)  # the extension never moves it
    r = evaluate_dataset(tmp_path, "FD001", model=model)
    assert r["rmse"] == pytest.approx(rmse(pred.rul, rul), rel=1e-12) and r["target_rmse"] == 12.5
    assert r["rmse_capped_truth"] == pytest.approx(rmse(pred.rul_capped, np.minimum(rul, 60.0)), rel=1e-12)
    assert r["coverage"] == pytest.approx(np.mean((rul >= pred.lower) & (rul <= pred.upper)))


# --- the command line -----------------------------------------------------------------------------


def test_cli_train_predict_evaluate_round_trip(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_cmapss(data)
    runner = CliRunner()
    reg = tmp_path / "registry"
    r = runner.invoke(app, ["train", "--data", str(data), "--dataset", "FD001", "--out", str(reg), "--max-iter", "40",
                            "--folds", "3", "--jobs", "1", "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.output)
    assert meta["version"] == "v0001" and len(meta["data"]["sha256"]) == 64
    assert meta["metrics"]["test"]["engines"] == 12 and meta["params"]["max_iter"] == 40

    out = tmp_path / "preds.csv"
    r = runner.invoke(app, ["predict", "--model", str(reg), "--input", str(data / "test_FD001.txt"),
                            "--output", str(out)])
    assert r.exit_code == 0, r.output
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["unit", "rul", "lower", "upper"]
    assert [int(row["unit"]) for row in table] == list(range(1, 13))  # one row per test engine
    assert all(float(row["lower"]) <= float(row["rul"]) <= float(row["upper"]) for row in table)

    r = runner.invoke(app, ["evaluate", "--data", str(data), "--datasets", "FD001", "--registry", str(reg), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    (res,) = report["results"]
    assert res["dataset"] == "FD001" and res["engines"] == 12
    assert res["rmse"] == pytest.approx(meta["metrics"]["test"]["rmse"], rel=1e-12)
    truth = np.loadtxt(data / "RUL_FD001.txt")
    assert res["rmse"] == pytest.approx(rmse(np.array([float(x["rul"]) for x in table]), truth), abs=1e-3)


def test_cli_refuses_an_unknown_dataset(tmp_path):
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--dataset", "FD009", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "FD009" in r.output


def test_params_round_trip_through_the_registry_format():
    p = replace(RulParams(), max_iter=7)
    assert RulParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
