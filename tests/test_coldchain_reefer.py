"""Live reefer rules on simulated trailers whose faults and defrosts are known (simulators.trailer)."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.alerts import AlertService
from cloud.registry import Alert, Registry
from cloud.rules.coldchain import Boundary, Profile, evaluate, load_profile
from cloud.rules.coldchain.reefer import ReeferRuleSettings, assess_trailer, load_samples, raise_alarms
from cloud.store import Rows
from cloud.store.embedded import EmbeddedStore
from simulators.trailer import Fault, Series, Trailer, TrailerParams

S = 10**9
MIN = 60 * S
H = 3600 * S
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
DAY_S = 86_400
WARM_30M = Profile(name="warm-30m", boundaries=[Boundary(name="warm", above=8.0, after="30m", mode="single",
                                                          severity="high")])


def simulate(*faults: Fault, seed: int = 1, **params) -> object:
    return Trailer("trailer-1", TrailerParams(**params), seed=seed, faults=faults).run(T0, DAY_S, 60)


def rules(assessment) -> list[tuple[str, float]]:
    return [(a.rule, (a.fired_at_ns - T0) / MIN) for a in assessment.alarms]


def test_a_normal_day_raises_nothing_and_recognises_every_defrost():
    run = simulate()
    got = assess_trailer(run.points, load_profile("who-30-day-refrigerator"))
    assert got.alarms == []
    truth = [e for e in run.events if e.kind == "defrost"]
    assert len(got.events) == len(truth) == 3
    for seen, true in zip(got.events, truth, strict=True):
        # Seen from the compressor going off (an off cycle may precede the heaters) to it restarting.
        assert true.start_ns - 10 * MIN <= seen.start_ns <= true.start_ns
        assert true.end_ns <= seen.end_ns <= true.end_ns + 2 * MIN


@pytest.mark.parametrize("ambient_c", [10.0, 25.0, 40.0])
def test_defrost_is_never_called_a_compressor_failure(ambient_c):
    for seed in (1, 2):
        got = assess_trailer(simulate(seed=seed, ambient_mean_c=ambient_c).points, WARM_30M)
        assert got.alarms == []


def test_defrost_readings_are_paused_not_excursions():
    run = simulate(setpoint_c=2.0)  # defrost warms the supply air past the 5 °C food cold-holding limit
    profile = load_profile("fda-cold-holding")
    sa = run.points["supply_air"]
    assert [a.fired_at_ns for a in evaluate(sa.t_ns, sa.values, profile).alarms] == \
           [T0 + 380 * MIN, T0 + 734 * MIN, T0 + 1093 * MIN]  # without recognising defrost: three "excursions"
    got = assess_trailer(run.points, profile)
    assert got.alarms == []
    assert got.evaluation.paused_s == 5220.0
    assert round(got.evaluation.mkt_c, 2) == round(evaluate(sa.t_ns, sa.values, profile).mkt_c, 2)  # MKT unchanged


def test_compressor_failure_is_called_before_the_load_leaves_range():
    fail = Fault(kind="compressor_failure", start_ns=T0 + 8 * H, end_ns=T0 + 14 * H)
    run = simulate(fail)
    got = assess_trailer(run.points, WARM_30M)
    sa = run.points["supply_air"]
    crossing = int(sa.t_ns[np.argmax((sa.t_ns >= fail.start_ns) & (sa.values >= 8.0))])
    failure = [a for a in got.alarms if a.rule == "coldchain:compressor-failure"]
    assert len(failure) == 1
    assert fail.start_ns < failure[0].fired_at_ns < crossing
    assert (failure[0].fired_at_ns - fail.start_ns) / MIN == 34.0
    ev = failure[0].evidence
    assert (ev["values"]["off_since"], ev["values"]["ongoing"], ev["thresholds"]["compressor_confirm_s"]) == (
        "2024-01-01T08:00:00Z", False, 900.0)
    # Sensor noise flickers around 8.0 at first; the alarm comes 30 min into the first unbroken run.
    hot = sa.values >= 8.0
    run_start = next(i for i in range(hot.size) if hot[i:i + 30].all())
    warm = [a for a in got.alarms if a.rule == "coldchain:warm-30m:warm"]
    assert warm[0].fired_at_ns == sa.t_ns[run_start] + 30 * MIN
    assert warm[0].evidence["window"]["start_ns"] == sa.t_ns[run_start]
    assert warm[0].evidence["thresholds"] == {"profile": "warm-30m", "boundary": "warm", "condition": "≥ 8.0 °C",
                                              "after_s": 1800.0, "mode": "single"}


def test_stuck_defrost_is_an_alarm_after_two_hours():
    run = simulate(Fault(kind="defrost_stuck", start_ns=T0 + 2 * H, end_ns=T0 + 5 * H))
    got = assess_trailer(run.points, load_profile("who-30-day-refrigerator"))
    assert [r for r, _ in rules(got)] == ["coldchain:defrost-stuck"]
    assert T0 + 4 * H - 10 * MIN <= got.alarms[0].fired_at_ns <= T0 + 4 * H


def test_door_open_too_long():
    run = simulate(Fault(kind="door_open", start_ns=T0 + 3 * H, end_ns=T0 + 3 * H + 40 * MIN))
    got = assess_trailer(run.points, WARM_30M)
    assert rules(got) == [("coldchain:door-open-long", 200.0)]
    values = got.alarms[0].evidence["values"]
    assert (values["opened_at"], values["closed_at"], values["open_s"]) == ("2024-01-01T03:00:00Z",
                                                                           "2024-01-01T03:40:00Z", 2400.0)


def test_a_short_door_opening_is_normal():
    run = simulate(Fault(kind="door_open", start_ns=T0 + 3 * H, end_ns=T0 + 3 * H + 19 * MIN))
    assert assess_trailer(run.points, WARM_30M).alarms == []


def test_stuck_return_air_sensor():
    run = simulate(Fault(kind="sensor_stuck", point="return_air", start_ns=T0 + 16 * H, end_ns=T0 + 18 * H))
    got = assess_trailer(run.points, WARM_30M)
    assert [r for r, _ in rules(got)] == ["coldchain:sensor-stuck:return_air"]
    assert T0 + 16 * H + 30 * MIN - 2 * MIN <= got.alarms[0].fired_at_ns <= T0 + 16 * H + 30 * MIN
    assert got.alarms[0].evidence["values"]["value"] == float(run.points["return_air"].values[16 * 60])


def test_reading_outside_the_physical_range_is_a_sensor_fault():
    run = simulate()
    sa = run.points["supply_air"]
    values = sa.values.copy()
    values[600:605] = 85.0  # beyond the catalogue's 70 °C
    points = {**run.points, "supply_air": Series(sa.t_ns, values, sa.quality)}
    got = assess_trailer(points, Profile(name="none"))
    assert rules(got) == [("coldchain:sensor-range:supply_air", 600.0)]
    assert got.alarms[0].evidence["values"] == {"point": "supply_air", "count": 5, "min": 85.0, "max": 85.0}


def test_bad_quality_samples_are_ignored():
    run = simulate()
    sa = run.points["supply_air"]
    values, quality = sa.values.copy(), sa.quality.copy()
    values[600:605], quality[600:605] = 85.0, 2
    points = {**run.points, "supply_air": Series(sa.t_ns, values, quality)}
    assert assess_trailer(points, Profile(name="none")).alarms == []


def test_alarms_found_after_an_outage_are_marked_late():
    run = simulate(Fault(kind="door_open", start_ns=T0 + 3 * H, end_ns=T0 + 3 * H + 40 * MIN))
    late = assess_trailer(run.points, WARM_30M, now_ns=T0 + DAY_S * S)
    prompt = assess_trailer(run.points, WARM_30M, now_ns=T0 + 205 * MIN)
    assert late.alarms[0].evidence["detected_late"] is True
    assert prompt.alarms[0].evidence["detected_late"] is False


def test_a_silent_unit_that_comes_back_warm_lost_its_power():
    outage = Fault(kind="power_loss", start_ns=T0 + 10 * H, end_ns=T0 + 13 * H)  # sensors silent meanwhile
    run = simulate(outage)
    for offline, said in ((None, None), ([(outage.start_ns + 90 * S, outage.end_ns)], True)):
        got = assess_trailer(run.points, WARM_30M, offline=offline)
        assert [(a.rule, a.classification, a.fired_at_ns) for a in got.alarms] == [
            ("coldchain:power-loss", "power_loss", outage.end_ns)]  # not a compressor failure, not an excursion
        values = got.alarms[0].evidence["values"]
        assert (values["silent_s"], values["gateway_offline"], values["compressor_running_after"]) == (
            3 * 3600.0 + 60, said, True)
        assert values["rise_c"] >= 3.0


def test_a_hole_while_the_gateway_stayed_up_is_not_a_power_loss():
    run = simulate(Fault(kind="power_loss", start_ns=T0 + 10 * H, end_ns=T0 + 13 * H))
    assert assess_trailer(run.points, WARM_30M, offline=[(T0 + 20 * H, T0 + 21 * H)]).alarms == []


def test_a_hole_in_the_data_is_not_a_stuck_sensor():
    run = simulate(Fault(kind="sensor_dropout", point="return_air", start_ns=T0 + 10 * H, end_ns=T0 + 11 * H))
    ra = run.points["return_air"]
    values = ra.values.copy()
    k = int(np.searchsorted(ra.t_ns, T0 + 11 * H))
    values[k] = values[k - 1]  # the same reading either side of the hole
    points = {**run.points, "return_air": Series(ra.t_ns, values, ra.quality)}
    assert assess_trailer(points, WARM_30M, offline=[]).alarms == []


def test_a_unit_that_reports_defrost_is_believed():
    run = simulate(setpoint_c=2.0)
    truth = run.truth["defrost"]
    points = {**run.points, "defrost": Series(run.t_ns, truth.astype(float), np.zeros(truth.size, np.int8))}
    got = assess_trailer(points, load_profile("fda-cold-holding"), ReeferRuleSettings(defrost_gap_c=99.0))
    assert [(e.start_ns, e.end_ns) for e in got.events] == [(e.start_ns, e.end_ns) for e in run.events]
    assert got.alarms == []


def test_store_to_alert_service(tmp_path):
    run = simulate(Fault(kind="compressor_failure", start_ns=T0 + 8 * H, end_ns=T0 + 14 * H))
    store = EmbeddedStore(tmp_path / "ts.db")
    rows = Rows()
    for point, s in run.points.items():
        rows.extend_series("acme", "trailer-1", point, s.t_ns.tolist(), s.values.tolist(), s.quality.tolist())
    store.write(rows)
    registry = Registry(f"sqlite:///{tmp_path / 'reg.db'}")
    registry.create_schema()
    samples = load_samples(store, "acme", "trailer-1", T0, T0 + DAY_S * S)
    got = assess_trailer(samples, WARM_30M)
    assert rules(got) == rules(assess_trailer(run.points, WARM_30M))
    opened = raise_alarms(AlertService(registry), "acme", "trailer-1", got.alarms)
    # The 6 h failure fires the 30 min boundary again and again: one open alert per rule, refreshed.
    firsts = [a for i, a in enumerate(got.alarms) if a.rule not in {b.rule for b in got.alarms[:i]}]
    assert [new for _, new in opened] == [a in firsts for a in got.alarms]
    with registry.session() as s:
        stored = s.query(Alert).order_by(Alert.opened_ns).all()
        assert [(a.rule, a.severity, a.opened_ns, a.occurrences) for a in stored] == [
            ("coldchain:compressor-failure", "critical", firsts[0].fired_at_ns, 1),
            ("coldchain:warm-30m:warm", "high", firsts[1].fired_at_ns, len(got.alarms) - 1)]
        assert stored[0].evidence["rule"] == "compressor-failure"
    store.close()
