"""Scenarios and CSV replay without a broker: reproducible ground truth, readable errors, time parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from simulators.replay import load_csv, point_name
from simulators.scenario import Scenario, load_scenario, run_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"
T0 = 1_748_822_400 * 10**9


def small(**overrides) -> Scenario:
    spec = {
        "name": "small", "seed": 5, "duration": "12h", "sample_period": "60s", "readings_csv": True,
        "fleet": [{"count": 2, "setpoint_c": 4.0}, {"id": "freezer-01", "setpoint_c": -20.0}],
        "faults": [{"asset": "trailer-002", "kind": "sensor_drift", "point": "return_air", "start": "2h",
                    "duration": "3h", "rate_per_h": 0.5},
                   {"asset": "freezer-01", "kind": "door_open", "start": 3600, "duration": "20m"}],
    }
    return Scenario.model_validate(spec | overrides)


def test_same_scenario_twice_gives_identical_data_and_ground_truth(tmp_path):
    run_scenario(small(), tmp_path / "a", publish=False)
    run_scenario(small(), tmp_path / "b", publish=False)
    for name in ("ground_truth.json", "readings.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = run_scenario(small(seed=6), tmp_path / "c", publish=False)
    assert (tmp_path / "c" / "readings.csv").read_bytes() != (tmp_path / "a" / "readings.csv").read_bytes()
    first = json.loads((tmp_path / "a" / "ground_truth.json").read_text())
    assert other.ground_truth["faults"] == first["faults"]


def test_ground_truth_lists_each_injected_fault_with_its_window_and_params(tmp_path):
    truth = run_scenario(small(), tmp_path, publish=False).ground_truth
    assert [a["id"] for a in truth["assets"]] == ["trailer-001", "trailer-002", "freezer-01"]
    assert truth["start_ns"] == T0 and truth["end_ns"] == T0 + 12 * 3600 * 10**9
    assert truth["faults"] == [
        {"asset": "trailer-002", "kind": "sensor_drift", "start_ns": T0 + 2 * 3600 * 10**9,
         "end_ns": T0 + 5 * 3600 * 10**9, "params": {"point": "return_air", "rate_per_h": 0.5}},
        {"asset": "freezer-01", "kind": "door_open", "start_ns": T0 + 3600 * 10**9,
         "end_ns": T0 + 4800 * 10**9, "params": {}},
    ]
    assert {e["kind"] for e in truth["events"]} == {"defrost"}
    assert truth["assets"][2]["params"]["setpoint_c"] == -20.0


def test_a_trailer_keeps_its_data_when_another_joins_the_fleet(tmp_path):
    alone = run_scenario(small(fleet=[{"count": 2}], faults=[]), tmp_path / "a", publish=False).runs[1]
    joined = run_scenario(small(fleet=[{"count": 2}, {"id": "x"}], faults=[]), tmp_path / "b",
                          publish=False).runs[1]
    np.testing.assert_array_equal(alone.points["supply_air"].values, joined.points["supply_air"].values)


@pytest.mark.parametrize("name", ["trailer-normal-week", "trailer-faults"])
def test_example_scenarios_load(name):
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    assert sc.name == name and sc.broker and sc.assets()


def test_example_fault_scenario_injects_the_four_faults():
    sc = load_scenario(SCENARIOS / "trailer-faults.yaml")
    assert {f.kind for f in sc.faults} == {"door_open", "compressor_failure", "defrost_stuck", "sensor_stuck"}


@pytest.mark.parametrize(("change", "message"), [
    ({"duration": "3 weeks"}, "use seconds or a number with s, m, h or d"),
    ({"faults": [{"asset": "nope", "kind": "door_open", "start": 0, "duration": 60}]},
     "unknown asset 'nope'"),
    ({"faults": [{"asset": "trailer-001", "kind": "sensor_stuck", "start": 0, "duration": 60}]},
     "'point' is required"),
    ({"fleet": [{"count": 1, "params": {"ua": 3}}]}, "ua"),
])
def test_scenario_errors_say_what_is_wrong(change, message):
    with pytest.raises(ValidationError, match=message):
        small(**change)


@pytest.mark.parametrize("stamp", ["2025-06-02T00:00:00Z", "2025-06-02 00:00:00", "1748822400",
                                   "1748822400000", "1748822400000000000", "1748822400.0"])
def test_replay_reads_iso_and_epoch_timestamps(tmp_path, stamp):
    path = tmp_path / "x.csv"
    path.write_text(f"Timestamp;Volume Flow RateRMS\n{stamp};1.5\n")
    t_ns, columns = load_csv(path)
    assert t_ns.tolist() == [T0]
    assert list(columns) == ["Volume_Flow_RateRMS"] and columns["Volume_Flow_RateRMS"].tolist() == [1.5]


def test_replay_sorts_rows_and_names_a_missing_time_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,a\n20,2\n10,1\n")
    t_ns, columns = load_csv(path)
    assert t_ns.tolist() == [10 * 10**9, 20 * 10**9] and columns["a"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="no 'time' column"):
        load_csv(path, time_column="time")
    assert point_name(" a/b+c ") == "a_b_c"
