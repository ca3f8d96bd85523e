"""E members of one architecture as one (E, P) parameter matrix, and the optimiser over its rows.

`Stack` packs the members' parameters row by row (the dynamics block first, in the layout its fused
kernel reads) and computes every member's GTF loss in one rollout; `StackedRAdam` is RAdam with a
learning rate and a step count per row; `clip_rows_` clips each row's gradient by its own norm.
A row follows exactly the trajectory an independent fit of that member would.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.models.convssm import ConvSSMNet


class Stack:
    """E ConvSSMNets of one architecture as one (E, P) parameter matrix ``flat``.

    Row layout: the dynamics block in the backend's `packed_layout()` (what its fused kernel
    reads), then the rest of the net (L_init, decoder) in declaration order."""

    def __init__(self, nets: list[ConvSSMNet]):
        t = self.template = nets[0]
        dyn = [(f"dynamics.{n}", shp) for n, shp in t.dynamics.packed_layout()]
        assert sorted(n for n, _ in dyn) == sorted(n for n, _ in t.named_parameters() if n.startswith("dynamics."))
        rest = [(n, tuple(p.shape)) for n, p in t.named_parameters() if not n.startswith("dynamics.")]
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        o = 0
        for n, shp in dyn + rest:
            self.layout[n] = (o, shp)
            o += math.prod(shp)
        self.P, self.P_dyn = o, sum(math.prod(shp) for _, shp in dyn)
        self.device = next(t.parameters()).device
        self.flat = torch.stack([self.row_of(n) for n in nets]).to(self.device)
        l2 = {f"dynamics.{n}" for n in t.dynamics.l2_parameters} | {f"decoder.{n}" for n in t.decoder.l2_parameters}
        self.l2_mask = torch.zeros(self.P, dtype=torch.bool, device=self.device)
        for n in l2:
            o, shp = self.layout[n]
            self.l2_mask[o : o + math.prod(shp)] = True
        self.fused = t.dynamics.has_fused(self.flat)
        #: what trains the rows: "cuda" (plrnn_cuda's kernels), "fused" (the numba CPU kernels) or "vmap"
        self.engine = t.dynamics.fused_engine(self.flat) if self.fused else "vmap"

    def row_of(self, net: ConvSSMNet) -> torch.Tensor:
        params = dict(net.named_parameters())
        return torch.cat([params[n].detach().reshape(-1).to(torch.float32) for n in self.layout])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: (E', *shape)} views of the rows of ``flat`` (E', P)."""
        return {n: flat[:, o : o + math.prod(shp)].reshape(flat.shape[0], *shp) for n, (o, shp) in self.layout.items()}

    def load_into(self, net: ConvSSMNet, row: torch.Tensor) -> ConvSSMNet:
        """Copy one row (P,) into an ordinary ConvSSMNet of this architecture."""
        params = dict(net.named_parameters())
        with torch.no_grad():
            for n, v in self.views(row[None]).items():
                params[n].copy_(v[0])
        return net

    def losses(self, flat: torch.Tensor, batch: dict, alpha: torch.Tensor, l2: float, teacher_weight: float = 0.0) -> torch.Tensor:
        """Per-member GTF loss (E',) of rows ``flat`` (E', P) on their batches (E', B, …); alpha (E', T−1).
        teacher_weight λ adds λ·MSE(pre-forcing latent, teacher) over the forced units (finite teacher entries)."""
        t = self.template
        d = batch["teacher_t"]  # (E, B, T, N)
        E, B, T, N = d.shape
        if self.fused:  # the backend's kernel over all E·B sequences, then decoder and kernel as ConvSSMNet.observe
            v = self.views(flat)
            z0 = t.forced_teacher(d[:, :, 0])
            if t.M > t.F:
                z0 = torch.cat([z0, torch.einsum("ebn,ekn->ebk", d[:, :, 0], v["L_init"])], dim=-1)
            inp = batch.get("inp_t")
            Z = t.dynamics.fused_rollout(flat[:, : self.P_dyn], z0.contiguous(), t.forced_teacher(d[:, :, 1:]).contiguous(), alpha,
                                         None if inp is None else inp[:, :, 1:])
            k = t.M if "decoder.B" in v else N  # the units the decoder reads (identity: the first N)
            Z = torch.cat([z0[:, :, None, :k], Z[..., :k]], dim=2)  # (E, B, T, k)
            Zf = Z[..., : t.F]
            if "decoder.B" in v and t.M < N:  # B(h∗z) = h∗(Bz): convolve the M latent channels, then decode
                y = torch.einsum("ebtm,enm->ebtn", t.convolve(Z.reshape(E * B, T, t.M)).reshape(E, B, -1, t.M), v["decoder.B"])
            else:
                y = torch.einsum("ebtm,enm->ebtn", Z, v["decoder.B"]) if "decoder.B" in v else Z
                y = t.convolve(y.reshape(E * B, T, N)).reshape(E, B, -1, N)
            if "decoder.J" in v and batch["reg_t"] is not None:
                y = y + torch.einsum("ebtr,enr->ebtn", batch["reg_t"][:, :, t.K - 1 :], v["decoder.J"])
        else:  # any backend: its own rollout, vectorised over the members
            reg, inp = batch["reg_t"], batch.get("inp_t")
            if inp is None:
                one = lambda p, d, a, r=None: torch.func.functional_call(t, p, (d, a, r))  # noqa: E731
                args = (self.views(flat), d, alpha) + (() if reg is None else (reg,))
            elif reg is None:
                one = lambda p, d, a, u: torch.func.functional_call(t, p, (d, a, None, u))  # noqa: E731
                args = (self.views(flat), d, alpha, inp)
            else:
                one = lambda p, d, a, r, u: torch.func.functional_call(t, p, (d, a, r, u))  # noqa: E731
                args = (self.views(flat), d, alpha, reg, inp)
            y, Zs = torch.func.vmap(one)(*args)
            Zf = Zs[..., : t.F]
        m = batch["mask_t"]  # (E, B, T−K+1)
        loss = (((y - batch["x_t"]) ** 2) * m[..., None]).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2)) * N).clamp_min(1.0)
        if teacher_weight > 0:  # the teacher-space term: the latent itself held near the deconvolved data
            dt = t.forced_teacher(d)
            fin = torch.isfinite(dt)
            sq = torch.where(fin, Zf - torch.where(fin, dt, 0.0), 0.0) ** 2
            loss = loss + teacher_weight * sq.sum(dim=(1, 2, 3)) / fin.sum(dim=(1, 2, 3)).clamp_min(1)
        if l2 > 0:
            loss = loss + l2 * ((flat**2) * self.l2_mask).sum(1)
        return loss


class StackedRAdam:
    """torch.optim.RAdam (β 0.9/0.999, ε 1e-8, no weight decay) over the rows of an (E, P) matrix,
    with a learning rate and a step count per row: row e follows exactly the trajectory an
    independent RAdam on member e's parameters would (elementwise arithmetic)."""

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

    def __init__(self, E: int, P: int, device: torch.device):
        self.m = torch.zeros(E, P, device=device)
        self.v = torch.zeros(E, P, device=device)
        self.step_count = np.zeros(E, dtype=np.int64)

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, lr: np.ndarray, m: torch.Tensor, v: torch.Tensor, steps: np.ndarray) -> None:
        """One step of rows ``flat`` with moments m, v and step counts ``steps`` (updated in place)."""
        b1, b2 = self.BETA1, self.BETA2
        steps += 1
        t = steps.astype(np.float64)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2**t) / bc2
        adaptive = rho_t > 5.0
        rect = np.sqrt(np.where(adaptive, (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 1.0))
        col = lambda a: torch.as_tensor(a, dtype=flat.dtype, device=flat.device)[:, None]  # noqa: E731
        if adaptive.all():
            flat.sub_(m * col(lr / bc1) * (col(np.sqrt(bc2) * rect) / (v.sqrt() + self.EPS)))
        elif not adaptive.any():
            flat.sub_(m * col(lr / bc1))
        else:
            ad = torch.as_tensor(adaptive, device=flat.device)[:, None]
            flat.sub_(m * col(lr / bc1) * torch.where(ad, col(np.sqrt(bc2) * rect) / (v.sqrt() + self.EPS), torch.ones_like(v)))

    def reset(self, e: int) -> None:
        """Fresh moments for row e, as a new torch optimiser would have."""
        self.m[e].zero_()
        self.v[e].zero_()
        self.step_count[e] = 0


def clip_rows_(grad: torch.Tensor, max_norm: float) -> None:
    """Per-row (per-member) `clip_grad_norm_`: scale row e by min(1, max_norm / (‖g_e‖ + 1e-6))."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    grad.mul_(torch.clamp(max_norm / (norms + 1e-6), max=1.0)[:, None])
