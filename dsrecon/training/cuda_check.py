"""A self-check of the CUDA training kernel (`dsrecon.models.backends.plrnn_cuda`): the whole loss of
E members and its gradients on the kernel, in float32, against the CPU reference path in float64
(repeated `step` and autograd).

It runs on a GPU, or on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 and DSRECON_CUDA_SIMULATOR=1
set before numba is imported: CPU tensors, the kernels interpreted). `tests/cuda_sim_checks.py`
(the test suite) and `benchmarks/gpu.py` (the GPU benchmark's first step) call `kernel_errors`;
on a new GPU it tells whether the kernel numba compiled computes what the CPU path does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.errors import DsreconError


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / (max |b| + 1e-6): the error relative to the reference's scale."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / (b.abs().max() + 1e-6))


def kernel_device() -> str:
    """Where the kernel check's tensors live: "cpu" under the simulator, "cuda" on a GPU."""
    from dsrecon.models.backends import plrnn_cuda

    if plrnn_cuda.simulating():
        return "cpu"
    if not torch.cuda.is_available():
        raise DsreconError("no CUDA device and not under the simulator (set NUMBA_ENABLE_CUDASIM=1 DSRECON_CUDA_SIMULATOR=1)")
    return "cuda"


def kernel_errors(full: bool = False, seed: int = 0) -> dict:
    """The whole loss of E members (GTF rollout, decoder, HRF convolution, masked MSE + L2) and its
    gradients, through `Stack.losses` in float32 on the CUDA kernel, against the CPU reference path:
    per member, repeated `step` in float64 (`LatentDynamics.rollout`) and autograd.

    Tiny sizes by default (simulator); ``full``: the default convSSM (M 3, L 50, SPM HRF at TR 0.2 =
    161 taps, sequence 200, batch 16) with 8 members."""
    from dsrecon.models.backends.plrnn import PLRNN, ClippedSHPLRNN, SHPLRNN
    from dsrecon.models.base import LatentDynamics
    from dsrecon.models.convssm import ConvSSMNet
    from dsrecon.models.decoders import AffineDecoder, IdentityDecoder
    from dsrecon.signal.kernels import spm_hrf
    from dsrecon.training.stack import Stack

    dev = kernel_device()
    g = torch.Generator().manual_seed(seed)
    if full:
        E, B, T, N, taps, cases = 8, 16, 200, 3, spm_hrf(0.2), [(ClippedSHPLRNN, 3, {"hidden_dim": 50}, "identity")]
    else:
        E, B, T, N, taps = 2, 3, 14, 3, np.array([0.1, 0.5, 0.3, 0.1])
        cases = [(ClippedSHPLRNN, 4, {"hidden_dim": 6}, "affine"), (SHPLRNN, 3, {"hidden_dim": 5}, "identity"),
                 (PLRNN, 4, {"pwl_units": 2}, "affine")]
    out = {"device": dev, "members": E, "batch": B, "T": T, "taps": int(len(taps)), "cases": []}
    for cls, M, kw, dec in cases:
        nets = []
        for _ in range(E):
            decoder = AffineDecoder(M, N, generator=g) if dec == "affine" else IdentityDecoder(M, N)
            net = ConvSSMNet(cls(M, generator=g, **kw), decoder, torch.as_tensor(taps, dtype=torch.float32), N)
            with torch.no_grad():  # mixed relu patterns, non-zero h, L_init
                for p in net.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=g))
            nets.append(net.to(dev))
        K = len(taps)
        d = torch.randn(E, B, T, N, generator=g)
        d[0, 1, 5, 1] = float("nan")  # missing teacher entries: no forcing there
        d[-1, 0, 3:6, :] = float("nan")
        x = torch.randn(E, B, T - K + 1, N, generator=g)
        mask = (torch.rand(E, B, T - K + 1, generator=g) > 0.2).float()
        alpha = torch.rand(E, T - 1, generator=g) * 0.5
        alpha[:, ::4] = 1.0
        l2 = 1e-3
        stack = Stack(nets)
        assert stack.engine == "cuda", stack.engine
        batch = {"teacher_t": d.to(dev), "teacher": d.numpy(), "x_t": x.to(dev), "mask_t": mask.to(dev), "reg_t": None}
        flat = stack.flat.clone().requires_grad_(True)
        losses = stack.losses(flat, batch, alpha.to(dev), l2)
        losses.sum().backward()
        ref_l, ref_g = [], []
        for e, net in enumerate(nets):
            ref = ConvSSMNet(cls(M, **kw), AffineDecoder(M, N) if dec == "affine" else IdentityDecoder(M, N),
                             torch.as_tensor(taps, dtype=torch.float32), N).double()
            stack.load_into(ref, stack.flat[e].cpu().double())
            de = d[e].double()
            z0 = ref.init_state(de[:, 0])
            Z = LatentDynamics.rollout(ref.dynamics, z0, T - 1, de[:, 1:, : ref.F], alpha[e].double())
            y = ref.observe(torch.cat([z0[:, None], Z], dim=1))
            me = mask[e].double()
            loss = (((y - x[e].double()) ** 2) * me[..., None]).sum() / (me.sum() * N).clamp_min(1.0)
            params = dict(ref.named_parameters())
            loss = loss + l2 * sum((params[n] ** 2).sum() for n, (o, shp) in stack.layout.items() if math.prod(shp) and stack.l2_mask[o].item())
            grads = torch.autograd.grad(loss, [params[n] for n in stack.layout], allow_unused=True)
            grads = [torch.zeros_like(params[n]) if gr is None else gr for n, gr in zip(stack.layout, grads)]
            ref_l.append(loss.detach())
            ref_g.append(torch.cat([gr.reshape(-1) for gr in grads]))
        out["cases"].append({"backend": cls.name, "M": M, **kw, "decoder": dec, "loss_rel_err": relative_error(losses, torch.stack(ref_l)),
                             "grad_rel_err": max(relative_error(flat.grad[e], ref_g[e]) for e in range(E)),
                             "loss": [float(v) for v in losses.detach().cpu()]})
    out["loss_rel_err"] = max(c["loss_rel_err"] for c in out["cases"])
    out["grad_rel_err"] = max(c["grad_rel_err"] for c in out["cases"])
    return out
