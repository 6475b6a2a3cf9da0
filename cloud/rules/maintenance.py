"""Predictive maintenance of rotating machines: how bad the vibration is, where it is heading, and when to act.

Three layers of ISO 13374's chain live here. *Health assessment*: the ISO 10816-3 / 20816-3 zone of the
broadband RMS velocity the edge computes (``edge/vibration.py``), alarm and trip levels, a health index.
*Prognostics*: a trend fitted to the velocity history (linear, or exponential as spalls usually grow), whose
uncertainty comes from a residual bootstrap, so the dates it predicts carry an interval rather than a
false precision. *Advisory*: an alert dict with the predicted zone-C / zone-D dates, the lead time and the
evidence (points used, fit, thresholds) an auditor needs to see why it fired — and a what-if: the chance of
reaching zone D if maintenance is postponed by N days.

Zone limits are the domain notes' table (mm/s RMS, 10-1000 Hz), which agrees with several independent
implementations and Beckhoff's documentation, not read from the ISO text. Whether a value exactly on a limit
is in the lower or the upper zone is not settled there, so it is a setting (``boundary``); the default,
"upper", puts it in the worse zone, as an alarm that fires at ``value >= limit`` does.

>>> SeverityClass(group=2, foundation="rigid").zone(2.8)
'C'
>>> SeverityClass(group=2, foundation="rigid", boundary="lower").zone(2.8)
'B'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

Group = Literal[1, 2]
Foundation = Literal["rigid", "flexible"]
Boundary = Literal["upper", "lower"]
Zone = Literal["A", "B", "C", "D"]
TrendModel = Literal["linear", "exponential", "auto"]

ZONE_LIMITS_MM_S: dict[tuple[int, str], tuple[float, float, float]] = {
    (1, "rigid"): (2.3, 4.5, 7.1),  # group 1: > 300 kW, or shaft height >= 315 mm
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),  # group 2: 15-300 kW, or 160 <= shaft height < 315 mm
    (2, "flexible"): (2.3, 4.5, 7.1),
}
"""(A/B, B/C, C/D) boundaries of broadband RMS velocity, mm/s, per (machine group, foundation)."""

ZONES: tuple[Zone, ...] = ("A", "B", "C", "D")
RULE = "pdm-vibration-trend"
_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class SeverityClass:
    """A machine's ISO 10816-3 class: its group, its foundation and the boundary convention in use.

    A foundation is rigid when its lowest natural frequency is at least 25 % above the main excitation.
    ``boundary="upper"``: a value exactly on a limit belongs to the upper (worse) zone; "lower": the lower.
    """

    group: Group = 2
    foundation: Foundation = "rigid"
    boundary: Boundary = "upper"

    def __post_init__(self) -> None:
        if (self.group, self.foundation) not in ZONE_LIMITS_MM_S:
            raise ValueError(f"ISO 10816-3 class: group {self.group!r} / foundation {self.foundation!r}: expected "
                             "group 1 or 2 and foundation 'rigid' or 'flexible'")
        if self.boundary not in ("upper", "lower"):
            raise ValueError(f"boundary {self.boundary!r}: expected 'upper' or 'lower'")

    @property
    def limits(self) -> tuple[float, float, float]:
        """(A/B, B/C, C/D), mm/s."""
        return ZONE_LIMITS_MM_S[(self.group, self.foundation)]

    def zone_index(self, velocity_mm_s: np.ndarray | float) -> np.ndarray:
        """0..3 for A..D, element-wise."""
        side: Literal["left", "right"] = "right" if self.boundary == "upper" else "left"
        return np.searchsorted(np.asarray(self.limits), np.asarray(velocity_mm_s, float), side=side)

    def zone(self, velocity_mm_s: float) -> Zone:
        if not math.isfinite(velocity_mm_s) or velocity_mm_s < 0:
            raise ValueError(f"velocity {velocity_mm_s!r} mm/s: expected a finite, non-negative RMS value")
        return ZONES[int(self.zone_index(velocity_mm_s))]

    def limit_of(self, zone: Zone) -> float:
        """The velocity at which ``zone`` begins (B, C or D)."""
        if zone not in ("B", "C", "D"):
            raise ValueError(f"zone {zone!r}: only B, C and D have a lower limit")
        return self.limits[ZONES.index(zone) - 1]


def alarm_trip_levels(severity: SeverityClass, baseline_mm_s: float | None = None) -> tuple[float, float]:
    """(alarm, trip), mm/s, after common practice (the domain notes mark it unverified):

    alarm = baseline + 25 % of the B/C limit, never above 1.25 x B/C (with no baseline: the B/C limit,
    where "unrestricted long-term operation" ends); trip = 1.25 x C/D, "severe enough to cause damage"
    with a margin against a trip on one noisy reading.
    """
    _, bc, cd = severity.limits
    alarm = bc if baseline_mm_s is None else min(baseline_mm_s + 0.25 * bc, 1.25 * bc)
    return alarm, 1.25 * cd


def health_index(velocity_mm_s: np.ndarray | float, severity: SeverityClass) -> np.ndarray | float:
    """1 at or below the A/B limit, 0 at or above C/D, linear in log(velocity) between.

    Logarithmic because the zone limits themselves step by a near-constant ratio (~1.6 to 2): each zone
    is an equal step of severity, not an equal number of mm/s.
    """
    ab, _, cd = severity.limits
    v = np.maximum(np.asarray(velocity_mm_s, float), 1e-12)
    hi = np.clip(1.0 - np.log(v / ab) / math.log(cd / ab), 0.0, 1.0)
    return float(hi) if hi.ndim == 0 else hi


# --- trend --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """When a trend reaches a level: days from the fit's reference time (the last sample), with an interval.

    ``days`` is from the fitted trend (inf: it never gets there, e.g. flat or falling); ``lower``/``upper``
    are bootstrap percentiles at the fit's confidence; ``p_never`` is the share of bootstrap trends that
    never reach it. A negative ``days`` means the trend says the level was already passed.
    """

    level: float
    days: float
    lower: float
    upper: float
    p_never: float


@dataclass(frozen=True)
class TrendFit:
    """A fitted degradation trend y(τ) over τ = days since ``t_ref_ns`` (the last sample, so τ ≤ 0 for data).

    linear: y = a + b·τ; exponential: y = offset + exp(a + b·τ). ``boot`` holds the residual-bootstrap
    replicates of (a, b), one row each.
    """

    model: Literal["linear", "exponential"]
    a: float
    b: float
    offset: float
    sigma: float  # weighted residual RMS in the space fitted (mm/s, or log units for exponential)
    cov: np.ndarray  # 2x2 covariance of (a, b) from the WLS fit
    boot: np.ndarray  # (n_boot, 2)
    t_ref_ns: int
    n_points: int
    span_days: float
    confidence: float
    log_likelihood: float  # Gaussian, of the observed mm/s values (what "auto" compares)

    def predict(self, days: np.ndarray | float) -> np.ndarray:
        days = np.asarray(days, float)
        return self.a + self.b * days if self.model == "linear" else self.offset + np.exp(self.a + self.b * days)

    def _days_to(self, level: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.model == "linear":
            target = np.full_like(a, level)
        else:
            if level <= self.offset:
                return np.full_like(a, -np.inf)
            target = np.full_like(a, math.log(level - self.offset))
        with np.errstate(divide="ignore", invalid="ignore"):
            days = (target - a) / b
        # a trend that does not rise never reaches a higher level (and is already past a lower one)
        return np.where(b > 0, days, np.where(a >= target, -np.inf, np.inf))

    def crossing(self, level: float) -> Crossing:
        point = float(self._days_to(level, np.array([self.a]), np.array([self.b]))[0])
        reps = self._days_to(level, self.boot[:, 0], self.boot[:, 1])
        tail = (1.0 - self.confidence) / 2.0
        lo, hi = np.quantile(reps, [tail, 1.0 - tail], method="inverted_cdf")
        return Crossing(level, point, float(lo), float(hi), float(np.mean(np.isposinf(reps))))

    def probability_by(self, level: float, days: float) -> float:
        """Share of bootstrap trends that reach ``level`` within ``days`` after the reference time."""
        reps = self._days_to(level, self.boot[:, 0], self.boot[:, 1])
        return float(np.mean(reps <= days))


Offset = float | Literal["profile"]
_PROFILE_GRID = np.linspace(0.0, 0.995, 60)
"""Offsets tried by ``offset="profile"``, as fractions of the smallest value in the window."""


def fit_trend(t_ns: np.ndarray, y: np.ndarray, *, model: TrendModel = "auto", offset: Offset = 0.0,
              half_life_days: float | None = None, n_boot: int = 1000, confidence: float = 0.9, seed: int = 0
              ) -> TrendFit:
    """Weighted least-squares trend with a residual bootstrap for its uncertainty.

    ``exponential`` fits log(y - offset) (multiplicative noise: a spall's vibration scatters in proportion
    to its level); set ``offset`` to the healthy baseline when the history includes the flat healthy part.
    ``half_life_days`` weighs old points down (None: all equal), so a trend that has just steepened
    is followed. ``auto`` keeps the model with the larger likelihood of the observed values (the exponential's
    includes the Jacobian of the log, so the two compare fairly; both have two parameters).
    ``offset="profile"`` estimates the offset too (profile likelihood over a grid below the smallest value),
    for a window that holds the flat healthy level and the growth on top of it: a bearing's vibration is
    baseline + defect, and an exponential through zero fitted to that rises too slowly and predicts zone D
    far too late (on the simulated bearing: 150 % late a week ahead; profiled, within ~10 %). The extra
    parameter costs one unit of log-likelihood (AIC) when it is compared with the line.
    The bootstrap resamples leverage-corrected, weight-standardised residuals and refits: the spread of the
    refitted trends is the uncertainty of the trend, not of one noisy future reading.
    """
    t_ns = np.asarray(t_ns, np.int64)
    y = np.asarray(y, float)
    if t_ns.shape != y.shape:
        raise ValueError(f"trend fit: {len(t_ns)} timestamps for {len(y)} values")
    ok = np.isfinite(y)
    t_ns, y = t_ns[ok], y[ok]
    if len(y) < 3 or t_ns.min() == t_ns.max():
        raise ValueError(f"trend fit: need at least 3 finite samples at 2 or more distinct times, got {len(y)}")
    if offset == "profile":
        if model == "linear":
            return fit_trend(t_ns, y, model="linear", half_life_days=half_life_days, n_boot=n_boot,
                             confidence=confidence, seed=seed)
        candidates = []
        if model == "auto":
            candidates.append(fit_trend(t_ns, y, model="linear", half_life_days=half_life_days, n_boot=1))
        if np.all(y > 0):
            floor = float(y.min())
            exps = [fit_trend(t_ns, y, model="exponential", offset=q * floor, half_life_days=half_life_days,
                              n_boot=1) for q in _PROFILE_GRID]
            best = max(exps, key=lambda f: f.log_likelihood)
            candidates.append(replace(best, log_likelihood=best.log_likelihood - 1.0))
        if not candidates:
            raise ValueError("exponential trend with a profiled offset: every value must be > 0")
        chosen = max(candidates, key=lambda f: f.log_likelihood)
        return replace(fit_trend(t_ns, y, model=chosen.model, offset=chosen.offset, half_life_days=half_life_days,
                                 n_boot=n_boot, confidence=confidence, seed=seed),
                       log_likelihood=chosen.log_likelihood)
    if model == "auto":
        # the likelihoods compare only on the same points: the exponential needs all of them above the offset
        models = ("linear", "exponential") if np.all(y > offset) else ("linear",)
        fits = [fit_trend(t_ns, y, model=m, offset=offset, half_life_days=half_life_days, n_boot=n_boot,
                          confidence=confidence, seed=seed) for m in models]
        return max(fits, key=lambda f: f.log_likelihood)
    t_ref = int(t_ns.max())
    days = (t_ns - t_ref) / _NS_PER_DAY
    if model == "exponential":
        keep = y > offset
        days, y_fit_space, y_obs = days[keep], np.log(y[keep] - offset), y[keep]
        if len(y_obs) < 3:
            raise ValueError(f"exponential trend: fewer than 3 samples above the offset {offset}")
    elif model == "linear":
        y_fit_space, y_obs = y, y
    else:
        raise ValueError(f"trend model {model!r}: expected 'linear', 'exponential' or 'auto'")
    w = np.ones_like(days) if half_life_days is None else 0.5 ** (-days / half_life_days)
    x = np.column_stack([np.ones_like(days), days])
    xtw = x.T * w
    xtwx_inv = np.linalg.inv(xtw @ x)
    hat = xtwx_inv @ xtw  # (2, n): beta = hat @ y
    beta = hat @ y_fit_space
    fitted = x @ beta
    resid = y_fit_space - fitted
    dof = max(len(days) - 2, 1)
    sigma2 = float(np.sum(w * resid**2) / dof)
    leverage = np.einsum("ij,ji->i", x, hat)
    std_resid = np.sqrt(w) * resid / np.sqrt(np.clip(1.0 - leverage, 1e-6, None))
    std_resid -= std_resid.mean()
    rng = np.random.default_rng(seed)
    draws = std_resid[rng.integers(0, len(days), (n_boot, len(days)))] / np.sqrt(w)
    boot = (fitted + draws) @ hat.T  # every replicate refitted in one product: the design never changes
    n = len(days)
    loglik = -0.5 * n * (math.log(2 * math.pi * max(float(np.mean(resid**2)), 1e-300)) + 1.0)
    if model == "exponential":
        loglik -= float(np.sum(np.log(y_obs - offset)))  # density of y from that of log(y - offset)
    return TrendFit(model=model, a=float(beta[0]), b=float(beta[1]), offset=offset, sigma=math.sqrt(sigma2),
                    cov=xtwx_inv * sigma2, boot=boot, t_ref_ns=t_ref, n_points=len(days),
                    span_days=float(-days.min()), confidence=confidence,
                    log_likelihood=loglik)


def probability_zone_d_before(fit: TrendFit, severity: SeverityClass, postpone_days: float,
                              now_ns: int | None = None) -> float:
    """What-if: the chance that the machine reaches zone D before maintenance postponed by ``postpone_days``
    (from ``now_ns``, default the last sample), from the spread of the bootstrap trends. A machine whose
    trend is already in zone D gives 1."""
    now_days = 0.0 if now_ns is None else (now_ns - fit.t_ref_ns) / _NS_PER_DAY
    return fit.probability_by(severity.limit_of("D"), now_days + postpone_days)


# --- advisory -----------------------------------------------------------------------------------------


def _iso(t_ns: float) -> str | None:
    if not math.isfinite(t_ns):
        return None
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _at_ns(t_ref_ns: int, days: float) -> int | None:
    return None if not math.isfinite(days) else t_ref_ns + round(days * _NS_PER_DAY)


def maintenance_alert(asset: str, t_ns: np.ndarray, velocity_mm_s: np.ndarray, severity: SeverityClass, *,
                      now_ns: int | None = None, window_days: float | None = 30.0, model: TrendModel = "auto",
                      baseline_mm_s: float | None = None, horizon_days: float = 90.0, confidence: float = 0.9,
                      n_boot: int = 1000, seed: int = 0, offset: Offset = "profile") -> dict[str, Any] | None:
    """An alert when the machine is in zone C/D, or its trend reaches zone D within ``horizon_days``; else None.

    The returned dict has the keys of ``AlertService.raise_alert`` (asset, rule, severity, title, evidence,
    at_ns). Severity: critical in zone D (or a trend in D within 7 days), high in zone C (or D within 30
    days), medium otherwise. The evidence holds the predicted dates (ns and ISO 8601 UTC) with their
    interval, the lead time, the points used, the fit and the thresholds.
    """
    t_ns = np.asarray(t_ns, np.int64)
    v = np.asarray(velocity_mm_s, float)
    now = int(t_ns.max()) if now_ns is None else int(now_ns)
    used = (t_ns <= now) & np.isfinite(v)
    if window_days is not None:
        used &= t_ns >= now - window_days * _NS_PER_DAY
    t_used, v_used = t_ns[used], v[used]
    if len(v_used) < 3:
        return None
    fit = fit_trend(t_used, v_used, model=model, offset=offset, n_boot=n_boot, confidence=confidence, seed=seed)
    # the level now: the trend's value, not the last (noisy) reading
    level_now = float(fit.predict((now - fit.t_ref_ns) / _NS_PER_DAY))
    zone_now = severity.zone(max(level_now, 0.0))
    ab, bc, cd = severity.limits
    alarm, trip = alarm_trip_levels(severity, baseline_mm_s)
    now_days = (now - fit.t_ref_ns) / _NS_PER_DAY
    crossings = {z: fit.crossing(severity.limit_of(z)) for z in ("C", "D")}
    lead_d = max(crossings["D"].days - now_days, 0.0)
    if zone_now == "D" or lead_d <= 7.0:
        level = "critical"
    elif zone_now == "C" or lead_d <= 30.0:
        level = "high"
    elif lead_d <= horizon_days:
        level = "medium"
    else:
        return None

    def when(c: Crossing) -> dict[str, Any]:
        days, lo, hi = (max(x, now_days) for x in (c.days, c.lower, c.upper))  # passed already: reached "now"
        ref = fit.t_ref_ns
        return {"level_mm_s": c.level, "at_ns": _at_ns(ref, days), "at": _iso(ref + days * _NS_PER_DAY),
                "lead_days": days - now_days if math.isfinite(days) else None,
                "interval_ns": [_at_ns(ref, lo), _at_ns(ref, hi)],
                "interval": [_iso(ref + lo * _NS_PER_DAY), _iso(ref + hi * _NS_PER_DAY)], "p_never": c.p_never}

    d = crossings["D"]
    title = (f"vibration in zone D ({level_now:.2f} mm/s)" if zone_now == "D"
             else f"vibration reaches zone D in {lead_d:.1f} days (now zone {zone_now}, {level_now:.2f} mm/s)")
    evidence = {
        "source": RULE, "point": "vib_velocity_rms", "now_ns": now, "zone": zone_now, "level_mm_s": level_now,
        "health_index": health_index(level_now, severity),
        "zone_c": when(crossings["C"]), "zone_d": when(d),
        "lead_days": lead_d if math.isfinite(lead_d) else None, "confidence": confidence,
        "probability_zone_d_within_horizon": fit.probability_by(d.level, now_days + horizon_days),
        "fit": {"model": fit.model, "a": fit.a, "b_per_day": fit.b, "offset": fit.offset, "sigma": fit.sigma,
                "cov": fit.cov.tolist(), "bootstrap": len(fit.boot), "t_ref_ns": fit.t_ref_ns, "seed": seed},
        "points": {"n": fit.n_points, "first_ns": int(t_used.min()), "last_ns": int(t_used.max()),
                   "window_days": window_days, "last_value_mm_s": float(v_used[np.argmax(t_used)])},
        "thresholds": {"group": severity.group, "foundation": severity.foundation, "boundary": severity.boundary,
                       "zone_limits_mm_s": {"A/B": ab, "B/C": bc, "C/D": cd}, "alarm_mm_s": alarm, "trip_mm_s": trip,
                       "horizon_days": horizon_days},
    }
    return {"asset": asset, "rule": RULE, "severity": level, "title": title, "evidence": evidence, "at_ns": now}


# --- live ---------------------------------------------------------------------------------------------

POINT = "vib_velocity_rms"
MAX_TREND_POINTS = 2000
"""A denser history is read as that many window means: the bootstrap holds n_boot x points values in memory
(a month at one reading a minute would be 43,200 x 1000), and means lose nothing a month-long trend needs."""


def velocity_history(store, tenant: str, asset: str, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns, mm/s) of the finite readings in [start, end), or of ``MAX_TREND_POINTS`` window means if denser."""
    ser = store.query_range(tenant, asset, POINT, start_ns, end_ns, limit=MAX_TREND_POINTS + 1)
    if len(ser.t_ns) > MAX_TREND_POINTS:
        every = -(-(end_ns - start_ns) // MAX_TREND_POINTS)
        ser = store.query_window(tenant, asset, POINT, start_ns, end_ns, every, "mean")
        last = max(end_ns - 1, start_ns)
        ser.t_ns = [min(t + every // 2, last) for t in ser.t_ns]  # a window's mean belongs to its middle
    ok = [(t, v) for t, v in zip(ser.t_ns, ser.values, strict=True) if v is not None and math.isfinite(v)]
    return np.array([t for t, _ in ok], np.int64), np.array([v for _, v in ok], float)


def machine_alert(store, tenant: str, asset: str, severity: SeverityClass | None = None, *,
                  window_days: float = 30.0, n_boot: int = 1000, as_of_ns: int | None = None) -> dict[str, Any] | None:
    """The maintenance alert for one machine from its stored velocity history, or None.

    Assessed as of the machine's newest reading, not the wall clock: a gateway that was offline for a day
    delivers a day of history at once, and its trend is judged where its data ends (the alert says when).
    ``as_of_ns`` judges it as of an earlier moment instead (an auditor recomputing a stored alert).
    """
    if as_of_ns is None:
        latest = store.latest(tenant, asset).get(POINT)
        if latest is None:
            return None
        last_ns = int(latest[0])
    else:
        last_ns = int(as_of_ns)
    t_ns, v = velocity_history(store, tenant, asset, last_ns - round(window_days * _NS_PER_DAY), last_ns + 1)
    if len(v) < 10:
        return None  # a trend of a handful of readings says nothing yet
    return maintenance_alert(asset, t_ns, v, severity or SeverityClass(), now_ns=last_ns, window_days=window_days,
                             n_boot=n_boot)
