"""State-space divergence D_stsp: how well a generated trajectory fills the true attractor.

Two estimators of KL(p_true ‖ p_gen) between the occupation measures of two trajectories
(docs/method.md §6):

* :func:`stsp_binned` — histogram with ``bins`` cells per dimension (default when N < 6);
* :func:`stsp_gmm` — a Gaussian-mixture density on the points, KL by Monte Carlo (high N).

Arrays are ``(time, regions)`` = ``(T, N)`` in the units of the data (usually z-scored). The
result is a KL divergence in nats: 0 for identical occupation, larger is worse.
"""

from __future__ import annotations

import math

import numpy as np

from dsrecon.errors import DataError

#: docs/method.md §6: 30 bins per dimension, Laplace pseudo-count 1e-5, range padded by 0.1 σ.
DEFAULT_BINS = 30
PSEUDO_COUNT = 1e-5
RANGE_PAD_SD = 0.1
#: docs/method.md §6: σ² = 1.0 per mixture component, 1 000 MC samples, ≤ 10 000 centres.
DEFAULT_GMM_VAR = 1.0
DEFAULT_N_SAMPLES = 1000
DEFAULT_MAX_POINTS = 10_000
#: Which rows the mixture keeps when a trajectory is longer than ``max_points``: ``first`` (the
#: published convSSM code's ``X[1:min(T, max_T)]``, the default) or ``even`` (evenly spaced in time).
GMM_POINTS = ("first", "even")
DEFAULT_GMM_POINTS = "first"
#: `auto` uses the histogram below this many dimensions, the mixture from it on.
AUTO_GMM_FROM_DIM = 6

# Dense bincount over all k^N cells up to this many cells; sparse (np.unique) above it.
_DENSE_CELLS = 1 << 22
# Work arrays of at most this many float64 entries in the mixture log-density (2 MB: stays in cache).
_CHUNK_ENTRIES = 1 << 18


def as_2d(x: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    """A (time, regions) float64 view of ``x`` (1-D becomes one column); DataError otherwise."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (time, regions) array, got shape {a.shape}")
    if a.shape[0] < max(min_rows, 1) or a.shape[1] == 0:
        if min_rows <= 1:
            raise DataError(f"{name}: empty array of shape {a.shape}")
        raise DataError(f"{name}: need at least {min_rows} time points and 1 column, got shape {a.shape}")
    return a


_as_2d = as_2d


def check_pair(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (generated, reference) pair of ``(T, N)`` arrays; return them as float64.

    The reference must be finite; rows of ``generated`` with NaN/Inf are dropped (a diverged
    trajectory is 'outside the range'), so ``generated`` may come back shorter or empty.
    """
    g = _as_2d(generated, "generated")
    r = _as_2d(reference, "reference")
    if g.shape[1] != r.shape[1]:
        raise DataError(f"generated has {g.shape[1]} columns but reference has {r.shape[1]}")
    if not np.isfinite(r).all():
        raise DataError("reference contains NaN or Inf values")
    g = g[np.isfinite(g).all(axis=1)]
    return g, r


def bin_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> list[np.ndarray]:
    """Per-dimension bin edges, ``bins + 1`` each, over [min − 0.1σ, max + 0.1σ] of ``reference`` (T, N)."""
    r = _as_2d(reference, "reference")
    lo, hi, sd = r.min(axis=0), r.max(axis=0), r.std(axis=0)
    const = np.flatnonzero(hi <= lo)
    if const.size:
        raise DataError(f"reference column {int(const[0]) + 1} is constant: the binned D_stsp has no range to bin")
    return [np.linspace(lo[j] - RANGE_PAD_SD * sd[j], hi[j] + RANGE_PAD_SD * sd[j], bins + 1) for j in range(r.shape[1])]


def _bin_index(x: np.ndarray, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bin index per point and dimension (T, N) int64, and a mask of points inside every range."""
    k = len(edges[0]) - 1
    idx = np.empty(x.shape, dtype=np.int64)
    inside = np.ones(x.shape[0], dtype=bool)
    for j, e in enumerate(edges):
        col = x[:, j]
        inside &= (col >= e[0]) & (col <= e[-1])
        # bin b holds [e_b, e_{b+1}); the top edge belongs to the last bin
        idx[:, j] = np.clip(np.searchsorted(e, col, side="right") - 1, 0, k - 1)
    return idx, inside


def _joint_codes(idx: np.ndarray, k: int) -> np.ndarray:
    """One integer (or row) per point identifying its cell among the k^N cells."""
    n = idx.shape[1]
    if n * math.log2(k) < 62:  # k^N fits in int64
        return np.ravel_multi_index(tuple(idx.T), (k,) * n)
    return idx  # rows; compared with np.unique(axis=0)


def _cell_counts(code_ref: np.ndarray, code_gen: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of reference and generated points in every cell occupied by either set."""
    if code_ref.ndim == 1 and n_cells <= _DENSE_CELLS:
        cr = np.bincount(code_ref, minlength=n_cells)
        cg = np.bincount(code_gen, minlength=n_cells)
        occ = (cr > 0) | (cg > 0)
        return cr[occ], cg[occ]
    both = np.concatenate([code_ref, code_gen])
    _, inv = np.unique(both, axis=0 if both.ndim == 2 else None, return_inverse=True)
    inv = inv.ravel()
    u = int(inv.max()) + 1
    return np.bincount(inv[: len(code_ref)], minlength=u), np.bincount(inv[len(code_ref):], minlength=u)


def stsp_binned(generated: np.ndarray, reference: np.ndarray, bins: int = DEFAULT_BINS, alpha: float = PSEUDO_COUNT) -> float:
    """Binned D_stsp = KL(p_true ‖ p_gen) in nats over all ``bins``^N cells.

    generated, reference: (T, N) arrays (T may differ). Cells span [min − 0.1σ, max + 0.1σ] of the
    reference per dimension; generated points outside it (or non-finite) are dropped. Laplace
    smoothing p = (count + α)/(Σcount + α·k^N). Cells empty in both sets contribute in closed
    form, so k^N is never materialised. Returns NaN when no generated point lands in the range.
    """
    if int(bins) != bins or bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins}")
    if not alpha > 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    bins = int(bins)
    g, r = check_pair(generated, reference)
    edges = bin_edges(r, bins)
    idx_r, _ = _bin_index(r, edges)
    idx_g, inside = _bin_index(g, edges)
    idx_g = idx_g[inside]
    if idx_g.shape[0] == 0:
        return float("nan")
    n = r.shape[1]
    n_cells = float(bins) ** n  # may exceed int64; only used in closed forms
    cr, cg = _cell_counts(_joint_codes(idx_r, bins), _joint_codes(idx_g, bins), bins**n if n * math.log2(bins) < 62 else -1)
    zr = r.shape[0] + alpha * n_cells
    zg = idx_g.shape[0] + alpha * n_cells
    p = (cr + alpha) / zr
    q = (cg + alpha) / zg
    kl = float(np.sum(p * (np.log(p) - np.log(q))))
    n_empty = n_cells - len(cr)  # cells with no point of either set: p0 log(p0/q0) each
    if n_empty > 0:
        kl += n_empty * (alpha / zr) * (math.log(zg) - math.log(zr))
    return kl


def subsample_even(x: np.ndarray, max_points: int) -> np.ndarray:
    """At most ``max_points`` rows of ``x`` (T, N), evenly spaced in time (first row kept)."""
    if x.shape[0] <= max_points:
        return x
    return x[np.linspace(0, x.shape[0] - 1, max_points).round().astype(np.int64)]


def subsample_first(x: np.ndarray, max_points: int) -> np.ndarray:
    """The first ``max_points`` rows of ``x`` (T, N): the published GMM D_stsp's choice."""
    return x[:max_points]


def subsample(x: np.ndarray, max_points: int, points: str = DEFAULT_GMM_POINTS) -> np.ndarray:
    """At most ``max_points`` rows of ``x`` (T, N): the ``first`` ones or ``even``-ly spaced ones."""
    if points == "first":
        return subsample_first(x, max_points)
    if points == "even":
        return subsample_even(x, max_points)
    raise DataError(f"points must be one of {', '.join(GMM_POINTS)}, got {points!r}")


def _logsumexp_rows_inplace(a: np.ndarray) -> np.ndarray:
    """log Σ_j exp(a_ij) per row of a finite (S, M) array, overwriting ``a``.

    Same result as scipy.special.logsumexp(a, axis=1), which (scipy 1.17) is ~50x slower here.
    """
    top = a.max(axis=1)
    a -= top[:, None]
    np.exp(a, out=a)
    return np.log(a.sum(axis=1)) + top


def mixture_logpdf(points: np.ndarray, centres: np.ndarray, var: float) -> np.ndarray:
    """log density of the equal-weight isotropic Gaussian mixture at ``points``.

    points (S, N), centres (M, N), var = σ² per component (data units squared) → (S,) in nats.
    Squared distances as ‖s‖² − 2 s·c + ‖c‖² (float64) in chunks of samples; log-sum-exp over
    centres.
    """
    s = np.asarray(points, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    m, n = c.shape
    c2 = np.einsum("ij,ij->i", c, c)
    s2 = np.einsum("ij,ij->i", s, s)
    out = np.empty(s.shape[0])
    step = max(1, _CHUNK_ENTRIES // max(m, 1))
    for a in range(0, s.shape[0], step):
        d2 = s[a : a + step] @ c.T
        d2 *= -2.0
        d2 += s2[a : a + step, None]
        d2 += c2[None, :]
        np.maximum(d2, 0.0, out=d2)  # rounding can make a tiny distance negative
        d2 *= -0.5 / var
        out[a : a + step] = _logsumexp_rows_inplace(d2)
    return out - math.log(m) - 0.5 * n * math.log(2 * math.pi * var)


def stsp_gmm(
    generated: np.ndarray,
    reference: np.ndarray,
    var: float = DEFAULT_GMM_VAR,
    n_samples: int = DEFAULT_N_SAMPLES,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
    points: str = DEFAULT_GMM_POINTS,
) -> float:
    """Mixture D_stsp = KL(p_true ‖ p_gen) in nats, estimated by Monte Carlo.

    generated, reference: (T, N) arrays. Each keeps at most ``max_points`` rows: its first ones
    (``points="first"``, the published definition) or ones evenly spaced in time
    (``points="even"``); an isotropic Gaussian of variance ``var`` (σ², data units squared) sits on every
    point. ``n_samples`` points are drawn from the reference mixture with ``seed``; the result is
    mean[log p(s) − log q(s)] over samples where both are finite. NaN if ``generated`` has no
    finite row. Monte-Carlo standard error ≈ std(log p − log q)/sqrt(n_samples).
    """
    if not var > 0:
        raise DataError(f"var (σ²) must be positive, got {var}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise DataError(f"n_samples must be a positive integer, got {n_samples}")
    if int(max_points) != max_points or max_points < 1:
        raise DataError(f"max_points must be a positive integer, got {max_points}")
    if points not in GMM_POINTS:
        raise DataError(f"points must be one of {', '.join(GMM_POINTS)}, got {points!r}")
    g, r = check_pair(generated, reference)
    if g.shape[0] == 0:
        return float("nan")
    cp = subsample(r, int(max_points), points)
    cq = subsample(g, int(max_points), points)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, cp.shape[0], size=int(n_samples))
    s = cp[pick] + math.sqrt(var) * rng.standard_normal((int(n_samples), cp.shape[1]))
    diff = mixture_logpdf(s, cp, var) - mixture_logpdf(s, cq, var)
    ok = np.isfinite(diff)
    return float(diff[ok].mean()) if ok.any() else float("nan")


def state_space_divergence(
    generated: np.ndarray,
    reference: np.ndarray,
    method: str = "auto",
    bins: int = DEFAULT_BINS,
    var: float = DEFAULT_GMM_VAR,
    seed: int = 0,
    gmm_points: str = DEFAULT_GMM_POINTS,
) -> tuple[float, str]:
    """D_stsp of (T, N) arrays with ``method`` auto|binned|gmm; returns (value in nats, method used).

    ``auto`` bins when N < 6 and uses the Gaussian mixture otherwise (k^N cells are too sparse).
    ``gmm_points`` (first|even) is passed to :func:`stsp_gmm` as ``points``.
    """
    n = _as_2d(reference, "reference").shape[1]
    if method == "auto":
        method = "binned" if n < AUTO_GMM_FROM_DIM else "gmm"
    if method == "binned":
        return stsp_binned(generated, reference, bins=bins), "binned"
    if method == "gmm":
        return stsp_gmm(generated, reference, var=var, seed=seed, points=gmm_points), "gmm"
    raise DataError(f"method must be auto, binned or gmm, got {method!r}")
