"""Attractor analysis of a real fitted Lorenz63-BOLD model (tests/data/lorenz63_bold_fit).

The fixture is the unedited output of one `dsrecon fit` (see its README). The same checks on a
model fitted inside the test run in the slow suite (tests/test_quality_slow.py).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from lorenz_checks import DT, LORENZ_LMAX, assert_lorenz_equilibria_found, lyapunov_in_lorenz_time

from dsrecon import Recording, load_run
from dsrecon._util import array_hash
from dsrecon.systems import simulate_system

FIXTURE = Path(__file__).parent / "data" / "lorenz63_bold_fit"


@pytest.fixture(scope="module")
def run():
    torch.set_num_threads(1)
    # the data the fixture was fitted on: the first 2 000 frames of this simulation
    sim = simulate_system("lorenz63", 2500, DT, 0.2, kernel="spm", noise=0.01, seed=0)
    return load_run(FIXTURE), sim


def test_fixture_was_fitted_on_the_regenerated_data(run):
    """The regenerated data are the fixture's: bit for bit (its data hash) where the floating-point
    library matches the machine it was fitted on; elsewhere (e.g. numpy's SIMD paths for exp/log in
    the HRF, AVX-512 or not) the last bits may differ, so the check that holds on every machine is
    its normalisation: the training split's mean and std, recorded in config.json, to 1e-9."""
    model, sim = run
    rec = Recording(sim["observed"][:2000], tr=0.2, names=sim["names"])
    n_train = model.config["data"]["n_train_frames"]
    norm = model.config["normalisation"]
    np.testing.assert_allclose(rec.data[:n_train].mean(0), norm["mean"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rec.data[:n_train].std(0), norm["std"], rtol=1e-9)
    if model.config["data_hash"] != array_hash(rec.data, rec.mask):  # not bit-identical here: say how close
        print("fixture data agree to", float(np.abs(rec.data[:n_train].std(0) - norm["std"]).max()), "in std, not bit for bit")
    assert model.config["training"]["epochs_run"] == 3000


def test_lyapunov_max_within_15_percent_of_lorenz(run):
    res = lyapunov_in_lorenz_time(run[0], n_steps=30_000, transient=1000)
    lmax = res.per_second[0]
    assert abs(lmax - LORENZ_LMAX) / LORENZ_LMAX < 0.15, res.per_second
    # chaotic: one positive, one near zero (the flow direction), one strongly negative exponent
    assert res.per_second[1] < 0.5 * lmax and res.per_second[2] < -5
    assert 2.0 < res.kaplan_yorke < 2.2


def test_scyfi_finds_the_three_lorenz_equilibria(run):
    model, sim = run
    assert_lorenz_equilibria_found(model, sim["sidecar"])
