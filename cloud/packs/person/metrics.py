"""The international consensus CGM metrics (Battelino et al., Diabetes Care 2019;42:1593), per day and over a period.

Clinicians read a CGM trace through these numbers and nothing else, so they are computed exactly as the consensus
defines them, vectorised over the whole trace (``np.bincount`` per day, no Python loop over readings):

- time in range (TIR) 70-180 mg/dL inclusive; below range < 70 (all of it, level 1 and 2) and < 54 (level 2);
  above range > 180 (level 1 and 2) and > 250 (level 2) — each the percentage of the readings;
- mean glucose, the glucose management indicator GMI (%) = 3.31 + 0.02392 x mean mg/dL (Bergenstal et al. 2018),
  and the coefficient of variation CV = SD / mean x 100 (SD of the sample, ddof=1, as R's ``sd`` in iglu/AGP tools);
- data sufficiency: the share of the period's 5-minute slots that hold a reading (the consensus asks >= 70 % of
  14 days before the other numbers mean anything). A slot with two readings counts once.

Glucose is stored in mg/dL. ``MGDL_PER_MMOLL`` = 18.016 (glucose's molar mass 180.16 g/mol / 10) converts for
display; the rounder 18.0 some meters use differs by 0.09 %, and the consensus thresholds shown to one decimal
(3.9, 3.0, 10.0, 13.9 mmol/L) are the same with either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MGDL_PER_MMOLL = 18.016
READING_S = 300
DAY_S = 86_400
_NS = 10**9


def to_mmol(mgdl: float | np.ndarray) -> float | np.ndarray:
    """mg/dL -> mmol/L (display only: everything is stored and judged in mg/dL)."""
    return mgdl / MGDL_PER_MMOLL


def gmi_percent(mean_mgdl: float | np.ndarray) -> float | np.ndarray:
    return 3.31 + 0.02392 * mean_mgdl


@dataclass(frozen=True)
class CgmMetrics:
    """The consensus numbers over one period (a day or 14 days); percentages of readings, None without readings."""

    start_ns: int
    end_ns: int
    readings: int
    sufficiency_pct: float
    tir_pct: float | None
    tbr70_pct: float | None
    tbr54_pct: float | None
    tar180_pct: float | None
    tar250_pct: float | None
    mean_mgdl: float | None
    sd_mgdl: float | None
    cv_pct: float | None
    gmi_pct: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _per_bin(bins: np.ndarray, g: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """Counts and sums per bin, every category in one ``bincount`` each."""
    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(bins[mask], minlength=n_bins).astype(float)

    n = np.bincount(bins, minlength=n_bins).astype(float)
    s = np.bincount(bins, weights=g, minlength=n_bins)
    mean = np.divide(s, n, out=np.full(n_bins, np.nan), where=n > 0)
    dev2 = np.bincount(bins, weights=(g - mean[bins]) ** 2, minlength=n_bins)
    sd = np.sqrt(np.divide(dev2, n - 1, out=np.full(n_bins, np.nan), where=n > 1))
    return {"n": n, "mean": mean, "sd": sd,
            "tir": count((g >= 70) & (g <= 180)), "tbr70": count(g < 70), "tbr54": count(g < 54),
            "tar180": count(g > 180), "tar250": count(g > 250)}


def metrics_by_period(t_ns: np.ndarray, glucose_mgdl: np.ndarray, start_ns: int, end_ns: int,
                      period_s: int = DAY_S, reading_s: int = READING_S) -> list[CgmMetrics]:
    """The metrics of each ``period_s`` from ``start_ns`` (e.g. each local day: pass its local midnight) to
    ``end_ns``; readings outside, NaN or non-positive are left out (a sensor's error codes are not glucose)."""
    t = np.asarray(t_ns, dtype=np.int64)
    g = np.asarray(glucose_mgdl, dtype=float)
    keep = (t >= start_ns) & (t < end_ns) & np.isfinite(g) & (g > 0)
    t, g = t[keep], g[keep]
    period_ns = period_s * _NS
    n_bins = max(1, -(-(end_ns - start_ns) // period_ns))
    bins = ((t - start_ns) // period_ns).astype(np.int64)
    c = _per_bin(bins, g, n_bins)
    slots = np.unique((t - start_ns) // (reading_s * _NS))
    filled = np.bincount((slots * reading_s // period_s).astype(np.int64), minlength=n_bins).astype(float)
    out = []
    for i in range(n_bins):
        b0 = start_ns + i * period_ns
        b1 = min(end_ns, b0 + period_ns)
        expected = (b1 - b0) / (reading_s * _NS)
        n = c["n"][i]

        def pct(key: str, i: int = i, n: float = n) -> float | None:
            return 100.0 * c[key][i] / n if n else None

        mean = float(c["mean"][i]) if n else None
        sd = float(c["sd"][i]) if n > 1 else None
        out.append(CgmMetrics(
            start_ns=b0, end_ns=b1, readings=int(n), sufficiency_pct=min(100.0, 100.0 * filled[i] / expected),
            tir_pct=pct("tir"), tbr70_pct=pct("tbr70"), tbr54_pct=pct("tbr54"), tar180_pct=pct("tar180"),
            tar250_pct=pct("tar250"), mean_mgdl=mean, sd_mgdl=sd,
            cv_pct=100.0 * sd / mean if sd is not None and mean else None,
            gmi_pct=float(gmi_percent(mean)) if mean is not None else None))
    return out


def metrics(t_ns: np.ndarray, glucose_mgdl: np.ndarray, start_ns: int, end_ns: int,
            reading_s: int = READING_S) -> CgmMetrics:
    """The metrics over the whole period (the consensus report's 14 days)."""
    span_s = -(-(end_ns - start_ns) // _NS)
    return metrics_by_period(t_ns, glucose_mgdl, start_ns, end_ns, period_s=max(1, span_s), reading_s=reading_s)[0]


def daily_and_overall(t_ns: np.ndarray, glucose_mgdl: np.ndarray, start_ns: int, days: int = 14,
                      reading_s: int = READING_S) -> dict:
    """Each day's metrics and the period's, as the pack's report and the dashboard show them."""
    end = start_ns + days * DAY_S * _NS
    return {"days": [m.as_dict() for m in metrics_by_period(t_ns, glucose_mgdl, start_ns, end, DAY_S, reading_s)],
            "overall": metrics(t_ns, glucose_mgdl, start_ns, end, reading_s).as_dict()}
