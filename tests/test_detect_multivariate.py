"""The multivariate detector: fit on normal rows, T²/SPE against numpy, rows from ticks by last-value hold."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect import Ensemble, Mspc, MspcBaseline, RowBuilder, fit
from edge.detect.multivariate import score_rows

S = 10**9


def correlated(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    X = np.c_[a, a + 0.1 * rng.normal(size=n), b, 0.5 * a - b + 0.1 * rng.normal(size=n)]
    return X * [1, 2, 3, 4] + 10


def test_mahalanobis_mode_matches_numpy_inverse_covariance():
    X = correlated()
    base = fit(X)
    rows = correlated(50, seed=1)
    _, t2, spe = score_rows(base, rows)
    diff = rows - X.mean(axis=0)
    expect = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(np.cov(X, rowvar=False)), diff)
    np.testing.assert_allclose(t2, expect, rtol=1e-9)
    assert not spe.any()


def test_pca_mode_matches_numpy_projection():
    X = correlated()
    base = fit(X, n_components=2)
    rows = correlated(50, seed=2)
    score, t2, spe = score_rows(base, rows)
    Z = (rows - X.mean(axis=0)) / X.std(axis=0, ddof=1)
    evals, evecs = np.linalg.eigh(np.corrcoef(X, rowvar=False))
    P = evecs[:, ::-1][:, :2]
    T = Z @ P
    np.testing.assert_allclose(t2, (T**2 / evals[::-1][:2]).sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(spe, ((Z - T @ P.T) ** 2).sum(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(score, np.maximum(t2 / base.t2_limit, spe / base.spe_limit), rtol=1e-12)


def test_variance_share_picks_the_number_of_components():
    assert fit(correlated(), n_components=0.9).loadings.shape[1] == 2


@pytest.mark.parametrize("limits", ["theory", "quantile"])
def test_false_alarm_rate_on_normal_data_is_near_alpha(limits):
    base = fit(correlated(20000, seed=3), n_components=2, alpha=0.01, limits=limits)
    score, _, _ = score_rows(base, correlated(20000, seed=4))
    assert 0.002 < np.mean(score >= 1) < 0.04


def test_broken_relation_is_flagged_although_each_value_is_in_range():
    X = correlated()
    base = fit(X, n_components=2)
    row = X.mean(axis=0).copy()
    row[1] = X[:, 1].mean() - 1.5 * X[:, 1].std()  # normal alone, but not with column 0 at its mean
    score, _, spe = score_rows(base, row[None, :])
    assert score[0] >= 1 and spe[0] / base.spe_limit >= 1


def test_baseline_round_trips_through_npz(tmp_path):
    base = fit(correlated(), n_components=2)
    base.save(tmp_path / "b.npz")
    again = MspcBaseline.load(tmp_path / "b.npz")
    rows = correlated(20, seed=5)
    np.testing.assert_array_equal(score_rows(base, rows)[0], score_rows(again, rows)[0])


def test_fit_explains_too_few_rows():
    with pytest.raises(ValueError, match="need more complete rows"):
        fit(np.ones((3, 4)))


def test_row_builder_holds_last_values_and_emits_one_row_per_timestamp():
    rb = RowBuilder(5, columns=[3, 1], max_age_s=10.0)
    idx = np.array([1, 3, 0, 1, 3, 1, 3])
    t = np.array([0, 0, 0, 1, 1, 20, 21]) * S
    x = np.array([10.0, 30.0, 99.0, 11.0, 31.0, 12.0, np.nan])
    ok = np.array([True, True, True, True, True, True, True])
    row_t, rows, pos = rb.rows(idx, t, x, ok)
    assert row_t.tolist() == [0, 1 * S, 20 * S]
    np.testing.assert_array_equal(rows, [[30.0, 10.0], [31.0, 11.0], [np.nan, 12.0]])  # 31 is 19 s old
    assert pos.tolist() == [1, 4, 5]  # the NaN sample at t=21 is not a good sample: no row


def test_row_builder_never_seen_column_is_nan_and_state_carries_over_ticks():
    rb = RowBuilder(2, columns=[0, 1])
    _, rows, _ = rb.rows(np.array([0]), np.array([0]), np.array([1.0]))
    assert np.isnan(rows[0, 1])
    _, rows, _ = rb.rows(np.array([1]), np.array([5 * S]), np.array([2.0]))
    assert rows.tolist() == [[1.0, 2.0]]


def tick_from_rows(X, columns, t0=0):
    n, d = X.shape
    idx = np.tile(np.asarray(columns, np.int64), n)
    t = np.repeat(t0 + np.arange(n, dtype=np.int64) * S, d)
    return idx, t, X.ravel(), np.ones(n * d, bool)


def test_mspc_detector_scores_each_row_at_its_last_sample_and_joins_an_ensemble():
    X = correlated()
    base = fit(X, n_components=2)
    rows = correlated(30, seed=6)
    rows[17, 1] = rows[17, 0] * 0  # break the relation on one row
    columns = [4, 2, 0, 1]  # the asset's points among 6 points
    mspc = Mspc(6, base, columns)
    idx, t, x, ok = tick_from_rows(rows, columns)
    ens = Ensemble([mspc])
    score, mask = ens.update(idx, t, x, ok)
    expect, _, _ = score_rows(base, rows)
    last = np.arange(30) * 4 + 3
    np.testing.assert_allclose(ens.detector_scores(len(idx))[0][0, last], expect, rtol=1e-12)
    assert np.flatnonzero(mask).tolist() == [17 * 4 + 3]
    assert not np.delete(score, last).any()


def test_mspc_score_leaves_held_values_and_round_trips_state():
    base = fit(correlated(), n_components=2)
    rows = correlated(10, seed=7)
    tick = tick_from_rows(rows, [0, 1, 2, 3])
    a = Mspc(4, base, [0, 1, 2, 3])
    a.update(*[v[:20] for v in tick])
    held = a.builder.held.copy()
    a.score(*[v[20:] for v in tick])
    np.testing.assert_array_equal(a.builder.held, held)
    b = Mspc(4, MspcBaseline.from_state(base.state()), [0, 1, 2, 3])
    b.load_state(a.state())
    np.testing.assert_array_equal(a.update(*[v[20:] for v in tick])[0], b.update(*[v[20:] for v in tick])[0])


def smoothed_reference(t, X, tau):
    """Plain-Python MEWMA from the module docstring: weight max(1 - exp(-dt / tau), 1 / (n + 1))."""
    out, mean, last, n = [], None, None, 0
    for ti, row in zip(t, X, strict=True):
        if np.isnan(row).any():
            out.append(np.full(len(row), np.nan))
            continue
        a = 1.0 if n == 0 else max(1 - np.exp(-(ti - last) / S / tau), 1 / (n + 1))
        mean = row.copy() if n == 0 else mean + a * (row - mean)
        out.append(mean.copy())
        last, n = ti, n + 1
    return np.array(out)


def test_row_smoother_is_a_time_decayed_mean_that_skips_incomplete_rows():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(60, 3))
    X[7, 1] = np.nan
    t = np.cumsum(rng.integers(1, 5, size=60)) * S  # irregular: the weight follows time, not rows
    from edge.detect.multivariate import RowSmoother

    sm = RowSmoother(3, tau_s=6.0)
    got = np.r_[sm.smooth(t[:25], X[:25]), sm.smooth(t[25:], X[25:])]  # tick boundaries do not matter
    np.testing.assert_allclose(got, smoothed_reference(t, X, 6.0), rtol=1e-12)


def test_the_shared_fit_smooths_history_as_the_edge_smooths_ticks():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(60, 3))
    X[7, 1] = np.nan
    t = np.cumsum(rng.integers(1, 5, size=60)) * S
    from models.mspc import smooth_rows

    np.testing.assert_allclose(smooth_rows(t, X, 6.0), smoothed_reference(t, X, 6.0), rtol=1e-12)


@pytest.mark.parametrize("dof", [1, 2, 3, 6, 7, 25])
def test_t2_limits_are_the_exact_chi_square_quantile(dof):
    from scipy.stats import chi2

    from models.mspc import chi2_quantile

    for q in (0.9, 0.99, 0.999, 0.9999):
        assert chi2_quantile(q, dof) == pytest.approx(chi2.ppf(q, dof), rel=1e-12)


def test_smoothed_baseline_is_fitted_on_smoothed_rows_and_mspc_smooths_alike():
    X = correlated(800, seed=9)
    t = np.arange(800, dtype=np.int64) * S
    base = fit(X[:500], t_ns=t[:500], smooth_tau_s=5.0, alpha=0.05, limits="quantile")
    assert base.smooth_tau_s == 5.0
    Xs = smoothed_reference(t, X, 5.0)
    np.testing.assert_allclose(base.mean, Xs[:500].mean(axis=0), rtol=1e-12)
    mspc = Mspc(4, base, [0, 1, 2, 3])
    score, _ = mspc.update(*tick_from_rows(X, [0, 1, 2, 3]))
    # the first 2·tau of rows (10 at 1 s) warm the mean up and are not scored; after, scores are the fit's
    np.testing.assert_array_equal(score[3::4][:10], 0.0)
    np.testing.assert_allclose(score[3::4][10:], score_rows(base, Xs)[0][10:], rtol=1e-9)


def test_smoothing_catches_a_small_sustained_shift_that_single_rows_hide():
    X = correlated(1400, seed=10)
    X[1000:] += [0.0, 0.0, 3.0, -4.0]  # latent b up by one standard deviation, for good: relations hold
    t = np.arange(1400, dtype=np.int64) * S
    raw = fit(X[:800], alpha=0.01, limits="quantile")
    smooth = fit(X[:800], t_ns=t[:800], smooth_tau_s=20.0, alpha=0.01, limits="quantile")
    hits_raw = np.mean(score_rows(raw, X)[0][1100:] >= 1)
    flags = Mspc(4, smooth, [0, 1, 2, 3]).update(*tick_from_rows(X, [0, 1, 2, 3]))[1][3::4]
    assert hits_raw < 0.2 and flags[1100:].mean() > 0.9 and flags[850:1000].mean() < 0.05


def test_smoothed_mspc_score_leaves_state_and_round_trips_it():
    X = correlated(300, seed=11)
    t = np.arange(300, dtype=np.int64) * S
    base = fit(X[:200], t_ns=t[:200], smooth_tau_s=10.0)
    tick = tick_from_rows(X, [0, 1, 2, 3])
    a = Mspc(4, base, [0, 1, 2, 3])
    a.update(*[v[:800] for v in tick])
    before = {k: v.copy() for k, v in a.state().items()}
    a.score(*[v[800:] for v in tick])
    for k, v in a.state().items():
        np.testing.assert_array_equal(v, before[k])
    b = Mspc(4, fit(X[:50]), [0, 1, 2, 3])  # built from another baseline: load_state brings the smoothed one
    b.load_state(a.state())
    np.testing.assert_array_equal(a.update(*[v[800:] for v in tick])[0], b.update(*[v[800:] for v in tick])[0])


def test_baseline_saved_before_smoothing_existed_still_loads(tmp_path):
    st = fit(correlated(), n_components=2).state()
    del st["smooth_tau_s"]
    again = MspcBaseline.from_state(st)
    assert again.smooth_tau_s == 0.0


def test_limit_scale_widens_both_limits_and_smoothing_needs_timestamps():
    a, b = fit(correlated(), n_components=2), fit(correlated(), n_components=2, limit_scale=3.0)
    assert b.t2_limit == pytest.approx(3 * a.t2_limit) and b.spe_limit == pytest.approx(3 * a.spe_limit)
    with pytest.raises(ValueError, match="needs t_ns"):
        fit(correlated(), smooth_tau_s=5.0)
    with pytest.raises(ValueError, match="limit_scale"):
        fit(correlated(), limit_scale=0.0)
