"""Small statistics for the fair tables: mean ± sd, the paired bootstrap interval, curve interpolation.

Torch-free and deterministic: the bootstrap draws from ``numpy.random.default_rng(BOOTSTRAP_SEED)``,
so the same numbers always give the same interval.

>>> bootstrap_ci([0.5, 0.5, 0.5])
(0.5, 0.5)
>>> interpolate([0, 10, 20], [1.0, 0.8, 0.6], 15)
0.7
>>> interpolate([0, 10, 20], [1.0, 0.8, float("nan")], 15) is None   # the curve ended (diverged)
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "bootstrap_ci",
    "interpolate",
    "mean_sd",
]

#: Resamples of the percentile bootstrap; with 3 seeds there are only 10 distinct resample means,
#: so more draws would not change the interval beyond sampling noise of its end points.
BOOTSTRAP_RESAMPLES = 2000
#: Fixed RNG seed: a report built twice from the same records must be byte-identical.
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample sd with ddof=1); sd None for fewer than two values, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def bootstrap_ci(
    diffs: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``diffs`` (paired differences over seeds).

    Draws ``resamples`` resamples of len(diffs) indices with replacement from
    ``default_rng(seed).integers(0, n, size=(resamples, n))``, takes each resample's mean and returns
    the (1-level)/2 and (1+level)/2 quantiles (numpy's default linear interpolation). None for fewer
    than two differences: one seed gives no interval.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or len(d) < 2 or not np.all(np.isfinite(d)):
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def interpolate(x: Sequence[float], y: Sequence[float], at: float) -> float | None:
    """Linear interpolation of the curve (x ascending, e.g. cumulative backprop steps) at ``at``.

    The curve is cut at its first non-finite y (a diverged run has no loss after that point). Where
    several points share an x (no backprop between evaluations), the last of them is the left end:
    the most-trained parameters at that cost. None when ``at`` lies outside the remaining curve.
    """
    pts: list[tuple[float, float]] = []
    for xi, yi in zip(x, y):
        if yi is None or not math.isfinite(yi) or xi is None:
            break
        pts.append((float(xi), float(yi)))
    if not pts or at < pts[0][0] or at > pts[-1][0]:
        return None
    left = max(i for i, (xi, _) in enumerate(pts) if xi <= at)
    x0, y0 = pts[left]
    if x0 == at or left == len(pts) - 1:
        return y0
    x1, y1 = pts[left + 1]
    return y0 + (at - x0) / (x1 - x0) * (y1 - y0)
