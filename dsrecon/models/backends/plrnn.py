"""The PLRNN family: vanilla PLRNN, shPLRNN and the clipped shPLRNN (default), docs/method.md §1.

Shapes: state z (B, M); A (M,), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dsrecon.errors import OptionError
from dsrecon.models.backends import plrnn_cuda, plrnn_fused
from dsrecon.models.base import LatentDynamics, alpha_per_step, register
from dsrecon.options import BACKEND_PANEL, option


def normalized_positive_definite(M: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """K / λ_max(K) with K = RᵀR/M + I, R ~ N(0, 1) (reference init for A and W)."""
    R = torch.randn(M, M, generator=gen, dtype=torch.float64)
    K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
    return (K / torch.linalg.eigvalsh(K).max()).float()


def uniform_init(shape: tuple[int, ...], bound: float, gen: torch.Generator | None) -> torch.Tensor:
    """Uniform in [−bound, bound] (the backends' weight init)."""
    return (torch.rand(*shape, generator=gen) * 2 - 1) * bound


class _Fused(LatentDynamics):
    """The family's fast path: the numba kernels of `plrnn_fused` on CPU (E members × B sequences;
    a single model is E = 1), those of `plrnn_cuda` on a CUDA device (or its simulator), the
    reference `LatentDynamics.rollout` elsewhere."""

    def has_fused(self, like: torch.Tensor) -> bool:
        return plrnn_cuda.available_for(like) or plrnn_fused.fused_available(like)

    def _input_layout(self) -> list:
        return [("C", (self.M, self.n_inputs))] if self.n_inputs else []

    def fused_rollout(self, rows, state0, teacher, alpha, inputs=None):
        if plrnn_cuda.available_for(rows):
            if inputs is not None:
                raise OptionError("`device` cuda does not take external inputs (`events`/`inputs`) yet: fit them with `device` cpu")
            return plrnn_cuda.rollout(self, rows, state0, teacher, alpha)
        return plrnn_fused.rollout(self, rows, state0, teacher, alpha, inputs)

    def fused_engine(self, like: torch.Tensor) -> str:
        return "cuda" if plrnn_cuda.available_for(like) else "fused"

    def rollout(self, state0, T, teacher=None, alpha=0.0, inputs=None):
        if self.has_fused(state0) and (inputs is None or plrnn_fused.fused_available(inputs)):
            if inputs is not None and self.n_inputs == 0:
                raise ValueError("inputs given to a model without an input term (fitted without inputs)")
            d = state0.new_zeros(1, state0.shape[0], T, 0) if teacher is None else teacher[None]
            return self.fused_rollout(self.pack()[None], state0[None], d, alpha_per_step(alpha, T, state0)[None],
                                      None if inputs is None else inputs[None])[0]
        return super().rollout(state0, T, teacher, alpha, inputs)


    def noisy_rollout(self, state0, T, noise, inputs=None):
        # the numba kernel adds a per-step term U to every step (the input term C s_t): the noise rides on it
        if self.has_fused(state0) and plrnn_fused.fused_available(noise) and (inputs is None or plrnn_fused.fused_available(inputs)):
            B, F = state0.shape[0], noise.shape[-1]
            add = noise.new_zeros(B, T, self.M)
            add[..., :F] = noise
            return plrnn_fused.rollout(self, self.pack()[None], state0[None], state0.new_zeros(1, B, T, 0), state0.new_zeros(1, T),
                                       None if inputs is None else inputs[None], additive=add[None])[0]
        return super().noisy_rollout(state0, T, noise, inputs)


@register("shplrnn")
class SHPLRNN(_Fused):
    """Shallow PLRNN: z' = A⊙z + W1·relu(W2 z + h2) + h1."""

    description = "shallow PLRNN: z' = A*z + W1 relu(W2 z + h2) + h1 (hidden width L)"
    clipped = False
    l2_parameters = ("W1", "W2")

    @dataclass
    class Options:
        hidden_dim: int = option(50, help="Hidden width L.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, hidden_dim: int = 50, generator: torch.Generator | None = None):
        super().__init__(latent_dim)
        M, L = self.M, int(hidden_dim)
        self.L = L
        self.A = nn.Parameter(torch.diagonal(normalized_positive_definite(M, generator)).clone())
        self.W1 = nn.Parameter(uniform_init((M, L), 1 / math.sqrt(L), generator))
        self.W2 = nn.Parameter(uniform_init((L, M), 1 / math.sqrt(M), generator))
        self.h1 = nn.Parameter(torch.zeros(M))
        h2 = uniform_init((L,), 1 / math.sqrt(L), generator) if self.clipped else torch.zeros(L)
        self.h2 = nn.Parameter(h2)

    def extra_config(self) -> dict:
        return {"hidden_dim": self.L}

    def packed_layout(self):  # the order the kernels' gradient offsets (plrnn_fused) assume; the input term last
        M, L = self.M, self.L
        return [("A", (M,)), ("W1", (M, L)), ("W2", (L, M)), ("h1", (M,)), ("h2", (L,))] + self._input_layout()

    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        pre = state @ self.W2.T
        act = torch.relu(pre + self.h2)
        if self.clipped:
            act = act - torch.relu(pre)
        return self.add_input(self.A * state + act @ self.W1.T + self.h1, inputs)

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """diag(A) + W1 diag(1[W2 z + h2 > 0] − 1[W2 z > 0]) W2 (the second term only when clipped)."""
        pre = state @ self.W2.T
        d = (pre + self.h2 > 0).to(state.dtype)
        if self.clipped:
            d = d - (pre > 0).to(state.dtype)
        J = torch.einsum("ml,bl,lk->bmk", self.W1, d, self.W2)
        return J + torch.diag_embed(self.A.expand_as(state))

    def piecewise_linear_params(self) -> dict:
        """Parameters as an (unclipped) shPLRNN, for SCYFI; the clipped form is expanded."""
        g = lambda t: t.detach().cpu().double().numpy().copy()  # noqa: E731
        A, W1, W2, h1, h2 = g(self.A), g(self.W1), g(self.W2), g(self.h1), g(self.h2)
        if self.clipped:
            W1, W2, h2 = np.concatenate([W1, -W1], 1), np.concatenate([W2, W2], 0), np.concatenate([h2, np.zeros_like(h2)])
        return {"kind": "shplrnn", "A": A, "W1": W1, "W2": W2, "h1": h1, "h2": h2}



@register("cshplrnn")
class ClippedSHPLRNN(SHPLRNN):
    """Clipped shPLRNN (default): z' = A⊙z + W1[relu(W2 z + h2) − relu(W2 z)] + h1; bounded when |A| < 1."""

    description = "clipped shallow PLRNN (default): bounded orbits when |A|<1 (hidden width L)"
    clipped = True


@register("plrnn")
class PLRNN(_Fused):
    """Vanilla PLRNN: z' = A⊙z + W φ(z) + h, W with zero diagonal; φ = relu on the last P units.

    P = M (all units piecewise-linear) is the vanilla PLRNN; P < M is the ALRNN.
    """

    description = "vanilla PLRNN: z' = A*z + W relu(z) + h (W off-diagonal)"
    l2_parameters = ("W",)

    @dataclass
    class Options:
        pwl_units: int | None = option(None, help="Number of piecewise-linear units P (default: all M).", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, pwl_units: int | None = None, generator: torch.Generator | None = None):
        super().__init__(latent_dim)
        M = self.M
        P = M if pwl_units is None else int(pwl_units)
        if not 0 <= P <= M:
            raise ValueError(f"pwl_units must be in [0, {M}], got {P}")
        self.P = P
        Kmat = normalized_positive_definite(M, generator)
        self.A = nn.Parameter(torch.diagonal(Kmat).clone())
        self.W = nn.Parameter(Kmat * (1 - torch.eye(M)))
        self.h = nn.Parameter(torch.zeros(M))
        relu = torch.zeros(M, dtype=torch.bool)
        relu[M - P :] = True
        self.register_buffer("relu_mask", relu, persistent=False)
        self.register_buffer("offdiag", 1 - torch.eye(M), persistent=False)

    def extra_config(self) -> dict:
        return {"pwl_units": self.P}

    def packed_layout(self):  # the order the kernels' gradient offsets (plrnn_fused) assume; the input term last
        return [("A", (self.M,)), ("W", (self.M, self.M)), ("h", (self.M,))] + self._input_layout()

    @property
    def relu_np(self) -> np.ndarray:
        return self.relu_mask.cpu().numpy()

    def phi(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(self.relu_mask, torch.relu(z), z)

    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        return self.add_input(self.A * state + self.phi(state) @ (self.W * self.offdiag).T + self.h, inputs)

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """diag(A) + W diag(φ'(z))."""
        dphi = torch.where(self.relu_mask, (state > 0).to(state.dtype), torch.ones_like(state))
        W = self.W * self.offdiag
        return torch.diag_embed(self.A.expand_as(state)) + W[None] * dphi[:, None, :]

    def piecewise_linear_params(self) -> dict:
        g = lambda t: t.detach().cpu().double().numpy().copy()  # noqa: E731
        return {"kind": "plrnn", "A": g(self.A), "W": g(self.W * self.offdiag), "h": g(self.h), "relu": self.relu_mask.cpu().numpy().copy()}

