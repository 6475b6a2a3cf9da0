"""Local rules: a threshold held for a time, evaluated on the gateway so the alarm exists offline.

A trailer too warm for 15 minutes is an alarm in the cab whether or not the cloud is reachable.
Rules look only at their own point's samples of the tick (a numpy mask), so their cost does not
grow with the number of points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.buffer import Tick
from models.catalogue import LocalRule
from models.wire import Quality


@dataclass
class _RuleState:
    rule: LocalRule
    asset: str
    point_idx: int
    since_ns: int = -1  # -1: condition not holding
    fired_at_ns: int = -1  # -1: not firing


@dataclass(frozen=True)
class Firing:
    rule: LocalRule
    asset: str
    start_ns: int
    fired_ns: int
    value: float


class LocalRules:
    def __init__(self, rules: list[tuple[str, LocalRule, int]]) -> None:
        self._states = [_RuleState(rule, asset, idx) for asset, rule, idx in rules]

    def evaluate(self, tick: Tick) -> list[Firing]:
        out: list[Firing] = []
        for st in self._states:
            mask = (tick.idx == st.point_idx) & (tick.quality == Quality.GOOD)
            if not mask.any():
                continue
            t = tick.t_ns[mask]
            x = tick.x[mask]
            order = np.argsort(t, kind="stable")
            r = st.rule
            cond = x[order] > r.above if r.above is not None else x[order] < r.below
            hold_ns = int(r.for_s * 1e9)
            for ti, ci, xi in zip(t[order].tolist(), cond.tolist(), x[order].tolist(), strict=True):
                if not ci:
                    st.since_ns = st.fired_at_ns = -1
                    continue
                if st.since_ns < 0:
                    st.since_ns = ti
                if st.fired_at_ns < 0 and ti - st.since_ns >= hold_ns:
                    st.fired_at_ns = ti
                    out.append(Firing(r, st.asset, st.since_ns, ti, xi))
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {
            "since_ns": np.array([s.since_ns for s in self._states], np.int64),
            "fired_at_ns": np.array([s.fired_at_ns for s in self._states], np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if len(state["since_ns"]) != len(self._states):
            return  # the rule set changed: start cold rather than misattribute state
        for s, since, fired in zip(self._states, state["since_ns"], state["fired_at_ns"], strict=True):
            s.since_ns, s.fired_at_ns = int(since), int(fired)
