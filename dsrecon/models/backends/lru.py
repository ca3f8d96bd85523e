"""LRU as closed-loop latent dynamics ("Resurrecting Recurrent Neural Networks for Long
Sequences", Orvieto et al. 2023; docs/method.md §8). The closed-loop wrapper and readout are in
`_ssm.py`.

λ = exp(−exp(ν) + i·exp(θ)) (exponential parameterisation, |λ| < 1 always); ring init: |λ|² ~
U[r_min², r_max²], arg λ ~ U[0, max_phase]; γ = sqrt(1 − |λ|²) (normalisation, trainable as
log γ); h_t = λ ⊙ h_{t−1} + γ ⊙ (B u); output s = Re(C h). B ~ N(0, 1/(2M)) and C ~ N(0, 1/H)
complex (real/imag pairs). Defaults r_min 0.4, r_max 0.99 (the paper's long-memory ring is
0.9–0.999; 0.4–0.99 keeps both fast and slow modes for a latent model sampled at TR).

Shapes: B (H, M), C (E, H) as pairs; hidden (B, 2H) = [Re h, Im h].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dsrecon.models.backends._ssm import ComplexDiagonalSSM, DiagonalSSMOptions
from dsrecon.models.base import register
from dsrecon.options import BACKEND_PANEL, option


@register("lru")
class LRU(ComplexDiagonalSSM):
    """Linear recurrent unit in closed loop: h' = λ⊙h + γ⊙(B z), z' = a⊙z + W_o clip(Re(C h') + D z) + c."""

    description = "LRU in closed loop: exponential parameterisation, ring init (r_min, r_max), gamma normalisation"

    @dataclass
    class Options(DiagonalSSMOptions):
        r_min: float = option(0.4, help="Inner radius of the eigenvalue ring init.", panel=BACKEND_PANEL)
        r_max: float = option(0.99, help="Outer radius of the eigenvalue ring init.", panel=BACKEND_PANEL)
        max_phase: float = option(2 * math.pi, help="Largest eigenvalue phase of the ring init (radians).", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, hidden_dim: int = 50, state_size: int = 16, r_min: float = 0.4, r_max: float = 0.99,
                 max_phase: float = 2 * math.pi, transition: str = "diag", block: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__(latent_dim, hidden_dim, state_size, False, transition, block, generator)
        if not 0 <= r_min < r_max < 1:
            raise ValueError(f"need 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}")
        H, M, E = self.H, self.M, self.E
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        u1 = torch.rand(H, generator=generator)
        u2 = torch.rand(H, generator=generator)
        nu = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta = torch.log(max_phase * u2.clamp_min(1e-4))
        self.nu_log = nn.Parameter(nu)
        self.theta_log = nn.Parameter(theta)
        mod = torch.exp(-torch.exp(nu))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - mod**2)))
        self.B_re = nn.Parameter(torch.randn(H, M, generator=generator) / math.sqrt(2 * M))
        self.B_im = nn.Parameter(torch.randn(H, M, generator=generator) / math.sqrt(2 * M))
        self.C_re = nn.Parameter(torch.randn(E, H, generator=generator) / math.sqrt(H))
        self.C_im = nn.Parameter(torch.randn(E, H, generator=generator) / math.sqrt(H))

    def discrete(self):
        mod = torch.exp(-torch.exp(self.nu_log))
        ang = torch.exp(self.theta_log)
        g = torch.exp(self.gamma_log)[:, None]
        return mod * torch.cos(ang), mod * torch.sin(ang), g * self.B_re, g * self.B_im

    def extra_config(self) -> dict:
        cfg = super().extra_config()
        cfg.pop("real")
        return {**cfg, "r_min": self.r_min, "r_max": self.r_max, "max_phase": self.max_phase}
