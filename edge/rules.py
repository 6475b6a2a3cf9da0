"""Local rules: a threshold held for a time, evaluated on the gateway so the alarm exists offline.

A trailer too warm for 15 minutes is an alarm in the cab whether or not the cloud is reachable.
One numba pass over the tick: each sample visits only the rules of its own point (a CSR index from
point to rules), so the cost grows with samples, not with samples times rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.buffer import Tick
from edge.kernels import kernel
from models.catalogue import LocalRule
from models.wire import Quality


@kernel
def rules_kernel(idx, t_ns, x, ok, rule_start, rule_list, above, limit, hold_ns, since_ns, fired_ns,
                 out_rule, out_start, out_fired, out_value):
    """Per sample in order: a rule's condition starts, holds, fires once when held ``hold_ns``, or resets."""
    k = 0
    for i in range(idx.shape[0]):
        if not ok[i] or x[i] != x[i]:
            continue
        p = idx[i]
        for j in range(rule_start[p], rule_start[p + 1]):
            r = rule_list[j]
            cond = x[i] > limit[r] if above[r] else x[i] < limit[r]
            if not cond:
                since_ns[r] = -1
                fired_ns[r] = -1
                continue
            if since_ns[r] < 0:
                since_ns[r] = t_ns[i]
            if fired_ns[r] < 0 and t_ns[i] - since_ns[r] >= hold_ns[r]:
                fired_ns[r] = t_ns[i]
                out_rule[k] = r
                out_start[k] = since_ns[r]
                out_fired[k] = t_ns[i]
                out_value[k] = x[i]
                k += 1
    return k


@dataclass(frozen=True)
class Firing:
    rule: LocalRule
    asset: str
    start_ns: int
    fired_ns: int
    value: float


class LocalRules:
    def __init__(self, rules: list[tuple[str, LocalRule, int]], n_points: int) -> None:
        self._rules = rules
        order = sorted(range(len(rules)), key=lambda r: rules[r][2])
        counts = np.bincount(np.array([rules[r][2] for r in order], np.int64), minlength=n_points)
        self._start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._per_point = int(counts.max()) if len(counts) else 0
        self._list = np.array(order, np.int64)
        self._above = np.array([r.above is not None for _, r, _ in rules], np.bool_)
        self._limit = np.array([r.above if r.above is not None else r.below for _, r, _ in rules], np.float64)
        self._hold = np.array([int(r.for_s * 1e9) for _, r, _ in rules], np.int64)
        self.since_ns = np.full(len(rules), -1, np.int64)
        self.fired_ns = np.full(len(rules), -1, np.int64)

    def evaluate(self, tick: Tick) -> list[Firing]:
        if not self._rules or not len(tick):
            return []
        n = len(tick) * max(1, self._per_point)  # a sample fires each of its point's rules at most once
        out_rule = np.empty(n, np.int64)
        out_start = np.empty(n, np.int64)
        out_fired = np.empty(n, np.int64)
        out_value = np.empty(n, np.float64)
        k = rules_kernel(tick.idx, tick.t_ns, tick.x, tick.quality == Quality.GOOD, self._start, self._list,
                         self._above, self._limit, self._hold, self.since_ns, self.fired_ns,
                         out_rule, out_start, out_fired, out_value)
        return [Firing(self._rules[r][1], self._rules[r][0], s, f, v) for r, s, f, v in
                zip(out_rule[:k].tolist(), out_start[:k].tolist(), out_fired[:k].tolist(), out_value[:k].tolist(),
                    strict=True)]

    def state(self) -> dict[str, np.ndarray]:
        return {"since_ns": self.since_ns, "fired_ns": self.fired_ns}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if len(state["since_ns"]) != len(self._rules):
            return  # the rule set changed: start cold rather than misattribute state
        self.since_ns = np.asarray(state["since_ns"], np.int64).copy()
        self.fired_ns = np.asarray(state["fired_ns"], np.int64).copy()
