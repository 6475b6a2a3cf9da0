"""The vessel simulator as a specification: voyages, the propeller law and the engine's tables, the three faults with
their ground truth, determinism per seed, and the scenario file's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.catalogue import get_type
from simulators.vessel import (
    CYLINDERS,
    POINTS,
    Vessel,
    VesselFault,
    VesselParams,
    load_vessel_scenario,
    run_vessel_scenario,
)

S = 1_000_000_000
DAY = 86_400 * S
T0 = 1_748_822_400 * S


def _run(days: float = 7.0, seed: int = 3, faults: list[VesselFault] | None = None, period: float = 60.0):
    return Vessel("vessel-001", VesselParams(), seed=seed, faults=faults).simulate(T0, days * 86_400, period)


def test_it_reports_every_point_of_the_vessel_type_and_nothing_else():
    run = _run(1)
    assert set(run.points) == set(get_type("vessel").points) == set(POINTS)
    assert len(CYLINDERS) == 6
    t, v, quality = run.points["me_speed"]
    assert len(t) == 1440 and np.all(np.diff(t) == 60 * S) and t[0] == T0 and v.dtype == np.float64
    assert set(quality.tolist()) <= {0, 2}


def test_the_same_seed_gives_the_same_readings_and_another_seed_other_voyages():
    a, b, c = _run(2, seed=5), _run(2, seed=5), _run(2, seed=6)
    for p in POINTS:
        np.testing.assert_array_equal(a.points[p][1], b.points[p][1])
    assert [s.kind for s in a.segments] == [s.kind for s in b.segments]
    assert not np.array_equal(a.points["me_speed"][1], c.points["me_speed"][1])


def test_voyages_have_port_stays_manoeuvring_and_sea_passages_at_service_load():
    run = _run(14)
    kinds = [s.kind for s in run.segments]
    assert {"port", "manoeuvring", "sea_passage"} <= set(kinds)
    speed, power = run.points["me_speed"][1], run.points["me_shaft_power"][1]
    t = (run.points["me_speed"][0] - T0) / S
    for seg in run.segments:
        inside = (t >= seg.start_s + 3600) & (t < seg.end_s - 3600)
        if seg.kind == "port" and inside.any():
            assert np.all(speed[inside] == 0.0) and np.all(power[inside] == 0.0)
        if seg.kind == "sea_passage" and inside.any():
            load = np.median(power[inside]) / 14_280
            assert 0.5 <= load <= 1.0  # service load, heavier than the clean curve with fouling and weather
            assert 80.0 <= np.median(speed[inside]) <= 100.0
    assert speed.max() <= 105.0 and power.max() <= 14_280 * 1.1


def test_readings_are_in_a_two_stroke_engines_ranges_at_sea():
    run = _run(7)
    at_sea = run.truth["load"] > 0.6
    med = {p: float(np.median(run.points[p][1][at_sea])) for p in POINTS}
    assert 300 <= med["me_exh_temp_cyl1"] <= 380  # after the exhaust valves, °C
    assert 2.0 <= med["me_scav_air_pressure"] <= 3.6  # bar gauge
    assert 12_000 <= med["me_tc_speed"] <= 15_500  # rpm
    assert 50 <= med["me_fuel_index"] <= 85  # %
    assert 16 <= med["ship_speed"] <= 21.5  # kn
    assert 40 <= med["shaft_bearing_1_temp"] <= 55 and 35 <= med["stern_tube_temp"] <= 55  # °C
    assert 1.0 <= med["shaft_vib_1"] <= 3.5  # mm/s: ISO 10816-3 group 1 flexible, zone A
    temps = np.stack([run.points[c][1][at_sea] for c in CYLINDERS])
    spread = np.median(temps.max(axis=0) - temps.min(axis=0))
    assert 3 <= spread <= 30  # a healthy engine is balanced within a few tens of kelvin, not perfectly


def test_a_failing_injector_moves_only_its_cylinders_exhaust():
    fault = VesselFault("fuel_injector", T0 + 2 * DAY, T0 + 5 * DAY, cylinder=4, deviation_k=70, ramp_s=3600)
    healthy, faulty = _run(6), _run(6, faults=[fault])
    t = healthy.points["me_speed"][0]
    during = (t >= fault.start_ns + 2 * 3600 * S) & (t < fault.end_ns) & (healthy.truth["load"] > 0.4)
    assert during.sum() > 100
    for c in CYLINDERS:
        diff = faulty.points[c][1][during] - healthy.points[c][1][during]
        assert np.median(diff) == pytest.approx(70.0 if c.endswith("cyl4") else 0.0, abs=1.0), c
    after = (t >= fault.end_ns + 2 * 3600 * S) & (healthy.truth["load"] > 0.4)
    assert np.median(faulty.points["me_exh_temp_cyl4"][1][after] - healthy.points["me_exh_temp_cyl4"][1][after]) \
        == pytest.approx(0.0, abs=1.0)  # replaced


def test_turbocharger_fouling_lowers_scavenge_air_and_raises_every_exhaust_at_the_same_load():
    fault = VesselFault("turbocharger_fouling", T0 + 1 * DAY, T0 + 6 * DAY, fouling_per_day=0.12)
    healthy, faulty = _run(8), _run(8, faults=[fault])
    assert faulty.truth["tc_fouling"][-1] - healthy.truth["tc_fouling"][-1] == pytest.approx(0.6, abs=1e-9)
    late = (faulty.points["me_speed"][0] >= T0 + 6 * DAY) & (healthy.truth["load"] > 0.5)
    assert late.sum() > 100
    np.testing.assert_allclose(faulty.truth["load"][late], healthy.truth["load"][late])  # the same load
    scav = np.median(faulty.points["me_scav_air_pressure"][1][late] / healthy.points["me_scav_air_pressure"][1][late])
    assert scav == pytest.approx(1 - 0.12 * 0.6 / (1 - 0.12 * healthy.truth["tc_fouling"][-1]), abs=0.01)
    for c in CYLINDERS:
        assert np.median(faulty.points[c][1][late] - healthy.points[c][1][late]) == pytest.approx(45 * 0.6, abs=1.5)


def test_a_wearing_bearing_warms_and_shakes_its_own_place_and_the_truth_names_its_failure():
    fault = VesselFault("shaft_bearing_wear", T0 + 1 * DAY, T0 + 8 * DAY, bearing=2)
    run = _run(9, faults=[fault])
    assert run.truth["wear_2"][0] == 0.0 and run.truth["wear_2"][-1] == 1.0  # failed, and stays so
    late = (run.points["me_speed"][0] >= T0 + 7 * DAY) & (run.truth["load"] > 0.5)
    healthy = _run(9)
    d_vib2 = np.median(run.points["shaft_vib_2"][1][late] - healthy.points["shaft_vib_2"][1][late])
    d_vib1 = np.median(run.points["shaft_vib_1"][1][late] - healthy.points["shaft_vib_1"][1][late])
    d_t2 = np.median(run.points["shaft_bearing_2_temp"][1][late] - healthy.points["shaft_bearing_2_temp"][1][late])
    assert d_vib2 > 3.0 and d_vib1 < 0.1 * d_vib2 and d_t2 > 10.0


def test_the_scenario_writes_its_ground_truth(tmp_path):
    sc = load_vessel_scenario("simulators/scenarios/vessel-faults.yaml")
    result = run_vessel_scenario(sc, tmp_path, publish=False)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth == json.loads(json.dumps(result.ground_truth))
    assert [a["id"] for a in truth["assets"]] == ["vessel-001", "vessel-002", "vessel-003", "vessel-004"]
    assert {a["type"] for a in truth["assets"]} == {"vessel"}
    assert [(f["asset"], f["kind"], f["params"].get("cylinder"), f["params"].get("bearing")) for f in truth["faults"]] \
        == [("vessel-001", "fuel_injector", 4, None), ("vessel-002", "turbocharger_fouling", None, None),
            ("vessel-003", "shaft_bearing_wear", None, 2)]
    bearing = truth["faults"][2]
    assert bearing["failure_ns"] == bearing["end_ns"] == truth["start_ns"] + 13 * DAY
    assert {e["kind"] for e in truth["events"]} == {"port", "manoeuvring", "sea_passage"}
    assert result.n_readings == 4 * 14 * 1440 * len(POINTS)


@pytest.mark.parametrize(("fault", "message"), [
    ({"vessel": "vessel-009", "kind": "fuel_injector", "cylinder": 1, "start": "1d", "duration": "1d"},
     "unknown vessel 'vessel-009'"),
    ({"vessel": "vessel-001", "kind": "fuel_injector", "start": "1d", "duration": "1d"}, "cylinder must be 1..6"),
    ({"vessel": "vessel-001", "kind": "fuel_injector", "cylinder": 7, "start": "1d", "duration": "1d"},
     "less than or equal to 6"),
    ({"vessel": "vessel-001", "kind": "shaft_bearing_wear", "bearing": 3, "start": "1d", "duration": "1d"},
     "bearing must be one of"),
    ({"vessel": "vessel-001", "kind": "rudder", "start": "1d", "duration": "1d"}, "fuel_injector"),
])
def test_a_scenario_with_a_fault_that_cannot_be_is_refused_naming_it(tmp_path, fault, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"name": "bad", "duration": "2d", "vessels": [{"count": 1}], "faults": [fault]}))
    with pytest.raises(ValueError, match=message):
        load_vessel_scenario(path)
