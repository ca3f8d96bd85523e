"""S4D as closed-loop latent dynamics ("On the Parameterization and Initialization of Diagonal
State Space Models", Gu et al. 2022; docs/method.md §8). The closed-loop wrapper and readout are in
`_ssm.py`.

Continuous A_n = −exp(log_neg_re_n) + i·A_im_n (Re A < 0 always), ZOH with a step Δ_n per mode:
Ā = exp(Δ A), B̄ = (exp(Δ A) − 1)/A · B; output s = 2 Re(C h). Initialisations of A (n = 0 … H−1):
lin A_n = −½ + iπn, inv A_n = −½ + i(H/π)(H/(2n+1) − 1), real A_n = −(n+1);
log Δ ~ U[log 1e−3, log 1e−1]. `real=True` drops the imaginary parts (a real diagonal SSM), so the
complex-versus-real difference can be measured with one flag.

Shapes: B (H, M) and C (E, H) as real/imag pairs; hidden (B, 2H) = [Re h, Im h] (or (B, H)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dsrecon.models.backends._ssm import ComplexDiagonalSSM, DiagonalSSMOptions
from dsrecon.models.base import register
from dsrecon.options import BACKEND_PANEL, option

DT_MIN, DT_MAX = 1e-3, 1e-1  # S4D: log Δ ~ U[log 1e-3, log 1e-1]


def s4d_init(H: int, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(Re A, Im A) of the continuous diagonal A (H,) for init lin | inv | real."""
    n = torch.arange(H, dtype=torch.float32)
    if init == "lin":
        return torch.full((H,), -0.5), math.pi * n
    if init == "inv":
        return torch.full((H,), -0.5), (H / math.pi) * (H / (2 * n + 1) - 1)
    if init == "real":
        return -(n + 1), torch.zeros(H)
    raise ValueError(f"init must be lin, inv or real, got '{init}'")


@register("s4d")
class S4D(ComplexDiagonalSSM):
    """Complex diagonal S4D in closed loop: h' = Ā h + B̄ z, z' = a⊙z + W_o clip(2 Re(C h') + D z) + c."""

    description = "S4D diagonal SSM in closed loop (complex modes as real/imag pairs, ZOH; --real for the real variant)"
    out_scale = 2.0

    @dataclass
    class Options(DiagonalSSMOptions):
        init: str = option("lin", help="Initialisation of the diagonal A: lin|inv|real.", panel=BACKEND_PANEL)
        real: bool = option(False, help="Real-valued diagonal instead of complex modes.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, hidden_dim: int = 50, state_size: int = 16, init: str = "lin", real: bool = False,
                 transition: str = "diag", block: int = 4, generator: torch.Generator | None = None):
        super().__init__(latent_dim, hidden_dim, state_size, real, transition, block, generator)
        H, M, E = self.H, self.M, self.E
        re, im = s4d_init(H, init)
        self.init = init
        self.log_neg_re = nn.Parameter(torch.log(-re))
        self.A_im = nn.Parameter(im) if not self.real else None
        u = torch.rand(H, generator=generator)
        self.log_dt = nn.Parameter(math.log(DT_MIN) + u * (math.log(DT_MAX) - math.log(DT_MIN)))
        self.B_re = nn.Parameter(torch.randn(H, M, generator=generator) / math.sqrt(M))
        # C ~ N(0, ½) complex as in S4D, scaled by 1/√H so the output stays O(1) for any H
        self.C_re = nn.Parameter(torch.randn(E, H, generator=generator) * math.sqrt(0.5 / H))
        if not self.real:
            self.B_im = nn.Parameter(torch.zeros(H, M))
            self.C_im = nn.Parameter(torch.randn(E, H, generator=generator) * math.sqrt(0.5 / H))
        else:
            self.B_im = self.C_im = None

    def discrete(self):
        dt = torch.exp(self.log_dt)
        ar = -torch.exp(self.log_neg_re)
        if self.real:
            lr = torch.exp(dt * ar)
            q = (lr - 1) / ar  # ZOH: (exp(ΔA) − 1)/A
            return lr, torch.zeros_like(lr), q[:, None] * self.B_re, torch.zeros_like(self.B_re)
        ai = self.A_im
        mag = torch.exp(dt * ar)
        lr, li = mag * torch.cos(dt * ai), mag * torch.sin(dt * ai)
        den = ar**2 + ai**2
        qr = ((lr - 1) * ar + li * ai) / den  # (λ − 1)/A, complex division written out
        qi = (li * ar - (lr - 1) * ai) / den
        Br = qr[:, None] * self.B_re - qi[:, None] * self.B_im
        Bi = qr[:, None] * self.B_im + qi[:, None] * self.B_re
        return lr, li, Br, Bi

    def extra_config(self) -> dict:
        return {**super().extra_config(), "init": self.init}
