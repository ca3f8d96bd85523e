"""Hierarchical parameter generation: every subject's model parameters from a low-dimensional
feature vector (Brenner, Weber, Koppe & Durstewitz, ICLR 2025, arXiv 2410.04814).

A subject's parameters are one packed row θ_j (P,) in the engine's `Stack` layout (the backend's
dynamics block, then L_init and the decoder): every latent parameter, the initial-state map and the
decoder are generated. S subjects have features l (S, F); the group parameters g generate

* ``linear``: θ_j = b + P l_j for every parameter (P: (P_total, F)), the paper's linear projection;
* ``outer``: a matrix parameter W (m × n) is W_j = b_W + Σ_f l_jf u_{W,f} v_{W,f}ᵀ (U_W (m, F),
  V_W (n, F): F rank-one directions weighted by the features, (m + n)·F numbers instead of m·n·F);
  vectors (A, h1, h2) are generated linearly as above.

With F = 0 every subject's parameters are b: a group of one subject is a single fit.

``GroupLayout`` knows where each piece lives in the flat group vector g (G,), so the engine can
train g and the features as one row (the optimiser's), and `generate(g, l)` is differentiable.
"""

from __future__ import annotations

import math

import torch

from dsrecon.errors import OptionError

SCHEMES = ("linear", "outer")


class GroupLayout:
    """The group vector g (G,) of a `Stack` layout {name: (offset, shape)} of P numbers, F features
    and a scheme: b (P,) first, then the projections in the layout's order."""

    def __init__(self, layout: dict[str, tuple[int, tuple[int, ...]]], P: int, features: int, scheme: str = "linear"):
        if scheme not in SCHEMES:
            raise OptionError(f"`scheme`: unknown scheme '{scheme}' (choose {', '.join(SCHEMES)})")
        if features < 0:
            raise OptionError(f"`features` must be at least 0, got {features}")
        self.layout, self.P, self.F, self.scheme = dict(layout), int(P), int(features), scheme
        #: name → list of (piece, offset in g, shape in g)
        self.pieces: dict[str, list[tuple[str, int, tuple[int, ...]]]] = {}
        o = self.P  # g[:P] is b
        F = self.F
        for name, (_, shp) in self.layout.items():
            k = math.prod(shp)
            if scheme == "outer" and len(shp) == 2:
                m, n = shp
                self.pieces[name] = [("U", o, (m, F)), ("V", o + m * F, (n, F))]
                o += (m + n) * F
            else:
                self.pieces[name] = [("P", o, (k, F))]
                o += k * F
        self.G = o

    def describe(self) -> dict:
        return {"scheme": self.scheme, "features": self.F, "P": self.P, "G": self.G,
                "parameters": {n: list(shp) for n, (_, shp) in self.layout.items()}}

    def view(self, g: torch.Tensor, name: str, piece: str) -> torch.Tensor:
        """The piece (b, P, U or V) of parameter ``name`` in g (G,)."""
        if piece == "b":
            o, shp = self.layout[name]
            return g[o : o + math.prod(shp)].reshape(shp)
        for p, o, shp in self.pieces[name]:
            if p == piece:
                return g[o : o + math.prod(shp)].reshape(shp)
        raise KeyError(f"{name} has no piece {piece}")

    def generate(self, g: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Rows θ (S, P) of the subjects with features feats (S, F) from the group vector g (G,)."""
        S = feats.shape[0]
        b = g[: self.P]
        if self.scheme == "linear":
            Pm = g[self.P : self.G].reshape(-1, self.F) if self.F else None
            # Pm is the (P, F) matrix of every parameter's projection, in the layout's order
            if Pm is None:
                return b[None].expand(S, self.P) + feats.new_zeros(S, self.P)
            return b[None] + feats @ Pm.T
        parts = []
        for name, (o, shp) in self.layout.items():
            k = math.prod(shp)
            base = b[o : o + k][None]
            if self.F == 0:
                parts.append(base.expand(S, k) + feats.new_zeros(S, k))
            elif len(shp) == 2:
                U, V = self.view(g, name, "U"), self.view(g, name, "V")
                parts.append(base + torch.einsum("sf,mf,nf->smn", feats, U, V).reshape(S, k))
            else:
                parts.append(base + feats @ self.view(g, name, "P").T)
        return torch.cat(parts, dim=1)

    def init_vector(self, base_row: torch.Tensor, gen: torch.Generator, scale: float = 0.01) -> torch.Tensor:
        """g with b = base_row (a freshly initialised single model) and small random projections:
        N(0, scale²) entries for P; N(0, scale) for U and V (so u vᵀ is of order scale)."""
        g = torch.zeros(self.G, dtype=torch.float32)
        g[: self.P] = base_row.detach().to(torch.float32)
        if self.F == 0:
            return g
        for name in self.layout:
            for piece, o, shp in self.pieces[name]:
                k = math.prod(shp)
                s = scale if piece == "P" else math.sqrt(scale)
                g[o : o + k] = torch.randn(k, generator=gen) * s
        return g


#: standard deviation of the subjects' initial features (see `init_features`). Small, so that the
#: features move to where the data put them: started at N(0, 1) they stay near their random start
#: while the projections adapt to them, and encode nothing (docs/experiments/hierarchical.md#feature-identifiability-the-features-initial-scale-2026-12-03-one-seed;
#: in the BOLD benchmark, leave-one-subject-out R² of ρ on the features 0.05 → 0.73 / 0.81 / 0.32:
#: docs/experiments/hierarchical.md#small-initial-features-in-the-bold-benchmark-and-a-forcing-that-ends-weak-2026-12-03-seeds-0-1-2).
FEATURE_INIT_STD = 0.1

#: default λ of the group fit's low-rank penalty λ/2·(‖projections‖² + ‖features‖²)
#: (`dsrecon.training.group`; `fit-group --feature-decay`). On 10 simulated subjects × 1 000 BOLD
#: frames it raised the leave-one-subject-out R² of ρ on the features from 0.70 to 0.92 (median of
#: three seeds) and lowered the median latent D_stsp (docs/experiments/hierarchical.md#a-low-rank-penalty-on-the-features-2026-12-03-evening-seeds-0-1-2);
#: 10⁻⁴ was too weak. The penalty sums over subjects.
FEATURE_DECAY = 1e-3


def init_features(n_subjects: int, features: int, gen: torch.Generator, std: float | None = None) -> torch.Tensor:
    """Initial features (S, F): N(0, std²) entries, std `FEATURE_INIT_STD` unless given."""
    if not features:
        return torch.zeros(n_subjects, 0)
    return torch.randn(n_subjects, features, generator=gen) * (FEATURE_INIT_STD if std is None else std)
