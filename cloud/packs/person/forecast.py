"""30-minute-ahead glucose forecast with an interval, per person, refit online; and its two baselines.

Why this model: over half an hour, glucose follows its own recent trend plus what is already on board — insulin
a bolus has yet to absorb, carbohydrate a meal has yet to deliver — and a person's response to each is their
own. So each person gets a ridge regression of the 30-minute change on

- the recent deltas (5, 15, 30 minutes) and the level (pulls toward the person's mean),
- insulin-on-board and carbs-on-board, and how much of each acts within the next 30 minutes
  (bolus units and carbohydrate grams through gamma-shaped action curves peaking at 75 and 40 minutes),
- heart rate above the person's own median (exercise lowers glucose),

refit on the person's history (``Forecaster.fit``; the live pack refits daily, the benchmark every day of 14),
with the interval from the quantiles of its own out-of-sample residuals (``RESIDUAL_QUANTILES``: 5 % and 95 %).
The baselines it is judged against: the last value, and the straight line through the last 15 minutes.
It forecasts glucose; it never suggests what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_MIN = 5
HORIZON_STEPS = 6          # 30 minutes
RESIDUAL_QUANTILES = (0.05, 0.95)
INSULIN_PEAK_MIN = 75.0
CARBS_PEAK_MIN = 40.0
RIDGE = 1.0
N_FEATURES = 11


def _gamma_cdf2(t_min: np.ndarray, peak_min: float) -> np.ndarray:
    """Fraction absorbed by ``t_min`` of a gamma(2) action curve peaking at ``peak_min`` (0 before the dose)."""
    x = np.maximum(t_min, 0.0) / peak_min
    return 1.0 - (1.0 + x) * np.exp(-x)


def on_board(grid_ns: np.ndarray, dose_t_ns: np.ndarray, dose: np.ndarray, peak_min: float,
             ahead_min: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(still on board, acting within the next ``ahead_min``) at each grid time: sums over doses, vectorised."""
    if dose.size == 0:
        z = np.zeros(grid_ns.size)
        return z, z.copy()
    age = (grid_ns[:, None] - dose_t_ns[None, :]) / 6e10
    given = age >= 0
    now = _gamma_cdf2(age, peak_min)
    later = _gamma_cdf2(age + ahead_min, peak_min)
    left = np.where(given, 1.0 - now, 0.0) @ dose
    acting = np.where(given, later - now, 0.0) @ dose
    return left, acting


def features(g: np.ndarray, iob: np.ndarray, ins30: np.ndarray, cob: np.ndarray, carb30: np.ndarray,
             hr_excess: np.ndarray, level_ref: float) -> np.ndarray:
    """The feature matrix on the 5-minute grid (NaN where a needed reading is missing)."""
    def lag(k: int) -> np.ndarray:
        out = np.full(g.size, np.nan)
        out[k:] = g[:-k]
        return out

    d1, d3, d6 = g - lag(1), g - lag(3), g - lag(6)
    return np.column_stack([np.ones(g.size), d1, d3, d6, g - level_ref, iob, ins30, cob, carb30,
                            hr_excess, d1 * (g < 100)])


def last_value(g: np.ndarray) -> np.ndarray:
    return g.copy()


def linear_extrapolation(g: np.ndarray) -> np.ndarray:
    """The least-squares line through the last four readings (15 minutes), carried 30 minutes on."""
    x = np.array([-3.0, -2.0, -1.0, 0.0])
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = np.full(g.size, np.nan)
    slope[3:] = w[0] * g[:-3] + w[1] * g[1:-2] + w[2] * g[2:-1] + w[3] * g[3:]
    return g + slope * HORIZON_STEPS


@dataclass
class Forecaster:
    """One person's model: ridge coefficients, the level it reverts to, and its residual quantiles."""

    coef: np.ndarray | None = None
    level_ref: float = 140.0
    lo: float = -30.0
    hi: float = 30.0
    trained_on: int = 0

    def fit(self, x: np.ndarray, y_delta: np.ndarray) -> Forecaster:
        """Ridge on the rows with every feature and the target present; the interval from 5-fold residuals
        (out of sample, so it is not too narrow)."""
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y_delta)
        x, y = x[ok], y_delta[ok]
        if len(y) < 50:
            return self
        self.coef = _ridge(x, y)
        folds = np.arange(len(y)) * 5 // len(y)
        resid = np.empty(len(y))
        for f in range(5):
            test = folds == f
            resid[test] = y[test] - x[test] @ _ridge(x[~test], y[~test])
        self.lo, self.hi = (float(q) for q in np.quantile(resid, RESIDUAL_QUANTILES))
        self.trained_on = len(y)
        return self

    def predict(self, g: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forecast, low, high) 30 minutes after each grid time; NaN where a feature is missing."""
        if self.coef is None:
            f = linear_extrapolation(g)
            return f, f + self.lo, f + self.hi
        f = g + x @ self.coef
        return f, f + self.lo, f + self.hi


def _ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    scale = np.maximum(x.std(axis=0), 1e-9)
    scale[0] = 1.0
    xs = x / scale
    penalty = RIDGE * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(xs.T @ xs + penalty, xs.T @ y) / scale


@dataclass
class PersonSeries:
    """A person's data on the 5-minute CGM grid, and what the forecaster reads off it."""

    t_ns: np.ndarray
    glucose: np.ndarray
    x: np.ndarray

    @property
    def target_delta(self) -> np.ndarray:
        y = np.full(self.glucose.size, np.nan)
        y[:-HORIZON_STEPS] = self.glucose[HORIZON_STEPS:] - self.glucose[:-HORIZON_STEPS]
        return y


def grid(start_ns: int, end_ns: int, glucose_t: np.ndarray, glucose: np.ndarray, bolus_t: np.ndarray,
         bolus: np.ndarray, carbs_t: np.ndarray, carbs: np.ndarray, hr_t: np.ndarray, hr: np.ndarray,
         level_ref: float | None = None) -> PersonSeries:
    """Readings placed on the 5-minute grid from ``start_ns`` (a slot with no reading is NaN) and the features."""
    step = STEP_MIN * 60 * 10**9
    n = max(0, int((end_ns - start_ns) // step))
    t = start_ns + np.arange(n, dtype=np.int64) * step
    g = np.full(n, np.nan)
    idx = ((np.asarray(glucose_t, np.int64) - start_ns + step // 2) // step).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    g[idx[ok]] = np.asarray(glucose, float)[ok]
    h = np.full(n, np.nan)
    hidx = ((np.asarray(hr_t, np.int64) - start_ns + step // 2) // step).astype(np.int64)
    hok = (hidx >= 0) & (hidx < n)
    h[hidx[hok]] = np.asarray(hr, float)[hok]
    hr_excess = np.nan_to_num(np.maximum(h - np.nanmedian(h), 0.0)) if np.isfinite(h).any() else np.zeros(n)
    iob, ins30 = on_board(t, np.asarray(bolus_t, np.int64), np.asarray(bolus, float), INSULIN_PEAK_MIN)
    cob, carb30 = on_board(t, np.asarray(carbs_t, np.int64), np.asarray(carbs, float), CARBS_PEAK_MIN)
    ref = level_ref if level_ref is not None else (float(np.nanmean(g)) if np.isfinite(g).any() else 140.0)
    return PersonSeries(t, g, features(g, iob, ins30, cob, carb30, hr_excess, ref))
