"""Maintenance rules as a specification: ISO 10816-3 zones, alarm levels, health, trends, alerts, what-if."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from cloud.rules.maintenance import (
    ZONE_LIMITS_MM_S,
    SeverityClass,
    alarm_trip_levels,
    fit_trend,
    health_index,
    maintenance_alert,
    probability_zone_d_before,
)

DAY_NS = 86_400 * 10**9
T0_NS = 1_748_822_400 * 10**9  # 2025-06-02T00:00Z
CLASSES = [(1, "rigid", (2.3, 4.5, 7.1)), (1, "flexible", (3.5, 7.1, 11.0)),
           (2, "rigid", (1.4, 2.8, 4.5)), (2, "flexible", (2.3, 4.5, 7.1))]


@pytest.mark.parametrize(("group", "foundation", "limits"), CLASSES)
def test_zone_limits_are_the_domain_notes_table(group, foundation, limits):
    assert ZONE_LIMITS_MM_S[(group, foundation)] == limits
    assert SeverityClass(group, foundation).limits == limits


@pytest.mark.parametrize(("group", "foundation", "limits"), CLASSES)
def test_zone_at_and_around_each_boundary(group, foundation, limits):
    upper = SeverityClass(group, foundation)  # default: on the limit is the worse zone
    lower = SeverityClass(group, foundation, boundary="lower")
    for below, above, limit in zip("ABC", "BCD", limits, strict=True):
        assert upper.zone(limit) == above
        assert lower.zone(limit) == below
        for sev in (upper, lower):
            assert sev.zone(math.nextafter(limit, 0.0)) == below
            assert sev.zone(math.nextafter(limit, math.inf)) == above
            assert sev.zone(limit * 0.99) == below
            assert sev.zone(limit * 1.01) == above
    assert upper.zone(0.0) == "A"
    assert upper.zone(100.0) == "D"


def test_zone_index_is_element_wise_with_the_same_convention():
    sev = SeverityClass(2, "rigid")
    np.testing.assert_array_equal(sev.zone_index([0.5, 1.4, 2.0, 2.8, 4.49, 4.5, 9.0]), [0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(SeverityClass(2, "rigid", "lower").zone_index([1.4, 2.8, 4.5]), [0, 1, 2])


def test_a_class_the_standard_does_not_have_is_refused():
    with pytest.raises(ValueError, match="group 3"):
        SeverityClass(3, "rigid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boundary"):
        SeverityClass(2, "rigid", "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        SeverityClass().zone(-1.0)


def test_alarm_and_trip_levels():
    sev = SeverityClass(2, "rigid")
    assert alarm_trip_levels(sev) == (2.8, 5.625)  # no baseline: alarm at B/C; trip 1.25 x C/D
    assert alarm_trip_levels(sev, baseline_mm_s=1.0) == pytest.approx((1.7, 5.625), rel=1e-12)  # 1.0 + 0.25 x 2.8
    assert alarm_trip_levels(sev, baseline_mm_s=3.0) == pytest.approx((3.5, 5.625), rel=1e-12)  # capped at 1.25 x B/C
    assert alarm_trip_levels(SeverityClass(1, "flexible")) == pytest.approx((7.1, 13.75), rel=1e-12)


def test_health_index_is_one_in_zone_a_zero_in_zone_d_and_log_linear_between():
    sev = SeverityClass(2, "rigid")
    assert health_index(0.3, sev) == 1.0
    assert health_index(1.4, sev) == 1.0
    assert health_index(4.5, sev) == 0.0
    assert health_index(12.0, sev) == 0.0
    assert health_index(2.8, sev) == pytest.approx(1 - math.log(2.0) / math.log(4.5 / 1.4), rel=1e-12)
    np.testing.assert_allclose(health_index(np.array([1.4, 4.5]), sev), [1.0, 0.0])


def exponential_history(seed: int, days: float = 60.0, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Hourly velocity growing from 0.8 mm/s to exactly 4.5 mm/s (group 2 rigid zone D) at day 60, with
    multiplicative noise."""
    rng = np.random.default_rng(seed)
    t_ns = T0_NS + np.arange(round(days * 24)) * 3_600 * 10**9
    tau_days = 60.0 / math.log(4.5 / 0.8)
    v = 0.8 * np.exp((t_ns - T0_NS) / DAY_NS / tau_days) * np.exp(rng.normal(0.0, noise, len(t_ns)))
    return t_ns, v


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("now_days", [20.0, 30.0, 40.0, 53.0])
def test_zone_d_date_of_an_exponential_degradation_is_within_20_percent_a_week_or_more_ahead(seed, now_days):
    t_ns, v = exponential_history(seed)
    seen = t_ns <= T0_NS + now_days * DAY_NS
    fit = fit_trend(t_ns[seen], v[seen], model="auto")
    assert fit.model == "exponential"
    d = fit.crossing(SeverityClass(2, "rigid").limit_of("D"))
    remaining = 60.0 - (fit.t_ref_ns - T0_NS) / DAY_NS
    assert abs(d.days - remaining) <= 0.2 * remaining
    assert d.lower <= d.days <= d.upper
    assert d.p_never == 0.0


def test_noise_free_linear_trend_crosses_exactly_where_the_line_does():
    t_ns = T0_NS + np.arange(10) * DAY_NS
    v = 1.0 + 0.1 * np.arange(10)  # 1.9 mm/s at the last sample, +0.1 a day
    fit = fit_trend(t_ns, v, model="linear")
    c = fit.crossing(4.5)
    assert c.days == pytest.approx(26.0, rel=1e-9)
    assert (c.lower, c.upper) == pytest.approx((26.0, 26.0), rel=1e-9)  # no residuals, no spread


def test_auto_keeps_a_straight_line_linear():
    rng = np.random.default_rng(4)
    t_ns = T0_NS + np.arange(30 * 24) * 3_600 * 10**9
    v = 1.0 + 0.05 * (t_ns - T0_NS) / DAY_NS + rng.normal(0.0, 0.05, len(t_ns))
    assert fit_trend(t_ns, v).model == "linear"


def test_a_trend_needs_three_samples_spread_in_time():
    with pytest.raises(ValueError, match="at least 3"):
        fit_trend(np.full(5, T0_NS), np.ones(5))
    with pytest.raises(ValueError, match="3 timestamps for 2 values"):
        fit_trend(np.arange(3) * DAY_NS, np.ones(2))


def test_a_flat_healthy_machine_raises_no_alert():
    rng = np.random.default_rng(3)
    t_ns = T0_NS + np.arange(30 * 24) * 3_600 * 10**9
    v = 1.0 * np.exp(rng.normal(0.0, 0.05, len(t_ns)))
    assert maintenance_alert("pump-001", t_ns, v, SeverityClass(2, "rigid")) is None


def test_alert_carries_predicted_date_lead_time_confidence_and_evidence():
    t_ns, v = exponential_history(0, days=53.0)
    alert = maintenance_alert("pump-001", t_ns, v, SeverityClass(2, "rigid"), confidence=0.9)
    assert alert is not None
    json.dumps(alert, allow_nan=False)  # ready to store and send as is
    assert (alert["asset"], alert["rule"]) == ("pump-001", "pdm-vibration-trend")
    assert alert["at_ns"] == int(t_ns[-1])
    ev = alert["evidence"]
    assert alert["severity"] == ("critical" if ev["lead_days"] <= 7.0 else "high")  # 7 days left: on the edge
    assert ev["zone"] == "C"
    true_d_ns = T0_NS + 60 * DAY_NS
    assert abs(ev["zone_d"]["at_ns"] - true_d_ns) <= 0.2 * (true_d_ns - t_ns[-1])
    assert ev["zone_d"]["interval_ns"][0] <= ev["zone_d"]["at_ns"] <= ev["zone_d"]["interval_ns"][1]
    assert ev["lead_days"] == pytest.approx((ev["zone_d"]["at_ns"] - t_ns[-1]) / DAY_NS, rel=1e-9)
    at = datetime.fromtimestamp(ev["zone_d"]["at_ns"] / 1e9, UTC).isoformat().replace("+00:00", "Z")
    assert ev["zone_d"]["at"] == at and at[:10] in ("2025-07-31", "2025-08-01")  # day 60 is 2025-08-01
    assert ev["zone_c"]["lead_days"] == 0.0  # already past B/C: reached "now"
    assert ev["confidence"] == 0.9
    assert ev["points"]["n"] == 30 * 24 + 1  # the 30-day window, both ends included
    assert ev["fit"]["model"] == "exponential" and ev["fit"]["b_per_day"] > 0
    assert ev["thresholds"]["zone_limits_mm_s"] == {"A/B": 1.4, "B/C": 2.8, "C/D": 4.5}
    assert ev["thresholds"]["boundary"] == "upper"
    assert 0.0 < ev["health_index"] < 1.0


def test_alert_severity_follows_the_lead_time():
    t_ns, v = exponential_history(1, days=35.0)  # zone B, D about 25 days ahead
    alert = maintenance_alert("pump-001", t_ns, v, SeverityClass(2, "rigid"))
    assert alert is not None and alert["severity"] == "high" and alert["evidence"]["zone"] == "B"
    t_ns, v = exponential_history(1, days=20.0)  # D about 40 days ahead: inside the 90-day horizon
    assert maintenance_alert("pump-001", t_ns, v, SeverityClass(2, "rigid"))["severity"] == "medium"
    assert maintenance_alert("pump-001", t_ns, v, SeverityClass(2, "rigid"), horizon_days=20.0) is None


def test_postponing_maintenance_raises_the_probability_of_reaching_zone_d():
    t_ns, v = exponential_history(2, days=45.0)  # zone D 15 days after the last sample
    sev = SeverityClass(2, "rigid")
    fit = fit_trend(t_ns, v, n_boot=2000)
    p = [probability_zone_d_before(fit, sev, days) for days in (5.0, 12.0, 15.0, 18.0, 30.0)]
    assert p[0] == 0.0 and p[-1] == 1.0
    assert p == sorted(p)
    assert 0.2 < p[2] < 0.8  # around the predicted date it is a coin toss
    d = fit.crossing(4.5)
    assert probability_zone_d_before(fit, sev, d.lower) == pytest.approx(0.05, abs=0.01)
    # asked a day later, the same postponement ends a day later
    assert probability_zone_d_before(fit, sev, 11.0, now_ns=int(t_ns[-1]) + DAY_NS) == p[1]
