"""Linear baseline: z' = A z + b (a VAR(1)/AR model of the latent), `transition` dense or diag.

A linear map cannot produce chaos or a limit cycle that attracts from both sides; the comparison
table (benchmarks/backends.py) uses it as the floor every nonlinear backend should beat.

Teacher-forced rollouts are exact parallel scans for any forcing: GTF keeps the map linear,
z_{t+1} = A [(1 − α_t m_t) ⊙ z_t + α_t m_t ⊙ d_t] + b (m_t: finite teacher entries on the first F
units), a diagonal scan when A is diagonal and a dense matrix scan otherwise (scan.py).

Shapes: state (B, M); A (M, M) (or (M,) when diag), b (M,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsrecon.models.backends.scan import linear_scan, matrix_scan
from dsrecon.models.base import LatentDynamics, alpha_per_step, register
from dsrecon.options import BACKEND_PANEL, option


@register("linear")
class LinearAR(LatentDynamics):
    """z' = A z + b; A starts at 0.95·I (dense) or 0.95 (diag)."""

    description = "linear baseline z' = A z + b (AR(1) of the latent; transition dense or diag)"

    @dataclass
    class Options:
        transition: str = option("dense", help="Transition matrix: dense|diag.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, transition: str = "dense", generator: torch.Generator | None = None):
        super().__init__(latent_dim)
        if transition not in ("dense", "diag"):
            raise ValueError(f"transition must be dense or diag, got '{transition}'")
        self.transition = transition
        M = self.M
        if transition == "dense":
            self.A = nn.Parameter(0.95 * torch.eye(M) + 0.01 * torch.randn(M, M, generator=generator))
        else:
            self.A = nn.Parameter(torch.full((M,), 0.95))
        self.b = nn.Parameter(torch.zeros(M))

    def extra_config(self) -> dict:
        return {"transition": self.transition}

    def matrix(self) -> torch.Tensor:
        return self.A if self.transition == "dense" else torch.diag(self.A)

    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        if self.transition == "dense":
            return self.add_input(state @ self.A.T + self.b, inputs)
        return self.add_input(self.A * state + self.b, inputs)

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """A at every state (B, M, M)."""
        return self.matrix().expand(state.shape[0], self.M, self.M).clone()

    def rollout(self, state0, T, teacher=None, alpha=0.0, inputs=None):
        if T == 0:
            return super().rollout(state0, T, teacher, alpha, inputs)
        if inputs is not None and self.n_inputs == 0:
            raise ValueError("inputs given to a model without an input term (fitted without inputs)")
        bias = self.b if inputs is None else self.b + self.input_term(inputs)  # (M,) or (B, T, M): C s_t per step
        B, M = state0.shape
        # keep[t], put[t]: forcing after step t as z̃ = keep ⊙ z + put (1 and 0 where unforced)
        keep = state0.new_ones(B, T, M)
        put = state0.new_zeros(B, T, M)
        if teacher is not None:
            F = teacher.shape[-1]
            a = alpha_per_step(alpha, T, state0)[None, :, None]
            ok = torch.isfinite(teacher)
            w = torch.where(ok, a.expand_as(teacher), torch.zeros_like(teacher))
            keep = torch.cat([1 - w, keep[..., F:]], dim=2)
            put = torch.cat([w * torch.nan_to_num(teacher), put[..., F:]], dim=2)
        # out_t = A z̃_{t−1} + b with z̃_{−1} = state0: coefficient on out_{t−1} is A diag(keep_{t−1})
        drive_in = torch.cat([state0[:, None], put[:, :-1]], dim=1)  # (B, T, M)
        coef = torch.cat([torch.zeros_like(keep[:, :1]), keep[:, :-1]], dim=1)
        if self.transition == "diag":
            return linear_scan(self.A * coef, self.A * drive_in + bias)
        Am = self.A
        return matrix_scan(Am * coef[:, :, None, :], drive_in @ Am.T + bias)
