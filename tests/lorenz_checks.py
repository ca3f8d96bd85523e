"""Checks of a fitted Lorenz63-BOLD model shared by test_fitted_lorenz.py (a shipped fit, default
suite) and test_quality_slow.py (a fresh fit, slow suite)."""

from __future__ import annotations

import numpy as np

from dsrecon.metrics.fixed_points import find_cycles
from dsrecon.metrics.lyapunov import dynamics_lyapunov

DT = 0.01  # Lorenz time per sample
LORENZ_LMAX = 0.9056


def lyapunov_in_lorenz_time(model, n_steps: int, transient: int):
    lat = model.simulate(5_000, seed=0)["latent"]
    return dynamics_lyapunov(model.dynamics, lat[-1].astype(np.float64), n_steps=n_steps, transient=transient, dt=DT)


def assert_lorenz_equilibria_found(model, sidecar: dict, saddles: bool = True) -> None:
    """SCYFI must find one fixed point near each of Lorenz63's equilibria (in the z-scored units
    of the simulation's sidecar), classified by its eigenvalues; with ``saddles`` each must be a
    saddle, as Lorenz63's are.

    The latent lives in teacher units (deconvolved, normalised observations): close to the
    z-scored states but not identical (the Wiener filter shrinks amplitudes), so each equilibrium
    needs its own fixed point within 0.5 standardised units (the attractor spans about ±2.5).
    """
    mean, std = np.asarray(sidecar["state_mean"]), np.asarray(sidecar["state_std"])
    r, b = 28.0, 8.0 / 3.0
    c = np.sqrt(b * (r - 1))
    true_fp = (np.array([[0, 0, 0], [c, c, r - 1], [-c, -c, r - 1]]) - mean) / std
    lat = model.simulate(5_000, seed=0)["latent"]
    cycles = find_cycles(model.dynamics.piecewise_linear_params(), k_max=1, init_states=lat[::10], n_init=200)
    found = np.array([cy["points"][0] for cy in cycles])
    nearest = [int(np.argmin(np.linalg.norm(found - fp, axis=1))) for fp in true_fp]
    assert len(set(nearest)) == 3, (true_fp, found)
    for fp, i in zip(true_fp, nearest):
        assert np.linalg.norm(found[i] - fp) < 0.5, (fp, found[i])
        assert cycles[i]["stability"] in ("stable", "unstable", "saddle"), cycles[i]
        if saddles:
            assert cycles[i]["stability"] == "saddle", cycles[i]
