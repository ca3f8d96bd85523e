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


@pytest.mark.parametrize("cls,kw", [(ClippedSHPLRNN, {"hidden_dim": 7}), (SHPLRNN, {"hidden_dim": 7}), (PLRNN, {}), (PLRNN, {"pwl_units": 2})])
def test_members_kernel_matches_repeated_step_per_member(cls, kw):
    """E members × B sequences in one kernel call: member e equals autograd through repeated `step`
    of a model holding row e (forward, and gradients with respect to the rows and the states)."""
    E, B, T, F = 3, 4, 23, 3
    g = torch.Generator().manual_seed(1)
    models = [cls(4, generator=g, **kw).double() for _ in range(E)]
    rows = torch.stack([m.pack().detach() + 0.1 * torch.randn(m.pack().shape, generator=g, dtype=torch.float64) for m in models])
    rows.requires_grad_(True)
    z0 = torch.randn(E, B, 4, dtype=torch.float64, generator=g, requires_grad=True)
    d = torch.randn(E, B, T, F, dtype=torch.float64, generator=g)
    d[1, 2, 3, 1] = float("nan")
    d[0, 0, 5:9, :] = float("nan")
    a = torch.rand(E, T, dtype=torch.float64, generator=g)
    a[:, ::5] = 1.0
    w = torch.randn(E, B, T, 4, dtype=torch.float64, generator=g)
    Z = models[0].fused_rollout(rows, z0, d, a)
    g_rows, g_z0 = torch.autograd.grad((Z * w).sum(), [rows, z0])
    for e, m in enumerate(models):
        params = dict(m.named_parameters())
        with torch.no_grad():
            for n, v in m.unpack(rows[e : e + 1].detach()).items():
                params[n].copy_(v[0])
        ze = z0[e].detach().clone().requires_grad_(True)
        ref = LatentDynamics.rollout(m, ze, T, d[e], a[e])
        torch.testing.assert_close(Z[e], ref, atol=1e-12, rtol=1e-12)
        grads = torch.autograd.grad((ref * w[e]).sum(), [ze] + [params[n] for n, _ in m.packed_layout()])
        torch.testing.assert_close(g_z0[e], grads[0], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(g_rows[e], torch.cat([x.reshape(-1) for x in grads[1:]]), atol=1e-10, rtol=1e-10)


def test_parallel_kernels_equal_the_serial_ones():
    """The kernels' parallel builds (prange over the sequences; chosen for large work or many
    sequences) compute exactly what the serial ones do, forward and backward."""
    import numpy as np
    import torch

    from dsrecon.models.backends import plrnn_fused as pf

    gen = torch.Generator().manual_seed(0)
    dyn = ClippedSHPLRNN(6, hidden_dim=9, generator=gen)
    rows = dyn.pack()[None].detach().clone()
    z0, d = torch.randn(1, 4, 6, generator=gen), torch.randn(1, 4, 30, 6, generator=gen)
    a = torch.full((1, 30), 0.2)
    outs = []
    for build in (0, 1):
        old = pf._kernel
        pf._kernel = lambda name, n_seq, work=0, b=build: pf._KERNELS[name][b]  # noqa: E731
        try:
            r = rows.clone().requires_grad_(True)
            Z = dyn.fused_rollout(r, z0, d, a)
            (Z**2).sum().backward()
            outs.append((Z.detach().numpy(), r.grad.numpy()))
        finally:
            pf._kernel = old
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)
