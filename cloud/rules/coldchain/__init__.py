"""Cold-chain rules: alarm profiles, mean kinetic temperature, excursion counting and verdicts, and the
live reefer rules built on them. One implementation serves the offline ``twin coldchain evaluate`` and
the live rules, so the same data always gets the same verdict."""

from cloud.rules.coldchain.excursions import (
    Alarm,
    BoundaryResult,
    Evaluation,
    ExcursionCounter,
    ReadingsError,
    Verdict,
    evaluate,
    iso,
    parse_timestamp_ns,
    read_readings_csv,
)
from cloud.rules.coldchain.mkt import WindowMkt, hold_durations_ns, mkt_c, rolling_mkt, time_weighted_mean_c
from cloud.rules.coldchain.profiles import (
    Boundary,
    MktSpec,
    Profile,
    ProfileError,
    format_duration,
    load_profile,
    parse_duration_s,
    parse_profile,
    shipped_profiles,
)

__all__ = [
    "Alarm", "Boundary", "BoundaryResult", "Evaluation", "ExcursionCounter", "MktSpec", "Profile", "ProfileError",
    "ReadingsError", "Verdict", "WindowMkt", "evaluate", "format_duration", "hold_durations_ns", "iso",
    "load_profile", "mkt_c", "parse_duration_s", "parse_profile", "parse_timestamp_ns", "read_readings_csv",
    "rolling_mkt", "shipped_profiles", "time_weighted_mean_c",
]
