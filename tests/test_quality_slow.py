"""Long quality runs (excluded by default; run with `pytest -m slow`, ~10 min on 2 cores).

A Lorenz63-BOLD convSSM fitted with the published budget must be a chaotic model whose largest
Lyapunov exponent is within 15 % of Lorenz63's 0.9056 (per unit of Lorenz time) and whose
piecewise-linear map has fixed points at Lorenz63's three equilibria. The attractor-distance
numbers of the same setup are in benchmarks/lorenz_bold.py and
docs/benchmarks.md#lorenz63-through-the-hrf-reconstruction-quality.
"""

import pytest
import torch
from lorenz_checks import DT, LORENZ_LMAX, assert_lorenz_equilibria_found, lyapunov_in_lorenz_time

from dsrecon import ConvSSM, Recording
from dsrecon.systems import simulate_system

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    sim = simulate_system("lorenz63", 2000, DT, 0.2, kernel="spm", noise=0.01, seed=0)
    rec = Recording(sim["observed"], tr=0.2, names=sim["names"])
    # the published convSSM setting (α 0.15) with 3 000 epochs; no early stopping
    model = ConvSSM(latent_dim=3, epochs=3000, patience=0, seed=0).fit(rec)
    return model, sim["sidecar"]


def test_lyapunov_max_of_fitted_lorenz_within_15_percent(fitted):
    res = lyapunov_in_lorenz_time(fitted[0], n_steps=100_000, transient=2000)
    assert abs(res.per_second[0] - LORENZ_LMAX) / LORENZ_LMAX < 0.15, res.per_second


def test_scyfi_finds_the_three_lorenz_equilibria(fitted):
    # Not required to be saddles here: a fresh fit may turn a wing equilibrium into a weakly stable
    # focus (measured 2026-11-27: |eig| 0.993 at one wing) around which its chaotic attractor
    # circles; that is the "empty inner wing" failure, not a SCYFI error
    # (docs/experiments/lorenz-bold-reconstruction.md#round-4-2026-11-27-2-000-training-samples-and-validation-on-the-end-of-a-long-free-run).
    # The shipped fit in test_fitted_lorenz.py has all three as saddles and is checked for it.
    assert_lorenz_equilibria_found(*fitted, saddles=False)
