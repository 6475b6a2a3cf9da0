"""Scoring detections against ground truth: exact numbers on a small hand-checked run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulators.cli import app
from simulators.evaluate import Detection, evaluate, load_detections, parse_detections

H = 3600 * 10**9
M = 60 * 10**9
S = 10**9

TRUTH = {
    "start_ns": 0,
    "end_ns": 48 * H,
    "assets": [{"id": "a"}, {"id": "b"}],
    "faults": [
        {"asset": "a", "kind": "door_open", "start_ns": 10 * H, "end_ns": 11 * H},
        {"asset": "b", "kind": "compressor_failure", "start_ns": 20 * H, "end_ns": 28 * H},
        {"asset": "b", "kind": "door_open", "start_ns": 40 * H, "end_ns": 41 * H},
        {"asset": "a", "kind": "bearing_outer_race", "start_ns": 30 * H, "end_ns": 46 * H, "failure_ns": 46 * H},
    ],
    "events": [
        {"asset": "a", "kind": "defrost", "start_ns": 6 * H, "end_ns": 6 * H + 25 * M},
        {"asset": "b", "kind": "defrost", "start_ns": 6 * H, "end_ns": 6 * H + 25 * M},
    ],
}

DETECTIONS = [
    Detection("a", 10 * H + 5 * M),  # door_open on a, 300 s late
    Detection("a", 10 * H + 30 * M),  # the same fault again: matched, not a false alarm
    Detection("b", 20 * H - 30 * S),  # compressor 30 s early: inside the 60 s tolerance
    Detection("a", 6 * H + 10 * M, kind="defrost"),  # classified as the defrost it is in: explained
    Detection("b", 6 * H + 10 * M),  # unclassified during defrost: a false alarm (in defrost)
    Detection("a", 3 * H),  # nothing happening: a false alarm
    Detection("a", 36 * H),  # bearing: 6 h after onset, 10 h before failure
    Detection("zz", 5 * H),  # an asset this run does not have: ignored
    Detection("a", 11 * H + 20 * M),  # 20 min after the door closed: inside the 30 min grace
    Detection("b", 7 * H + 5 * M, kind="defrost"),  # 40 min after defrost ended: beyond grace, false
]


def test_recall_delay_lead_and_false_alarms_on_a_hand_checked_run():
    r = evaluate(TRUTH, DETECTIONS, tolerance_s=60, grace_s=1800)
    assert (r.detections, r.ignored, r.matched, r.explained, r.false_alarms) == (10, 1, 5, 1, 3)
    assert r.asset_days == 4.0 and r.false_alarms_per_asset_day == 0.75
    assert r.false_alarms_in_events == {"defrost": 1}
    door, comp, bearing = r.per_kind["door_open"], r.per_kind["compressor_failure"], r.per_kind["bearing_outer_race"]
    assert (door.faults, door.caught, door.recall, door.median_delay_s, door.median_lead_s) == (2, 1, 0.5, 300.0, None)
    assert (comp.faults, comp.caught, comp.recall, comp.median_delay_s) == (1, 1, 1.0, -30.0)
    assert (bearing.caught, bearing.median_delay_s, bearing.median_lead_s) == (1, 21_600.0, 36_000.0)
    o = r.overall
    assert (o.faults, o.caught, o.recall, o.median_delay_s, o.median_lead_s) == (4, 3, 0.75, 300.0, 36_000.0)
    missed = [(f.asset, f.kind) for f in r.faults if not f.caught]
    assert missed == [("b", "door_open")]


def test_tolerance_and_grace_move_the_window_edges():
    early = [Detection("a", 10 * H - 2 * M)]
    assert evaluate(TRUTH, early, tolerance_s=60).overall.caught == 0
    assert evaluate(TRUTH, early, tolerance_s=180).overall.caught == 1
    late = [Detection("a", 11 * H + 40 * M)]
    assert evaluate(TRUTH, late, grace_s=1800).false_alarms == 1
    assert evaluate(TRUTH, late, grace_s=3600).per_kind["door_open"].caught == 1


def test_a_wrong_classification_inside_an_event_is_still_a_false_alarm():
    r = evaluate(TRUTH, [Detection("a", 6 * H + 5 * M, kind="door_open")])
    assert (r.false_alarms, r.explained, r.false_alarms_in_events) == (1, 0, {"defrost": 1})


def test_one_detection_inside_two_overlapping_faults_catches_both():
    truth = {**TRUTH, "faults": [
        {"asset": "a", "kind": "x", "start_ns": 1 * H, "end_ns": 3 * H},
        {"asset": "a", "kind": "y", "start_ns": 2 * H, "end_ns": 4 * H},
    ], "events": []}
    r = evaluate(truth, [Detection("a", 2 * H + 30 * M)])
    assert (r.overall.caught, r.matched, r.false_alarms) == (2, 1, 0)
    assert [f.delay_s for f in r.faults] == [5400.0, 1800.0]


def test_no_faults_and_no_detections_give_empty_scores():
    r = evaluate({**TRUTH, "faults": [], "events": []}, [])
    assert (r.overall.faults, r.overall.recall, r.overall.median_delay_s, r.false_alarms_per_asset_day) == (
        0, None, None, 0.0)


def test_detections_load_from_api_json_and_csv(tmp_path):
    api = {"anomalies": [{"event_id": "e1", "gateway": "gw", "asset": "a", "point": "supply_air",
                          "start_ns": 5, "end_ns": 9, "peak_score": 7.5, "detectors": ["ewma_z"]}],
           "alerts": [{"asset": "b", "start_ns": 7, "rule": "supply-air-high"}]}
    (tmp_path / "d.json").write_text(json.dumps(api))
    assert load_detections(tmp_path / "d.json") == [Detection("a", 5, 9), Detection("b", 7, None, "supply-air-high")]
    (tmp_path / "d.csv").write_text("asset,start_ns,end_ns,classification\na,5,,defrost\nb,7,8,\n")
    assert load_detections(tmp_path / "d.csv") == [Detection("a", 5, None, "defrost"), Detection("b", 7, 8)]
    assert parse_detections([{"asset": "a", "t_ns": 3, "kind": "k"}]) == [Detection("a", 3, None, "k")]
    with pytest.raises(ValueError, match=r"\[0\]: a detection needs 'asset'"):
        parse_detections([{"start_ns": 3}])


def test_cli_prints_the_table_and_the_same_numbers_as_json(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
    (tmp_path / "det.json").write_text(json.dumps([
        {"asset": d.asset, "start_ns": d.start_ns, "classification": d.kind} for d in DETECTIONS]))
    args = ["evaluate", "--truth", str(tmp_path / "truth.json"), "--detections", str(tmp_path / "det.json")]
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "75.0%" in table.output and "false alarms: 3 (0.750 per asset-day; 1 in defrost)" in table.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(as_json.output) == evaluate(TRUTH, DETECTIONS).to_dict()


def test_a_scenario_ground_truth_scores_perfect_detections_perfectly(tmp_path):
    from simulators.scenario import load_scenario, run_scenario

    scenario = load_scenario(Path(__file__).parents[1] / "simulators" / "scenarios" / "trailer-faults.yaml")
    truth = run_scenario(scenario, tmp_path, publish=False).ground_truth
    perfect = [Detection(f["asset"], f["start_ns"] + 60 * S) for f in truth["faults"]]
    r = evaluate(truth, perfect)
    assert (r.overall.faults, r.overall.recall, r.overall.median_delay_s, r.false_alarms) == (4, 1.0, 60.0, 0)
