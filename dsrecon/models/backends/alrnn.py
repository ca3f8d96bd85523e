"""ALRNN: the almost-linear RNN ("Almost-Linear RNNs Yield Highly Interpretable Symbolic Codes in
Dynamical Systems Reconstruction", Brenner et al., NeurIPS 2024; docs/method.md §1).

z' = A ⊙ z + W φ(z) + h with φ(z)_i = z_i for the first M − P units and relu(z_i) for the last P.
It is the vanilla PLRNN with P < M piecewise-linear units, so it inherits the closed-form
Jacobian and the fused numba rollout of `plrnn.PLRNN`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsrecon.models.backends.plrnn import PLRNN
from dsrecon.models.base import register
from dsrecon.options import BACKEND_PANEL, option


@register("alrnn")
class ALRNN(PLRNN):
    """Vanilla PLRNN with only the last P units piecewise linear (``pwl_units``, default 2)."""

    description = "almost-linear RNN: PLRNN with relu on only the last P units (--pwl-units P)"

    @dataclass
    class Options:
        pwl_units: int = option(2, help="Number of piecewise-linear units P.", panel=BACKEND_PANEL)

    def __init__(self, latent_dim: int, pwl_units: int = 2, generator: torch.Generator | None = None):
        if not 0 <= int(pwl_units) <= int(latent_dim):
            raise ValueError(f"`pwl_units` must be in [0, {int(latent_dim)}] (the latent dimension), got {pwl_units}")
        super().__init__(latent_dim, pwl_units=pwl_units, generator=generator)
