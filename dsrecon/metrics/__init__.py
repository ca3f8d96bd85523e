"""Evaluation metrics of long-term behaviour (docs/method.md §6); numpy/scipy only.

Arrays are ``(time, regions)``. See docs/metrics.md for definitions and how to read them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsrecon.metrics.spectrum import DEFAULT_SMOOTHING, hellinger_per_dim, hellinger_spectral, power_spectra
from dsrecon.metrics.stsp import DEFAULT_BINS, DEFAULT_GMM_POINTS, DEFAULT_GMM_VAR, state_space_divergence, stsp_binned, stsp_gmm

__all__ = [
    "attractor_metrics",
    "hellinger_per_dim",
    "hellinger_spectral",
    "power_spectra",
    "state_space_divergence",
    "stsp_binned",
    "stsp_gmm",
]


def attractor_metrics(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    stsp: str = "auto",
    bins: int = DEFAULT_BINS,
    gmm_var: float = DEFAULT_GMM_VAR,
    smoothing: float = DEFAULT_SMOOTHING,
    seed: int = 0,
    gmm_points: str = DEFAULT_GMM_POINTS,
) -> dict[str, Any]:
    """D_stsp and D_H of a generated (T_gen, N) trajectory against a reference (T_ref, N).

    Returns {"D_stsp": nats, "D_stsp_method": "binned"|"gmm", "D_H": in [0, 1],
    "n_generated": T_gen, "n_reference": T_ref}; NaN where a metric is undefined. ``gmm_points``
    (first|even): which ≤ 10 000 rows the mixture D_stsp keeps (see :func:`stsp_gmm`).
    """
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    d_stsp, method = state_space_divergence(g, r, method=stsp, bins=bins, var=gmm_var, seed=seed, gmm_points=gmm_points)
    return {
        "D_stsp": d_stsp,
        "D_stsp_method": method,
        "D_H": hellinger_spectral(g, r, smoothing=smoothing),
        "n_generated": int(g.shape[0]),
        "n_reference": int(r.shape[0]),
    }
