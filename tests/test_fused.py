"""The fused numba rollout/BPTT must equal autograd through repeated `step` (the slow path)."""

import os

import pytest
import torch

from dsrecon.models.backends.plrnn import PLRNN, SHPLRNN, ClippedSHPLRNN
from dsrecon.models.base import LatentDynamics


def _reference_rollout(model, z0, T, teacher, alpha):
    return LatentDynamics.rollout(model, z0, T, teacher, alpha)


def _setup(cls, dtype, **kw):
    g = torch.Generator().manual_seed(0)
    model = cls(4, generator=g, **kw).to(dtype)
    with torch.no_grad():  # make relu patterns mixed and h's non-zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=dtype))
    B, T = 5, 37
    z0 = torch.randn(B, 4, generator=g, dtype=dtype, requires_grad=True)
    teacher = torch.randn(B, T, 3, generator=g, dtype=dtype)
    teacher[0, 3, 1] = float("nan")
    teacher[2, 10:20, :] = float("nan")
    alpha = torch.rand(T, generator=g, dtype=dtype) * 0.5
    alpha[::7] = 1.0  # sparse-TF-like full forcing steps
    w = torch.randn(B, T, 4, generator=g, dtype=dtype)
    return model, z0, T, teacher, alpha, w


@pytest.mark.parametrize("cls,kw", [(ClippedSHPLRNN, {"hidden_dim": 9}), (SHPLRNN, {"hidden_dim": 9}), (PLRNN, {}), (PLRNN, {"pwl_units": 2})])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_fused_matches_autograd(cls, kw, dtype, tol):
    model, z0, T, teacher, alpha, w = _setup(cls, dtype, **kw)
    params = [z0] + list(model.parameters())

    out_ref = _reference_rollout(model, z0, T, teacher, alpha)
    g_ref = torch.autograd.grad((out_ref * w).sum(), params)
    out = model.rollout(z0, T, teacher, alpha)
    g = torch.autograd.grad((out * w).sum(), params)

    torch.testing.assert_close(out, out_ref, atol=tol, rtol=tol)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol * 10)


def test_fused_without_teacher_is_free_run():
    model, z0, T, _, _, _ = _setup(ClippedSHPLRNN, torch.float64, hidden_dim=6)
    out = model.rollout(z0.detach(), T)
    z = z0.detach()
    for t in range(T):
        z = model.step(z)
        torch.testing.assert_close(out[:, t], z)


@pytest.mark.parametrize("cls,kw", [(ClippedSHPLRNN, {"hidden_dim": 7}), (SHPLRNN, {"hidden_dim": 7}), (PLRNN, {"pwl_units": 2})])
def test_closed_form_jacobian_matches_autograd(cls, kw):
    model, z0, *_ = _setup(cls, torch.float64, **kw)
    J = model.jacobian(z0.detach())
    J_ref = LatentDynamics.jacobian(model, z0.detach())
    torch.testing.assert_close(J, J_ref)


def test_fused_and_plain_training_give_equal_loss_curves(monkeypatch):
    """Same seed, same data: the trainer's loss curve with the fused path equals the eager path's."""
    from dsrecon import ConvSSM, Recording
    from dsrecon.systems import simulate_system

    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    rec = Recording(out["observed"], tr=0.5, names=out["names"])
    opts = dict(hidden_dim=10, epochs=3, batches_per_epoch=4, batch_size=4, val_every=100, test_fraction=0.0)
    fused = ConvSSM(**opts).fit(rec)
    monkeypatch.setenv("DSRECON_NO_FUSED", "1")
    plain = ConvSSM(**opts).fit(rec)
    lf = [r["loss"] for r in fused.history_]
    lp = [r["loss"] for r in plain.history_]
    assert lf == pytest.approx(lp, rel=1e-4)
    for k, v in fused.net_.state_dict().items():
        torch.testing.assert_close(v, plain.net_.state_dict()[k], atol=1e-4, rtol=1e-4)
