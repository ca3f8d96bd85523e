"""The fast path of the PLRNN family (`plrnn.py`): numba rollout + hand-written BPTT over (members, batch).

The eager PyTorch loop pays ~10 kernel launches and autograd nodes per time step; for the small
matrices of a convSSM (M 3, L 50) that overhead is the whole cost. Here the teacher-forced
rollout of E members × B sequences runs as one compiled loop, and the backward pass is written
out with the closed-form Jacobian (docs/method.md §1), wrapped in a torch.autograd.Function so the
kernel, decoder and loss stay in PyTorch. A single model is E = 1. The slow, obviously correct
path is `LatentDynamics.rollout` (repeated `step`); `tests/test_fused.py` holds this one to it.

Layouts (member-major: each of the E·B sequences reads and writes contiguous memory):
- dyn: (E, P) one row per member, the backend's `packed_layout()` (shPLRNN: A, W1, W2, h1, h2;
  PLRNN: A, W (diagonal unused), h);
- U: (E, B, T, M) additive input term C s_t of steps 1…T, or none (autonomous);
- z0: (E, B, M) states at t = 0; teacher: (E, B, T, F) teacher signals of steps 1…T on the first
  F units, NaN where missing (F = 0: a free run); alpha: (E, T) forcing weights;
- returns Z: (E, B, T, M), Z[:, :, t] = F(z̃_t) the pre-forcing state, z̃_0 = z0 and
  z̃_t = (1 − α_t) Z[t−1] + α_t d[t−1] on the first F units where d is finite.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

try:
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a hard dependency, this guards odd platforms
    _HAVE_NUMBA = False

# fastmath without 'nnan'/'ninf': NaN teacher entries are tested in the loop
_FM = {"reassoc", "contract", "nsz", "arcp"}
#: from this many sequences (E·B) a kernel runs on the numba thread pool: a batch of 16 is ~1 ms
#: of work, which a pool can at best halve but, on a busy machine, makes 10-40x slower (measured);
#: 256 (an ensemble of 16) is where each thread has enough sequences to win (chosen, not measured)
PARALLEL_MIN_SEQUENCES = 256
#: ... or from this much work a step (sequences × multiply-adds a step of one sequence): a batch of
#: 16 whole-brain sequences (M 94, L 50: ~9 400 a step each) gives each of two threads ~3 ms a batch
#: (the batch of 256 sequences at M 3, L 50 above is ~77 000)
PARALLEL_MIN_WORK = 60_000


def fused_available(t: torch.Tensor) -> bool:
    return (_HAVE_NUMBA and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
            and not torch._C._functorch.is_batchedtensor(t) and not os.environ.get("DSRECON_NO_FUSED"))


if _HAVE_NUMBA:

    # W2T is W2 transposed, (E, M, L), so that every inner loop runs over L contiguously (SIMD).
    def _sh_forward(z0, d, alpha, A, W1, W2T, h1, h2, clipped, U, has_u, Z, Zin):  # pragma: no cover - jitted
        E, B, M = z0.shape
        T, L, F = Z.shape[2], W2T.shape[2], d.shape[3]
        for eb in prange(E * B):
            e, b = eb // B, eb % B
            z = z0[e, b].copy()
            pre = np.empty(L, dtype=z0.dtype)
            act = np.empty(L, dtype=z0.dtype)
            for t in range(T):
                for l in range(L):
                    pre[l] = 0.0
                for m in range(M):
                    zm = z[m]
                    Zin[e, b, t, m] = zm
                    for l in range(L):
                        pre[l] += W2T[e, m, l] * zm
                for l in range(L):
                    act[l] = max(pre[l] + h2[e, l], 0.0) - (max(pre[l], 0.0) if clipped else 0.0)
                for m in range(M):
                    s = 0.0
                    for l in range(L):
                        s += W1[e, m, l] * act[l]
                    Z[e, b, t, m] = A[e, m] * z[m] + h1[e, m] + s + (U[e, b, t, m] if has_u else 0.0)
                at = alpha[e, t]
                for m in range(M):  # forcing: (1 − α) Z_t + α d_t on the first F units where d_t is finite
                    v = Z[e, b, t, m]
                    if m < F:
                        dv = d[e, b, t, m]
                        if not math.isnan(dv):
                            v = (1.0 - at) * v + at * dv
                    z[m] = v

    def _sh_backward(gZ, Zin, d, alpha, A, W1, W2T, h2, clipped, has_u, gU, dz0, gpar):  # pragma: no cover - jitted
        E, B, T, M = gZ.shape
        L, F = W2T.shape[2], d.shape[3]
        oW1, oW2, oh1 = M, M + M * L, M + 2 * M * L
        oh2 = oh1 + M
        for eb in prange(E * B):
            e, b = eb // B, eb % B
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            pre, u, act, v = np.empty(L, dtype=gZ.dtype), np.empty(L, dtype=gZ.dtype), np.empty(L, dtype=gZ.dtype), np.empty(L, dtype=gZ.dtype)
            gA, gh1, gh2 = np.zeros(M, dtype=gZ.dtype), np.zeros(M, dtype=gZ.dtype), np.zeros(L, dtype=gZ.dtype)
            gW1, gW2T = np.zeros((M, L), dtype=gZ.dtype), np.zeros((M, L), dtype=gZ.dtype)
            for t in range(T - 1, -1, -1):
                for l in range(L):
                    pre[l] = 0.0
                    u[l] = 0.0
                at = alpha[e, t]
                for m in range(M):
                    gn = gnext[m]
                    if m < F and not math.isnan(d[e, b, t, m]):  # the forced units pass on (1 − α) of it
                        gn = gn * (1.0 - at)
                    gm = gZ[e, b, t, m] + gn
                    g[m] = gm
                    if has_u:
                        gU[e, b, t, m] = gm
                    zm = Zin[e, b, t, m]
                    gA[m] += gm * zm
                    gh1[m] += gm
                    for l in range(L):
                        pre[l] += W2T[e, m, l] * zm
                        u[l] += W1[e, m, l] * gm
                for l in range(L):
                    a = pre[l] + h2[e, l]
                    on1 = 1.0 if a > 0 else 0.0
                    on0 = 1.0 if (clipped and pre[l] > 0) else 0.0
                    act[l] = on1 * a - on0 * pre[l]
                    gh2[l] += on1 * u[l]
                    v[l] = (on1 - on0) * u[l]
                for m in range(M):
                    gm, zm, s = g[m], Zin[e, b, t, m], 0.0
                    for l in range(L):
                        gW1[m, l] += gm * act[l]
                        gW2T[m, l] += v[l] * zm
                        s += W2T[e, m, l] * v[l]
                    gnext[m] = A[e, m] * gm + s
            for m in range(M):
                dz0[e, b, m] = gnext[m]
                gpar[e, b, m] = gA[m]
                gpar[e, b, oh1 + m] = gh1[m]
                for l in range(L):
                    gpar[e, b, oW1 + m * L + l] = gW1[m, l]
                    gpar[e, b, oW2 + l * M + m] = gW2T[m, l]
            for l in range(L):
                gpar[e, b, oh2 + l] = gh2[l]

    def _pl_forward(z0, d, alpha, A, W, h, relu, U, has_u, Z, Zin):  # pragma: no cover - jitted
        E, B, M = z0.shape
        T, F = Z.shape[2], d.shape[3]
        for eb in prange(E * B):
            e, b = eb // B, eb % B
            z = z0[e, b].copy()
            ph = np.empty(M, dtype=z0.dtype)
            for t in range(T):
                for m in range(M):
                    zm = z[m]
                    Zin[e, b, t, m] = zm
                    ph[m] = (zm if zm > 0 else 0.0) if relu[m] else zm
                for m in range(M):
                    s = A[e, m] * z[m] + h[e, m] + (U[e, b, t, m] if has_u else 0.0)
                    for k in range(M):
                        s += W[e, m, k] * ph[k]
                    Z[e, b, t, m] = s
                at = alpha[e, t]
                for m in range(M):  # forcing: (1 − α) Z_t + α d_t on the first F units where d_t is finite
                    v = Z[e, b, t, m]
                    if m < F:
                        dv = d[e, b, t, m]
                        if not math.isnan(dv):
                            v = (1.0 - at) * v + at * dv
                    z[m] = v

    def _pl_backward(gZ, Zin, d, alpha, A, WT, relu, has_u, gU, dz0, gpar):  # pragma: no cover - jitted
        # WT[e, k, m] = W[e, m, k] (off-diagonal part): the inner loops run over m contiguously
        E, B, T, M = gZ.shape
        F = d.shape[3]
        oW, oh = M, M + M * M
        for eb in prange(E * B):
            e, b = eb // B, eb % B
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            gA, gh = np.zeros(M, dtype=gZ.dtype), np.zeros(M, dtype=gZ.dtype)
            gWT = np.zeros((M, M), dtype=gZ.dtype)
            for t in range(T - 1, -1, -1):
                at = alpha[e, t]
                for m in range(M):
                    gn = gnext[m]
                    if m < F and not math.isnan(d[e, b, t, m]):  # the forced units pass on (1 − α) of it
                        gn = gn * (1.0 - at)
                    g[m] = gZ[e, b, t, m] + gn
                    if has_u:
                        gU[e, b, t, m] = g[m]
                    gA[m] += g[m] * Zin[e, b, t, m]
                    gh[m] += g[m]
                for k in range(M):
                    zk = Zin[e, b, t, k]
                    on = (zk > 0) if relu[k] else True
                    ph = zk if on else 0.0
                    s = 0.0
                    for m in range(M):
                        gWT[k, m] += g[m] * ph
                        s += WT[e, k, m] * g[m]
                    gnext[k] = A[e, k] * g[k] + (s if on else 0.0)
            for m in range(M):
                dz0[e, b, m] = gnext[m]
                gpar[e, b, m] = gA[m]
                gpar[e, b, oh + m] = gh[m]
                for k in range(M):
                    gpar[e, b, oW + m * M + k] = 0.0 if k == m else gWT[k, m]

    # Each kernel is compiled twice: serial, and parallel over the sequences (prange); see PARALLEL_MIN_SEQUENCES.
    _KERNELS = {
        name: (njit(parallel=False, fastmath=_FM, cache=True)(f), njit(parallel=True, fastmath=_FM, cache=True)(f))
        for name, f in {"sh_forward": _sh_forward, "sh_backward": _sh_backward, "pl_forward": _pl_forward, "pl_backward": _pl_backward}.items()
    }


def _kernel(name: str, n_seq: int, work: int = 0):
    """The serial or the parallel build of a kernel for ``n_seq`` sequences of ``work`` multiply-adds
    a step each: parallel from PARALLEL_MIN_SEQUENCES sequences or PARALLEL_MIN_WORK in all."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    small = n_seq < PARALLEL_MIN_SEQUENCES and n_seq * work < PARALLEL_MIN_WORK
    if n == 1 or n_seq < n or (small and not os.environ.get("DSRECON_NUMBA_PARALLEL")):
        return _KERNELS[name][0]
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return _KERNELS[name][1]


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dyn, z0, U, dynamics, d_np, a_np):  # type: ignore[override]
        E, B, M = z0.shape
        T = a_np.shape[1]
        dt = z0.dtype
        p = {n: v.detach().to(dt).contiguous().numpy() for n, v in dynamics.unpack(dyn.detach()).items()}
        has_u = U is not None
        Un = U.detach().to(dt).contiguous().numpy() if has_u else np.zeros((1, 1, 1, 1), dtype=p["A"].dtype)
        Z, Zin = torch.empty(E, B, T, M, dtype=dt), torch.empty(E, B, T, M, dtype=dt)
        z0n = z0.detach().contiguous().numpy()
        if "W1" in p:
            Wx = np.ascontiguousarray(p["W2"].transpose(0, 2, 1))
            _kernel("sh_forward", E * B, 2 * M * Wx.shape[2])(z0n, d_np, a_np, p["A"], p["W1"], Wx, p["h1"], p["h2"], dynamics.clipped, Un, has_u,
                                         Z.numpy(), Zin.numpy())
        else:
            W = p["W"] * (1.0 - np.eye(M, dtype=p["W"].dtype))
            _kernel("pl_forward", E * B, M * M)(z0n, d_np, a_np, p["A"], W, p["h"], dynamics.relu_np, Un, has_u, Z.numpy(), Zin.numpy())
            Wx = np.ascontiguousarray(W.transpose(0, 2, 1))
        ctx.save_for_backward(Zin)
        ctx.extra = (dynamics, d_np, a_np, p, Wx, dyn.dtype, has_u, None if U is None else U.dtype)
        return Z

    @staticmethod
    def backward(ctx, gZ):  # type: ignore[override]
        (Zin,) = ctx.saved_tensors
        dynamics, d_np, a_np, p, Wx, pdt, has_u, udt = ctx.extra
        E, B, T, M = Zin.shape
        dz0 = torch.empty(E, B, M, dtype=Zin.dtype)
        # the input term's C has no slot in the kernels (its gradient flows through U = C s): zeros
        gpar = torch.zeros(E, B, sum(p[n][0].size for n in p), dtype=Zin.dtype)
        gU = torch.empty(E, B, T, M, dtype=Zin.dtype) if has_u else torch.zeros(1, 1, 1, 1, dtype=Zin.dtype)
        g = gZ.to(Zin.dtype).contiguous().numpy()
        if "W1" in p:
            _kernel("sh_backward", E * B, 5 * M * Wx.shape[2])(g, Zin.numpy(), d_np, a_np, p["A"], p["W1"], Wx, p["h2"], dynamics.clipped, has_u, gU.numpy(),
                                          dz0.numpy(), gpar.numpy())
        else:
            _kernel("pl_backward", E * B, 2 * M * M)(g, Zin.numpy(), d_np, a_np, p["A"], Wx, dynamics.relu_np, has_u, gU.numpy(), dz0.numpy(), gpar.numpy())
        return gpar.sum(1).to(pdt), dz0, (gU.to(udt) if has_u else None), None, None, None


def rollout(dynamics, dyn: torch.Tensor, z0: torch.Tensor, teacher, alpha, inputs: torch.Tensor | None = None,
            additive: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced rollout of E members of ``dynamics``' architecture (shapes in the module docstring);
    differentiable with respect to dyn and z0. inputs (E, B, T, K): the input term U = C s_t is
    formed here from the rows' C (so its gradient reaches C through autograd) and added to every
    step in the kernel, which returns ∂loss/∂U (the state gradient of each step). additive (E, B, T, M):
    a term added to every step besides it (a stochastic free run's process noise)."""
    np_dt = np.float32 if z0.dtype == torch.float32 else np.float64
    as_np = lambda a: np.ascontiguousarray(a if isinstance(a, np.ndarray) else a.detach().cpu().numpy(), dtype=np_dt)  # noqa: E731
    U = None
    if inputs is not None:
        if dynamics.n_inputs == 0:
            raise ValueError("inputs given to a model without an input term (fitted without inputs)")
        C = dynamics.unpack(dyn)["C"]  # (E, M, K)
        U = torch.einsum("ebtk,emk->ebtm", inputs.to(C.dtype), C).to(z0.dtype)
    if additive is not None:  # (E, B, T, M) added to every step as the input term is (process noise)
        U = additive.to(z0.dtype) if U is None else U + additive.to(z0.dtype)
    return _Rollout.apply(dyn, z0, U, dynamics, as_np(teacher), as_np(alpha))
