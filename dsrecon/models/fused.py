"""Fused CPU training path for the PLRNN family: numba rollout + hand-written BPTT.

The eager PyTorch loop pays ~10 kernel launches and autograd nodes per time step; for the small
matrices of a convSSM (M 3, L 50) that overhead is the whole cost. Here the teacher-forced
rollout runs as one compiled loop, and the backward pass is written out with the closed-form
Jacobian (ALGORITHMS.md §1), wrapped in a torch.autograd.Function so the kernel, decoder and loss
stay in PyTorch. `tests/test_fused.py` checks it against autograd through repeated `step`.

Layouts: state0 (B, M); teacher (B, T, F) with NaN where missing; alpha (T,). Returns the
pre-forcing states (B, T, M).
"""

from __future__ import annotations

import os

import numpy as np
import torch

try:
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a hard dependency, this guards odd platforms
    _HAVE_NUMBA = False

# fastmath without 'nnan'/'ninf': masks are explicit, but keep IEEE semantics for safety.
_FM = {"reassoc", "contract", "nsz", "arcp"}


def fused_available(state0: torch.Tensor) -> bool:
    return (
        _HAVE_NUMBA
        and state0.device.type == "cpu"
        and state0.dtype in (torch.float32, torch.float64)
        and not os.environ.get("DSRECON_NO_FUSED")
    )


if _HAVE_NUMBA:

    # W2T is W2 transposed, (M, L), so that every inner loop runs over L contiguously (SIMD).
    def _sh_forward(z0, teacher, tmask, alpha, A, W1, W2T, h1, h2, clipped, Z, Zin):  # pragma: no cover - jitted
        B, M = z0.shape
        T = Z.shape[1]
        L = W2T.shape[1]
        F = teacher.shape[2]
        for b in prange(B):
            z = z0[b].copy()
            pre = np.empty(L, dtype=z0.dtype)
            act = np.empty(L, dtype=z0.dtype)
            for t in range(T):
                for l in range(L):
                    pre[l] = 0.0
                for m in range(M):
                    Zin[b, t, m] = z[m]
                    zm = z[m]
                    for l in range(L):
                        pre[l] += W2T[m, l] * zm
                if clipped:
                    for l in range(L):
                        act[l] = max(pre[l] + h2[l], 0.0) - max(pre[l], 0.0)
                else:
                    for l in range(L):
                        act[l] = max(pre[l] + h2[l], 0.0)
                at = alpha[t]
                for m in range(M):
                    s = 0.0
                    for l in range(L):
                        s += W1[m, l] * act[l]
                    v = A[m] * z[m] + h1[m] + s
                    Z[b, t, m] = v
                for m in range(M):
                    v = Z[b, t, m]
                    if m < F and tmask[b, t, m]:
                        v = (1.0 - at) * v + at * teacher[b, t, m]
                    z[m] = v

    def _sh_backward(gZ, Zin, tmask, alpha, A, W1, W2T, h2, clipped, dz0, gA, gW1, gW2T, gh1, gh2):  # pragma: no cover
        B, T, M = gZ.shape
        L = W2T.shape[1]
        F = tmask.shape[2]
        for b in prange(B):
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            pre = np.empty(L, dtype=gZ.dtype)
            u = np.empty(L, dtype=gZ.dtype)
            act = np.empty(L, dtype=gZ.dtype)
            v = np.empty(L, dtype=gZ.dtype)
            for t in range(T - 1, -1, -1):
                at = alpha[t]
                for l in range(L):
                    pre[l] = 0.0
                    u[l] = 0.0
                for m in range(M):
                    gn = gnext[m]
                    if m < F and tmask[b, t, m]:
                        gn = gn * (1.0 - at)
                    gm = gZ[b, t, m] + gn
                    g[m] = gm
                    zm = Zin[b, t, m]
                    gA[b, m] += gm * zm
                    gh1[b, m] += gm
                    for l in range(L):
                        pre[l] += W2T[m, l] * zm
                        u[l] += W1[m, l] * gm
                for l in range(L):
                    a = pre[l] + h2[l]
                    on1 = 1.0 if a > 0 else 0.0
                    on0 = 1.0 if (clipped and pre[l] > 0) else 0.0
                    act[l] = on1 * a - on0 * pre[l]
                    gh2[b, l] += on1 * u[l]
                    v[l] = (on1 - on0) * u[l]
                for m in range(M):
                    gm = g[m]
                    zm = Zin[b, t, m]
                    s = 0.0
                    for l in range(L):
                        gW1[b, m, l] += gm * act[l]
                        gW2T[b, m, l] += v[l] * zm
                        s += W2T[m, l] * v[l]
                    gnext[m] = A[m] * gm + s
            for m in range(M):
                dz0[b, m] = gnext[m]

    def _pl_forward(z0, teacher, tmask, alpha, A, W, h, relu, Z, Zin):  # pragma: no cover
        B, M = z0.shape
        T = Z.shape[1]
        F = teacher.shape[2]
        for b in prange(B):
            z = z0[b].copy()
            ph = np.empty(M, dtype=z0.dtype)
            for t in range(T):
                for m in range(M):
                    Zin[b, t, m] = z[m]
                    ph[m] = (z[m] if z[m] > 0 else 0.0) if relu[m] else z[m]
                at = alpha[t]
                for m in range(M):
                    s = A[m] * z[m] + h[m]
                    for k in range(M):
                        s += W[m, k] * ph[k]
                    Z[b, t, m] = s
                for m in range(M):
                    v = Z[b, t, m]
                    if m < F and tmask[b, t, m]:
                        v = (1.0 - at) * v + at * teacher[b, t, m]
                    z[m] = v

    def _pl_backward(gZ, Zin, tmask, alpha, A, W, relu, dz0, gA, gW, gh):  # pragma: no cover
        B, T, M = gZ.shape
        F = tmask.shape[2]
        for b in prange(B):
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            for t in range(T - 1, -1, -1):
                at = alpha[t]
                for m in range(M):
                    gn = gnext[m]
                    if m < F and tmask[b, t, m]:
                        gn = gn * (1.0 - at)
                    g[m] = gZ[b, t, m] + gn
                    gA[b, m] += g[m] * Zin[b, t, m]
                    gh[b, m] += g[m]
                for k in range(M):
                    zk = Zin[b, t, k]
                    on = (zk > 0) if relu[k] else True
                    ph = (zk if on else 0.0)
                    u = 0.0
                    for m in range(M):
                        gW[b, m, k] += g[m] * ph
                        u += W[m, k] * g[m]
                    gnext[k] = A[k] * g[k] + (u if on else 0.0)
            for m in range(M):
                dz0[b, m] = gnext[m]


if _HAVE_NUMBA:
    # Each kernel is compiled twice: parallel over the batch (prange) and serial. With one torch
    # thread the serial one runs: a numba thread pool on a busy machine costs ~10x the work itself.
    _KERNELS = {
        name: (njit(parallel=False, fastmath=_FM, cache=True)(f), njit(parallel=True, fastmath=_FM, cache=True)(f))
        for name, f in {"sh_forward": _sh_forward, "sh_backward": _sh_backward, "pl_forward": _pl_forward, "pl_backward": _pl_backward}.items()
    }


def _kernel(name: str):
    """The serial kernel unless DSRECON_NUMBA_PARALLEL=1: a batch of 16 sequences is ~1 ms of work,
    which a thread pool can at best halve but, on a busy machine, makes 10-40x slower (measured)."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if n == 1 or not os.environ.get("DSRECON_NUMBA_PARALLEL"):
        return _KERNELS[name][0]
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return _KERNELS[name][1]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _teacher_arrays(teacher: torch.Tensor | None, B: int, T: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if teacher is None:
        return np.zeros((B, T, 0), dtype=np_dtype), np.zeros((B, T, 0), dtype=np.bool_)
    t = teacher.detach().cpu().numpy().astype(np_dtype, copy=False)  # numpy: no torch dispatch per batch
    mask = np.isfinite(t)
    return np.ascontiguousarray(np.where(mask, t, 0.0).astype(np_dtype, copy=False)), mask


def _alpha_array(alpha, T: int, dtype: torch.dtype) -> np.ndarray:
    a = torch.as_tensor(alpha, dtype=dtype).detach().cpu()
    if a.ndim == 0:
        a = a.expand(T)
    return _np(a)


class _SHRollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, A, W1, W2, h1, h2, teacher_np, tmask_np, alpha_np, clipped):  # type: ignore[override]
        B, M = z0.shape
        T = alpha_np.shape[0]
        dt = z0.dtype
        Z = torch.empty(B, T, M, dtype=dt)
        Zin = torch.empty(B, T, M, dtype=dt)
        _kernel("sh_forward")(_np(z0), teacher_np, tmask_np, alpha_np, _np(A.to(dt)), _np(W1.to(dt)), _np(W2.to(dt).T),
                    _np(h1.to(dt)), _np(h2.to(dt)), clipped, Z.numpy(), Zin.numpy())
        ctx.save_for_backward(Zin, A, W1, W2, h2)
        ctx.extra = (tmask_np, alpha_np, clipped)
        return Z

    @staticmethod
    def backward(ctx, gZ):  # type: ignore[override]
        Zin, A, W1, W2, h2 = ctx.saved_tensors
        tmask_np, alpha_np, clipped = ctx.extra
        B, T, M = Zin.shape
        L = W2.shape[0]
        dt = Zin.dtype
        z = lambda *s: torch.zeros(*s, dtype=dt)  # noqa: E731
        dz0, gA, gW1, gW2T, gh1, gh2 = z(B, M), z(B, M), z(B, M, L), z(B, M, L), z(B, M), z(B, L)
        _kernel("sh_backward")(_np(gZ.to(dt)), Zin.numpy(), tmask_np, alpha_np, _np(A.to(dt)), _np(W1.to(dt)), _np(W2.to(dt).T),
                     _np(h2.to(dt)), clipped, dz0.numpy(), gA.numpy(), gW1.numpy(), gW2T.numpy(), gh1.numpy(), gh2.numpy())
        pd = A.dtype
        return (dz0, gA.sum(0).to(pd), gW1.sum(0).to(pd), gW2T.sum(0).T.to(pd), gh1.sum(0).to(pd), gh2.sum(0).to(pd),
                None, None, None, None)


class _PLRollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, A, W, h, relu_np, teacher_np, tmask_np, alpha_np):  # type: ignore[override]
        B, M = z0.shape
        T = alpha_np.shape[0]
        dt = z0.dtype
        Z = torch.empty(B, T, M, dtype=dt)
        Zin = torch.empty(B, T, M, dtype=dt)
        _kernel("pl_forward")(_np(z0), teacher_np, tmask_np, alpha_np, _np(A.to(dt)), _np(W.to(dt)), _np(h.to(dt)), relu_np,
                    Z.numpy(), Zin.numpy())
        ctx.save_for_backward(Zin, A, W)
        ctx.extra = (relu_np, tmask_np, alpha_np)
        return Z

    @staticmethod
    def backward(ctx, gZ):  # type: ignore[override]
        Zin, A, W = ctx.saved_tensors
        relu_np, tmask_np, alpha_np = ctx.extra
        B, T, M = Zin.shape
        dt = Zin.dtype
        dz0, gA, gW, gh = (torch.zeros(B, M, dtype=dt), torch.zeros(B, M, dtype=dt), torch.zeros(B, M, M, dtype=dt),
                           torch.zeros(B, M, dtype=dt))
        _kernel("pl_backward")(_np(gZ.to(dt)), Zin.numpy(), tmask_np, alpha_np, _np(A.to(dt)), _np(W.to(dt)), relu_np,
                     dz0.numpy(), gA.numpy(), gW.numpy(), gh.numpy())
        pd = A.dtype
        return dz0, gA.sum(0).to(pd), gW.sum(0).to(pd), gh.sum(0).to(pd), None, None, None, None


def shplrnn_rollout(model, state0: torch.Tensor, T: int, teacher: torch.Tensor | None, alpha) -> torch.Tensor:
    """Fused equivalent of LatentDynamics.rollout for (c)shPLRNN on CPU."""
    B = state0.shape[0]
    dt = state0.dtype
    teacher_np, tmask_np = _teacher_arrays(teacher, B, T, dt)
    return _SHRollout.apply(state0.contiguous(), model.A, model.W1, model.W2, model.h1, model.h2, teacher_np, tmask_np,
                            _alpha_array(alpha, T, dt), bool(model.clipped))


def plrnn_rollout(model, state0: torch.Tensor, T: int, teacher: torch.Tensor | None, alpha) -> torch.Tensor:
    """Fused equivalent of LatentDynamics.rollout for the vanilla PLRNN / ALRNN on CPU."""
    B = state0.shape[0]
    dt = state0.dtype
    teacher_np, tmask_np = _teacher_arrays(teacher, B, T, dt)
    W = model.W * model.offdiag
    return _PLRollout.apply(state0.contiguous(), model.A, W, model.h, model.relu_mask.cpu().numpy().astype(np.bool_),
                            teacher_np, tmask_np, _alpha_array(alpha, T, dt))
