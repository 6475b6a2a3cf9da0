"""The consensus CGM metrics (Battelino 2019) on fixed traces, against values computed by hand (to 0.1 %)."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.packs.person.metrics import MGDL_PER_MMOLL, daily_and_overall, metrics, metrics_by_period, to_mmol

NS = 10**9
T0 = 1_780_000_000 * NS - (1_780_000_000 * NS) % (86_400 * NS)  # a UTC midnight
DAY = 86_400 * NS
EVERY = 300 * NS


def close(x: float | None, want: float) -> bool:
    return x is not None and x == pytest.approx(want, rel=1e-3, abs=1e-9)


def one_day_trace() -> tuple[np.ndarray, np.ndarray]:
    """288 readings: 20 at 50, 30 at 60, 150 at 120, 50 at 200, 38 at 300 mg/dL (shuffled: order must not matter)."""
    g = np.repeat([50.0, 60.0, 120.0, 200.0, 300.0], [20, 30, 150, 50, 38])
    np.random.default_rng(1).shuffle(g)
    return T0 + np.arange(288) * EVERY, g


def test_day_percentages_match_hand_counts():
    t, g = one_day_trace()
    m = metrics(t, g, T0, T0 + DAY)
    assert m.readings == 288
    assert close(m.tbr54_pct, 6.944)     # 20/288
    assert close(m.tbr70_pct, 17.361)    # (20+30)/288, level 1 and 2
    assert close(m.tir_pct, 52.083)      # 150/288
    assert close(m.tar180_pct, 30.556)   # (50+38)/288
    assert close(m.tar250_pct, 13.194)   # 38/288
    assert close(m.sufficiency_pct, 100.0)


def test_day_mean_gmi_cv_match_hand_values():
    """mean = 42200/288 = 146.528; GMI = 3.31 + 0.02392 * 146.528 = 6.815 %;
    SD = sqrt((7738000 - 42200^2/288) / 287) = 73.597; CV = 50.228 %."""
    t, g = one_day_trace()
    m = metrics(t, g, T0, T0 + DAY)
    assert close(m.mean_mgdl, 146.528)
    assert close(m.gmi_pct, 6.815)
    assert close(m.sd_mgdl, 73.597)
    assert close(m.cv_pct, 50.228)


def test_thresholds_are_inclusive_as_the_consensus_reads_them():
    """70 and 180 are in range; 54 is below 70 but not below 54; 250 is above 180 but not above 250."""
    t = T0 + np.arange(4) * EVERY
    m = metrics(t, np.array([54.0, 70.0, 180.0, 250.0]), T0, T0 + DAY)
    assert (m.tbr70_pct, m.tbr54_pct, m.tir_pct, m.tar180_pct, m.tar250_pct) == (25.0, 0.0, 50.0, 25.0, 0.0)
    assert close(m.sufficiency_pct, 100 * 4 / 288)


def test_fourteen_days_sufficiency_and_per_day_split():
    """Day 3 keeps only its first 12 hours (144 slots), one slot holds two readings (counted once), and
    sensor error values (NaN, 0) are not readings: day 3 is 50 % sufficient, the 14 days 3888/4032 = 96.43 %."""
    t = T0 + np.arange(14 * 288) * EVERY
    g = np.full(t.size, 150.0)
    g[: 288] = 100.0                               # day 0 all at 100
    keep = ~((t >= T0 + 3 * DAY + DAY // 2) & (t < T0 + 4 * DAY))
    t, g = t[keep], g[keep]
    t = np.concatenate([t, [T0 + 5 * DAY + 10 * NS, T0 + 6 * DAY, T0 + 7 * DAY]])
    g = np.concatenate([g, [150.0, np.nan, 0.0]])
    t[-2:] += 1 * NS                               # the error values sit in slots that already hold readings
    days = metrics_by_period(t, g, T0, T0 + 14 * DAY)
    assert len(days) == 14
    assert close(days[3].sufficiency_pct, 50.0) and days[3].readings == 144
    assert close(days[5].sufficiency_pct, 100.0) and days[5].readings == 289
    assert close(days[0].mean_mgdl, 100.0) and days[0].sd_mgdl == 0.0 and days[0].cv_pct == 0.0
    report = daily_and_overall(t, g, T0, days=14)
    overall = report["overall"]
    assert close(overall["sufficiency_pct"], 96.429)
    assert overall["readings"] == 3889
    # mean: (288*100 + 3601*150) / 3889 = 568950/3889 = 146.297; GMI = 3.31 + 0.02392*146.297 = 6.8094
    assert close(overall["mean_mgdl"], 146.297)
    assert close(overall["gmi_pct"], 6.8094)
    assert close(overall["tir_pct"], 100.0)


def test_a_day_without_readings_has_no_percentages():
    m = metrics_by_period(np.array([T0], dtype=np.int64), np.array([120.0]), T0, T0 + 2 * DAY)[1]
    assert m.readings == 0 and m.tir_pct is None and m.mean_mgdl is None and m.sufficiency_pct == 0.0


def test_mmol_display_uses_the_molar_mass_factor():
    assert MGDL_PER_MMOLL == 18.016
    assert round(float(to_mmol(70.0)), 1) == 3.9 and round(float(to_mmol(54.0)), 1) == 3.0
    assert round(float(to_mmol(180.0)), 1) == 10.0 and round(float(to_mmol(250.0)), 1) == 13.9
    assert close(float(to_mmol(180.0)), 9.9911)
