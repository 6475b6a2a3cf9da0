"""The registry (catalogue specs to an ensemble), the combined score, and save/load across a restart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from edge.detect import DEFAULT_DETECTORS, KINDS, Ensemble, EventTracker, EwmaZ, Limits, build_detectors
from edge.detect.registry import default_specs
from tests.test_detect_kernels import arrays, random_stream, streams

ALL_KINDS_SPECS = [
    [{"kind": "ewma_z", "tau_s": 30, "threshold": 3.0, "warmup": 5}, {"kind": "spike", "max_rate": 20.0},
     {"kind": "stuck", "duration_s": 20.0}],
    [{"kind": "robust_z", "window": 9, "threshold": 4.0, "warmup": 5},
     {"kind": "limits", "hi": 3.0, "lo": -3.0, "hysteresis": 0.5}],
    [{"kind": "cusum", "tau_s": 600, "h": 4.0, "warmup": 5}, {"kind": "page_hinkley", "delta": 0.05,
                                                              "threshold": 8.0, "warmup": 5}],
    [],  # a point with no detectors at all
    [{"kind": "ewma_z"}, {"kind": "cusum"},
     {"kind": "stuck", "duration_s": 5.0, "var_eps": 0.01, "window_s": 5},
     {"kind": "novelty", "warmup": 5, "cooldown": 5}],
]


def test_registry_knows_the_catalogue_kinds():
    assert list(KINDS) == ["ewma_z", "robust_z", "cusum", "page_hinkley", "spike", "stuck", "limits", "novelty"]


def test_registry_builds_one_detector_per_kind_with_per_point_parameters():
    ens = build_detectors(ALL_KINDS_SPECS)
    assert ens.names == list(KINDS)
    ewma = ens.detectors[0]
    assert isinstance(ewma, EwmaZ)
    assert ewma.tau_s.tolist() == [30.0, 600.0, 600.0, 600.0, 600.0]  # given, then the class default
    assert ens.enabled[0].tolist() == [True, False, False, False, True]
    limits = ens.detectors[ens.names.index("limits")]
    assert isinstance(limits, Limits) and limits.hi[1] == 3.0 and np.isinf(limits.hi[0])


def test_registry_accepts_catalogue_detector_specs():
    from models.catalogue import DetectorSpec

    spec = DetectorSpec.model_validate({"kind": "ewma_z", "tau_s": 300, "threshold": 8.0, "warmup": 30})
    ens = build_detectors([[spec], []])
    assert ens.names == ["ewma_z"] and ens.detectors[0].threshold[0] == 8.0
    assert ens.enabled.tolist() == [[True, False]]


def test_registry_rejects_unknown_kind_and_parameter_saying_which():
    with pytest.raises(ValueError, match=r"point 1: detectors\[0\]: unknown kind 'fft'"):
        build_detectors([[], [{"kind": "fft"}]])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) tau \(known: tau_s, threshold, warmup\)"):
        build_detectors([[{"kind": "ewma_z", "tau": 5}]])
    with pytest.raises(ValueError, match="listed twice"):
        build_detectors([[{"kind": "spike"}, {"kind": "spike"}]])


def test_disabled_detector_never_fires_for_its_point():
    # Point 1 has only limits: a huge jump must not fire ewma_z for it, only limits.
    ens = build_detectors([[{"kind": "ewma_z", "warmup": 2, "threshold": 3.0}],
                           [{"kind": "limits", "hi": 1e9}]])
    t = np.arange(20, dtype=np.int64) * 10**9
    idx = np.tile([0, 1], 10)
    x = np.where(np.arange(20) == 19, 1e6, np.sin(np.arange(20.0)))
    _, mask = ens.update(idx, t, x)
    assert mask[-1] == 0


def test_default_detectors_are_what_a_new_point_gets():
    ens = build_detectors(default_specs(3))
    assert ens.names == [s["kind"] for s in DEFAULT_DETECTORS]
    assert ens.enabled.all()


def reference_combine(ens: Ensemble, raw_scores, raw_flags, idx):
    out_s, out_m = [], []
    for i, p in enumerate(idx):
        r, m = 0.0, 0
        for k, det in enumerate(ens.detectors):
            if not ens.enabled[k, p]:
                continue
            r = max(r, raw_scores[k][i] / det.score_scale()[p])
            m |= int(raw_flags[k][i]) << k
        u = 1.0 if np.isinf(r) else r / (1.0 + r)
        u = max(u, 0.5) if m else min(u, np.nextafter(0.5, 0))
        out_s.append(u)
        out_m.append(m)
    return np.array(out_s), np.array(out_m)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams())
def test_ensemble_score_is_in_unit_interval_and_half_exactly_when_a_detector_fired(data):
    _, stream, _ = data
    ens = build_detectors(ALL_KINDS_SPECS)
    singles = [type(d)(d.n_points) for d in ens.detectors]
    for single, det in zip(singles, ens.detectors, strict=True):
        single.load_state({k: v.copy() for k, v in det.state().items()})
    idx = np.array([p % 5 for p, *_ in stream], np.int64)
    tick = (idx, *arrays(stream)[1:])
    score, mask = ens.update(*tick)
    assert np.all((score >= 0) & (score <= 1)) and not np.isnan(score).any()
    np.testing.assert_array_equal(score >= 0.5, mask != 0)
    raw = [s.update(*tick) for s in singles]
    ref_s, ref_m = reference_combine(ens, [r[0] for r in raw], [r[1] for r in raw], idx)
    np.testing.assert_allclose(score, ref_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(mask, ref_m)


def test_ensemble_score_against_the_tick_start_leaves_state_unchanged():
    _, stream, split = random_stream(11, n_points=5)
    ens = build_detectors(ALL_KINDS_SPECS)
    ens.update(*arrays(stream[:split]))
    before = {k: np.array(v, copy=True) for k, v in ens.state().items()}
    ens.score(*arrays(stream[split:]))
    for k, v in ens.state().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_save_load_round_trip_equals_an_uninterrupted_run(tmp_path, seed):
    _, stream, _ = random_stream(seed, n=6000, n_points=5)
    split = int(np.random.default_rng(seed).integers(1, len(stream)))
    a, b = arrays(stream[:split]), arrays(stream[split:])

    ens = build_detectors(ALL_KINDS_SPECS)
    events = EventTracker(5, ens.names, min_samples=2, min_duration_s=0.0, cooldown_s=30.0)
    s_all, m_all = ens.update(*arrays(stream))
    ev_all = events.update(*arrays(stream), s_all, m_all)

    first = build_detectors(ALL_KINDS_SPECS)
    first_events = EventTracker(5, first.names, min_samples=2, min_duration_s=0.0, cooldown_s=30.0)
    s1, m1 = first.update(*a)
    ev1 = first_events.update(*a, s1, m1)
    first.save(tmp_path / "ensemble.npz")
    first_events.save(tmp_path / "events.npz")

    restarted = build_detectors(ALL_KINDS_SPECS)  # the agent rebuilds from config, then loads state
    restarted_events = EventTracker(5, restarted.names, min_samples=2, min_duration_s=0.0, cooldown_s=30.0)
    restarted.load(tmp_path / "ensemble.npz")
    restarted_events.load(tmp_path / "events.npz")
    s2, m2 = restarted.update(*b)
    ev2 = restarted_events.update(*b, s2, m2)

    np.testing.assert_array_equal(np.concatenate([s1, s2]), s_all)
    np.testing.assert_array_equal(np.concatenate([m1, m2]), m_all)
    closed = [e for e in ev1 + ev2 if not e.is_open]
    assert closed == [e for e in ev_all if not e.is_open]
    assert restarted_events.open_events() == events.open_events()
    assert any(m_all), "the stream should make detectors fire"


def test_loading_state_of_another_configuration_is_refused(tmp_path):
    build_detectors(default_specs(2)).save(tmp_path / "s.npz")
    other = build_detectors([[{"kind": "limits", "hi": 1}], []])
    with pytest.raises(ValueError, match="build it from the same config"):
        other.load(tmp_path / "s.npz")


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path):
    ens = build_detectors(default_specs(2))
    ens.save(tmp_path / "state.npz")
    ens.save(tmp_path / "state.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_ensemble_detector_scores_explain_the_combined_score():
    ens = build_detectors([[{"kind": "limits", "hi": 1.0}, {"kind": "ewma_z"}]])
    score, mask = ens.update(np.zeros(2, np.int64), np.array([0, 10**9]), np.array([0.0, 3.0]))
    raw, flags = ens.detector_scores(2)
    assert ens.names == ["ewma_z", "limits"]
    assert mask.tolist() == [0, 0b10] and flags[1].tolist() == [False, True]
    assert score[1] == pytest.approx(raw[1, 1] / (1 + raw[1, 1]))
