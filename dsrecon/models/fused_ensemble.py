"""Teacher-forced rollout of an ensemble of E PLRNN-family models at once: numba kernels over (E, B).

The members' parameters are stacked with a leading member dimension E and stored flat, one row per
member (see `dsrecon.training.ensemble.EnsembleNet`); the dynamics block of a row holds the
backend's parameters in `named_parameters()` order:

- shPLRNN / cshPLRNN: A (M,), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,)
- PLRNN / ALRNN:      A (M,), W (M, M) (diagonal unused), h (M,)

Layouts (member-major: each of the E·B threads reads and writes contiguous memory):

- z0: (E, B, M) initial states (t = 0);
- d: (E, B, T, N) teacher signals (noise included), NaN where missing; units 0…F−1 are forced;
- alpha: (E, T−1) forcing weight of steps 1…T−1;
- returns Z: (E, B, T, M) with Z[:, :, 0] = z0 and Z[:, :, t] = F(z̃_{t−1}) the pre-forcing state, where
  z̃_t = (1 − α_t) Z[t] + α_t d[t] on the first F units where d[t] is finite (z̃_0 = z0).

This is exactly `ConvSSMNet.teacher_forced`'s latent path, member by member. On CPU the rollout and
its backward pass (closed-form Jacobians, as in `dsrecon.models.fused`) run in numba with a
parallel loop over the E·B sequences; elsewhere (CUDA, or DSRECON_NO_FUSED=1) a batched eager
PyTorch loop computes the same thing with autograd.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

try:
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a hard dependency
    _HAVE_NUMBA = False

_FM = {"reassoc", "contract", "nsz", "arcp"}  # no 'nnan': NaN teacher entries are tested in the loop

SH_KINDS = ("shplrnn", "cshplrnn")
PL_KINDS = ("plrnn", "alrnn")


def ensemble_fused_available(device: torch.device | str) -> bool:
    return _HAVE_NUMBA and torch.device(device).type == "cpu" and not os.environ.get("DSRECON_NO_FUSED")


def dyn_size(kind: str, M: int, L: int = 0) -> int:
    """Number of dynamics parameters per member."""
    if kind in SH_KINDS:
        return M + M * L + L * M + M + L
    if kind in PL_KINDS:
        return M + M * M + M
    raise ValueError(f"no ensemble rollout for backend '{kind}'")


if _HAVE_NUMBA:

    @njit(parallel=True, fastmath=_FM, cache=True)
    def _esh_forward(z0, d, F, alpha, A, W1, W2T, h1, h2, clipped, Z, Zin):  # pragma: no cover - jitted
        E, B, M = z0.shape
        T = Z.shape[2]
        L = W2T.shape[2]
        for eb in prange(E * B):
            e = eb // B
            b = eb - e * B
            z = z0[e, b].copy()
            pre = np.empty(L, dtype=z0.dtype)
            act = np.empty(L, dtype=z0.dtype)
            for m in range(M):
                Z[e, b, 0, m] = z[m]
            for t in range(1, T):
                for l in range(L):
                    pre[l] = 0.0
                for m in range(M):
                    zm = z[m]
                    Zin[e, b, t - 1, m] = zm
                    for l in range(L):
                        pre[l] += W2T[e, m, l] * zm
                if clipped:
                    for l in range(L):
                        act[l] = max(pre[l] + h2[e, l], 0.0) - max(pre[l], 0.0)
                else:
                    for l in range(L):
                        act[l] = max(pre[l] + h2[e, l], 0.0)
                at = alpha[e, t - 1]
                for m in range(M):
                    s = 0.0
                    for l in range(L):
                        s += W1[e, m, l] * act[l]
                    v = A[e, m] * z[m] + h1[e, m] + s
                    Z[e, b, t, m] = v
                for m in range(M):
                    v = Z[e, b, t, m]
                    if m < F:
                        dv = d[e, b, t, m]
                        if not math.isnan(dv):
                            v = (1.0 - at) * v + at * dv
                    z[m] = v

    @njit(parallel=True, fastmath=_FM, cache=True)
    def _esh_backward(gZ, Zin, d, F, alpha, A, W1, W2T, h2, clipped, dz0, gpar):  # pragma: no cover - jitted
        E, B, T, M = gZ.shape
        L = W2T.shape[2]
        oW1 = M
        oW2 = M + M * L
        oh1 = M + 2 * M * L
        oh2 = oh1 + M
        for eb in prange(E * B):
            e = eb // B
            b = eb - e * B
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            pre = np.empty(L, dtype=gZ.dtype)
            u = np.empty(L, dtype=gZ.dtype)
            act = np.empty(L, dtype=gZ.dtype)
            v = np.empty(L, dtype=gZ.dtype)
            gA = np.zeros(M, dtype=gZ.dtype)
            gh1 = np.zeros(M, dtype=gZ.dtype)
            gh2 = np.zeros(L, dtype=gZ.dtype)
            gW1 = np.zeros((M, L), dtype=gZ.dtype)
            gW2T = np.zeros((M, L), dtype=gZ.dtype)
            for t in range(T - 1, 0, -1):
                at = alpha[e, t - 1]
                for l in range(L):
                    pre[l] = 0.0
                    u[l] = 0.0
                for m in range(M):
                    gn = gnext[m]
                    if m < F and not math.isnan(d[e, b, t, m]):
                        gn = gn * (1.0 - at)
                    gm = gZ[e, b, t, m] + gn
                    g[m] = gm
                    zm = Zin[e, b, t - 1, m]
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
                    gm = g[m]
                    zm = Zin[e, b, t - 1, m]
                    s = 0.0
                    for l in range(L):
                        gW1[m, l] += gm * act[l]
                        gW2T[m, l] += v[l] * zm
                        s += W2T[e, m, l] * v[l]
                    gnext[m] = A[e, m] * gm + s
            for m in range(M):
                dz0[e, b, m] = gZ[e, b, 0, m] + gnext[m]
                gpar[e, b, m] = gA[m]
                gpar[e, b, oh1 + m] = gh1[m]
                for l in range(L):
                    gpar[e, b, oW1 + m * L + l] = gW1[m, l]
                    gpar[e, b, oW2 + l * M + m] = gW2T[m, l]
            for l in range(L):
                gpar[e, b, oh2 + l] = gh2[l]

    @njit(parallel=True, fastmath=_FM, cache=True)
    def _epl_forward(z0, d, F, alpha, A, W, h, relu, Z, Zin):  # pragma: no cover - jitted
        E, B, M = z0.shape
        T = Z.shape[2]
        for eb in prange(E * B):
            e = eb // B
            b = eb - e * B
            z = z0[e, b].copy()
            ph = np.empty(M, dtype=z0.dtype)
            for m in range(M):
                Z[e, b, 0, m] = z[m]
            for t in range(1, T):
                for m in range(M):
                    zm = z[m]
                    Zin[e, b, t - 1, m] = zm
                    ph[m] = (zm if zm > 0 else 0.0) if relu[m] else zm
                at = alpha[e, t - 1]
                for m in range(M):
                    s = A[e, m] * z[m] + h[e, m]
                    for k in range(M):
                        s += W[e, m, k] * ph[k]
                    Z[e, b, t, m] = s
                for m in range(M):
                    v = Z[e, b, t, m]
                    if m < F:
                        dv = d[e, b, t, m]
                        if not math.isnan(dv):
                            v = (1.0 - at) * v + at * dv
                    z[m] = v

    @njit(parallel=True, fastmath=_FM, cache=True)
    def _epl_backward(gZ, Zin, d, F, alpha, A, WT, relu, dz0, gpar):  # pragma: no cover - jitted
        # WT[e, k, m] = W[e, m, k]: the inner loops run over m contiguously
        E, B, T, M = gZ.shape
        oW = M
        oh = M + M * M
        for eb in prange(E * B):
            e = eb // B
            b = eb - e * B
            gnext = np.zeros(M, dtype=gZ.dtype)
            g = np.empty(M, dtype=gZ.dtype)
            gA = np.zeros(M, dtype=gZ.dtype)
            gh = np.zeros(M, dtype=gZ.dtype)
            gWT = np.zeros((M, M), dtype=gZ.dtype)
            for t in range(T - 1, 0, -1):
                at = alpha[e, t - 1]
                for m in range(M):
                    gn = gnext[m]
                    if m < F and not math.isnan(d[e, b, t, m]):
                        gn = gn * (1.0 - at)
                    g[m] = gZ[e, b, t, m] + gn
                    gA[m] += g[m] * Zin[e, b, t - 1, m]
                    gh[m] += g[m]
                for k in range(M):
                    zk = Zin[e, b, t - 1, k]
                    on = (zk > 0) if relu[k] else True
                    ph = zk if on else 0.0
                    s = 0.0
                    for m in range(M):
                        gWT[k, m] += g[m] * ph
                        s += WT[e, k, m] * g[m]
                    gnext[k] = A[e, k] * g[k] + (s if on else 0.0)
            for m in range(M):
                dz0[e, b, m] = gZ[e, b, 0, m] + gnext[m]
                gpar[e, b, m] = gA[m]
                gpar[e, b, oh + m] = gh[m]
                for k in range(M):
                    gpar[e, b, oW + m * M + k] = 0.0 if k == m else gWT[k, m]


class RolloutSpec:
    """What the kernels need to know about the backend: kind, M, L (shPLRNN), relu mask (PLRNN)."""

    def __init__(self, kind: str, M: int, L: int = 0, relu: np.ndarray | None = None):
        if kind not in SH_KINDS + PL_KINDS:
            raise ValueError(f"no ensemble rollout for backend '{kind}'")
        self.kind, self.M, self.L = kind, int(M), int(L)
        self.relu = None if relu is None else np.ascontiguousarray(relu, dtype=np.bool_)
        self.clipped = kind == "cshplrnn"
        self.P = dyn_size(kind, M, L)

    def split(self, dyn: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dynamics block (E, P_dyn) → named (E, …) views."""
        E, M, L = dyn.shape[0], self.M, self.L
        out, o = {}, 0
        shapes = ([("A", (M,)), ("W1", (M, L)), ("W2", (L, M)), ("h1", (M,)), ("h2", (L,))] if self.kind in SH_KINDS
                  else [("A", (M,)), ("W", (M, M)), ("h", (M,))])
        for name, shp in shapes:
            n = int(np.prod(shp))
            out[name] = dyn[:, o : o + n].reshape(E, *shp)
            o += n
        return out


class _EnsembleRollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, dyn, spec: RolloutSpec, d_np, alpha_np, F):  # type: ignore[override]
        E, B, M = z0.shape
        T = d_np.shape[2]
        dt = z0.dtype
        p = {k: v.detach().contiguous().numpy() for k, v in spec.split(dyn.detach()).items()}
        Z = torch.empty(E, B, T, M, dtype=dt)
        Zin = torch.empty(E, B, max(T - 1, 0), M, dtype=dt)
        z0n = z0.detach().contiguous().numpy()
        if spec.kind in SH_KINDS:
            W2T = np.ascontiguousarray(p["W2"].transpose(0, 2, 1))
            _esh_forward(z0n, d_np, F, alpha_np, p["A"], p["W1"], W2T, p["h1"], p["h2"], spec.clipped, Z.numpy(), Zin.numpy())
            ctx.extra = (spec, d_np, alpha_np, F, p, W2T)
        else:
            W = p["W"] * (1.0 - np.eye(M, dtype=p["W"].dtype))
            _epl_forward(z0n, d_np, F, alpha_np, p["A"], W, p["h"], spec.relu, Z.numpy(), Zin.numpy())
            ctx.extra = (spec, d_np, alpha_np, F, p, np.ascontiguousarray(W.transpose(0, 2, 1)))
        ctx.save_for_backward(Zin)
        return Z

    @staticmethod
    def backward(ctx, gZ):  # type: ignore[override]
        (Zin,) = ctx.saved_tensors
        spec, d_np, alpha_np, F, p, Wx = ctx.extra
        E, B, T, M = gZ.shape
        dt = Zin.dtype
        dz0 = torch.empty(E, B, M, dtype=dt)
        gpar = torch.empty(E, B, spec.P, dtype=dt)
        g = gZ.to(dt).contiguous().numpy()
        if spec.kind in SH_KINDS:
            _esh_backward(g, Zin.numpy(), d_np, F, alpha_np, p["A"], p["W1"], Wx, p["h2"], spec.clipped, dz0.numpy(), gpar.numpy())
        else:
            _epl_backward(g, Zin.numpy(), d_np, F, alpha_np, p["A"], Wx, spec.relu, dz0.numpy(), gpar.numpy())
        return dz0, gpar.sum(1), None, None, None, None


def ensemble_rollout(spec: RolloutSpec, dyn: torch.Tensor, z0: torch.Tensor, d: np.ndarray | torch.Tensor,
                     alpha: np.ndarray | torch.Tensor, F: int) -> torch.Tensor:
    """Teacher-forced rollout of E members over B sequences (shapes in the module docstring).

    dyn: (E, P_dyn) dynamics parameters (differentiable); z0: (E, B, M); d: (E, B, T, ≥F) with NaN
    where missing; alpha: (E, T−1). Returns Z (E, B, T, M), differentiable w.r.t. dyn and z0.
    """
    if ensemble_fused_available(z0.device) and z0.dtype in (torch.float32, torch.float64):
        d_np = d if isinstance(d, np.ndarray) else d.detach().cpu().numpy()
        a_np = alpha if isinstance(alpha, np.ndarray) else alpha.detach().cpu().numpy()
        np_dt = np.float32 if z0.dtype == torch.float32 else np.float64
        return _EnsembleRollout.apply(z0, dyn, spec, np.ascontiguousarray(d_np, dtype=np_dt), np.ascontiguousarray(a_np, dtype=np_dt), int(F))
    return eager_ensemble_rollout(spec, dyn, z0, d, alpha, F)


def eager_ensemble_rollout(spec: RolloutSpec, dyn: torch.Tensor, z0: torch.Tensor, d, alpha, F: int) -> torch.Tensor:
    """Device-agnostic reference: a Python loop over time of batched (E, B) PyTorch steps (autograd)."""
    dev, dt = z0.device, z0.dtype
    d_t = torch.as_tensor(d, dtype=dt, device=dev)
    a_t = torch.as_tensor(alpha, dtype=dt, device=dev)
    p = spec.split(dyn)
    M = spec.M
    ok = torch.isfinite(d_t[..., :F])
    d0 = torch.nan_to_num(d_t[..., :F])
    if spec.kind in PL_KINDS:
        W = p["W"] * (1 - torch.eye(M, dtype=dt, device=dev))
        relu = torch.as_tensor(spec.relu, device=dev)
    z = z0
    out = [z0]
    for t in range(1, d_t.shape[2]):
        if spec.kind in SH_KINDS:
            pre = torch.einsum("ebm,elm->ebl", z, p["W2"])
            act = torch.relu(pre + p["h2"][:, None])
            if spec.clipped:
                act = act - torch.relu(pre)
            z = p["A"][:, None] * z + torch.einsum("ebl,eml->ebm", act, p["W1"]) + p["h1"][:, None]
        else:
            ph = torch.where(relu, torch.relu(z), z)
            z = p["A"][:, None] * z + torch.einsum("ebk,emk->ebm", ph, W) + p["h"][:, None]
        out.append(z)
        a = a_t[:, t - 1][:, None, None]
        zf = torch.where(ok[:, :, t], (1 - a) * z[..., :F] + a * d0[:, :, t], z[..., :F])
        z = torch.cat([zf, z[..., F:]], dim=-1)
    return torch.stack(out, 2)
