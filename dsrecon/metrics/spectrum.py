"""Power-spectrum distance D_H: do generated and true series oscillate at the same frequencies?

docs/method.md §6: per dimension z-score, |rfft|², Gaussian smoothing with σ = ``smoothing``
frequency bins, clip at 0, normalise to sum 1; Hellinger distance H = sqrt(1 − Σ sqrt(p q));
average over dimensions. H is in [0, 1]: 0 for identical spectra, 1 for disjoint ones.

Arrays are ``(time, regions)`` = ``(T, N)`` sampled on the same grid.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dsrecon.errors import DataError

#: docs/method.md §6: σ = 20 frequency bins (use 1 for short BOLD series).
DEFAULT_SMOOTHING = 20.0


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    from dsrecon.metrics.stsp import as_2d

    return as_2d(x, name, min_rows=2)


def power_spectra(x: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Normalised smoothed power spectra of each column of ``x``.

    x: (T, N) → (F, N) with F = T // 2 + 1 (rfft frequencies, in bins of 1/(T·dt)); each column
    sums to 1. ``smoothing`` is the Gaussian σ in frequency bins (0: none; edges reflected, as
    scipy.ndimage does by default). A constant or non-finite column has no spectrum: its column
    is NaN.
    """
    if not smoothing >= 0:
        raise DataError(f"smoothing must be >= 0 frequency bins, got {smoothing}")
    a = _as_2d(x, "x")
    finite = np.isfinite(a).all(axis=0)
    const = np.zeros(a.shape[1], dtype=bool)
    const[finite] = np.ptp(a[:, finite], axis=0) == 0
    good = finite & ~const
    out = np.full((a.shape[0] // 2 + 1, a.shape[1]), np.nan)
    if not good.any():
        return out
    z = a[:, good]
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    pw = np.abs(np.fft.rfft(z, axis=0)) ** 2
    if smoothing > 0:
        pw = gaussian_filter1d(pw, float(smoothing), axis=0)
    np.maximum(pw, 0.0, out=pw)
    out[:, good] = pw / pw.sum(axis=0)
    return out


#: a long generated series' spectrum averages at most this many reference-length segments
MAX_SEGMENTS = 20


def hellinger_per_dim(generated: np.ndarray, reference: np.ndarray, smoothing: float = DEFAULT_SMOOTHING,
                      average_segments: bool = False) -> np.ndarray:
    """Hellinger distance between the power spectra of each dimension, shape (N,).

    generated, reference: (T, N) on the same sampling grid. If the lengths differ both are cut
    to their first min(T_gen, T_ref) rows (spectra must share frequency bins). A dimension that
    is constant (or non-finite) in either series gets NaN.

    ``average_segments``: a generated series longer than the reference contributes the mean of the
    spectra of its consecutive reference-length segments (at most MAX_SEGMENTS; Welch's method
    without overlap): a long free run's spectrum, not one segment's sampling noise.
    """
    g = _as_2d(generated, "generated")
    r = _as_2d(reference, "reference")
    if g.shape[1] != r.shape[1]:
        raise DataError(f"generated has {g.shape[1]} columns but reference has {r.shape[1]}")
    t = min(g.shape[0], r.shape[0])
    k = min(g.shape[0] // t, MAX_SEGMENTS) if average_segments else 1
    p = power_spectra(g[:t], smoothing) if k == 1 else np.mean([power_spectra(g[i * t : (i + 1) * t], smoothing) for i in range(k)], axis=0)
    q = power_spectra(r[:t], smoothing)
    bc = np.sum(np.sqrt(p * q), axis=0)  # Bhattacharyya coefficient per dimension
    return np.sqrt(np.clip(1.0 - bc, 0.0, None))


def hellinger_spectral(generated: np.ndarray, reference: np.ndarray, smoothing: float = DEFAULT_SMOOTHING,
                       average_segments: bool = False) -> float:
    """D_H: the spectral Hellinger distance averaged over dimensions, in [0, 1].

    generated, reference: (T, N). NaN when any dimension is undefined (constant or non-finite
    in either series) — a collapsed dimension is not silently left out of the average; use
    :func:`hellinger_per_dim` to see which. ``average_segments``: see :func:`hellinger_per_dim`.
    """
    return float(np.mean(hellinger_per_dim(generated, reference, smoothing, average_segments)))
