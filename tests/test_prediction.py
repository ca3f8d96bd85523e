"""PE_n against hand-computed cases (identity latent map, so predictions are explicit)."""

import numpy as np
import torch

from dsrecon.metrics.prediction import prediction_error
from dsrecon.models.backends.plrnn import PLRNN
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.decoders import IdentityDecoder


def identity_net(N: int, taps) -> ConvSSMNet:
    dyn = PLRNN(N)
    with torch.no_grad():  # z' = z: the model predicts "no change"
        dyn.A.fill_(1.0)
        dyn.W.zero_()
        dyn.h.zero_()
    return ConvSSMNet(dyn, IdentityDecoder(N, N), torch.tensor(taps, dtype=torch.float32), N)


def test_pe_without_kernel_is_the_n_step_difference():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(50, 2)), axis=0).astype(np.float32)
    n = 3
    pe = prediction_error(identity_net(2, [1.0]), x, x, n)
    expected = np.mean((x[: 50 - n] - x[n:]) ** 2)
    assert np.isclose(pe, expected, rtol=1e-5)


def test_pe_with_a_two_tap_kernel_mixes_teacher_history_and_predictions():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(40, 1)).astype(np.float32)  # latent teacher
    h = [0.25, 0.75]  # x_t = 0.25 d_t + 0.75 d_{t−1}
    x = np.zeros_like(d)
    x[1:] = 0.25 * d[1:] + 0.75 * d[:-1]
    # n = 1: predicted z_{t+1} = d_t, so x̂_{t+1} = 0.25 d_t + 0.75 d_t = d_t
    pe1 = prediction_error(identity_net(1, h), x, d, 1)
    assert np.isclose(pe1, np.mean((d[:-1, 0] - x[1:, 0]) ** 2), rtol=1e-5)
    # n = 2: both kernel taps see predictions (= d_t): x̂_{t+2} = d_t
    pe2 = prediction_error(identity_net(1, h), x, d, 2)
    assert np.isclose(pe2, np.mean((d[:-2, 0] - x[2:, 0]) ** 2), rtol=1e-5)


def test_pe_skips_frames_without_teacher_history_or_valid_target():
    x = np.arange(20, dtype=np.float32)[:, None]
    d = x.copy()
    d[:5] = np.nan  # unreliable teacher at the start
    mask = np.ones(20, bool)
    mask[10] = False  # censored target frame
    pe = prediction_error(identity_net(1, [1.0]), x, d, 1, mask)
    ts = [t for t in range(5, 19) if t + 1 != 10]
    assert np.isclose(pe, np.mean([(x[t, 0] - x[t + 1, 0]) ** 2 for t in ts]))


def test_causal_forecast_uses_only_the_past():
    """Changing frames after t = j − n leaves the forecast of frame j unchanged; changing frames up
    to t changes it (the deconvolution of the past is the forecast's only input)."""
    import torch

    from dsrecon.metrics.prediction import causal_forecast
    from dsrecon.models.base import get_backend
    from dsrecon.models.convssm import ConvSSMNet
    from dsrecon.models.decoders import make_decoder
    from dsrecon.signal.kernels import make_kernel

    gen = torch.Generator().manual_seed(0)
    taps = make_kernel("spm", 2.0).taps
    net = ConvSSMNet(get_backend("cshplrnn")(3, hidden_dim=8, generator=gen), make_decoder("identity", 3, 3), torch.tensor(taps), 3)
    x = np.random.default_rng(0).standard_normal((120, 3))
    j, n = 100, 5
    a = causal_forecast(net, taps, x, n, np.array([j]))
    y = x.copy()
    y[j - n + 1 :] += 5.0  # the future of t
    np.testing.assert_array_equal(causal_forecast(net, taps, y, n, np.array([j])), a)
    y = x.copy()
    y[: j - n + 1] += 0.5  # the past of t
    assert not np.allclose(causal_forecast(net, taps, y, n, np.array([j])), a)
    assert np.isnan(causal_forecast(net, taps, x, n, np.array([n + 3]))).all()  # too little history
