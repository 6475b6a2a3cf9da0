"""The multivariate baseline the edge's ``mspc`` detector scores against, and how it is fitted.

Both sides fit it: the cloud on an asset's healthy history (``cloud.pdm.baseline``, pushed as desired
configuration), the edge offline (``edge.detect.multivariate.fit``, e.g. on SKAB). The arrays the cloud pushes
must mean exactly what the edge reads, so there is one fit, here, in the one package both may import; numpy
only. Rows are aligned values of an asset's points (rows with a NaN are dropped); standardised columns, the
eigen-decomposition of their correlation matrix, ``k`` principal components kept; limits at false-alarm rate
``alpha`` from theory (chi-square for T², Jackson-Mudholkar for SPE) or from the training rows' quantiles.

>>> import numpy as np
>>> a = np.random.default_rng(0).normal(size=500)
>>> arrays = fit_arrays(np.c_[a, 2 * a + 0.1], n_components=1)
>>> round(arrays["t2_limit"], 3)  # chi-square, 1 degree of freedom, alpha 0.001
10.828
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def chi2_survival(y: float, dof: int) -> float:
    """P(X > y) for X ~ chi-square(dof), in closed form for whole degrees of freedom (no scipy on a gateway)."""
    if y <= 0:
        return 1.0
    x = y / 2.0
    if dof % 2 == 0:  # Q(k, x) = e^-x sum_{i<k} x^i / i!
        return math.fsum(math.exp(-x + i * math.log(x) - math.lgamma(i + 1)) for i in range(dof // 2))
    # Q(k + 1/2, x) = erfc(sqrt x) + e^-x sum_{i<k} x^(i+1/2) / Gamma(i + 3/2)
    return math.erfc(math.sqrt(x)) + math.fsum(
        math.exp(-x + (i + 0.5) * math.log(x) - math.lgamma(i + 1.5)) for i in range((dof - 1) // 2))


def chi2_quantile(q: float, dof: int) -> float:
    """The chi-square(dof) quantile at q, by bisection on the survival function (exact to float precision)."""
    if not 0 < q < 1 or dof < 1:
        raise ValueError(f"chi2_quantile: need 0 < q < 1 and dof >= 1, got q={q}, dof={dof}")
    tail = 1.0 - q
    lo, hi = 0.0, float(dof) + 10.0
    while chi2_survival(hi, dof) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if chi2_survival(mid, dof) > tail else (lo, mid)
    return (lo + hi) / 2.0


def jackson_mudholkar(q: float, resid_eig: np.ndarray) -> float:
    """The SPE (Q) limit at q from the residual eigenvalues; NaN where the approximation breaks down."""
    th1, th2, th3 = (float(np.sum(resid_eig**i)) for i in (1, 2, 3))
    h0 = 1.0 - 2.0 * th1 * th3 / (3.0 * th2**2)
    if not h0 > 0:
        return float("nan")
    z = NormalDist().inv_cdf(q)
    inner = z * np.sqrt(2.0 * th2 * h0**2) / th1 + 1.0 + th2 * h0 * (h0 - 1.0) / th1**2
    return float(th1 * inner ** (1.0 / h0)) if inner > 0 else float("nan")


def smooth_rows(t_ns: np.ndarray, X: np.ndarray, tau_s: float) -> np.ndarray:
    """Causal time-decayed mean of the complete rows (weight ``1 - exp(-dt / tau)``, a running mean while that is
    larger); a row with a NaN gives a NaN row and is skipped. What the edge's ``RowSmoother`` does tick by tick
    (a numba kernel with state), over a whole history at once, for fitting."""
    X = np.asarray(X, np.float64)
    out = np.full_like(X, np.nan)
    mean = np.zeros(X.shape[1])
    count, last_t = 0, 0
    for r in range(X.shape[0]):
        if np.isnan(X[r]).any():
            continue
        a = 1.0
        if count:
            a = max(1.0 - math.exp(-(max(int(t_ns[r]) - last_t, 0) * 1e-9) / tau_s), 1.0 / (count + 1.0))
        mean += a * (X[r] - mean)
        out[r] = mean
        last_t, count = int(t_ns[r]), count + 1
    return out


def fit_arrays(X: np.ndarray, n_components: int | float | None = None, alpha: float = 0.001,
               limits: str = "theory", limit_scale: float = 1.0) -> dict[str, Any]:
    """``mean``, ``scale``, ``loadings`` (d, k), ``eigvals`` (k,), ``t2_limit``, ``spe_limit`` (0 when k == d).

    ``n_components``: None = all (T² is then the Mahalanobis distance²), an int = that many, a float in (0, 1) =
    the fewest explaining that share of the variance. ``limit_scale`` multiplies both limits."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"fit: X must be 2-D (rows x points), got shape {X.shape}")
    if not limit_scale > 0:
        raise ValueError(f"fit: limit_scale must be > 0, got {limit_scale}")
    if limits not in ("theory", "quantile"):
        raise ValueError(f"fit: limits must be 'theory' or 'quantile', got {limits!r}")
    X = X[~np.isnan(X).any(axis=1)]
    n, d = X.shape
    if n <= d + 1:
        raise ValueError(f"fit: need more complete rows than columns + 1, got {n} rows of {d} columns")
    mean = X.mean(axis=0)
    scale = X.std(axis=0, ddof=1)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (X - mean) / scale
    eig, vec = np.linalg.eigh(Z.T @ Z / (n - 1))
    order = np.argsort(eig)[::-1]
    eig = np.maximum(eig[order], 1e-12 * max(float(eig.max()), 1e-300))
    vec = vec[:, order]
    if n_components is None:
        k = d
    elif isinstance(n_components, float) and 0 < n_components < 1:
        k = int(np.searchsorted(np.cumsum(eig) / eig.sum(), n_components) + 1)
    else:
        k = int(n_components)
    if not 1 <= k <= d:
        raise ValueError(f"fit: n_components must be in 1..{d}, got {n_components}")
    P = np.ascontiguousarray(vec[:, :k])
    T = Z @ P
    t2 = (T**2 / eig[:k]).sum(axis=1)
    spe = ((Z - T @ P.T) ** 2).sum(axis=1)
    q = 1.0 - alpha
    if limits == "theory":
        t2_limit, spe_limit = chi2_quantile(q, k), 0.0
        if k < d:
            spe_limit = jackson_mudholkar(q, eig[k:])
            if not np.isfinite(spe_limit):  # the approximation breaks down: fall back to the data
                spe_limit = float(np.quantile(spe, q))
    else:
        t2_limit = float(np.quantile(t2, q))
        spe_limit = float(np.quantile(spe, q)) if k < d else 0.0
    return {"mean": mean, "scale": scale, "loadings": P, "eigvals": np.ascontiguousarray(eig[:k]),
            "t2_limit": t2_limit * limit_scale, "spe_limit": spe_limit * limit_scale}
