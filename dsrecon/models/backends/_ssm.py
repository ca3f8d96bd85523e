"""Shared machinery for the state-space backends (s4d, lru, mamba, chimera), docs/method.md §8.

A linear SSM without input only decays or oscillates, so an SSM becomes latent dynamics in
closed loop: its output is fed back as its next input. State layout (B, S), S = M + H:

    state = [z (M: the latent the kernel convolves and the decoder reads), hidden (H)]

One step with u = z_{t−1} (the forced latent during GTF, so forcing acts through the input):

    hidden_t = advance(hidden_{t−1}, u)                 (the SSM recurrence; backend-specific)
    s_t      = ssm_output(hidden_t, u)                  (E channels, e.g. 2 Re(C h_t))
    v_t      = s_t + D u                                (skip term of the SSM output)
    z_t      = a ⊙ u + W_o [relu(v_t + b_o) − relu(v_t)] + c  (+ C s_t with external inputs s_t)

External inputs enter the latent update beside the readout, so they reach the hidden recurrence as
part of the fed-back output of the next step (`LatentDynamics.add_input`).

The readout is the clipped piecewise-linear unit of the cshPLRNN (docs/method.md §1): bounded, so a
free run stays bounded whenever |a| < 1 and the recurrence is stable. a (M,) starts as the PLRNN
diagonal init, D (E, M), W_o (M, E), b_o (E,) uniform ±1/√fan-in, c = 0.

Teacher-forced rollouts: with feedback the input u_t is the forced output of step t, which depends
nonlinearly on the hidden state, so a scan cannot reproduce repeated `step` in general. The scan
is exact when forcing fixes every input: α_t = 1 on all M latent units with finite teacher values
for every step whose output feeds another step (F = M). Then u is known in advance, the recurrence
is linear (or selective with known coefficients) in the hidden state and the backends that define
`_scan` use a parallel scan (scan.py); in every other case `rollout` is repeated `step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from dsrecon.models.backends.plrnn import normalized_positive_definite, uniform_init
from dsrecon.models.backends.scan import complex_scan, linear_scan, matrix_scan
from dsrecon.models.base import LatentDynamics, alpha_per_step, all_members
from dsrecon.options import BACKEND_PANEL, option


@dataclass
class SSMOptions:
    """Options every closed-loop SSM backend has."""

    hidden_dim: int = option(50, help="SSM channels E (the width of the readout).", panel=BACKEND_PANEL)
    state_size: int = option(16, help="Hidden state size per channel (the SSM modes H or N).", panel=BACKEND_PANEL)


@dataclass
class DiagonalSSMOptions(SSMOptions):
    transition: str = option("diag", help="Hidden transition: diag|dense|block (linear: dense|diag).", panel=BACKEND_PANEL)
    block: int = option(4, help="Block size of --transition block.", panel=BACKEND_PANEL)


class ClosedLoopSSM(LatentDynamics):
    """Base class: an SSM fed back on itself, with the clipped readout described above."""

    def __init__(self, latent_dim: int, hidden_dim: int, generator: torch.Generator | None):
        super().__init__(latent_dim)
        M, E = self.M, int(hidden_dim)
        if E < 1:
            raise ValueError(f"hidden_dim must be positive, got {E}")
        self.E = E
        self.a = nn.Parameter(torch.diagonal(normalized_positive_definite(M, generator)).clone())
        self.D = nn.Parameter(uniform_init((E, M), 1 / math.sqrt(M), generator))
        self.W_o = nn.Parameter(uniform_init((M, E), 1 / math.sqrt(E), generator))
        self.b_o = nn.Parameter(uniform_init((E,), 1 / math.sqrt(E), generator))
        self.c = nn.Parameter(torch.zeros(M))

    # --- to implement -----------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    def _advance(self, u: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, M), hidden (B, H) → (hidden_t (B, H), s_t (B, E))."""
        raise NotImplementedError

    def _scan(self, u: torch.Tensor, hidden0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Known inputs u (B, T, M) from hidden0 (B, H) → (hidden (B, T, H), s (B, T, E)); None: no scan."""
        return None

    # --- the map ----------------------------------------------------------------------------
    @property
    def state_dim(self) -> int:
        return self.M + self.hidden_size

    def readout(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """z from input u (..., M) and SSM output s (..., E) → (..., M)."""
        v = s + u @ self.D.T
        return self.a * u + (torch.relu(v + self.b_o) - torch.relu(v)) @ self.W_o.T + self.c

    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        u, hidden = state[:, : self.M], state[:, self.M :]
        hidden, s = self._advance(u, hidden)
        return torch.cat([self.add_input(self.readout(u, s), inputs), hidden], dim=1)

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """∂step/∂state (B, S, S) by autograd, vectorised over the batch with torch.func."""
        f = lambda s: self.step(s[None])[0]  # noqa: E731
        return torch.func.vmap(torch.func.jacrev(f))(state.detach())

    def rollout(self, state0, T, teacher=None, alpha=0.0, inputs=None):
        if T > 0 and self._inputs_fixed(teacher, alpha, T, state0):
            u = torch.cat([state0[:, None, : self.M], teacher[:, : T - 1]], dim=1)  # (B, T, M)
            res = self._scan(u, state0[:, self.M :])
            if res is not None:
                hidden, s = res
                return torch.cat([self.add_input(self.readout(u, s), inputs), hidden], dim=2)
        with self.parameters_fixed():
            return super().rollout(state0, T, teacher, alpha, inputs)

    def parameters_fixed(self):
        """Context in which parameter-only quantities (e.g. the discretised transition) are computed
        once instead of at every step: a rollout's parameters do not change between its steps, and
        autograd then sums the gradients of all steps into the one computation."""
        return nullcontext()

    def _inputs_fixed(self, teacher, alpha, T: int, state0: torch.Tensor) -> bool:
        """True when forcing replaces every fed-back input: α = 1 and finite teacher on all M units."""
        if teacher is None or teacher.shape[-1] != self.M:
            return False
        a = alpha_per_step(alpha, T, state0)[: T - 1]
        return bool((all_members(a) == 1).all()) and bool(torch.isfinite(all_members(teacher[:, : T - 1])).all())


class ComplexDiagonalSSM(ClosedLoopSSM):
    """Linear time-invariant SSM with complex diagonal transition λ (H modes, as real/imag pairs).

    hidden = [Re h (H), Im h (H)] (or Re h only when `real`); h_t = λ ⊙ h_{t−1} + B̄ u;
    s = scale · Re(C h). transition = diag (the default), dense (a full real matrix on the hidden
    vector added to the diagonal: cross-channel mixing) or block (the same, block-diagonal with
    blocks of `block` entries). Subclasses define `discrete()` and `C_re/C_im`.
    """

    out_scale = 1.0

    def __init__(self, latent_dim, hidden_dim, state_size, real, transition, block, generator):
        super().__init__(latent_dim, hidden_dim, generator)
        self.H = int(state_size)
        if self.H < 1:
            raise ValueError(f"state_size must be positive, got {self.H}")
        self.real = bool(real)
        if transition not in ("diag", "dense", "block"):
            raise ValueError(f"transition must be diag, dense or block, got '{transition}'")
        self.transition = transition
        self.block = int(block)
        if transition != "diag":
            D = self.hidden_size
            if transition == "block":
                if self.block < 1:
                    raise ValueError(f"block must be positive, got {self.block}")
                idx = torch.arange(D) // self.block
                mask = (idx[:, None] == idx[None, :]).float()
            else:
                mask = torch.ones(D, D)
            self.register_buffer("mix_mask", mask, persistent=False)
            self.Q = nn.Parameter(torch.zeros(D, D))  # starts at the diagonal model

    @property
    def hidden_size(self) -> int:
        return self.H if self.real else 2 * self.H

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(λ_re (H,), λ_im (H,), B̄_re (H, M), B̄_im (H, M))."""
        raise NotImplementedError

    _discrete_cache: tuple[torch.Tensor, ...] | None = None

    @contextmanager
    def parameters_fixed(self):
        self._discrete_cache = self.discrete()
        try:
            yield
        finally:
            self._discrete_cache = None

    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.discrete() if self._discrete_cache is None else self._discrete_cache

    def _C(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.C_re, self.C_im

    def transition_matrix(self, lr: torch.Tensor, li: torch.Tensor) -> torch.Tensor:
        """Real matrix G (H', H') acting on the hidden vector (realified λ plus the mixing term)."""
        if self.real:
            G = torch.diag(lr)
        else:
            G = torch.cat([torch.cat([torch.diag(lr), -torch.diag(li)], 1), torch.cat([torch.diag(li), torch.diag(lr)], 1)], 0)
        if self.transition != "diag":
            G = G + self.Q * self.mix_mask
        return G

    def _drive(self, u: torch.Tensor, Br: torch.Tensor, Bi: torch.Tensor) -> torch.Tensor:
        """B̄ u as a hidden vector: u (..., M) → (..., H')."""
        if self.real:
            return u @ Br.T
        return torch.cat([u @ Br.T, u @ Bi.T], dim=-1)

    def _output(self, hidden: torch.Tensor) -> torch.Tensor:
        Cr, Ci = self._C()
        if self.real:
            return self.out_scale * hidden @ Cr.T
        H = self.H
        return self.out_scale * (hidden[..., :H] @ Cr.T - hidden[..., H:] @ Ci.T)

    def _advance(self, u, hidden):
        lr, li, Br, Bi = self._discrete()
        drive = self._drive(u, Br, Bi)
        if self.transition != "diag":
            hidden = hidden @ self.transition_matrix(lr, li).T + drive
        elif self.real:
            hidden = lr * hidden + drive
        else:
            H = self.H
            hr, hi = hidden[:, :H], hidden[:, H:]
            hidden = torch.cat([lr * hr - li * hi, lr * hi + li * hr], dim=1) + drive
        return hidden, self._output(hidden)

    def _scan(self, u, hidden0):
        lr, li, Br, Bi = self.discrete()
        drive = self._drive(u, Br, Bi)  # (B, T, H')
        B, T, D = drive.shape
        if self.transition != "diag":
            G = self.transition_matrix(lr, li).expand(B, T, D, D)
            hidden = matrix_scan(G, drive, hidden0)
        elif self.real:
            hidden = linear_scan(lr.expand(B, T, D), drive, hidden0)
        else:
            H = self.H
            a = (lr.expand(B, T, H), li.expand(B, T, H))
            hr, hi = complex_scan(a, (drive[..., :H], drive[..., H:]), (hidden0[:, :H], hidden0[:, H:]))
            hidden = torch.cat([hr, hi], dim=-1)
        return hidden, self._output(hidden)

    def init_state(self, z0: torch.Tensor) -> torch.Tensor:
        """The hidden state at its steady state for the constant input z0: h = (I − G)⁻¹ B̄ z0."""
        lr, li, Br, Bi = self.discrete()
        drive = self._drive(z0, Br, Bi)
        G = self.transition_matrix(lr, li)
        eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        hidden = torch.linalg.solve(eye - G, drive.T).T
        return torch.cat([z0, hidden], dim=1)

    def extra_config(self) -> dict:
        return {"hidden_dim": self.E, "state_size": self.H, "real": self.real, "transition": self.transition, "block": self.block}
