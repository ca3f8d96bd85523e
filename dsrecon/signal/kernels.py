"""Measurement kernels sampled on the recording's grid (docs/method.md §2).

Every function returns a 1-D float64 array of taps h_0 … h_{K−1} with h_k the response at
t = k·TR (or k/fs). BOLD kernels are normalised to Σh = 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import gammaln

from dsrecon.errors import DataError, DsreconError, OptionError

#: Length of the canonical HRFs in seconds (SPM: 32 s).
HRF_LENGTH_S = 32.0
#: Calcium kernels are truncated after this many decay constants (docs/method.md §2).
CALCIUM_TRUNCATE_TAU = 5.0
KERNEL_NAMES = ("spm", "glover", "calcium", "none")


def _gamma_pdf(t: np.ndarray, shape: float, rate: float) -> np.ndarray:
    """G(t; a, b) = b^a t^(a−1) e^(−bt) / Γ(a), zero for t ≤ 0."""
    out = np.zeros_like(t, dtype=np.float64)
    pos = t > 0
    tp = t[pos]
    out[pos] = np.exp(shape * math.log(rate) + (shape - 1) * np.log(tp) - rate * tp - gammaln(shape))
    return out


def _n_taps(step: float, length_s: float) -> int:
    # floor with a small tolerance so 32/0.2 (=160.00000000000003 or 159.999…) gives 160
    return int(math.floor(length_s / step + 1e-9)) + 1


def _check_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise DsreconError(f"{name} must be positive, got {value}")


def spm_hrf(tr: float) -> np.ndarray:
    """SPM canonical HRF on the TR grid: G(t;6,1) − G(t;16,1)/6 at t = k·TR, k = 0…⌊32/TR⌋, Σh = 1.

    >>> spm_hrf(2.0).shape
    (17,)
    """
    _check_positive("TR", tr)
    t = np.arange(_n_taps(tr, HRF_LENGTH_S)) * tr
    h = _gamma_pdf(t, 6.0, 1.0) - _gamma_pdf(t, 16.0, 1.0) / 6.0
    return h / h.sum()


def glover_hrf(tr: float, delay: float = 6.0, undershoot: float = 12.0, dispersion: float = 0.9, ratio: float = 0.48) -> np.ndarray:
    """Glover's HRF (delay 6 s, undershoot 12 s, dispersion 0.9, ratio 0.48) on the TR grid, Σh = 1."""
    _check_positive("TR", tr)
    t = np.arange(_n_taps(tr, HRF_LENGTH_S)) * tr
    rate = 1.0 / dispersion
    h = _gamma_pdf(t, delay / dispersion, rate) - ratio * _gamma_pdf(t, undershoot / dispersion, rate)
    return h / h.sum()


def calcium_kernel(fs: float, tau_decay: float, tau_rise: float | None = None) -> np.ndarray:
    """Calcium-indicator kernel at sampling rate ``fs`` (Hz), truncated at 5·τ_decay, Σh = 1.

    Single exponential e^{−t/τ_d} (h_0 = 1 before normalising) or, with ``tau_rise``, the
    double exponential e^{−t/τ_d} − e^{−t/τ_r} (h_0 = 0).
    """
    _check_positive("sampling rate", fs)
    _check_positive("tau_decay", tau_decay)
    if tau_rise is not None:
        _check_positive("tau_rise", tau_rise)
        if tau_rise >= tau_decay:
            raise DsreconError(f"tau_rise ({tau_rise}) must be smaller than tau_decay ({tau_decay})")
    dt = 1.0 / fs
    t = np.arange(max(_n_taps(dt, CALCIUM_TRUNCATE_TAU * tau_decay), 2)) * dt
    h = np.exp(-t / tau_decay)
    if tau_rise is not None:
        h = h - np.exp(-t / tau_rise)
    return h / h.sum()


@dataclass
class Kernel:
    """Taps on the sampling grid plus what made them."""

    taps: np.ndarray
    kind: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.taps = np.asarray(self.taps, dtype=np.float64).ravel()
        if self.taps.size == 0 or not np.all(np.isfinite(self.taps)):
            raise DsreconError(f"kernel '{self.kind}': taps must be finite and non-empty")
        if not np.any(self.taps):
            raise DsreconError(f"kernel '{self.kind}': all {self.taps.size} taps are zero")

    @property
    def K(self) -> int:
        return int(self.taps.size)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params, "taps": self.taps.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Kernel":
        return cls(np.asarray(d["taps"]), d["kind"], d.get("params", {}))

    def convolve(self, z: np.ndarray) -> np.ndarray:
        """Causal 'valid' convolution along axis 0: (T, D) → (T−K+1, D); out[j] = Σ_k h_k z[j+K−1−k]."""
        return convolve_valid(z, self.taps)

    def deconvolve(self, x: np.ndarray, **kw) -> np.ndarray:
        """Wiener deconvolution (docs/method.md §3) of a (T, N) series; see signal.deconvolution."""
        from dsrecon.signal.deconvolution import wiener_deconvolve

        return wiener_deconvolve(x, self.taps, **kw)


def convolve_valid(z: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Causal valid convolution along time: out[j] = Σ_k taps[k] · z[j + K − 1 − k]."""
    z = np.asarray(z, dtype=np.float64)
    squeeze = z.ndim == 1
    if squeeze:
        z = z[:, None]
    K = len(taps)
    if z.shape[0] < K:
        raise DsreconError(f"series of {z.shape[0]} samples is shorter than the kernel ({K} taps)")
    from scipy.signal import fftconvolve

    full = fftconvolve(z, np.asarray(taps, dtype=np.float64)[:, None], mode="full", axes=0)
    out = full[K - 1 : z.shape[0]]
    return out[:, 0] if squeeze else out


#: the most taps a kernel may have (a kernel longer than any recording is never useful; this bound
#: keeps a TR of 1e-9 s, or a decay constant of 1e9 s, from allocating gigabytes before any check)
MAX_TAPS = 100_000


def _check_sampling(key: str, tr: float, tau_decay: float) -> None:
    """Refuse, before any allocation, a named kernel that cannot be sampled every ``tr`` seconds."""
    if key in ("spm", "glover"):
        length, what = HRF_LENGTH_S, f"the {key} HRF (it lasts {HRF_LENGTH_S:g} s)"
    elif key == "calcium":
        _check_positive("tau_decay", tau_decay)
        length, what = CALCIUM_TRUNCATE_TAU * tau_decay, f"the calcium kernel ({CALCIUM_TRUNCATE_TAU:g} × --tau-decay {tau_decay:g} s)"
    else:
        return
    n = length / tr
    if n + 1 > MAX_TAPS:
        raise DsreconError(f"kernel '{key}': {what} sampled every {tr:g} s would have {n:,.0f} taps, more than {MAX_TAPS:,}; "
                           "TR is in seconds per frame")
    if key != "calcium" and n < 1:
        raise DsreconError(f"kernel '{key}': {what} cannot be sampled every {tr:g} s (TR is in seconds per frame); "
                           "for data this coarse use --kernel none")


def make_kernel(
    name: str | os.PathLike,
    tr: float,
    *,
    tau_decay: float = 0.4,
    tau_rise: float | None = None,
) -> Kernel:
    """Build a kernel by name (spm|glover|calcium|none) or load taps from a file (one tap per line)."""
    _check_positive("TR", tr)
    key = str(name).lower()
    _check_sampling(key, float(tr), tau_decay)
    if key == "spm":
        return Kernel(spm_hrf(tr), "spm", {"tr": tr})
    if key == "glover":
        return Kernel(glover_hrf(tr), "glover", {"tr": tr})
    if key == "calcium":
        return Kernel(calcium_kernel(1.0 / tr, tau_decay, tau_rise), "calcium", {"fs": 1.0 / tr, "tau_decay": tau_decay, "tau_rise": tau_rise})
    if key == "none":
        return Kernel(np.ones(1), "none", {})
    p = Path(name)
    if p.exists():
        return Kernel(read_kernel_file(p), "file", {"path": str(p)})
    if p.suffix or "/" in key or os.sep in key:  # meant as a file of taps
        raise DataError(f"{p}: kernel file not found (--kernel takes spm, glover, calcium, none, or a file of taps)")
    raise OptionError(f"`kernel`: unknown kernel '{name}' (choose spm, glover, calcium, none, or a file of taps)")


def read_kernel_file(path: str | os.PathLike) -> np.ndarray:
    """Taps from a text file: numbers separated by whitespace or commas, one tap per line as a rule;
    blank lines and ``#`` comments are skipped. Errors name the file and the line."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a kernel file of taps")
    from dsrecon.io.files import check_input_file

    check_input_file(p, "kernel file")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text file; a kernel file holds one number per line") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read the kernel file ({e.strerror or e})") from None
    taps: list[float] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        for field_ in line.replace(",", " ").split():
            try:
                v = float(field_)
            except ValueError:
                raise DataError(f"{p}: line {lineno}: '{field_[:40]}' is not a number; a kernel file holds one number per line") from None
            if not math.isfinite(v):
                raise DataError(f"{p}: line {lineno}: kernel tap is {field_}; every tap must be a finite number")
            taps.append(v)
    if not taps:
        raise DataError(f"{p}: kernel file holds no taps (one number per line)")
    arr = np.asarray(taps, dtype=np.float64)
    if not np.any(arr):
        raise DataError(f"{p}: all {arr.size} kernel taps are zero; the kernel needs at least one non-zero tap")
    return arr
