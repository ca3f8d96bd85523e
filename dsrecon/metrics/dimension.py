"""Correlation dimension by the Grassberger–Procaccia method.

C(r) = fraction of point pairs closer than r; on an attractor C(r) ∝ r^D for small r, so D is the
slope of log C(r) against log r in the scaling region. The region is chosen by C itself (between
``c_range`` = (3e-4, 3e-2) of all pairs by default), which works for dimensionless or physical
units alike.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist

from dsrecon.errors import DataError


def _subsample(x: np.ndarray, n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"correlation dimension: expected a (time, dims) array, got shape {x.shape}")
    ok = np.all(np.isfinite(x), axis=1)
    idx = np.nonzero(ok)[0]
    if idx.size < 50:
        raise DataError(f"correlation dimension: need at least 50 finite points, got {idx.size}")
    if idx.size > n_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n_points, replace=False))
    return x[idx], idx


def correlation_dimension(
    x: np.ndarray,
    n_points: int = 3000,
    c_range: tuple[float, float] = (3e-4, 3e-2),
    n_radii: int = 30,
    theiler: int = 0,
    seed: int = 0,
    return_curve: bool = False,
) -> float | tuple[float, dict]:
    """Grassberger–Procaccia correlation dimension of the points ``x`` (time, dims).

    n_points: random subsample size (pairs ∝ n_points²; 3000 → 4.5·10⁶ distances, ≈ 0.3 s). c_range: the
    scaling region as the range of C(r) fitted (fraction of pairs). theiler: exclude pairs closer
    than this many samples in time. Returns the fitted slope (dimensionless); with
    ``return_curve`` also {"r", "C", "fit_mask"} for plotting. NaN when fewer than 3 radii fall in
    the scaling region (e.g. a fixed point: all distances 0).
    """
    xs, idx = _subsample(x, n_points, seed)
    d = pdist(xs)
    if theiler > 0:
        i, j = np.triu_indices(len(idx), k=1)
        d = d[np.abs(idx[i] - idx[j]) > theiler]
    d = d[d > 0]
    if d.size < 10:
        return (float("nan"), {}) if return_curve else float("nan")
    d.sort()
    lo, hi = c_range
    # radii at the requested quantiles of the pair distances, log-spaced in r
    r_lo = d[min(d.size - 1, int(lo * d.size))]
    r_hi = d[min(d.size - 1, int(hi * d.size))]
    if not r_hi > r_lo > 0:
        return (float("nan"), {}) if return_curve else float("nan")
    r = np.geomspace(r_lo, r_hi, n_radii)
    C = np.searchsorted(d, r, side="left") / d.size
    mask = C > 0
    if mask.sum() < 3:
        dim = float("nan")
    else:
        dim = float(np.polyfit(np.log(r[mask]), np.log(C[mask]), 1)[0])
    if return_curve:
        return dim, {"r": r, "C": C, "fit_mask": mask}
    return dim
