"""Synthetic people with type 1 diabetes: the Hovorka glucose-insulin model, their day, their wearables.

The person pack's forecast and alerts have to be judged on glucose whose truth is known, and no recorded CGM
data may be used here, so this module simulates people with the model of Hovorka et al. (Physiol Meas 2004;25:905),
the model behind the Cambridge artificial pancreas, with its published parameter values (Table 1 there; the same
in Wilinska et al., J Diabetes Sci Technol 2010;4:132):

- subcutaneous insulin: two compartments S1, S2 (t_max,I 55 min); plasma insulin I (V_I 0.12 L/kg, k_e 0.138/min);
- insulin action on transport, disposal and endogenous production x1..x3 (k_a1..3 0.006, 0.06, 0.03/min;
  S_IT 51.2e-4, S_ID 8.2e-4 /min per mU/L, S_IE 520e-4 per mU/L);
- glucose Q1 (accessible, V_G 0.16 L/kg) and Q2 (non-accessible, k12 0.066/min); F01 0.0097 mmol/kg/min
  (scaled below 4.5 mmol/L), EGP0 0.0161 mmol/kg/min, renal clearance above 9 mmol/L (0.003/min);
- gut absorption: two compartments, t_max,G 40 min, bioavailability A_G 0.8;
- interstitial glucose (what a CGM reads) lagging plasma with a time constant of exp(2.372) = 10.7 min
  (Wilinska 2010's sensor model).

Between people the parameters are drawn log-normal around those means, with coefficients of variation of 10-30 %
chosen here (of the order of the spread of Wilinska 2010's virtual population, not its table), plus a daily
sensitivity that wanders day to day and over the day (the dawn phenomenon). Their day: three meals and snacks with
drawn times and sizes, carbohydrate counting errors and now and then a forgotten bolus; the pump's basal rate (set
from the person's own steady state, slightly off) and meal boluses through the pump's bolus calculator (carbohydrate
ratio, correction above 150 mg/dL — the person's device, not the platform, which never advises doses); afternoon
exercise raising glucose uptake during and for hours after; rescue carbohydrates when a low is felt. The CGM reads
interstitial glucose every 5 minutes with a per-sensor gain error, AR(1) noise, short dropouts and now and then a
long signal loss; the watch reports heart rate and steps. Everything true (plasma glucose every minute, each meal,
bolus, exercise, loss) is recorded.

The home hub (phone or bridge) publishes each reading on ``hub/<subject>/<point>`` as ``{"t": <ns>, "v": <value>}``:
the subject id is pseudonymous, the person's name never leaves the home (see the person pack's README).

>>> run = simulate_people(2, days=1, seed=4)
>>> run.cgm.shape, run.truth_mgdl.shape
((2, 288), (2, 1440))
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.devices import PublishReport, Reading, interleave, publish_readings

MGDL_PER_MMOLL = 18.016
TOPIC = "hub/{asset}/{point}"
POINTS = ("glucose", "basal_rate", "bolus", "carbs", "heart_rate", "steps")
CGM_EVERY_MIN = 5
_NS_MIN = 60 * 10**9

# Hovorka 2004 Table 1 (per kg where the paper gives it per kg).
HOVORKA = {"EGP0": 0.0161, "F01": 0.0097, "k12": 0.066, "ka1": 0.006, "ka2": 0.06, "ka3": 0.03,
           "SIT": 51.2e-4, "SID": 8.2e-4, "SIE": 520e-4, "ke": 0.138, "VI": 0.12, "VG": 0.16,
           "tmaxI": 55.0, "tmaxG": 40.0, "AG": 0.8}
_CV = {"EGP0": 0.2, "F01": 0.2, "k12": 0.1, "ka1": 0.2, "ka2": 0.2, "ka3": 0.2, "SIT": 0.3, "SID": 0.3,
       "SIE": 0.3, "ke": 0.15, "VI": 0.1, "VG": 0.1, "tmaxI": 0.15, "tmaxG": 0.2, "AG": 0.05}
K_INT = 1.0 / math.exp(2.372)  # 1/min: Wilinska 2010's interstitial time constant, 10.7 min


@dataclass
class PeopleRun:
    """Everything simulated for ``n`` people over ``days``: what the devices report and the truth."""

    subjects: list[str]
    start_ns: int
    truth_mgdl: np.ndarray          # (n, minutes) plasma glucose
    cgm: np.ndarray                 # (n, readings) CGM mg/dL, NaN where the sensor sent nothing
    heart_rate: np.ndarray          # (n, readings) bpm, 5-minute means
    steps: np.ndarray               # (n, readings) steps in the 5 minutes
    basal_u_h: np.ndarray           # (n,) the pump's basal rate
    events: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)  # point -> per person (minute, v)
    exercise: list[list[tuple[int, int]]] = field(default_factory=list)  # per person (start, end) minutes
    losses: list[list[tuple[int, int]]] = field(default_factory=list)    # per person long signal losses (readings)
    params: list[dict[str, float]] = field(default_factory=list)

    @property
    def cgm_t_ns(self) -> np.ndarray:
        return self.start_ns + np.arange(self.cgm.shape[1], dtype=np.int64) * CGM_EVERY_MIN * _NS_MIN

    def ground_truth(self) -> dict[str, Any]:
        """What a benchmark needs to judge the platform: the truth, never what the platform computes."""
        return {"subjects": self.subjects, "start_ns": self.start_ns, "minutes": int(self.truth_mgdl.shape[1]),
                "params": self.params, "basal_u_h": self.basal_u_h.round(3).tolist(),
                "exercise": self.exercise, "signal_losses_readings": self.losses,
                "meals": self.events["carbs"], "boluses": self.events["bolus"],
                "plasma_glucose_mgdl_every_5_min": self.truth_mgdl[:, ::CGM_EVERY_MIN].round(1).tolist()}


def draw_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Each person's Hovorka parameters: log-normal around the published means (median = mean here)."""
    p = {k: v * np.exp(rng.normal(0.0, _CV[k], n)) for k, v in HOVORKA.items()}
    p["AG"] = np.minimum(p["AG"], 0.95)
    p["BW"] = np.clip(rng.normal(70.0, 12.0, n), 30.0, 120.0)
    return p


def _flux(p: dict[str, np.ndarray], g: np.ndarray, i: np.ndarray) -> np.ndarray:
    """dQ1/dt at glucose ``g`` (mmol/L) and steady plasma insulin ``i`` (mU/L): zero at a person's basal state."""
    x1, x2, x3 = p["SIT"] * i, p["SID"] * i, p["SIE"] * i
    vg = p["VG"] * p["BW"]
    q1 = g * vg
    q2 = x1 * q1 / (p["k12"] + x2)
    f01c = p["F01"] * p["BW"] * np.minimum(1.0, g / 4.5)
    fr = np.where(g >= 9.0, 0.003 * (g - 9.0) * vg, 0.0)
    return -f01c - x1 * q1 + p["k12"] * q2 - fr + p["EGP0"] * p["BW"] * np.maximum(0.0, 1.0 - x3)


def basal_insulin(p: dict[str, np.ndarray], g_mmol: np.ndarray) -> np.ndarray:
    """Plasma insulin (mU/L) holding each person at ``g_mmol`` (bisection: dQ1/dt falls as insulin rises)."""
    lo, hi = np.zeros_like(g_mmol), np.full_like(g_mmol, 200.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        up = _flux(p, g_mmol, mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return 0.5 * (lo + hi)


def _day_plan(rng: np.random.Generator, day: int) -> tuple[list[tuple[int, float]], tuple[int, int] | None]:
    """(minute, carbs g) of the day's meals and snacks; the exercise session (start, end) if any."""
    base = day * 1440
    meals = [(rng.normal(7.5 * 60, 30), rng.uniform(35, 70)), (rng.normal(12.5 * 60, 40), rng.uniform(40, 80)),
             (rng.normal(18.75 * 60, 40), rng.uniform(50, 90))]
    if rng.random() < 0.6:
        meals.append((rng.normal(15.5 * 60, 30), rng.uniform(10, 30)))
    if rng.random() < 0.3:
        meals.append((rng.normal(21.5 * 60, 20), rng.uniform(10, 25)))
    exercise = None
    if rng.random() < 0.45:
        start = int(rng.uniform(16 * 60, 18 * 60))
        exercise = (base + start, base + start + int(rng.uniform(30, 75)))
    return [(base + int(m), round(float(c))) for m, c in meals], exercise


def simulate_people(n: int, days: int = 14, seed: int = 0, start_ns: int = 1_796_947_200 * 10**9,
                    prefix: str = "subj") -> PeopleRun:
    """Simulate ``n`` people for ``days`` (1-minute Euler steps, all people at once as numpy vectors)."""
    rng = np.random.default_rng(seed)
    p = draw_params(rng, n)
    bw = p["BW"]
    minutes = days * 1440
    target = rng.uniform(6.0, 8.0, n)
    i_b = basal_insulin(p, target)
    basal_mu_min = i_b * p["ke"] * p["VI"] * bw * np.exp(rng.normal(0.0, 0.08, n))  # a basal slightly off
    tdd = 2.0 * basal_mu_min * 1440 / 1000.0
    icr = 500.0 / tdd * np.exp(rng.normal(0.0, 0.1, n))     # g per unit
    isf = 1800.0 / tdd                                       # mg/dL per unit
    plans = [[_day_plan(rng, d) for d in range(days)] for _ in range(n)]
    meal_at = [{m: c for d in pl for m, c in d[0]} for pl in plans]
    ex_sessions = [[d[1] for d in pl if d[1] is not None] for pl in plans]
    ex_on = np.zeros((n, minutes), dtype=bool)
    for k, sessions in enumerate(ex_sessions):
        for a, b in sessions:
            ex_on[k, a:b] = True
    day_sens = np.exp(rng.normal(0.0, 0.12, (n, days + 1)))
    # state
    s1 = s2 = basal_mu_min * p["tmaxI"]
    ins = i_b.copy()
    x1, x2, x3 = p["SIT"] * ins, p["SID"] * ins, p["SIE"] * ins
    q1 = target * p["VG"] * bw
    q2 = x1 * q1 / (p["k12"] + x2)
    g1 = np.zeros(n)
    g2 = np.zeros(n)
    c_int = target.copy()
    ex_after = np.zeros(n)
    rescue_block = np.zeros(n, dtype=np.int64)
    truth = np.empty((n, minutes))
    interstitial = np.empty((n, minutes))
    events: dict[str, list[list[tuple[int, float]]]] = {"carbs": [[] for _ in range(n)],
                                                         "bolus": [[] for _ in range(n)]}
    for t in range(minutes):
        g = q1 / (p["VG"] * bw)
        for k in range(n):
            c = meal_at[k].get(t)
            if c is not None:
                g1[k] += p["AG"][k] * c * 1000.0 / 180.16
                events["carbs"][k].append((t, float(c)))
                if rng.random() > 0.05:  # a bolus now and then forgotten
                    counted = c * math.exp(rng.normal(0.0, 0.15))
                    cgm_now = c_int[k] * MGDL_PER_MMOLL
                    units = counted / icr[k] + max(0.0, (cgm_now - 120.0) / isf[k]) * (cgm_now > 150.0)
                    units = round(units * 20) / 20
                    if units > 0:
                        s1[k] += units * 1000.0
                        events["bolus"][k].append((t, units))
            if g[k] < 3.6 and t >= rescue_block[k] and rng.random() < 0.15:
                g1[k] += p["AG"][k] * 15.0 * 1000.0 / 180.16  # 15 g of fast carbohydrate, as taught
                rescue_block[k] = t + 20
                if rng.random() < 0.5:
                    events["carbs"][k].append((t, 15.0))
        hour = (t % 1440) / 60.0
        sens = day_sens[:, t // 1440] * (1.0 + 0.1 * np.sin(2 * math.pi * (hour - 5.0) / 24.0))
        ex = ex_on[:, t]
        ex_after = np.where(ex, np.minimum(ex_after + 0.02, 0.6), ex_after * math.exp(-1.0 / 240.0))
        boost = 1.0 + ex_after
        # insulin
        u = basal_mu_min
        ds1 = u - s1 / p["tmaxI"]
        ds2 = (s1 - s2) / p["tmaxI"]
        dins = s2 / p["tmaxI"] / (p["VI"] * bw) - p["ke"] * ins
        dx1 = -p["ka1"] * x1 + p["ka1"] * p["SIT"] * sens * boost * ins
        dx2 = -p["ka2"] * x2 + p["ka2"] * p["SID"] * sens * boost * ins
        dx3 = -p["ka3"] * x3 + p["ka3"] * p["SIE"] * sens * ins
        # glucose
        vg = p["VG"] * bw
        f01c = p["F01"] * bw * np.minimum(1.0, g / 4.5) * (1.0 + 0.8 * ex)
        fr = np.where(g >= 9.0, 0.003 * (g - 9.0) * vg, 0.0)
        ug = g2 / p["tmaxG"]
        dq1 = -f01c - x1 * q1 + p["k12"] * q2 - fr + ug + p["EGP0"] * bw * np.maximum(0.0, 1.0 - x3)
        dq2 = x1 * q1 - (p["k12"] + x2) * q2
        dg1 = -g1 / p["tmaxG"]
        dg2 = (g1 - g2) / p["tmaxG"]
        s1, s2, ins = s1 + ds1, s2 + ds2, ins + dins
        x1, x2, x3 = x1 + dx1, x2 + dx2, x3 + dx3
        q1, q2 = np.maximum(q1 + dq1, 0.5 * vg), np.maximum(q2 + dq2, 0.0)
        g1, g2 = g1 + dg1, g2 + dg2
        c_int = c_int + K_INT * (g - c_int)
        truth[:, t] = g * MGDL_PER_MMOLL
        interstitial[:, t] = c_int * MGDL_PER_MMOLL
    cgm, losses = _sensor(rng, interstitial[:, ::CGM_EVERY_MIN])
    hr, steps = _watch(rng, ex_on, minutes)
    subjects = [f"{prefix}-{k + 1:03d}" for k in range(n)]
    params = [{k: round(float(v[i]), 6) for k, v in p.items()} for i in range(n)]
    return PeopleRun(subjects, start_ns, truth, cgm, hr, steps, (basal_mu_min * 60 / 1000).round(2), events,
                     [list(s) for s in ex_sessions], losses, params)


def _sensor(rng: np.random.Generator, ig: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """CGM readings from interstitial glucose: a gain per 10-day sensor, AR(1) noise, 40-400 mg/dL, dropouts."""
    n, m = ig.shape
    sessions = np.arange(m) // (10 * 288)
    gain = np.exp(rng.normal(0.0, 0.04, (n, sessions.max() + 1)))[:, sessions]
    noise = np.zeros((n, m))
    e = rng.normal(0.0, 1.0, (n, m))
    for j in range(1, m):
        noise[:, j] = 0.7 * noise[:, j - 1] + e[:, j] * 6.0 * math.sqrt(1 - 0.49)
    cgm = np.clip(np.round(ig * gain + noise), 40.0, 400.0)
    start = rng.random((n, m)) < 0.004
    losses: list[list[tuple[int, int]]] = []
    for k in range(n):
        for j in np.flatnonzero(start[k]):
            cgm[k, j:j + int(rng.geometric(1 / 4))] = np.nan
        mine = []
        for _ in range(rng.poisson(m / 288 / 7)):  # about one long loss a week
            a = int(rng.integers(0, m - 60))
            b = a + int(rng.integers(24, 48))  # 2-4 hours
            cgm[k, a:b] = np.nan
            mine.append((a, b))
        losses.append(mine)
    return cgm, losses


def _watch(rng: np.random.Generator, ex_on: np.ndarray, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """Heart rate (5-minute means) and steps per 5 minutes: asleep at night, walking about by day, running."""
    n = ex_on.shape[0]
    hour = (np.arange(minutes) % 1440) / 60.0
    awake = (hour >= 7.0) & (hour < 22.0)
    rest = rng.uniform(60, 85, n)[:, None]
    hr = rest + np.where(awake, 8.0, -6.0) + 55.0 * ex_on + rng.normal(0, 3.0, (n, minutes))
    walk = awake & (rng.random((n, minutes)) < 0.15)
    steps = np.where(ex_on, rng.poisson(140, (n, minutes)), np.where(walk, rng.poisson(90, (n, minutes)), 0))
    m = minutes // CGM_EVERY_MIN
    return (hr.reshape(n, m, CGM_EVERY_MIN).mean(axis=2).round(0),
            steps.reshape(n, m, CGM_EVERY_MIN).sum(axis=2).astype(float))


def series(run: PeopleRun) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per (subject, point): (t_ns, values, quality) as the home hub sends them; missing CGM readings are not sent,
    the basal rate once an hour, boluses and carbohydrates when they happen."""
    out = {}
    t5 = run.cgm_t_ns
    hours = np.arange(0, run.truth_mgdl.shape[1], 60)
    for k, subj in enumerate(run.subjects):
        ok = np.isfinite(run.cgm[k])
        out[(subj, "glucose")] = (t5[ok], run.cgm[k][ok], np.zeros(int(ok.sum()), np.int8))
        out[(subj, "heart_rate")] = (t5, run.heart_rate[k], np.zeros(t5.size, np.int8))
        out[(subj, "steps")] = (t5, run.steps[k], np.zeros(t5.size, np.int8))
        out[(subj, "basal_rate")] = (run.start_ns + hours * _NS_MIN, np.full(hours.size, run.basal_u_h[k]),
                                     np.zeros(hours.size, np.int8))
        for point in ("bolus", "carbs"):
            ev = run.events[point][k]
            t = np.array([run.start_ns + m * _NS_MIN for m, _ in ev], dtype=np.int64)
            out[(subj, point)] = (t, np.array([v for _, v in ev], dtype=float), np.zeros(t.size, np.int8))
    return out


def readings(run: PeopleRun) -> Iterator[Reading]:
    return interleave(series(run))


def publish(run: PeopleRun, broker_url: str, **kw: Any) -> PublishReport:
    """Send everything as the home hubs would, on ``hub/<subject>/<point>``."""
    return publish_readings(broker_url, readings(run), topic_template=TOPIC, **kw)
