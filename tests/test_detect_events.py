"""The event layer: debounce, minimum duration, cool-down, open/closed reporting — exact events."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect import AnomalyEvent, EventTracker

S = 10**9  # one second in ns
NAMES = ["ewma_z", "spike", "limits"]


def feed(tracker: EventTracker, masks, point=0, t0=0, step_s=1, values=None, ok=None, scores=None):
    n = len(masks)
    mask = np.array(masks, np.int64)
    t = t0 + np.arange(n, dtype=np.int64) * step_s * S
    x = np.arange(n, dtype=np.float64) if values is None else np.array(values, np.float64)
    score = np.where(mask != 0, 0.6, 0.1) if scores is None else np.array(scores, np.float64)
    good = np.ones(n, bool) if ok is None else np.array(ok, bool)
    return tracker.update(np.full(n, point, np.int64), t, x, good, score, mask)


def closed(events):
    return [(e.start_ns // S, e.end_ns // S, e.n_samples) for e in events if not e.is_open]


def test_single_flag_is_an_event_without_debounce():
    ev = feed(EventTracker(1, NAMES), [0, 1, 0])
    assert ev == [AnomalyEvent(point=0, seq=0, start_ns=1 * S, end_ns=1 * S, peak_score=0.6, peak_value=1.0,
                               detectors=("ewma_z",), n_samples=1)]


def test_debounce_needs_min_consecutive_flagged_samples():
    ev = feed(EventTracker(1, NAMES, min_samples=3), [1, 1, 0, 1, 1, 1, 0, 1, 0])
    assert closed(ev) == [(3, 5, 3)]


def test_min_duration_is_first_to_last_flagged_time():
    ev = feed(EventTracker(1, NAMES, min_duration_s=2.0), [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0])
    assert closed(ev) == [(3, 5, 3), (7, 10, 4)]


def test_cooldown_ignores_flags_that_start_too_soon_after_an_event_ended():
    # Event ends at t=1; cooldown 3 s: flags at t=2..3 are ignored, t=4 may start a new event.
    ev = feed(EventTracker(1, NAMES, cooldown_s=3.0), [1, 1, 0, 1, 1, 0, 1, 0, 0])
    assert closed(ev) == [(0, 1, 2), (4, 4, 1)]


def test_flags_inside_cooldown_are_dropped_and_the_first_one_after_it_may_start_an_event():
    # Event [0, 0]; with a 2 s cool-down t=2 may start one, with 2.5 s the run's samples before t=2.5
    # are dropped and the event starts at t=3.
    ev = feed(EventTracker(1, NAMES, cooldown_s=2.0), [1, 0, 1, 1, 1, 1, 0])
    assert closed(ev) == [(0, 0, 1), (2, 5, 4)]
    ev = feed(EventTracker(1, NAMES, cooldown_s=2.5), [1, 0, 1, 1, 1, 1, 0])
    assert closed(ev) == [(0, 0, 1), (3, 5, 3)]


def test_open_event_is_reported_open_then_closed_later_with_the_same_seq():
    tr = EventTracker(1, NAMES, min_samples=2)
    first = feed(tr, [0, 1, 1, 1], values=[0, 5, 9, 7], scores=[0, 0.6, 0.9, 0.7])
    assert first == [AnomalyEvent(0, 0, 1 * S, None, 0.9, 9.0, ("ewma_z",), 3)]
    assert tr.open_events() == first
    assert feed(tr, [1, 1], t0=4 * S) == []  # still open: nothing new to report
    last = feed(tr, [4, 0], t0=6 * S, values=[11, 0], scores=[0.95, 0.1])
    assert last == [AnomalyEvent(0, 0, 1 * S, 6 * S, 0.95, 11.0, ("ewma_z", "limits"), 6)]
    assert tr.open_events() == []


def test_event_opened_and_closed_in_one_tick_is_reported_once_closed():
    ev = feed(EventTracker(1, NAMES), [1, 1, 0])
    assert len(ev) == 1 and not ev[0].is_open


def test_detector_names_are_the_union_of_mask_bits_during_the_event():
    ev = feed(EventTracker(1, NAMES), [1, 2, 3, 0])
    assert ev[0].detectors == ("ewma_z", "spike")


def test_bad_quality_and_nan_samples_neither_extend_nor_end_an_event():
    ev = feed(EventTracker(1, NAMES, min_samples=3), [1, 0, 1, 0, 1, 0],
              ok=[True, False, True, True, True, True], values=[1, 2, 3, float("nan"), 5, 6])
    assert closed(ev) == [(0, 4, 3)]


def test_points_are_independent():
    tr = EventTracker(2, NAMES, min_samples=2)
    idx = np.array([0, 1, 0, 1, 0, 1])
    mask = np.array([1, 1, 1, 0, 0, 0])
    t = np.array([0, 0, 1, 1, 2, 2]) * S
    ev = tr.update(idx, t, np.zeros(6), np.ones(6, bool), np.full(6, 0.6), mask)
    assert [(e.point, e.start_ns, e.end_ns) for e in ev] == [(0, 0, 1 * S)]


def test_peak_is_the_highest_score_and_its_value():
    ev = feed(EventTracker(1, NAMES), [1, 1, 1, 0], values=[3, 8, 4, 0], scores=[0.6, 0.8, 0.8, 0])
    assert (ev[0].peak_score, ev[0].peak_value) == (0.8, 8.0)


def test_events_are_numbered_in_opening_order_across_points():
    tr = EventTracker(2, NAMES)
    idx = np.array([1, 0, 1, 0])
    mask = np.array([1, 0, 0, 1])
    ev = tr.update(idx, np.arange(4) * S, np.zeros(4), np.ones(4, bool), np.full(4, 0.6), mask)
    assert [(e.point, e.seq, e.is_open) for e in ev] == [(1, 0, False), (0, 1, True)]


def test_mismatched_score_length_is_rejected():
    tr = EventTracker(1, NAMES)
    with pytest.raises(ValueError, match="must match"):
        tr.update(np.zeros(2, np.int64), np.arange(2), np.zeros(2), np.ones(2, bool), np.zeros(3),
                  np.zeros(2))


def test_restart_in_the_middle_of_an_open_event_closes_it_once(tmp_path):
    masks = [0, 1, 1, 1, 1, 0, 0, 1, 0]
    whole = feed(EventTracker(1, NAMES, min_samples=2, cooldown_s=1.0), masks)
    before = EventTracker(1, NAMES, min_samples=2, cooldown_s=1.0)
    opened = feed(before, masks[:3])
    before.save(tmp_path / "events.npz")
    after = EventTracker(1, NAMES)  # parameters come back with the state
    after.load(tmp_path / "events.npz")
    rest = feed(after, masks[3:], t0=3 * S)
    assert [e.is_open for e in opened] == [True]
    assert rest == whole  # the close, and the later event: same seq numbers as without the restart


def test_release_holds_an_event_through_samples_scoring_above_it_and_ends_at_the_first_below():
    # a novelty-style onset flag, then samples that continue the anomaly just under 0.5, then calm ones
    scores = [0.1, 0.9, 0.4998, 0.4998, 0.3, 0.4998, 0.1]
    masks = [0, 1, 0, 0, 0, 0, 0]
    held = feed(EventTracker(1, NAMES, release=0.4995), masks, scores=scores)
    assert closed(held) == [(1, 3, 1)]  # held through 2 and 3; the 0.3 at 4 ends it; 5 starts nothing
    default = feed(EventTracker(1, NAMES), masks, scores=scores)
    assert closed(default) == [(1, 1, 1)]  # without release, any unflagged sample ends it, as before


def test_release_survives_save_and_load_and_old_state_without_it_loads_as_never_holding(tmp_path):
    tr = EventTracker(2, NAMES, release=[0.4995, 0.45])
    tr.save(tmp_path / "e.npz")
    again = EventTracker(2, NAMES)
    again.load(tmp_path / "e.npz")
    assert again.release.tolist() == [0.4995, 0.45]
    old = {k: v for k, v in tr.state().items() if k != "release"}
    again.load_state(old)
    assert np.isinf(again.release).all()
