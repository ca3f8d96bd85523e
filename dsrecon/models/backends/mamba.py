"""Mamba-style selective SSM block as closed-loop latent dynamics ("Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", Gu & Dao 2023; docs/method.md §8). The closed-loop wrapper
and the bounded readout are in `_ssm.py`.

With u = z_{t−1} (M,), inner width E, state size N, conv width K:
    x = W_x u, g = W_g u                                   (in_proj, (E,) each)
    x̃ = SiLU(Σ_k w_k ⊙ x_{t−K+1+k} + b_conv)              (depthwise causal conv; the last K−1
                                                            x are the `step` cache)
    Δ = softplus(W_Δ↑ W_Δ↓ x̃ + b_Δ), B_t = W_B x̃, C_t = W_C x̃   (input-dependent, selective)
    h_t = exp(Δ A) ⊙ h_{t−1} + Δ B_t x̃                      (A = −exp(A_log), (E, N), real)
    s = (C_t · h_t + D_skip ⊙ x̃) ⊙ SiLU(g)                  (SiLU gate)
Init as Mamba: A_log = log(1 … N); Δ log-uniform in [1e−3, 1e−1] through b_Δ = softplus⁻¹(Δ);
W_Δ↑ ~ U(±R^−½) with R = dt_rank = ceil(E/16); D_skip = 1; other weights U(±1/√fan-in).

Hidden layout (B, (K−1)·E + E·N): [conv cache, oldest first ((K−1), E), h (E, N)]. With known
inputs (full forcing) the teacher-forced rollout is a parallel selective scan (scan.linear_scan on
exp(Δ_t A)); otherwise repeated `step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as Fnn
from torch import nn

from dsrecon.models.backends._ssm import ClosedLoopSSM, SSMOptions
from dsrecon.models.backends.plrnn import uniform_init
from dsrecon.models.backends.scan import linear_scan
from dsrecon.models.base import register
from dsrecon.options import BACKEND_PANEL, option

DT_MIN, DT_MAX = 1e-3, 1e-1


@register("mamba")
class Mamba(ClosedLoopSSM):
    """Selective SSM block (input-dependent Δ, B, C; depthwise causal conv; SiLU gate) in closed loop."""

    description = "Mamba-style selective SSM block in closed loop (input-dependent dt, B, C; causal conv cache; SiLU gate)"

    @dataclass
    class Options(SSMOptions):
        d_conv: int = option(4, help="Width of the depthwise causal convolution.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, hidden_dim: int = 50, state_size: int = 16, d_conv: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__(latent_dim, hidden_dim, generator)
        M, E, N, K = self.M, self.E, int(state_size), int(d_conv)
        if N < 1 or K < 1:
            raise ValueError(f"state_size and d_conv must be positive, got {N} and {K}")
        self.N, self.K = N, K
        self.R = math.ceil(E / 16)
        self.W_x = nn.Parameter(uniform_init((E, M), 1 / math.sqrt(M), generator))
        self.W_g = nn.Parameter(uniform_init((E, M), 1 / math.sqrt(M), generator))
        self.conv_w = nn.Parameter(uniform_init((E, K), 1 / math.sqrt(K), generator))
        self.conv_b = nn.Parameter(uniform_init((E,), 1 / math.sqrt(K), generator))
        self.W_dt_down = nn.Parameter(uniform_init((self.R, E), 1 / math.sqrt(E), generator))
        self.W_dt_up = nn.Parameter(uniform_init((E, self.R), self.R**-0.5, generator))
        dt = torch.exp(math.log(DT_MIN) + torch.rand(E, generator=generator) * (math.log(DT_MAX) - math.log(DT_MIN)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.W_B = nn.Parameter(uniform_init((N, E), 1 / math.sqrt(E), generator))
        self.W_C = nn.Parameter(uniform_init((N, E), 1 / math.sqrt(E), generator))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D_skip = nn.Parameter(torch.ones(E))

    @property
    def hidden_size(self) -> int:
        return (self.K - 1) * self.E + self.E * self.N

    def extra_config(self) -> dict:
        return {"hidden_dim": self.E, "state_size": self.N, "d_conv": self.K}

    def _split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = (self.K - 1) * self.E
        return hidden[..., :c].unflatten(-1, (self.K - 1, self.E)), hidden[..., c:].unflatten(-1, (self.E, self.N))

    def _selective(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x̃ (..., E) → Δ (..., E), B_t (..., N), C_t (..., N)."""
        dt = Fnn.softplus(xc @ self.W_dt_down.T @ self.W_dt_up.T + self.dt_bias)
        return dt, xc @ self.W_B.T, xc @ self.W_C.T

    def _gate_out(self, h, C, xc, g):
        return ((h * C[..., None, :]).sum(-1) + self.D_skip * xc) * Fnn.silu(g)

    def _advance(self, u, hidden):
        cache, h = self._split(hidden)
        x, g = u @ self.W_x.T, u @ self.W_g.T
        window = torch.cat([cache, x[:, None]], dim=1)  # (B, K, E)
        xc = Fnn.silu((window * self.conv_w.T).sum(1) + self.conv_b)
        dt, Bt, Ct = self._selective(xc)
        A = -torch.exp(self.A_log)
        h = torch.exp(dt[..., None] * A) * h + (dt * xc)[..., None] * Bt[:, None, :]
        s = self._gate_out(h, Ct, xc, g)
        return torch.cat([window[:, 1:].flatten(1), h.flatten(1)], dim=1), s

    def _scan(self, u, hidden0):
        B, T, _ = u.shape
        E, N, K = self.E, self.N, self.K
        cache0, h0 = self._split(hidden0)
        x, g = u @ self.W_x.T, u @ self.W_g.T
        xx = torch.cat([cache0, x], dim=1)  # (B, T+K−1, E)
        win = xx.unfold(1, K, 1)  # (B, T, E, K): window of step t
        xc = Fnn.silu((win * self.conv_w).sum(-1) + self.conv_b)
        dt, Bt, Ct = self._selective(xc)
        A = -torch.exp(self.A_log)
        a = torch.exp(dt[..., None] * A)  # (B, T, E, N)
        b = (dt * xc)[..., None] * Bt[:, :, None, :]
        h = linear_scan(a.flatten(2), b.flatten(2), h0.flatten(1)).unflatten(-1, (E, N))
        s = self._gate_out(h, Ct, xc, g)
        caches = win[..., 1:].transpose(-1, -2).flatten(2)  # (B, T, (K−1)·E), oldest first
        return torch.cat([caches, h.flatten(2)], dim=-1), s

    def init_state(self, z0: torch.Tensor) -> torch.Tensor:
        """Steady state for the constant input z0: cache = x repeated, h = Δ B x̃ / (1 − exp(Δ A))."""
        x = z0 @ self.W_x.T
        xc = Fnn.silu(x * self.conv_w.sum(1) + self.conv_b)
        dt, Bt, _ = self._selective(xc)
        A = -torch.exp(self.A_log)
        h = (dt * xc)[..., None] * Bt[:, None, :] / -torch.expm1(dt[..., None] * A)
        cache = x[:, None].expand(-1, self.K - 1, -1)
        return torch.cat([z0, cache.flatten(1), h.flatten(1)], dim=1)
