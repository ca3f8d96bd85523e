"""Forcing schedules and the adaptive-α Jacobian growth against slow paths."""

import numpy as np
import pytest
import torch

from dsrecon.models.backends.plrnn import ClippedSHPLRNN
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.decoders import IdentityDecoder
from dsrecon.training.gtf import JACOBIAN_STRIDE, AlphaSchedule, jacobian_growth


def test_sparse_forcing_every_tau_steps():
    a = AlphaSchedule("sparse", interval=4).weights(10)
    np.testing.assert_array_equal(a, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0])


def test_annealed_alpha_by_hand():
    s = AlphaSchedule("fixed", alpha=0.2, end=0.05, epochs=5)  # geometric: 0.2 · 0.25^(e/4)
    got = []
    for e in range(5):
        s.at_epoch(e)
        got.append(s.alpha)
    np.testing.assert_allclose(got, [0.2, 0.2 * 0.25**0.25, 0.1, 0.2 * 0.25**0.75, 0.05], rtol=1e-12)
    s.at_epoch(2)  # a function of the epoch alone (a resumed fit gets the same α)
    assert s.alpha == pytest.approx(0.1)
    z = AlphaSchedule("fixed", alpha=0.2, end=0.0, epochs=3)  # to 0: linear
    z.at_epoch(1)
    assert z.alpha == pytest.approx(0.1)
    f = AlphaSchedule("fixed", alpha=0.2)  # no end: untouched
    f.at_epoch(3)
    assert f.alpha == 0.2


def test_adaptive_update_rule():
    s = AlphaSchedule("adaptive")
    assert s.alpha == 1.0
    s.update_adaptive(2.0)  # α_est = 0.5 < α: slow decay
    assert s.alpha == pytest.approx(0.999 + 0.001 * 0.5)
    s.alpha = 0.1
    s.update_adaptive(4.0)  # α_est = 0.75 > α: jump
    assert s.alpha == pytest.approx(0.75)
    s.update_adaptive(0.5)  # G < 1: α_est = 0
    assert s.alpha == pytest.approx(0.999 * 0.75)


def test_jacobian_growth_matches_a_slow_path():
    torch.manual_seed(0)
    dyn = ClippedSHPLRNN(3, 7, generator=torch.Generator().manual_seed(1))
    net = ConvSSMNet(dyn, IdentityDecoder(3, 3), torch.ones(1), 3)
    d = torch.randn(4, 20, 3)
    d[1, 8:, :] = float("nan")  # missing teacher frames are skipped
    G = jacobian_growth(net, d)
    best = -np.inf
    for b in range(4):
        logs = []
        for t in range(0, 20, JACOBIAN_STRIDE):
            if torch.isfinite(d[b, t]).all():
                J = dyn.jacobian(d[b, t][None])[0].detach().double().numpy()
                logs.append(np.log(np.linalg.svd(J, compute_uv=False)[0]))
        best = max(best, np.mean(logs))
    assert G == pytest.approx(np.exp(best), rel=1e-5)


def test_normal_fill_is_a_function_of_the_members_stream():
    """The batch noise: the same rng state gives the same draws (resume, members = plain fits), the
    arrays are filled in order from one seed, and the draws are standard normal."""
    import numpy as np

    from dsrecon.training.batches import normal_fill

    a, b = np.empty((4, 50, 3), np.float32), np.empty((4, 60, 3), np.float32)
    normal_fill(np.random.default_rng(7), a, b)
    a2, b2 = np.empty_like(a), np.empty_like(b)
    normal_fill(np.random.default_rng(7), a2, b2)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert not np.allclose(a[:, :50], b[:, :50])
    big = np.empty(200_000, np.float32)
    normal_fill(np.random.default_rng(8), big)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
