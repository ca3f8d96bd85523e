"""Wiener deconvolution of a measured series into teacher signals (docs/method.md §3).

Per channel: estimate the noise level σ̂ from the finest wavelet details, denoise the series
(VisuShrink) to get a signal-power estimate |S|², then invert the kernel with a Wiener filter
whose regulariser is the noise-to-signal ratio T σ̂² / |S(f)|². d̂_t estimates the latent
(pre-kernel) value at the same index as x_t; the edges are unreliable and masked with NaN.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pywt

from dsrecon.errors import DataError

WAVELET = "sym5"
#: MAD of a standard normal: σ = MAD / 0.6745.
MAD_TO_SIGMA = 0.6745
#: Lower bound on the noise level, so that noiseless series keep a finite regulariser.
MIN_SIGMA = 1e-5
#: Denoising uses at most this many wavelet levels.
MAX_LEVELS = 6
#: Edge masking after deconvolution: ceil(0.25 K) samples at the start, ceil(0.5 K) at the end.
MASK_START_FRACTION = 0.25
MASK_END_FRACTION = 0.5


def _as_series(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"{what}: expected a 1-D series, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: series contains NaN or Inf")
    return x


def noise_level(x: np.ndarray) -> float:
    """Noise std σ̂ = max(MAD(d1) / 0.6745, 1e−5) of a series (T,), same units as ``x``.

    d1 are the finest-level ``sym5`` detail coefficients of the series trimmed to an even
    length (the last sample is dropped when T is odd); MAD is about the median.
    """
    x = _as_series(x, "noise_level")
    if x.size < 2:
        raise DataError(f"noise_level: need at least 2 samples, got {x.size}")
    x = x[: x.size - (x.size % 2)]
    _, d1 = pywt.dwt(x, WAVELET)
    mad = np.median(np.abs(d1 - np.median(d1)))
    return float(max(mad / MAD_TO_SIGMA, MIN_SIGMA))


def _n_levels(T: int) -> int:
    """min(number of times T divides by 2, 6), at least 1."""
    n = 0
    while T > 0 and T % 2 == 0 and n < MAX_LEVELS:
        T //= 2
        n += 1
    return max(n, 1)


def wavelet_denoise(x: np.ndarray, sigma: float) -> np.ndarray:
    """VisuShrink: hard-threshold the ``sym5`` detail coefficients at σ·√(2 ln T); returns (T,).

    Levels = min(number of times T divides by 2, 6), at least 1. The approximation
    coefficients are kept as they are.
    """
    x = _as_series(x, "wavelet_denoise")
    T = x.size
    if T < 2:
        return x.copy()
    level = _n_levels(T)
    with warnings.catch_warnings():
        # short series: the reference level count may exceed pywt's boundary-free maximum; keep it
        warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
        coeffs = pywt.wavedec(x, WAVELET, level=level)
    thr = float(sigma) * math.sqrt(2.0 * math.log(T))
    coeffs = [coeffs[0]] + [pywt.threshold(c, thr, mode="hard") for c in coeffs[1:]]
    return pywt.waverec(coeffs, WAVELET)[:T]


def edge_mask_counts(n_taps: int) -> tuple[int, int]:
    """Samples masked at the (start, end) for a kernel of ``n_taps`` taps; (0, 0) for one tap."""
    if n_taps <= 1:
        return 0, 0
    return math.ceil(MASK_START_FRACTION * n_taps), math.ceil(MASK_END_FRACTION * n_taps)


def _wiener_1d(y: np.ndarray, H: np.ndarray) -> np.ndarray:
    T = y.size
    sigma = noise_level(y)
    s = wavelet_denoise(y, sigma)
    S2 = np.abs(np.fft.fft(s)) ** 2
    Y = np.fft.fft(y)
    # noise-to-signal ratio T σ̂² / |S|²; where the signal estimate has no power, pass nothing
    with np.errstate(divide="ignore"):
        nsr = np.where(S2 > 0, T * sigma**2 / np.where(S2 > 0, S2, 1.0), np.inf)
    G = np.conj(H) / (np.abs(H) ** 2 + nsr)
    G[~np.isfinite(nsr)] = 0.0
    return np.real(np.fft.ifft(Y * G))


def wiener_deconvolve(x: np.ndarray, taps: np.ndarray, mask_edges: bool = True) -> np.ndarray:
    """Wiener-deconvolve each column of ``x`` (T, N) or (T,) by the kernel ``taps`` (K,).

    d̂ = Re IFFT[Y H* / (|H|² + T σ̂² / |S|²)] per column, with H the FFT of the taps
    zero-padded to T, Y the FFT of the column and S the FFT of its wavelet-denoised version.
    Returns float64 (T, N) (always 2-D), in the units of ``x`` divided by Σh. With
    ``mask_edges`` the first ceil(0.25 K) and last ceil(0.5 K) rows are NaN (unreliable: the
    filter is circular). A 1-tap kernel (``--kernel none``) masks nothing: H is constant, and
    d̂ is the series Wiener-shrunk towards its denoised version (≈ the series at low noise).
    """
    taps = np.asarray(taps, dtype=np.float64).ravel()
    if taps.size == 0 or not np.all(np.isfinite(taps)) or not np.any(taps):
        raise DataError("wiener_deconvolve: kernel taps must be finite, non-empty and not all zero")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"wiener_deconvolve: expected a (time, regions) array, got shape {x.shape}")
    T, N = x.shape
    K = taps.size
    if T < max(K, 2):
        raise DataError(f"wiener_deconvolve: series of {T} samples is shorter than the kernel ({K} taps)")
    if not np.all(np.isfinite(x)):
        raise DataError("wiener_deconvolve: series contains NaN or Inf (censored frames must be filled first)")
    H = np.fft.fft(taps, n=T)
    out = np.empty((T, N), dtype=np.float64)
    for j in range(N):
        out[:, j] = _wiener_1d(x[:, j], H)
    if mask_edges:
        start, end = edge_mask_counts(K)
        out[:start] = np.nan
        if end:
            out[T - end :] = np.nan
    return out
