"""The gateway's compiled local rules and the contract's reference meaning agree, sample for sample."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.buffer import Tick
from edge.rules import LocalRules
from models.catalogue import LocalRule

S = 1_000_000_000


def test_a_rule_fires_once_when_held_and_again_after_a_return_to_normal():
    rule = LocalRule(name="warm", point="supply_air", above=8.0, for_s=30, severity="high")
    t = [i * 10 * S for i in range(12)]
    x = [9.0, 9.0, 9.0, 9.0, 9.0, 7.0, 9.0, None, 9.0, 9.0, 9.0, 9.0]
    assert rule.firings(t, x) == [(0, 30 * S, 9.0), (60 * S, 90 * S, 9.0)]


VALUES = st.one_of(st.floats(-5, 15), st.just(float("nan")))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), VALUES, st.booleans()), max_size=200),
       st.sampled_from([(8.0, None), (None, 0.0)]), st.integers(0, 50), st.integers(1, 4))
def test_the_edge_kernel_matches_the_reference(samples, limits, hold_s, n_ticks):
    above, below = limits
    rules = [LocalRule(name=f"r{p}", point="p", above=above, below=below, for_s=hold_s) for p in range(3)]
    edge = LocalRules([("a", r, p) for p, r in enumerate(rules)], n_points=3)
    idx = np.array([p for p, _, _ in samples], np.int64)
    t = np.arange(len(samples), dtype=np.int64) * 5 * S
    x = np.array([v for _, v, _ in samples], np.float64)
    q = np.array([0 if good else 2 for _, _, good in samples], np.int8)
    got = []
    for part in np.array_split(np.arange(len(samples)), n_ticks):  # state carries across ticks
        got += [(f.rule.name, f.start_ns, f.fired_ns, f.value)
                for f in edge.evaluate(Tick(idx[part], t[part], x[part], q[part]))]
    want = []
    for p, r in enumerate(rules):
        mask = (idx == p) & (q == 0)
        want += [(r.name, s, f, v) for s, f, v in r.firings(t[mask].tolist(), x[mask].tolist())]
    assert sorted(got) == sorted(want)
