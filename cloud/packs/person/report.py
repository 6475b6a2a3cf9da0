"""What a reader of a person's twin sees: the consensus metrics, the ambulatory glucose profile, today's glucose
with the forecast band, and the open alert rules — computed from the window of data a consent lets them read.

The AGP (Battelino 2019, figure 3) is the 5th, 25th, 50th, 75th and 95th percentile of every reading of the
period by time of day; here per 15 minutes of the day, smoothed over the neighbouring quarter hours (a circular
window of 5), as the AGP report draws its bands. Times of day are local to ``tz_offset_s``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.packs.person import alerts as A
from cloud.packs.person import forecast as F
from cloud.packs.person.metrics import DAY_S, MGDL_PER_MMOLL, daily_and_overall

AGP_PERCENTILES = (5, 25, 50, 75, 95)
AGP_BIN_MIN = 15
_NS = 10**9
_DAY_NS = DAY_S * _NS
POINTS = ("glucose", "bolus", "carbs", "heart_rate")


def agp(t_ns: np.ndarray, g: np.ndarray, tz_offset_s: int = 0, smooth: int = 5) -> dict[str, Any]:
    bins_per_day = 24 * 60 // AGP_BIN_MIN
    ok = np.isfinite(g)
    t, g = np.asarray(t_ns, np.int64)[ok], np.asarray(g, float)[ok]
    tod = ((t + tz_offset_s * _NS) % _DAY_NS) // (AGP_BIN_MIN * 60 * _NS)
    half = smooth // 2
    out = {str(p): [] for p in AGP_PERCENTILES}
    counts = []
    for b in range(bins_per_day):
        near = np.isin(tod, [(b + k) % bins_per_day for k in range(-half, half + 1)])
        counts.append(int(near.sum()))
        qs = np.percentile(g[near], AGP_PERCENTILES) if near.sum() >= 5 else [None] * len(AGP_PERCENTILES)
        for p, q in zip(AGP_PERCENTILES, qs, strict=True):
            out[str(p)].append(None if q is None else round(float(q), 1))
    return {"bin_min": AGP_BIN_MIN, "minute_of_day": [b * AGP_BIN_MIN for b in range(bins_per_day)],
            "percentiles": out, "readings": counts}


def build(series: dict[str, tuple[np.ndarray, np.ndarray]], start_ns: int, end_ns: int, now_ns: int,
          tz_offset_s: int = 0, days: int = 14) -> dict[str, Any]:
    """The report over [start_ns, end_ns) from the series read (point -> (t_ns, values)); ``now_ns`` sets today."""
    gt, gv = series["glucose"]
    empty = (np.zeros(0, np.int64), np.zeros(0))
    midnight = (now_ns + tz_offset_s * _NS) // _DAY_NS * _DAY_NS - tz_offset_s * _NS
    first_day = max(start_ns, midnight - (days - 1) * _DAY_NS)
    grid_start = (start_ns // (F.STEP_MIN * 60 * _NS)) * F.STEP_MIN * 60 * _NS
    ps = F.grid(grid_start, end_ns, gt, gv, *series.get("bolus", empty), *series.get("carbs", empty),
                *series.get("heart_rate", empty))
    before_today = ps.t_ns < midnight
    model = F.Forecaster(level_ref=float(np.nanmean(ps.glucose)) if np.isfinite(ps.glucose).any() else 140.0)
    model.fit(ps.x[before_today][: -F.HORIZON_STEPS or None], ps.target_delta[before_today][: -F.HORIZON_STEPS or None])
    f, lo, hi = model.predict(ps.glucose, ps.x)
    today = ps.t_ns >= midnight
    shift = F.HORIZON_STEPS * F.STEP_MIN * 60 * _NS

    def listed(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else round(float(v), 1) for v in a]

    episodes = A.all_episodes(ps.glucose, f)
    open_rules = sorted({rule for rule, s, e in episodes if e is None and s >= ps.glucose.size - 288})
    last = int(np.flatnonzero(np.isfinite(ps.glucose))[-1]) if np.isfinite(ps.glucose).any() else None
    return {
        "start_ns": start_ns, "end_ns": end_ns, "tz_offset_s": tz_offset_s, "unit": "mg/dL",
        "mgdl_per_mmoll": MGDL_PER_MMOLL,
        "metrics": daily_and_overall(gt, gv, first_day, days=max(1, min(days, int(-(-(end_ns - first_day)
                                                                                    // _DAY_NS))))),
        "agp": agp(gt, gv, tz_offset_s),
        "today": {"t_ns": ps.t_ns[today].tolist(), "glucose": listed(ps.glucose[today])},
        "forecast": {"horizon_min": F.HORIZON_STEPS * F.STEP_MIN, "trained_on": model.trained_on,
                     "t_ns": (ps.t_ns[today] + shift).tolist(), "value": listed(f[today]), "low": listed(lo[today]),
                     "high": listed(hi[today]),
                     "next": None if last is None or not np.isfinite(f[last]) else {
                         "t_ns": int(ps.t_ns[last] + shift), "value": round(float(f[last]), 1),
                         "low": round(float(lo[last]), 1), "high": round(float(hi[last]), 1)}},
        "open_alert_rules": open_rules,
    }
