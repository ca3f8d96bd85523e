"""The `LatentDynamics` interface every backend implements, and the backend registry.

State convention: a backend's state is a tensor of shape (B, S) with S = ``state_dim`` ≥ M. Its
first M entries are the latent z_t that the kernel convolves and the decoder reads; backends with
internal memory (SSM hidden states) append it after those M entries.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from dsrecon.errors import OptionError


class LatentDynamics(nn.Module):
    """A discrete-time map F: state_{t-1} → state_t, trainable with generalized teacher forcing."""

    #: registry name, set by @register
    name: str = ""
    #: one-line description for `dsrecon backends`
    description: str = ""

    @dataclass
    class Options:
        """The backend's constructor arguments beyond latent_dim, as `dsrecon.options.option` fields
        (type, default, help): they make its CLI flags, `dsrecon backends` and `--backend-option`."""

    #: number of external input channels K (0: autonomous); `enable_inputs` sets it
    n_inputs: int = 0

    def __init__(self, latent_dim: int):
        super().__init__()
        self.M = int(latent_dim)

    # --- external inputs (docs/method.md §1: z_t = F(z_{t−1}) + C s_t) ---------------------------
    def enable_inputs(self, n_inputs: int) -> "LatentDynamics":
        """Give the map an input term C s_t (C: (M, K), starting at 0, so a new model starts as the
        autonomous one): it is added to the latent units of every step. Registered after the
        backend's own parameters, so it comes last in `packed_layout`."""
        K = int(n_inputs)
        if K > 0:
            ref = next(self.parameters(), None)
            self.C = nn.Parameter(torch.zeros(self.M, K, dtype=torch.float32 if ref is None else ref.dtype))
            self.n_inputs = K
        return self

    def input_term(self, inputs: torch.Tensor) -> torch.Tensor:
        """C s_t for inputs (B, K) (or (..., K)) → (..., M)."""
        return inputs @ self.C.T

    def add_input(self, out: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        """A step's output (B, S) plus C s_t on its first M (latent) units; unchanged without inputs
        (a model with an input term and no inputs runs with zero input, the autonomous system)."""
        if inputs is None:
            return out
        if self.n_inputs == 0:
            raise ValueError("inputs given to a model without an input term (fitted without inputs)")
        drive = self.input_term(inputs)
        if out.shape[-1] == self.M:
            return out + drive
        return torch.cat([out[..., : self.M] + drive, out[..., self.M :]], dim=-1)

    @property
    def state_dim(self) -> int:
        return self.M

    # --- the one-step map ------------------------------------------------------------------
    def step(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """One step of the map. state: (B, S); inputs: (B, S_in) or None → (B, S)."""
        raise NotImplementedError

    def jacobian(self, state: torch.Tensor) -> torch.Tensor:
        """∂F/∂state at ``state`` (B, S) → (B, S, S). Default: autograd (backends override with closed forms).
        An additive input C s_t does not change it."""
        state = state.detach()

        def f(s: torch.Tensor) -> torch.Tensor:
            return self.step(s[None])[0]

        return torch.stack([torch.autograd.functional.jacobian(f, s) for s in state])

    def init_state(self, z0: torch.Tensor) -> torch.Tensor:
        """Full state from an initial latent z0 (B, M) (already completed for unobserved units)."""
        if self.state_dim == self.M:
            return z0
        pad = z0.new_zeros(z0.shape[0], self.state_dim - self.M)
        return torch.cat([z0, pad], dim=1)

    # --- the training path -----------------------------------------------------------------
    def rollout(
        self,
        state0: torch.Tensor,
        T: int,
        teacher: torch.Tensor | None = None,
        alpha: torch.Tensor | float = 0.0,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced rollout (reference path: repeated `step`).

        state0: (B, S) state at t = 0. teacher: (B, T, F) teacher signals for steps 1…T on the first
        F latent units, NaN where missing (no forcing there). alpha: scalar or (T,) forcing weight
        per step (sparse TF: 1 every τ steps, 0 otherwise). inputs: (B, T, S_in) or None.
        Returns the pre-forcing states (B, T, S): out[:, t] = F(z̃_{t}) with z̃ the forced state.
        z̃_t = (1−α_t) z_t + α_t d_t on the first F units where d_t is finite.
        """
        alpha_t = alpha_per_step(alpha, T, state0)
        z = state0
        outs = []
        for t in range(T):
            z = self.step(z, None if inputs is None else inputs[:, t])
            outs.append(z)
            if teacher is not None:
                z = force(z, teacher[:, t], alpha_t[t])
        return torch.stack(outs, dim=1)

    def noisy_rollout(self, state0: torch.Tensor, T: int, noise: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Free run with additive process noise (reference path: repeated `step`): z_t = F(z_{t−1}) + η_t
        on the first ``noise.shape[-1]`` latent units. state0: (B, S); noise: (B, T, F); inputs:
        (B, T, S_in) or None. Returns the states (B, T, S), noise included (the next step's input)."""
        F = noise.shape[-1]
        z, outs = state0, []
        for t in range(T):
            z = self.step(z, None if inputs is None else inputs[:, t])
            z = torch.cat([z[:, :F] + noise[:, t], z[:, F:]], dim=1)
            outs.append(z)
        return torch.stack(outs, dim=1) if outs else state0.new_zeros(state0.shape[0], 0, state0.shape[1])

    def generate(self, state0: torch.Tensor, T: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Free run of T steps from state0 → (B, T, S), driven by inputs (B, T, K) when given."""
        with torch.no_grad():
            return self.rollout(state0, T, None, 0.0, inputs)

    def extra_config(self) -> dict:
        """Constructor arguments beyond latent_dim needed to rebuild this backend."""
        return {}

    # --- the parameter layout and the fast path for E members at once -----------------------
    #: parameters the L2 penalty (--l2) applies to
    l2_parameters: tuple[str, ...] = ()

    def packed_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter, in the order of a packed row (E, P) of E members."""
        return [(n, tuple(p.shape)) for n, p in self.named_parameters()]

    def unpack(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Packed rows (E, P) → {name: (E, *shape)} views."""
        out, o = {}, 0
        for n, shp in self.packed_layout():
            k = math.prod(shp)
            out[n] = rows[:, o : o + k].reshape(rows.shape[0], *shp)
            o += k
        return out

    def pack(self) -> torch.Tensor:
        """This model's parameters as one packed row (P,) (differentiable)."""
        params = dict(self.named_parameters())
        return torch.cat([params[n].reshape(-1) for n, _ in self.packed_layout()])

    def has_fused(self, like: torch.Tensor) -> bool:
        """Whether `fused_rollout` serves tensors like ``like`` (device, dtype)."""
        return False

    def fused_rollout(self, rows: torch.Tensor, state0: torch.Tensor, teacher, alpha, inputs=None) -> torch.Tensor:
        """`rollout` of E members of this architecture at once: packed rows (E, P), state0 (E, B, S),
        teacher (E, B, T, F), alpha (E, T), inputs (E, B, T, K) or None → (E, B, T, S). Backends
        without one train E members through torch.func.vmap of `rollout`."""
        raise NotImplementedError

    def fused_engine(self, like: torch.Tensor) -> str:
        """The name of what `fused_rollout` runs on for tensors like ``like`` (recorded with a fit)."""
        return "fused"


def alpha_per_step(alpha: torch.Tensor | float, T: int, like: torch.Tensor) -> torch.Tensor:
    """The forcing weights α as a (T,) tensor (a scalar repeated over the steps), in ``like``'s dtype and device."""
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if a.ndim == 0:
        a = a.expand(T)
    if a.shape != (T,):
        raise ValueError(f"alpha must be a scalar or have shape ({T},), got {tuple(a.shape)}")
    return a


def all_members(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a `torch.func.vmap` over ensemble members (t itself outside vmap):
    a condition on it (`bool(...all())`) decides one code path for every member at once."""
    while torch._C._functorch.is_batchedtensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def force(z: torch.Tensor, d: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """GTF forcing on the first F = d.shape[-1] units: (1−α) z + α d where d is finite."""
    F = d.shape[-1]
    ok = torch.isfinite(d)
    zf = z[:, :F]
    mixed = torch.where(ok, (1 - alpha) * zf + alpha * torch.nan_to_num(d), zf)
    return torch.cat([mixed, z[:, F:]], dim=1)


_REGISTRY: dict[str, type[LatentDynamics]] = {}


def register(name: str) -> Callable[[type[LatentDynamics]], type[LatentDynamics]]:
    def deco(cls: type[LatentDynamics]) -> type[LatentDynamics]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_backends() -> dict[str, type[LatentDynamics]]:
    import dsrecon.models.backends  # noqa: F401  (registers the built-in backends)

    return dict(_REGISTRY)


def backend_option_fields() -> dict[str, list[tuple[str, object, object]]]:
    """Every backend option name → [(backend, its field, its type), …] over the registered backends
    (the CLI's backend flags)."""
    out: dict[str, list] = {}
    for name, cls in sorted(available_backends().items()):
        types = typing.get_type_hints(cls.Options)
        for f in fields(cls.Options):
            out.setdefault(f.name, []).append((name, f, types[f.name]))
    return out


def get_backend(name: str) -> type[LatentDynamics]:
    reg = available_backends()
    if name not in reg:
        raise OptionError(f"`backend`: unknown backend '{name}' (available: {', '.join(sorted(reg))})")
    return reg[name]
