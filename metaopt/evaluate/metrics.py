"""Per-run metrics on validation-loss curves (NumPy arrays, one row per run).

Definitions (also in docs/baselines/README.md):

* **diverged** — the curve holds a NaN/Inf, or some point exceeds ``factor`` x its initial value.
* **final loss** — the last point of the curve (validation loss after the last step).
* **normalized AUC** — the area under ``curve / curve[0]`` over training time rescaled to [0, 1]
  (trapezoid rule): 1.0 means no progress, smaller is better; comparable across tasks and horizons.
  It assumes a non-negative loss (true of every task in ``tasks/``).

Scores against the reference (speedup, steps to target, loss ratio, their aggregates) are defined in
``metaopt/scoring.py``, not here.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def diverged(curves: np.ndarray, factor: float) -> np.ndarray:
    """bool[runs]: which runs diverged (non-finite anywhere, or above ``factor`` x the initial loss)."""
    curves = np.atleast_2d(np.asarray(curves, np.float64))
    nonfinite = ~np.all(np.isfinite(curves), axis=1)
    with np.errstate(invalid="ignore"):
        blown = np.any(curves > factor * np.abs(curves[:, :1]), axis=1)
    return nonfinite | blown


def normalized_auc(curve: Sequence[float], steps: Sequence[float]) -> float:
    """Area under ``curve / curve[0]`` against ``steps / steps[-1]``; NaN for a non-finite curve."""
    c = np.asarray(curve, np.float64)
    s = np.asarray(steps, np.float64)
    if not np.all(np.isfinite(c)) or c[0] == 0 or len(c) < 2:
        return math.nan
    y, x = c / c[0], s / s[-1]
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over the finite values; (NaN, NaN) if none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def finite_or_none(x: float) -> Optional[float]:
    """JSON has no NaN/Inf: non-finite numbers are stored as ``null`` (read back as "diverged")."""
    x = float(x)
    return x if math.isfinite(x) else None


def clean_curve(curve: Sequence[float]) -> list[Optional[float]]:
    return [finite_or_none(x) for x in curve]
