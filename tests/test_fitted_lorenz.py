"""Attractor analysis of a real fitted Lorenz63-BOLD model (tests/data/lorenz63_bold_fit).

The fixture is the unedited output of one `dsrecon fit` (see its README). The same checks on a
model fitted inside the test run in the slow suite (tests/test_quality_slow.py).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from dsrecon import Recording, load_run
from dsrecon._util import array_hash
from dsrecon.metrics.fixed_points import find_cycles
from dsrecon.metrics.lyapunov import dynamics_lyapunov
from dsrecon.systems import simulate_system

FIXTURE = Path(__file__).parent / "data" / "lorenz63_bold_fit"
DT = 0.01  # Lorenz time per sample
LORENZ_LMAX = 0.9056


@pytest.fixture(scope="module")
def run():
    torch.set_num_threads(1)
    sim = simulate_system("lorenz63", 2500, DT, 0.2, kernel="spm", noise=0.01, seed=0)
    model = load_run(FIXTURE)
    return model, sim


def test_fixture_was_fitted_on_the_regenerated_data(run):
    model, sim = run
    rec = Recording(sim["observed"][:2000], tr=0.2, names=sim["names"])
    assert model.config["data_hash"] == array_hash(rec.data, rec.mask)
    assert model.config["training"]["epochs_run"] == 3000


def test_lyapunov_max_within_15_percent_of_lorenz(run):
    model, _ = run
    lat = model.simulate(5_000, seed=0)["latent"]
    res = dynamics_lyapunov(model.dynamics, lat[-1].astype(np.float64), n_steps=30_000, transient=1000, dt=DT)
    lmax = res.per_second[0]
    assert abs(lmax - LORENZ_LMAX) / LORENZ_LMAX < 0.15, res.per_second
    # chaotic: one positive, one ~zero (flow direction), one strongly negative exponent
    assert res.per_second[1] < 0.5 * lmax and res.per_second[2] < -5
    assert 2.0 < res.kaplan_yorke < 2.2


def test_scyfi_finds_the_three_lorenz_equilibria(run):
    model, sim = run
    mean, std = np.asarray(sim["sidecar"]["state_mean"]), np.asarray(sim["sidecar"]["state_std"])
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    c = np.sqrt(b * (r - 1))
    # The latent lives in teacher units (deconvolved, normalised observations): close to the
    # z-scored states but not identical, so each equilibrium needs its own fixed point within 0.5
    # standardised units (the attractor spans about ±2.5).
    true_fp = (np.array([[0, 0, 0], [c, c, r - 1], [-c, -c, r - 1]]) - mean) / std
    lat = model.simulate(5_000, seed=0)["latent"]
    cycles = find_cycles(model.dynamics.piecewise_linear_params(), k_max=1, init_states=lat[::10], n_init=200)
    found = np.array([cy["points"][0] for cy in cycles])
    nearest = [int(np.argmin(np.linalg.norm(found - fp, axis=1))) for fp in true_fp]
    assert len(set(nearest)) == 3, (true_fp, found)
    for fp, i in zip(true_fp, nearest):
        assert np.linalg.norm(found[i] - fp) < 0.5, (fp, found[i])
        # Lorenz63's equilibria are all saddles
        assert cycles[i]["stability"] == "saddle"
