"""The loop back to the gateway: fit an asset's normal baseline on its healthy history, push it as desired config.

A gateway's per-point detectors judge each signal against its own recent past; they cannot know that on
*this* machine motor current and speed move together, so current up with speed unchanged (friction, a
failing bearing) is abnormal although each value is ordinary. The cloud has the history to learn that
relation: ``fit_baseline`` reads the window an operator vouches for as healthy, aligns the asset's points
into rows the way the edge does (last value held, one row per timestamp), and fits the multivariate
baseline the edge's ``mspc`` detector scores against — mean, scale and the eigen-decomposition of the
correlation matrix, with a chi-square limit on Hotelling's T² (the Mahalanobis distance², all components
kept). ``push_baseline`` merges it into the gateway's desired configuration (``baselines.<asset>``) and
publishes that retained, with a version above anything the gateway runs; the gateway applies it live and
reports the version, which ``GET /api/v1/gateways/{id}`` shows as ``config_version``.

The arrays are the contract (``edge.config.MspcBaselineConfig``); the fit is ``models.mspc``, the same one the
edge's offline ``fit`` runs, since the cloud must not import the edge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud.gateway_config import push_desired_config, with_baseline
from cloud.registry import Asset
from models.catalogue import get_type
from models.mspc import fit_arrays, smooth_rows

MIN_ROWS = 30
"""Fewer aligned healthy rows than this (or than 10 per point) is no baseline: the covariance would be noise."""


class BaselineError(ValueError):
    """The baseline cannot be fitted or pushed; the message says why and what to do."""


@dataclass(frozen=True)
class BaselineFit:
    config: dict[str, Any]  # the gateway's ``baselines.<asset>`` entry
    rows: int
    start_ns: int
    end_ns: int
    skipped: dict[str, str]  # point -> why it is not in the baseline


def aligned_rows(series: dict[str, tuple[np.ndarray, np.ndarray]], max_age_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns, rows): one row per distinct timestamp of any point, each column its point's last value at or before
    it and no older than ``max_age_ns`` (else NaN) — the edge's ``RowBuilder`` on history. Rows with a NaN are
    dropped."""
    t_all = np.unique(np.concatenate([t for t, _ in series.values()]))
    cols = []
    for t, v in series.values():
        pos = np.searchsorted(t, t_all, side="right") - 1
        fresh = (pos >= 0) & (t_all - t[np.maximum(pos, 0)] <= max_age_ns)
        cols.append(np.where(fresh, v[np.maximum(pos, 0)], np.nan))
    X = np.column_stack(cols)
    keep = ~np.isnan(X).any(axis=1)
    return t_all[keep], X[keep]


def fit_baseline(store, tenant: str, asset: str, asset_type: str, start_ns: int, end_ns: int, *,
                 points: list[str] | None = None, alpha: float = 0.001, limit_scale: float = 1.0,
                 max_age_s: float = 60.0, smooth_tau_s: float = 0.0) -> BaselineFit:
    """Fit the ``mspc`` baseline on [start, end) of the asset's stored history, which must be healthy.

    ``points`` default to the type's numeric points with data; a point with fewer than 10 readings or a
    constant value is skipped (said in ``skipped``). ``alpha`` is the false-alarm rate per row of the T²
    limit, ``limit_scale`` widens it (a day of history rarely holds all of a machine's normal variation).
    ``smooth_tau_s`` > 0 fits (and has the edge score) time-decayed means of the rows: noise averages out, a
    sustained shift does not, so a small persistent one stands out at the price of a delay of about tau.
    """
    if not 0 < alpha < 1:
        raise BaselineError(f"alpha {alpha}: expected a false-alarm rate in (0, 1)")
    if end_ns <= start_ns:
        raise BaselineError("the healthy window is empty: end must be after start")
    numeric = [p for p, spec in get_type(asset_type).points.items() if spec.kind == "number"]
    unknown = [p for p in points or [] if p not in numeric]
    if unknown:
        raise BaselineError(f"points {', '.join(unknown)}: not numeric points of {asset_type}")
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for p in points or numeric:
        ser = store.query_range(tenant, asset, p, start_ns, end_ns, limit=200_000)
        ok = [(t, v) for t, v in zip(ser.t_ns, ser.values, strict=True) if v is not None and math.isfinite(v)]
        if len(ok) < 10:
            skipped[p] = f"{len(ok)} readings in the window"
            continue
        t, v = np.array([x for x, _ in ok], np.int64), np.array([y for _, y in ok], float)
        if np.ptp(v) == 0:
            skipped[p] = "constant in the window"
            continue
        series[p] = (t, v)
    if points and skipped:
        raise BaselineError("; ".join(f"{p}: {why}" for p, why in skipped.items()))
    if len(series) < 2:
        raise BaselineError(f"a multivariate baseline needs 2 or more points with data in the window, got "
                            f"{sorted(series)} (skipped: {skipped})")
    t_rows, X = aligned_rows(series, round(max_age_s * 1e9))
    if smooth_tau_s > 0 and len(X):
        X = smooth_rows(t_rows, X, smooth_tau_s)
    n, d = X.shape
    if n < max(MIN_ROWS, 10 * d):
        raise BaselineError(f"{n} complete rows of {d} points in the window; need at least {max(MIN_ROWS, 10 * d)}")
    arrays = fit_arrays(X, alpha=alpha, limit_scale=limit_scale)  # all components: T² is the Mahalanobis distance²
    config = {
        "id": f"{asset}@{end_ns}", "points": list(series),
        **{k: v.tolist() if isinstance(v, np.ndarray) else float(v) for k, v in arrays.items()},
        "max_age_s": max_age_s, "smooth_tau_s": smooth_tau_s,
    }
    return BaselineFit(config, n, start_ns, end_ns, skipped)


def asset_gateway(registry, tenant: str, asset: str) -> tuple[str, str]:
    """(type, gateway) of an asset; LookupError if unknown, BaselineError if it has no type or gateway yet."""
    with registry.session() as s:
        a = s.get(Asset, (tenant, asset))
        if a is None:
            raise LookupError(f"no asset {asset!r}")
        if not a.type or not a.gateway:
            raise BaselineError(f"asset {asset!r} has no {'type' if not a.type else 'gateway'} yet: the baseline "
                                "goes to the gateway that reports it, once it has said what the asset is")
        return a.type, a.gateway


def push_baseline(platform, tenant: str, gateway: str, asset: str, baseline: dict[str, Any], actor: str,
                  reason: str = "") -> int:
    """Merge ``baseline`` into the gateway's desired configuration and publish it retained; returns the version."""
    return push_desired_config(platform, tenant, gateway, with_baseline(asset, baseline), actor=actor,
                               action="gateway.baseline.put", reason=reason)


def fit_and_push(platform, tenant: str, asset: str, start_ns: int | None, end_ns: int | None, actor: str, *,
                 points: list[str] | None = None, alpha: float = 0.001, limit_scale: float = 1.0,
                 max_age_s: float = 60.0, smooth_tau_s: float = 0.0, reason: str = "") -> dict[str, Any]:
    """What ``POST /api/v1/assets/{id}/baseline`` does: fit on [start, end) (default: the last 24 h) and push."""
    asset_type, gateway = asset_gateway(platform.registry, tenant, asset)
    end = end_ns or time.time_ns()
    start = start_ns if start_ns is not None else end - 86_400 * 10**9
    fit = fit_baseline(platform.store, tenant, asset, asset_type, start, end, points=points, alpha=alpha,
                       limit_scale=limit_scale, max_age_s=max_age_s, smooth_tau_s=smooth_tau_s)
    version = push_baseline(platform, tenant, gateway, asset, fit.config, actor, reason)
    return {"asset": asset, "gateway": gateway, "version": version, "baseline": fit.config, "rows": fit.rows,
            "window": {"start_ns": fit.start_ns, "end_ns": fit.end_ns}, "skipped": fit.skipped}
