"""The PLRNN family's training kernel on a CUDA device: `plrnn_fused`'s maths, one thread per sequence.

The CPU kernels in `plrnn_fused` run E members × B sequences as one compiled loop. Here the same
loop is a numba-cuda kernel with one GPU thread per (member, sequence): each thread runs the whole
teacher-forced recurrence (GTF forward) and then its BPTT with the closed-form Jacobian, so a
training step is two kernel launches whatever the sequence length, not one per time step. The
decoder, the measurement-kernel convolution (one GEMM over all E·B·N channels) and the loss stay
PyTorch operations on the same device, exactly as on the CPU path; the gradient is reduced over
the B sequences of a member by one tensor sum (no atomics: the result is deterministic).

Parameters come as the CPU kernels take them: one row per member in the backend's
`packed_layout()` (shPLRNN: A, W1, W2, h1, h2; PLRNN: A, W, h), and the gradient comes back in that
layout. The tensors the kernel reads and writes are sequence-last, so that the 32 threads of a warp
(32 consecutive sequences) touch 32 consecutive words:

- z0: (M, S) with S = E·B, sequence s = e·B + b; d: (T, F', S) teacher (F' = max(F, 1), NaN where
  missing); alpha: (E, T) forcing weights (not read when F = 0, a free run);
- Z, Zin: (T, M, S) the pre-forcing states and the forced inputs of each step (Zin only for training);
- backward: gZ (T, M, S) → dz0 (M, S) and gpar (P, S) the per-sequence parameter gradients.

`rollout` takes and returns the CPU kernel's member-major shapes (E, B, …) and does the transposes.

Without a GPU the same kernels run on numba's CUDA simulator (environment NUMBA_ENABLE_CUDASIM=1
before numba is imported): every thread is then a Python thread, slow but the very same code.
With DSRECON_CUDA_SIMULATOR=1 as well, dsrecon treats ``--device cuda`` as this simulator on CPU
tensors (`simulating`); the tests use that to run the whole device path without a GPU.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

#: threads per block (a multiple of the warp size; a thread needs ~1.5 KiB of local memory at L 50)
THREADS_PER_BLOCK = 128
cuda = None  # numba.cuda, bound on first use (`_cuda_module`)


def simulating() -> bool:
    """True when ``--device cuda`` means numba's CUDA simulator on CPU tensors (tests, no GPU)."""
    if os.environ.get("DSRECON_CUDA_SIMULATOR") != "1":
        return False
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def _cuda_ok() -> bool:
    """numba can compile for and launch on a real CUDA device."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - no driver, no toolkit or no numba-cuda: simply not available
        return False


def available_for(t: torch.Tensor) -> bool:
    """Whether the CUDA kernels serve tensors like ``t``: on a CUDA device (with numba-cuda
    working), or CPU tensors under `simulating`."""
    if t.dtype not in (torch.float32, torch.float64) or torch._C._functorch.is_batchedtensor(t):
        return False
    if t.device.type == "cuda":
        return _cuda_ok()
    return t.device.type == "cpu" and simulating()


def _dev(t: torch.Tensor):
    """The kernel's view of a tensor: a zero-copy device array on a GPU, the numpy array under the simulator."""
    if t.device.type == "cuda":
        from numba import cuda

        return cuda.as_cuda_array(t)
    return t.numpy()


# ------------------------------------------------------------------------------------------ kernels
def _cuda_module():
    """numba.cuda, bound as this module's global ``cuda``: the simulator swaps in its fake module
    for a kernel's globals named ``cuda`` (not for closure variables)."""
    import warnings

    from numba import cuda
    from numba.core.errors import NumbaPerformanceWarning

    # a plain fit (E = 1) is 16 threads: one block, and numba says so at every launch
    warnings.filterwarnings("ignore", message="Grid size .* will likely result in GPU under-utilization", category=NumbaPerformanceWarning)
    globals()["cuda"] = cuda
    return cuda


@functools.lru_cache(maxsize=None)
def _sh_kernels(M: int, L: int, np_dt: type):
    """shPLRNN forward and backward for state size M, hidden width L and one float type (the local
    arrays of a CUDA thread need their sizes and type at compile time)."""
    _cuda_module()
    dt = np.dtype(np_dt).type
    zero, one = dt(0.0), dt(1.0)
    P = 2 * M + 2 * M * L + L
    oW1, oW2, oh1 = M, M + M * L, M + 2 * M * L
    oh2 = oh1 + M

    @cuda.jit
    def forward(z0, d, alpha, A, W1, W2T, h1, h2, clipped, F, B, save, Z, Zin):  # pragma: no cover - compiled/simulated
        s = cuda.grid(1)
        T, S = Z.shape[0], Z.shape[2]
        if s >= S:
            return
        e = s // B
        z = cuda.local.array(M, np_dt)
        pre = cuda.local.array(L, np_dt)
        for m in range(M):
            z[m] = z0[m, s]
        for t in range(T):
            for l in range(L):
                pre[l] = zero
            for m in range(M):
                zm = z[m]
                if save:
                    Zin[t, m, s] = zm
                for l in range(L):
                    pre[l] += W2T[e, m, l] * zm
            for l in range(L):  # act, kept in pre
                a = pre[l] + h2[e, l]
                a = a if a > zero else zero
                if clipped and pre[l] > zero:
                    a -= pre[l]
                pre[l] = a
            for m in range(M):
                acc = zero
                for l in range(L):
                    acc += W1[e, m, l] * pre[l]
                Z[t, m, s] = A[e, m] * z[m] + h1[e, m] + acc
            for m in range(M):  # forcing: (1 − α) Z_t + α d_t on the first F units where d_t is finite
                v = Z[t, m, s]
                if m < F:
                    dv = d[t, m, s]
                    if not math.isnan(dv):
                        at = alpha[e, t]
                        v = (one - at) * v + at * dv
                z[m] = v

    @cuda.jit
    def backward(gZ, Zin, d, alpha, A, W1, W2T, h2, clipped, F, B, dz0, gpar):  # pragma: no cover - compiled/simulated
        s = cuda.grid(1)
        T, S = gZ.shape[0], gZ.shape[2]
        if s >= S:
            return
        e = s // B
        gnext = cuda.local.array(M, np_dt)
        g = cuda.local.array(M, np_dt)
        zin = cuda.local.array(M, np_dt)
        pre = cuda.local.array(L, np_dt)
        u = cuda.local.array(L, np_dt)
        gacc = cuda.local.array(P, np_dt)  # the packed-layout gradient of this sequence
        for p in range(P):
            gacc[p] = zero
        for m in range(M):
            gnext[m] = zero
        for t in range(T - 1, -1, -1):
            for l in range(L):
                pre[l] = zero
                u[l] = zero
            for m in range(M):
                gn = gnext[m]
                if m < F:
                    if not math.isnan(d[t, m, s]):  # the forced units pass on (1 − α) of it
                        gn = gn * (one - alpha[e, t])
                gm = gZ[t, m, s] + gn
                g[m] = gm
                zm = Zin[t, m, s]
                zin[m] = zm
                gacc[m] += gm * zm
                gacc[oh1 + m] += gm
                for l in range(L):
                    pre[l] += W2T[e, m, l] * zm
                    u[l] += W1[e, m, l] * gm
            for l in range(L):  # pre → act, u → v = (1[a > 0] − clipped·1[pre > 0]) u
                a = pre[l] + h2[e, l]
                on1 = a > zero
                on0 = clipped and pre[l] > zero
                act = (a if on1 else zero) - (pre[l] if on0 else zero)
                if on1:
                    gacc[oh2 + l] += u[l]
                vl = (u[l] if on1 else zero) - (u[l] if on0 else zero)
                pre[l] = act
                u[l] = vl
            for m in range(M):
                gm, zm, acc = g[m], zin[m], zero
                for l in range(L):
                    gacc[oW1 + m * L + l] += gm * pre[l]
                    gacc[oW2 + l * M + m] += u[l] * zm
                    acc += W2T[e, m, l] * u[l]
                gnext[m] = A[e, m] * gm + acc
        for m in range(M):
            dz0[m, s] = gnext[m]
        for p in range(P):
            gpar[p, s] = gacc[p]

    return forward, backward


@functools.lru_cache(maxsize=None)
def _pl_kernels(M: int, np_dt: type):
    """Vanilla PLRNN / ALRNN forward and backward (W: off-diagonal part; relu: (M,) 0/1 per unit)."""
    _cuda_module()
    dt = np.dtype(np_dt).type
    zero, one = dt(0.0), dt(1.0)
    P = 2 * M + M * M
    oW, oh = M, M + M * M

    @cuda.jit
    def forward(z0, d, alpha, A, W, h, relu, F, B, save, Z, Zin):  # pragma: no cover - compiled/simulated
        s = cuda.grid(1)
        T, S = Z.shape[0], Z.shape[2]
        if s >= S:
            return
        e = s // B
        z = cuda.local.array(M, np_dt)
        ph = cuda.local.array(M, np_dt)
        for m in range(M):
            z[m] = z0[m, s]
        for t in range(T):
            for m in range(M):
                zm = z[m]
                if save:
                    Zin[t, m, s] = zm
                ph[m] = (zm if zm > zero else zero) if relu[m] else zm
            for m in range(M):
                acc = A[e, m] * z[m] + h[e, m]
                for k in range(M):
                    acc += W[e, m, k] * ph[k]
                Z[t, m, s] = acc
            for m in range(M):
                v = Z[t, m, s]
                if m < F:
                    dv = d[t, m, s]
                    if not math.isnan(dv):
                        at = alpha[e, t]
                        v = (one - at) * v + at * dv
                z[m] = v

    @cuda.jit
    def backward(gZ, Zin, d, alpha, A, W, relu, F, B, dz0, gpar):  # pragma: no cover - compiled/simulated
        s = cuda.grid(1)
        T, S = gZ.shape[0], gZ.shape[2]
        if s >= S:
            return
        e = s // B
        gnext = cuda.local.array(M, np_dt)
        g = cuda.local.array(M, np_dt)
        gacc = cuda.local.array(P, np_dt)
        for p in range(P):
            gacc[p] = zero
        for m in range(M):
            gnext[m] = zero
        for t in range(T - 1, -1, -1):
            for m in range(M):
                gn = gnext[m]
                if m < F:
                    if not math.isnan(d[t, m, s]):
                        gn = gn * (one - alpha[e, t])
                gm = gZ[t, m, s] + gn
                g[m] = gm
                gacc[m] += gm * Zin[t, m, s]
                gacc[oh + m] += gm
            for k in range(M):
                zk = Zin[t, k, s]
                on = (zk > zero) if relu[k] else True
                phk = zk if on else zero
                acc = zero
                for m in range(M):
                    if m != k:
                        gacc[oW + m * M + k] += g[m] * phk
                        acc += W[e, m, k] * g[m]
                gnext[k] = A[e, k] * g[k] + (acc if on else zero)
        for m in range(M):
            dz0[m, s] = gnext[m]
        for p in range(P):
            gpar[p, s] = gacc[p]

    return forward, backward


# ------------------------------------------------------------------------------------------ the op
def _grid(S: int) -> tuple[int, int]:
    tpb = min(THREADS_PER_BLOCK, max(S, 1)) if simulating() else THREADS_PER_BLOCK  # the simulator runs a Python thread per thread
    return (S + tpb - 1) // tpb, tpb


def _params(dynamics, dyn: torch.Tensor, dt: torch.dtype) -> dict[str, torch.Tensor]:
    """The kernels' parameter arrays (contiguous, on dyn's device) from packed rows (E, P)."""
    p = {n: v.detach().to(dt).contiguous() for n, v in dynamics.unpack(dyn.detach()).items()}
    if "W1" in p:
        p["W2T"] = p.pop("W2").transpose(1, 2).contiguous()
    else:
        M = p["W"].shape[1]
        p["W"] = (p["W"] * (1 - torch.eye(M, dtype=dt, device=dyn.device))).contiguous()
        p["relu"] = torch.as_tensor(dynamics.relu_np.astype(np.int8), device=dyn.device)
    return p


def _seq_last(x: torch.Tensor) -> torch.Tensor:
    """(E, B, [T,] C) member-major → ([T,] C, E·B) sequence-last, contiguous."""
    E, B = x.shape[:2]
    return x.reshape(E * B, -1, x.shape[-1]).permute(1, 2, 0).contiguous() if x.dim() == 4 else x.reshape(E * B, -1).T.contiguous()


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dyn, z0, dynamics, d, alpha):  # type: ignore[override]
        E, B, M = z0.shape
        T, F = d.shape[2], d.shape[3]
        dt, dev = z0.dtype, z0.device
        np_dt = np.float32 if dt == torch.float32 else np.float64
        p = _params(dynamics, dyn, dt)
        save = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        z0s = _seq_last(z0.detach())
        ds = _seq_last(d.detach().to(dt)) if F else torch.zeros(1, 1, E * B, dtype=dt, device=dev)  # a free run: d is never read
        al = alpha.detach().to(dt).contiguous() if F else torch.zeros(E, 1, dtype=dt, device=dev)
        Z = torch.empty(T, M, E * B, dtype=dt, device=dev)
        Zin = torch.empty(T, M, E * B, dtype=dt, device=dev) if save else torch.empty(1, 1, 1, dtype=dt, device=dev)
        blocks, tpb = _grid(E * B)
        if "W1" in p:
            fwd, _ = _sh_kernels(M, p["W1"].shape[2], np_dt)
            fwd[blocks, tpb](_dev(z0s), _dev(ds), _dev(al), _dev(p["A"]), _dev(p["W1"]), _dev(p["W2T"]), _dev(p["h1"]), _dev(p["h2"]),
                             bool(dynamics.clipped), F, B, save, _dev(Z), _dev(Zin))
        else:
            fwd, _ = _pl_kernels(M, np_dt)
            fwd[blocks, tpb](_dev(z0s), _dev(ds), _dev(al), _dev(p["A"]), _dev(p["W"]), _dev(p["h"]), _dev(p["relu"]), F, B, save,
                             _dev(Z), _dev(Zin))
        ctx.save_for_backward(Zin, ds, al)
        ctx.extra = (dynamics, p, dyn.dtype, E, B, F)
        return Z.reshape(T, M, E, B).permute(2, 3, 0, 1)

    @staticmethod
    def backward(ctx, gZ):  # type: ignore[override]
        Zin, ds, al = ctx.saved_tensors
        dynamics, p, pdt, E, B, F = ctx.extra
        T, M, S = Zin.shape
        dt, dev = Zin.dtype, Zin.device
        np_dt = np.float32 if dt == torch.float32 else np.float64
        g = gZ.to(dt).permute(2, 3, 0, 1).reshape(T, M, S).contiguous()
        dz0 = torch.empty(M, S, dtype=dt, device=dev)
        P = sum(math.prod(shp) for _, shp in dynamics.packed_layout())
        gpar = torch.empty(P, S, dtype=dt, device=dev)
        blocks, tpb = _grid(S)
        if "W1" in p:
            _, bwd = _sh_kernels(M, p["W1"].shape[2], np_dt)
            bwd[blocks, tpb](_dev(g), _dev(Zin), _dev(ds), _dev(al), _dev(p["A"]), _dev(p["W1"]), _dev(p["W2T"]), _dev(p["h2"]),
                             bool(dynamics.clipped), F, B, _dev(dz0), _dev(gpar))
        else:
            _, bwd = _pl_kernels(M, np_dt)
            bwd[blocks, tpb](_dev(g), _dev(Zin), _dev(ds), _dev(al), _dev(p["A"]), _dev(p["W"]), _dev(p["relu"]), F, B, _dev(dz0), _dev(gpar))
        grows = gpar.reshape(P, E, B).sum(2).T.to(pdt)
        return grows, dz0.T.reshape(E, B, M), None, None, None


def rollout(dynamics, dyn: torch.Tensor, z0: torch.Tensor, teacher, alpha) -> torch.Tensor:
    """`plrnn_fused.rollout` on the CUDA device of ``dyn`` (or the simulator): E members' rows
    dyn (E, P), z0 (E, B, M), teacher (E, B, T, F), alpha (E, T) → Z (E, B, T, M); differentiable
    with respect to dyn and z0."""
    dev, dt = z0.device, z0.dtype
    as_t = lambda a: (torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray) else a).to(device=dev, dtype=dt)  # noqa: E731
    return _Rollout.apply(dyn, z0, dynamics, as_t(teacher), as_t(alpha))
