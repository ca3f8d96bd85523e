"""The composed generative model: latent dynamics → decoder → measurement kernel (ALGORITHMS.md §2, §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as Fnn
from torch import nn

from dsrecon.models.base import LatentDynamics
from dsrecon.models.decoders import Decoder


class ConvSSMNet(nn.Module):
    """x̂_t = B Σ_k h_k z_{t−k} (+ J r_t), z_t = F(z_{t−1}).

    The first F = min(N, M) latent units are teacher-forced by the N deconvolved regions; the
    M − F others start from L_init · d̂_0.
    """

    def __init__(self, dynamics: LatentDynamics, decoder: Decoder, taps: torch.Tensor, n_obs: int):
        super().__init__()
        self.dynamics = dynamics
        self.decoder = decoder
        self.N = int(n_obs)
        self.M = dynamics.M
        self.F = min(self.N, self.M)
        self.register_buffer("taps", torch.as_tensor(taps, dtype=torch.float32).flip(0).reshape(1, 1, -1).clone())
        self.L_init = nn.Parameter(torch.zeros(max(self.M - self.F, 0), self.N))

    @property
    def K(self) -> int:
        return self.taps.shape[-1]

    def init_state(self, d0: torch.Tensor) -> torch.Tensor:
        """Initial state from a teacher frame d0 (B, N) → (B, S)."""
        z = d0[:, : self.F]
        if self.M > self.F:
            z = torch.cat([z, d0 @ self.L_init.T], dim=1)
        return self.dynamics.init_state(z)

    def observe(self, Z: torch.Tensor, regressors: torch.Tensor | None = None) -> torch.Tensor:
        """Latent states (B, T, ≥M) → observations (B, T−K+1, N) (causal valid convolution)."""
        y = self.decoder.latent_to_obs(Z[..., : self.M])  # (B, T, N)
        B, T, N = y.shape
        K = self.K
        if K > 1:
            y = Fnn.conv1d(y.transpose(1, 2).reshape(B * N, 1, T), self.taps.to(y.dtype)).reshape(B, N, T - K + 1).transpose(1, 2)
        reg = self.decoder.regress(regressors)
        if reg is not None:
            y = y + reg
        return y

    def teacher_forced(self, d: torch.Tensor, alpha: torch.Tensor | float, regressors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """GTF rollout over a teacher sequence d (B, T̃, N) (d[:, 0] finite) → (x̂ (B, T̃−K+1, N), Z (B, T̃, S))."""
        T = d.shape[1]
        z0 = self.init_state(d[:, 0])
        Z = self.dynamics.rollout(z0, T - 1, d[:, 1:, : self.F], alpha)
        Z = torch.cat([z0[:, None], Z], dim=1)
        reg = None if regressors is None else regressors[:, self.K - 1 :]
        return self.observe(Z, reg), Z

    @torch.no_grad()
    def free_run(self, state0: torch.Tensor, n_obs_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Autonomous run giving n_obs_steps observations: T + K − 1 latent states (B, ·, S), then observe."""
        n_lat = n_obs_steps + self.K - 1
        Z = self.dynamics.rollout(state0, n_lat - 1, None, 0.0)
        Z = torch.cat([state0[:, None], Z], dim=1)
        return self.observe(Z), Z
