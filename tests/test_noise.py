"""The noise model (stochastic free runs) and the pca decoder: against slow paths and known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrecon import ConvSSM, Recording, load_run
from dsrecon.models.base import LatentDynamics, get_backend
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.decoders import PCADecoder, make_decoder
from dsrecon.models.noise import NoiseModel, estimate, residuals
from dsrecon.training.batches import Prepared

TINY = dict(hidden_dim=8, epochs=3, batches_per_epoch=2, batch_size=4, val_every=1, checkpoint_every=1, sequence_length=60)


def _net(M=4, N=4, L=8, taps=(1.0,), decoder="identity", seed=0):
    gen = torch.Generator().manual_seed(seed)
    dyn = get_backend("cshplrnn")(M, hidden_dim=L, generator=gen)
    return ConvSSMNet(dyn, make_decoder(decoder, M, N, generator=gen), torch.tensor(taps), N)


@pytest.mark.parametrize("backend", ["cshplrnn", "shplrnn", "plrnn"])
def test_fused_noisy_rollout_matches_repeated_step(backend):
    gen = torch.Generator().manual_seed(1)
    dyn = get_backend(backend)(5, **({} if backend == "plrnn" else {"hidden_dim": 7}), generator=gen)
    z0 = torch.randn(3, 5, generator=gen)
    noise = 0.1 * torch.randn(3, 40, 4, generator=gen)  # on the first 4 of 5 units
    with torch.no_grad():
        fast = dyn.noisy_rollout(z0, 40, noise)
        slow = LatentDynamics.noisy_rollout(dyn, z0, 40, noise)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_noisy_rollout_without_noise_is_the_free_run():
    net = _net()
    z0 = torch.randn(2, 4)
    with torch.no_grad():
        np.testing.assert_allclose(net.dynamics.noisy_rollout(z0, 30, torch.zeros(2, 30, 4)).numpy(),
                                   net.dynamics.rollout(z0, 30).numpy(), atol=1e-6)


def test_estimate_recovers_known_process_and_observation_noise():
    """A linear map z' = A⊙z + h1 (W1 = 0), the identity kernel and decoder, the exact latent as the
    teacher: the residual covariances are the generating ones."""
    net = _net()
    with torch.no_grad():
        net.dynamics.W1.zero_()
        net.dynamics.A.copy_(torch.tensor([0.9, 0.5, -0.3, 0.0]))
        net.dynamics.h1.zero_()
    rng = np.random.default_rng(0)
    Sp = np.array([[1.0, 0.5, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 0.25, 0], [0, 0, 0, 0.5]])
    So = np.diag([0.04, 0.09, 0.01, 0.16])
    T = 40000
    z = np.zeros((T, 4))
    eta = rng.multivariate_normal(np.zeros(4), Sp, size=T)
    for t in range(1, T):
        z[t] = np.array([0.9, 0.5, -0.3, 0.0]) * z[t - 1] + eta[t]
    x = z + rng.multivariate_normal(np.zeros(4), So, size=T)
    part = Prepared(x.astype(np.float32), np.ones(T, bool), z.astype(np.float32), None)
    e_eta, e_eps = residuals(net, [part])
    np.testing.assert_allclose(np.cov(e_eta.T), Sp, atol=0.03)
    np.testing.assert_allclose(np.cov(e_eps.T), So, atol=0.01)
    nm = estimate(net, [part])
    np.testing.assert_allclose((nm.process_chol @ nm.process_chol.T).numpy(), Sp, atol=0.03)


def test_estimate_skips_unreliable_teacher_frames():
    net = _net()
    T = 200
    x = np.random.default_rng(1).standard_normal((T, 4)).astype(np.float32)
    teacher = x.copy()
    teacher[:20] = np.nan
    e_eta, e_eps = residuals(net, [Prepared(x, np.ones(T, bool), teacher, None)])
    assert e_eta.shape == (T - 21, 4) and e_eps.shape == (T - 20, 4) and np.isfinite(e_eta).all()
    assert estimate(net, [Prepared(x[:5], np.ones(5, bool), teacher[:5], None)]) is None  # too few reliable frames


def test_stochastic_free_run_is_reproducible_and_carries_both_noises():
    net = _net(taps=(0.2, 0.5, 0.3))
    net.set_noise(NoiseModel.from_covariances(0.01 * np.eye(4), 0.25 * np.eye(4)))
    z0 = torch.zeros(1, 4)
    a, _ = net.free_run(z0, 500, generator=torch.Generator().manual_seed(3))
    b, _ = net.free_run(z0, 500, generator=torch.Generator().manual_seed(3))
    c, _ = net.free_run(z0, 500, generator=torch.Generator().manual_seed(4))
    d, _ = net.free_run(z0, 500)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # the observation noise (std 0.5) dominates the difference to the deterministic run
    assert 0.4 < float((a - d).std()) < 0.7


def test_free_run_with_a_generator_needs_a_noise_model():
    with pytest.raises(ValueError, match="noise model"):
        _net().free_run(torch.zeros(1, 4), 10, generator=torch.Generator())


def test_pca_decoder_axes_are_the_principal_components():
    rng = np.random.default_rng(2)
    mix = rng.standard_normal((6, 6))
    d = rng.standard_normal((3000, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1]) @ mix
    dec = PCADecoder(2, 6)
    dec.set_axes([np.vstack([np.full((3, 6), np.nan), d])])  # NaN rows (unreliable frames) are skipped
    P = dec.P.numpy()
    np.testing.assert_allclose(P @ P.T, np.eye(2), atol=1e-5)
    w, V = np.linalg.eigh(np.cov(d.T))
    top = V[:, ::-1][:, :2].T
    np.testing.assert_allclose(np.abs(P @ top.T), np.eye(2), atol=1e-3)
    np.testing.assert_allclose(dec.B.detach().numpy(), P.T)


def test_pca_net_forces_the_components_and_convolves_before_decoding():
    net = _net(M=2, N=5, decoder="pca", taps=(0.1, 0.6, 0.3))
    net.decoder.set_axes([np.random.default_rng(3).standard_normal((100, 5))])
    d = torch.randn(4, 5)
    torch.testing.assert_close(net.forced_teacher(d), d @ net.decoder.P.T)
    Z = torch.randn(3, 20, 2)
    with torch.no_grad():
        torch.testing.assert_close(net.observe(Z), net.convolve(net.decoder.latent_to_obs(Z)), rtol=1e-5, atol=1e-6)


def _wide_rec(T=400, N=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((T, N)), axis=0) * 0.1 + rng.standard_normal((T, N))
    return Recording(x, tr=1.0, names=[f"r{i}" for i in range(N)])


def test_fit_stores_the_noise_model_and_simulates_stochastically(tmp_path):
    m = ConvSSM(seed=0, generation="stochastic", **TINY).fit(_wide_rec(), run_dir=tmp_path / "run")
    assert m.config["noise"]["process_std_mean"] > 0 and m.config["train_options"]["generation"] == "stochastic"
    back = load_run(tmp_path / "run")
    torch.testing.assert_close(back.net_.noise.obs_chol, m.net_.noise.obs_chol)
    assert back.generation_ == "stochastic"
    a, b = back.simulate(300, seed=5), back.simulate(300, seed=5)
    np.testing.assert_array_equal(a["observed"], b["observed"])
    assert a["stochastic"] and not back.simulate(300, seed=5, stochastic=False)["stochastic"]
    assert back.score(_wide_rec(T=120, seed=1))["generation"] == "stochastic"


def test_pca_decoder_fits_and_reloads(tmp_path):
    m = ConvSSM(seed=0, decoder="pca", latent_dim=2, **TINY).fit(_wide_rec(), run_dir=tmp_path / "run")
    back = load_run(tmp_path / "run")
    assert back.net_.M == 2 and back.config["decoder"] == "pca"
    torch.testing.assert_close(back.net_.decoder.P, m.net_.decoder.P)
    assert np.isfinite(back.simulate(200)["observed"]).all()


def test_observation_noise_completes_the_data_covariance():
    """A map without memory (A = 0, W1 = 0): the process-noise run's covariance is Σ_η, the data's is
    Σ_η + Σ_ε, so the moment-matched observation noise is Σ_ε; and the model's covariance is the data's."""
    net = _net()
    with torch.no_grad():
        net.dynamics.W1.zero_()
        net.dynamics.A.zero_()
        net.dynamics.h1.zero_()
    rng = np.random.default_rng(5)
    Sp = np.array([[1.0, 0.3, 0, 0], [0.3, 1.0, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1.0]])
    So = np.diag([0.25, 0.5, 0.1, 0.3])
    T = 40000
    z = rng.multivariate_normal(np.zeros(4), Sp, size=T)
    x = z + rng.multivariate_normal(np.zeros(4), So, size=T)
    nm = estimate(net, [Prepared(x.astype(np.float32), np.ones(T, bool), z.astype(np.float32), None)])
    obs = (nm.obs_chol @ nm.obs_chol.T).numpy()
    np.testing.assert_allclose(obs, So, atol=0.05)
    run, _ = net.set_noise(nm).free_run(torch.zeros(1, 4), 20000, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.cov(run[0].numpy().T), np.cov(x.T), atol=0.06)


def test_connectivity_selection_scores_the_fields_statistics():
    """--select-by connectivity: validation reports FC_corr and FCD_KS of the free run against the
    recording and a selection score FCD_KS + 1 − FC_corr + D_H; the member keeps the best by it."""
    from dsrecon.models.base import get_backend
    from dsrecon.options import TrainOptions
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.member import Member
    from dsrecon.training.prepare import prepare
    from dsrecon.training.validation import validation_scores

    rec = _wide_rec(T=300)
    data = prepare([rec], make_kernel("none", 1.0), 0.25)
    gen = torch.Generator().manual_seed(0)
    net = ConvSSMNet(get_backend("cshplrnn")(6, hidden_dim=8, generator=gen), make_decoder("identity", 6, 6), torch.ones(1), 6)
    opts = TrainOptions(generation="stochastic", select_by="connectivity", stsp="gmm")
    v = validation_scores(net, data, opts, seed=0)
    assert 0 <= v["FCD_KS"] <= 1 and -1 <= v["FC_corr"] <= 1
    assert v["selection"] == pytest.approx(v["FCD_KS"] + 1 - v["FC_corr"] + v["D_H"])
    m = Member(0, opts)
    m.record({"D_stsp": 1.0, "D_H": 0.2, "selection": 0.9}, 5, torch.zeros(3))
    m.record({"D_stsp": 0.1, "D_H": 0.2, "selection": 1.5}, 10, torch.ones(3))  # better D_stsp, worse selection
    assert m.best_epoch == 5
    assert "selection" not in validation_scores(net, data, TrainOptions(stsp="gmm"), seed=0)  # stsp: the published criterion
