"""``twin bench health``: the person pack's forecast and alerts on simulated people, against the truth.

10 people x 14 days from ``simulators.person`` (the Hovorka model). Each day from the third, each person's
forecaster is refit on everything before that day and forecasts the day (online, as the live pack refits
daily); the 30-minute RMSE is taken over the readings where the forecast, both baselines and the reading
30 minutes on all exist. Alerts run the pack's own rules (``cloud.packs.person.alerts``) on those forecasts.

Scoring predicted lows: a *low* is an episode of CGM readings below 70 mg/dL lasting at least 15 minutes
(consensus), its onset the first reading below 70. A low is *caught* when a predicted-low alert fired in the
hour before its onset (lead time: onset minus the alert); an alert is *false* when no reading below 70 follows
within 45 minutes of it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cloud.packs.person import alerts as A
from cloud.packs.person import forecast as F
from simulators.person import PeopleRun, simulate_people

_MIN_NS = 60 * 10**9
DAY_STEPS = 288


def person_grid(run: PeopleRun, k: int) -> F.PersonSeries:
    ev = run.events

    def arr(point: str) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([run.start_ns + m * _MIN_NS for m, _ in ev[point][k]], dtype=np.int64),
                np.array([v for _, v in ev[point][k]], dtype=float))

    ok = np.isfinite(run.cgm[k])
    days = run.cgm.shape[1] // DAY_STEPS
    return F.grid(run.start_ns, run.start_ns + days * 86_400 * 10**9, run.cgm_t_ns[ok], run.cgm[k][ok],
                  *arr("bolus"), *arr("carbs"), run.cgm_t_ns, run.heart_rate[k])


def walk_forward(ps: F.PersonSeries, first_day: int = 2) -> np.ndarray:
    """Forecasts for every reading from ``first_day`` on, each day by a model fit on the days before it."""
    g, x, y = ps.glucose, ps.x, ps.target_delta
    out = np.full(g.size, np.nan)
    days = g.size // DAY_STEPS
    for d in range(first_day, days):
        cut = d * DAY_STEPS
        model = F.Forecaster(level_ref=float(np.nanmean(g[:cut]))).fit(x[:cut - F.HORIZON_STEPS],
                                                                       y[:cut - F.HORIZON_STEPS])
        ref_shift = model.level_ref - float(np.nanmean(g))  # features were built around the whole-trace mean
        xs = x[cut:cut + DAY_STEPS].copy()
        xs[:, 4] -= ref_shift
        out[cut:cut + DAY_STEPS] = model.predict(g[cut:cut + DAY_STEPS], xs)[0]
    return out


def lows(g: np.ndarray, min_steps: int = 3) -> list[int]:
    """Onsets of episodes below 70 lasting at least 15 minutes (a missing reading neither ends nor extends one)."""
    below = np.isfinite(g) & (g < A.LOW)
    above = np.isfinite(g) & (g >= A.LOW)
    onsets, j, n = [], 0, g.size
    while j < n:
        if below[j]:
            k = j
            while k < n and not above[k]:
                k += 1
            if below[j:k].sum() >= min_steps:
                onsets.append(j)
            j = k
        j += 1
    return onsets


def score_person(g: np.ndarray, forecast: np.ndarray, first: int) -> dict[str, Any]:
    episodes = [e for e in A.predicted_low(g, forecast) if e[1] >= first]
    starts = np.array([s for _, s, _ in episodes], dtype=np.int64)
    ends = np.array([g.size if e is None else e for _, _, e in episodes], dtype=np.int64)
    onsets = [o for o in lows(g) if o >= first + 12]
    leads = []
    for o in onsets:  # the alert open at the onset, raised in the hour before it
        before = starts[(starts <= o) & (starts >= o - 12) & (ends >= o)]
        if before.size:
            leads.append(5.0 * (o - before.min()))
    below = np.isfinite(g) & (g < A.LOW)
    false = sum(1 for s in starts if not below[s:s + 10].any())
    return {"lows": len(onsets), "caught": len(leads), "leads_min": leads, "alerts": int(starts.size),
            "false": false}


def run(people: int = 10, days: int = 14, seed: int = 11) -> dict[str, Any]:
    t0 = time.perf_counter()
    sim = simulate_people(people, days, seed)
    sim_s = time.perf_counter() - t0
    sq = {"model": [], "last": [], "linear": []}
    per: list[dict[str, Any]] = []
    counts = {"urgent-low": 0, "prolonged-high": 0, "signal-loss": 0}
    first = 2 * DAY_STEPS
    for k in range(people):
        ps = person_grid(sim, k)
        f = walk_forward(ps)
        g = ps.glucose
        truth = g + ps.target_delta
        lv, le = F.last_value(g), F.linear_extrapolation(g)
        sel = np.isfinite(f) & np.isfinite(truth) & np.isfinite(lv) & np.isfinite(le)
        sel[:first] = False
        for name, p in (("model", f), ("last", lv), ("linear", le)):
            sq[name].append((p[sel] - truth[sel]) ** 2)
        s = score_person(g, f, first)
        s["rmse"] = float(np.sqrt(np.mean(sq["model"][-1])))
        per.append(s)
        for rule, _start, _ in A.all_episodes(g[first:], f[first:]):
            if rule in counts:
                counts[rule] += 1
    rmse = {k: float(np.sqrt(np.mean(np.concatenate(v)))) for k, v in sq.items()}
    better = min(rmse["last"], rmse["linear"])
    lows_n = sum(p["lows"] for p in per)
    caught = sum(p["caught"] for p in per)
    leads = [x for p in per for x in p["leads_min"]]
    person_days = people * (days - 2)
    false = sum(p["false"] for p in per)
    return {"people": people, "days": days, "seed": seed, "scored_days_per_person": days - 2,
            "simulate_s": round(sim_s, 2), "total_s": round(time.perf_counter() - t0, 2),
            "rmse_mgdl": rmse, "improvement_vs_better_baseline": 1.0 - rmse["model"] / better,
            "lows": lows_n, "caught": caught, "recall": caught / lows_n if lows_n else None,
            "lead_min_median": float(np.median(leads)) if leads else None,
            "lead_min_p25_p75": [float(q) for q in np.percentile(leads, [25, 75])] if leads else None,
            "predicted_low_alerts": sum(p["alerts"] for p in per), "false_alerts": false,
            "false_per_person_day": false / person_days, "other_alerts": counts,
            "rmse_per_person": [round(p["rmse"], 2) for p in per]}
