"""Dendritic PLRNN ("Tractable Dendritic RNNs for Reconstructing Nonlinear Dynamical Systems",
Brenner et al., ICML 2022; docs/method.md §1): each unit's nonlinearity is a learned sum of B
shifted ReLUs (a linear spline basis expansion of the dendrites),

    z' = A ⊙ z + W φ(z) + h0,   φ(z) = Σ_b α_b relu(z − h_b),

A (M,) diagonal, W (M, M) with zero diagonal (as in the vanilla PLRNN), α (B,) basis weights
shared by all units, h_b (B, M) thresholds. Init: A and W as the PLRNN (normalised positive
definite matrix); α_b ~ U(0, 1)/B so φ starts with slopes ≤ 1; h_b ~ N(0, 1) (the teacher
signals are z-scored); h0 = 0. The Jacobian is closed form: diag(A) + W diag(Σ_b α_b 1[z > h_b]).
The teacher-forced rollout is repeated `step` (a nonlinear map has no associative scan).

Shapes: state (B, M); alpha (B_bases,); thresholds (B_bases, M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsrecon.models.backends.plrnn import normalized_positive_definite
from dsrecon.models.base import LatentDynamics, register
from dsrecon.options import BACKEND_PANEL, option


@register("dendplrnn")
class DendPLRNN(LatentDynamics):
    """z' = A⊙z + W Σ_b α_b relu(z − h_b) + h0 with ``bases`` B basis functions (default 20)."""

    description = "dendritic PLRNN: z' = A*z + W sum_b alpha_b relu(z - h_b) + h0 (--bases B)"
    l2_parameters = ("W",)

    @dataclass
    class Options:
        bases: int = option(20, help="Number of basis functions B.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, bases: int = 20, generator: torch.Generator | None = None):
        super().__init__(latent_dim)
        M, B = self.M, int(bases)
        if B < 1:
            raise ValueError(f"`bases` must be positive, got {bases}")
        self.n_bases = B
        Kmat = normalized_positive_definite(M, generator)
        self.A = nn.Parameter(torch.diagonal(Kmat).clone())
        self.W = nn.Parameter(Kmat * (1 - torch.eye(M)))
        self.h0 = nn.Parameter(torch.zeros(M))
        self.alpha = nn.Parameter(torch.rand(B, generator=generator) / B)
        self.thresholds = nn.Parameter(torch.randn(B, M, generator=generator))
        self.register_buffer("offdiag", 1 - torch.eye(M), persistent=False)

    def extra_config(self) -> dict:
        return {"bases": self.n_bases}

    def phi(self, z: torch.Tensor) -> torch.Tensor:
        """Σ_b α_b relu(z − h_b): (B, M) → (B, M)."""
        return torch.einsum("k,bkm->bm", self.alpha, torch.relu(z[:, None, :] - self.thresholds))

    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        return self.add_input(self.A * state + self.phi(state) @ (self.W * self.offdiag).T + self.h0, inputs)

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """diag(A) + W diag(φ'(z)), φ'(z) = Σ_b α_b 1[z > h_b]."""
        dphi = torch.einsum("k,bkm->bm", self.alpha, (state[:, None, :] > self.thresholds).to(state.dtype))
        W = self.W * self.offdiag
        return torch.diag_embed(self.A.expand_as(state)) + W[None] * dphi[:, None, :]
