"""Alarm profiles: the shipped set, their numbers, durations, and errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.rules.coldchain import (
    Boundary,
    ProfileError,
    load_profile,
    parse_duration_s,
    parse_profile,
    shipped_profiles,
)


def test_shipped_profiles_are_the_domain_notes_classes():
    assert list(shipped_profiles()) == [
        "fda-cold-holding", "fda-hot-holding", "fda-tphc-4h", "fda-tphc-6h", "fsanz-2h-4h", "usp-cct", "usp-crt",
        "who-30-day-refrigerator", "who-type-1", "who-type-2",
    ]
    for name in shipped_profiles():
        assert load_profile(name).name == name


def _rows(name: str) -> list[tuple]:
    return [(b.name, b.above, b.below, b.inclusive, b.after, b.mode, b.severity, b.disposition)
            for b in load_profile(name).boundaries]


def test_who_type_1_is_exactly_the_issue_example():
    assert _rows("who-type-1") == [
        ("heat-spike", 45.0, None, True, 3600.0, "single", "high", None),
        ("heat-total", 30.0, None, True, 36000.0, "cumulative", "high", None),
        ("freeze", None, -0.5, True, 3600.0, "single", "high", None),
    ]
    mkt = load_profile("who-type-1").mkt
    assert (mkt.window, mkt.limit, mkt.delta_h_kj_mol) == (86400.0, 8.0, 83.144)


def test_who_type_2_adds_ten_degrees_cumulative_twenty_hours():
    assert _rows("who-type-2") == [
        ("heat-spike", 45.0, None, True, 3600.0, "single", "high", None),
        ("heat-total", 30.0, None, True, 36000.0, "cumulative", "high", None),
        ("warm-total", 10.0, None, True, 72000.0, "cumulative", "high", None),
    ]


def test_who_30_day_refrigerator_low_and_high_alarms():
    assert _rows("who-30-day-refrigerator") == [
        ("low", None, -0.5, True, 3600.0, "single", "high", None),
        ("high", 8.0, None, True, 36000.0, "single", "high", None),
    ]
    assert load_profile("who-30-day-refrigerator").mkt is None


def test_usp_profiles_judge_mkt_over_30_days_and_24_hours():
    crt, cct = load_profile("usp-crt"), load_profile("usp-cct")
    assert (crt.mkt.window, crt.mkt.limit) == (30 * 86400.0, 25.0)
    assert (cct.mkt.window, cct.mkt.limit) == (86400.0, 8.0)
    assert _rows("usp-crt") == [
        ("excursion", 25.0, 20.0, False, 86400.0, "single", "high", None),
        ("below-15", None, 15.0, False, 0.0, "single", "high", None),
        ("above-40", 40.0, None, False, 0.0, "single", "high", None),
    ]
    assert _rows("usp-cct") == [
        ("excursion", 8.0, None, False, 86400.0, "single", "high", None),
        ("above-15", 15.0, None, False, 0.0, "single", "high", None),
    ]


def test_food_profiles():
    assert _rows("fda-cold-holding") == [("cold-holding", 5.0, None, False, 0.0, "single", "high", None)]
    assert _rows("fda-hot-holding") == [("hot-holding", None, 57.0, False, 0.0, "single", "high", None)]
    assert _rows("fda-tphc-4h") == [("tphc-4h", 5.0, None, False, 14400.0, "cumulative", "high", "discard")]
    assert _rows("fda-tphc-6h") == [
        ("tphc-6h", 5.0, None, False, 21600.0, "cumulative", "high", "discard"),
        ("above-21", 21.0, None, False, 0.0, "single", "high", "discard"),
    ]
    assert _rows("fsanz-2h-4h") == [
        ("use-only", 5.0, 60.0, False, 7200.0, "cumulative", "medium", "use-only"),
        ("discard", 5.0, 60.0, False, 14400.0, "cumulative", "high", "discard"),
    ]
    assert load_profile("fsanz-2h-4h").disposition == "refrigerate"


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45.0), ("30m", 1800.0), ("1h", 3600.0), ("10h", 36000.0), ("2d", 172800.0), ("800h50m", 2883000.0),
    ("1.5h", 5400.0), (90, 90.0), ("0s", 0.0),
])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


def test_limits_are_inclusive_by_default():
    b = Boundary(name="hot", above=30.0, after="1h", mode="single", severity="high")
    assert b.out_of_range(np.array([29.9, 30.0, 30.1])).tolist() == [False, True, True]
    low = Boundary(name="cold", below=-0.5, after="1h", mode="single", severity="high")
    assert low.out_of_range(np.array([-0.4, -0.5, -0.6])).tolist() == [False, True, True]


def test_exclusive_limits_leave_the_limit_itself_in_range():
    b = Boundary(name="hot", above=5.0, inclusive=False, after="1h", mode="single", severity="high")
    assert b.out_of_range(np.array([5.0, 5.1])).tolist() == [False, True]


def test_both_limits_read_as_a_band_or_as_outside_a_range():
    band = Boundary(name="danger", above=5.0, below=60.0, after="2h", mode="cumulative", severity="high")
    assert band.out_of_range(np.array([4.9, 5.0, 30.0, 60.0, 60.1])).tolist() == [False, True, True, True, False]
    assert band.condition() == "≥ 5.0 °C and ≤ 60.0 °C"
    dual = Boundary(name="out", above=8.0, below=2.0, after="1h", mode="single", severity="high")
    assert dual.out_of_range(np.array([1.9, 2.0, 5.0, 8.0, 8.1])).tolist() == [True, True, False, True, True]
    assert dual.condition() == "≥ 8.0 °C or ≤ 2.0 °C"


def _error(data: dict) -> str:
    with pytest.raises(ProfileError) as exc:
        parse_profile(data, "p.yaml")
    return str(exc.value)


GOOD = {"name": "p", "boundaries": [{"name": "hot", "above": 8.0, "after": "1h", "mode": "single",
                                     "severity": "high"}]}


def test_bad_duration_names_the_field():
    bad = {**GOOD, "boundaries": [{**GOOD["boundaries"][0], "after": "10x"}]}
    assert _error(bad) == "p.yaml: boundaries[0].after: '10x' is not a duration (use e.g. 45s, 30m, 1h, 10h, 2d)"


def test_bad_mode_and_missing_limit_name_their_fields():
    bad = {**GOOD, "boundaries": [{"name": "a", "after": "1h", "mode": "single", "severity": "high"},
                                  {**GOOD["boundaries"][0], "mode": "once"}]}
    assert _error(bad) == ("p.yaml: boundaries[0]: give 'above', 'below' or both\n"
                           "p.yaml: boundaries[1].mode: Input should be 'single' or 'cumulative'")


def test_unknown_field_and_duplicate_names_are_refused():
    assert _error({**GOOD, "windw": "24h"}) == "p.yaml: windw: Extra inputs are not permitted"
    twice = {**GOOD, "boundaries": GOOD["boundaries"] * 2}
    assert _error(twice) == "p.yaml: profile: boundary names must be unique: hot"


def test_bad_mkt_window_names_the_field():
    assert _error({**GOOD, "mkt": {"window": "-1h"}}) == "p.yaml: mkt.window: '-1h' is not a duration (use e.g. " \
                                                          "45s, 30m, 1h, 10h, 2d)"


def test_unknown_profile_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ProfileError, match="who-type-3: no such file, and not a shipped profile"):
        load_profile("who-type-3")
    f = tmp_path / "p.yaml"
    f.write_text("name: [unclosed")
    with pytest.raises(ProfileError, match=r"p\.yaml: cannot read"):
        load_profile(f)
