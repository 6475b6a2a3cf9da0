"""How many cycles engines have left when they are observed: a prior on RUL, and training weights from it.

Why: a run-to-failure training set holds every cycle of every engine, so its rows' RUL runs uniformly from 0
to each engine's whole life (up to 300-500 cycles). Engines met in service (or C-MAPSS test engines) are
observed at some point before failure by another design, and for an engine that shows no wear yet the
sensors say nothing: its RUL estimate is the design's prior given its age. A model trained on all rows
unweighted says "mean life minus age" (far too long for engines stopped 50-200 cycles before failure); a
model with the target capped at 125 says "125" (far too short for the fifth of FD002/FD004 test engines
with more left).

The design is estimated from what is observable without any RUL truth: the ages ``T`` of the engines to be
assessed and the training lives ``L``. Two designs were compared by the likelihood of the C-MAPSS test
engines' ages (no RUL file read): observed at a fraction ``U`` of life independent of it (``T = L·U``) and
observed ``R`` cycles before failure independent of life (``T = L - R``); the first explains the ages better
on all four sets (log-likelihood -529.8 / -1416.5 / -572.6 / -1447.1 against -538.1 / -1423.6 / -574.6 /
-1455.8, both unsmoothed). Both are here (``RulParams.prior``), and neither is on by default: see
``cloud.pdm.model`` for what they gave. ``f_U`` is found by EM (Vardi's deconvolution) on 100 bins
of the fraction with ``p_L`` a Gaussian-smoothed histogram of the training lives: ``P(T = t | u) =
p_L(t / u) / u``. Each training row (cycle ``c`` of an engine with life ``L``) is then weighted by
``f_U(c / L) / L``, so every engine counts once and its rows look like engines observed under the same
design; the booster's estimate for an engine without visible wear becomes the Bayes answer given its age.
With no ages given there is no prior and the model falls back to the capped target.
"""

from __future__ import annotations

import numpy as np

from cloud.pdm.data import Trajectories

BINS = 100
"""Bins of the observed fraction of life, (0, 1]."""

UNIFORM = np.full(BINS, 1.0 / BINS)
"""Engines observed at a uniformly random point of their life: ``row_weights`` gives every engine the same total
weight (each row ``1 / life``), as if each were truncated once at a random cycle. The RUL interval is calibrated
on held-out training engines under it (``cloud.pdm.model``)."""


def life_density(lives: np.ndarray, grid: int, bandwidth: float) -> np.ndarray:
    """p_L on 0..grid-1 cycles: the training lives' histogram smoothed by a Gaussian of ``bandwidth``."""
    x = np.arange(grid, dtype=float)
    d = (x[None, :] - np.asarray(lives, float)[:, None]) / bandwidth
    p = np.exp(-0.5 * d * d).sum(axis=0)
    return p / p.sum()


def deconvolve_fraction(ages: np.ndarray, lives: np.ndarray, bandwidth: float = 10.0, iterations: int = 500,
                        smooth: float = 0.02) -> np.ndarray:
    """f_U on ``BINS`` bins of (0, 1]: the distribution of the fraction of life at which engines are observed
    that best explains ``ages`` given the training ``lives`` (EM; each step smoothed by a Gaussian of
    ``smooth``, a fraction of life)."""
    ages = np.asarray(ages, float)
    grid = int(np.max(lives) + 4 * bandwidth) + 1
    p_l = life_density(lives, grid, bandwidth)
    u = (np.arange(BINS) + 0.5) / BINS
    at = ages[:, None] / u[None, :]
    k = np.where(at < grid - 1, np.interp(at, np.arange(grid), p_l) / u[None, :], 0.0)  # (engines, bins)
    f = np.full(BINS, 1.0 / BINS)
    half = int(3 * smooth * BINS)
    kern = np.exp(-0.5 * (np.arange(-half, half + 1) / (smooth * BINS)) ** 2) if smooth > 0 else np.ones(1)
    kern /= kern.sum()
    for _ in range(iterations):
        joint = k * f[None, :]
        tot = joint.sum(axis=1, keepdims=True)
        f = (joint / np.where(tot > 0, tot, 1.0)).mean(axis=0)
        f = np.convolve(f, kern, mode="same")
        f = f / f.sum()
    return f


def deconvolve_remaining(ages: np.ndarray, lives: np.ndarray, bandwidth: float = 10.0, iterations: int = 500,
                         smooth: float = 5.0) -> np.ndarray:
    """f_R on 0..grid-1 cycles under the other design (``T = L - R``, ``R`` independent of life): EM as in
    ``deconvolve_fraction``, smoothed by a Gaussian of ``smooth`` cycles."""
    ages = np.asarray(ages, float)
    grid = int(np.max(lives) + 4 * bandwidth) + 1
    p_l = life_density(lives, grid, bandwidth)
    idx = np.rint(ages)[:, None].astype(int) + np.arange(grid)[None, :]  # t_i + r
    k = np.where(idx < grid, p_l[np.minimum(idx, grid - 1)], 0.0)
    f = np.full(grid, 1.0 / grid)
    half = int(3 * smooth)
    kern = np.exp(-0.5 * (np.arange(-half, half + 1) / smooth) ** 2) if smooth > 0 else np.ones(1)
    kern /= kern.sum()
    for _ in range(iterations):
        joint = k * f[None, :]
        tot = joint.sum(axis=1, keepdims=True)
        f = np.convolve((joint / np.where(tot > 0, tot, 1.0)).mean(axis=0), kern, mode="same")
        f = f / f.sum()
    return f


def prior_from_ages(design: str, ages: np.ndarray, lives: np.ndarray, bandwidth: float = 10.0) -> np.ndarray:
    """The prior of ``design`` ("fraction" or "remaining"), tagged by its length: ``BINS`` bins of the fraction
    of life, or one bin per cycle left (``row_weights`` tells them apart the same way)."""
    if design == "fraction":
        return deconvolve_fraction(ages, lives, bandwidth)
    if design == "remaining":
        f = deconvolve_remaining(ages, lives, bandwidth)
        return f if len(f) != BINS else np.append(f, 0.0)
    raise ValueError(f"prior design {design!r}: expected 'fraction' or 'remaining'")


def row_weights(traj: Trajectories, prior: np.ndarray | None) -> np.ndarray:
    """Weight of each training row: ``f_U(cycle / life) / life`` (None: every row 1); mean 1 over the rows."""
    n = len(traj.unit)
    if prior is None or len(prior) == 0:
        return np.ones(n)
    starts = traj.starts
    life = np.repeat(traj.cycle[starts[1:] - 1], np.diff(starts)).astype(float)
    if len(prior) == BINS:  # fraction of life
        w = prior[np.clip((traj.cycle / life * BINS).astype(int), 0, BINS - 1)] / life
    else:  # cycles left: f_R(r) over the training rows with that many left
        rul = (life - traj.cycle).astype(int)
        counts = np.bincount(rul, minlength=len(prior))
        f = np.concatenate([prior, np.zeros(max(0, counts.size - len(prior)))])
        w = f[rul] / np.maximum(counts[rul], 1)
    return w * (n / w.sum()) if w.sum() > 0 else np.ones(n)
