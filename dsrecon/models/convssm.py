"""The composed generative model: latent dynamics → decoder → measurement kernel (ALGORITHMS.md §2, §5)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fnn
from torch import nn

from dsrecon.models.base import LatentDynamics
from dsrecon.models.decoders import Decoder

#: sequences up to this length are convolved by a Toeplitz matmul, longer ones by conv1d
TOEPLITZ_MAX_T = 1024


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

    def _toeplitz(self, T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """H (T−K+1, T) with H[j, j+K−1−k] = h_k, so that (H y)_j = Σ_k h_k y_{j+K−1−k}."""
        key = (T, dtype, device)
        cache = self.__dict__.setdefault("_toeplitz_cache", {})
        H = cache.get(key)
        if H is None:
            K = self.K
            h = self.taps.flip(-1).reshape(-1).to(device=device, dtype=dtype)  # h_0 … h_{K−1}
            j = torch.arange(T - K + 1, device=device)[:, None]
            k = torch.arange(K, device=device)[None, :]
            H = torch.zeros(T - K + 1, T, dtype=dtype, device=device)
            H[j, j + K - 1 - k] = h.expand(T - K + 1, K)
            cache.clear()
            cache[key] = H
        return H

    def init_state(self, d0: torch.Tensor) -> torch.Tensor:
        """Initial state from a teacher frame d0 (B, N) → (B, S)."""
        z = d0[:, : self.F]
        if self.M > self.F:
            z = torch.cat([z, d0 @ self.L_init.T], dim=1)
        return self.dynamics.init_state(z)

    def state_from_last_reliable(self, teacher: np.ndarray) -> torch.Tensor | None:
        """Initial state (1, S) from the last teacher frame (T, N) with no NaN; None if there is none."""
        ok = np.flatnonzero(np.isfinite(teacher).all(axis=1))
        if ok.size == 0:
            return None
        d0 = torch.as_tensor(teacher[ok[-1]][None], dtype=torch.float32, device=self.taps.device)
        return self.init_state(d0)

    def observe(self, Z: torch.Tensor, regressors: torch.Tensor | None = None) -> torch.Tensor:
        """Latent states (B, T, ≥M) → observations (B, T−K+1, N) (causal valid convolution)."""
        y = self.convolve(self.decoder.latent_to_obs(Z[..., : self.M]))
        reg = self.decoder.regress(regressors)
        return y if reg is None else y + reg

    def convolve(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement kernel over time: (B, T, N) → (B, T−K+1, N)."""
        B, T, N = y.shape
        K = self.K
        if K > 1 and T <= TOEPLITZ_MAX_T:
            # training-length sequences: one small matmul with the (T−K+1, T) Toeplitz matrix of the taps
            # (torch's conv1d takes ~25 ms for a 161-tap kernel on CPU; this takes microseconds)
            # one GEMM over all B·N channels: (T', T) @ (T, B·N), 3x faster than a batched matmul
            H = self._toeplitz(T, y.dtype, y.device)
            return (H @ y.transpose(0, 1).reshape(T, B * N)).reshape(-1, B, N).transpose(0, 1)
        if K > 1:
            return Fnn.conv1d(y.transpose(1, 2).reshape(B * N, 1, T), self.taps.to(y.dtype)).reshape(B, N, T - K + 1).transpose(1, 2)
        return y

    def teacher_forced(self, d: torch.Tensor, alpha: torch.Tensor | float, regressors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """GTF rollout over a teacher sequence d (B, T̃, N) (d[:, 0] finite) → (x̂ (B, T̃−K+1, N), Z (B, T̃, S))."""
        T = d.shape[1]
        z0 = self.init_state(d[:, 0])
        Z = self.dynamics.rollout(z0, T - 1, d[:, 1:, : self.F], alpha)
        Z = torch.cat([z0[:, None], Z], dim=1)
        reg = None if regressors is None else regressors[:, self.K - 1 :]
        return self.observe(Z, reg), Z

    forward = teacher_forced  # torch.func.functional_call runs a module through forward

    @torch.no_grad()
    def free_run(self, state0: torch.Tensor, n_obs_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Autonomous run giving n_obs_steps observations: T + K − 1 latent states (B, ·, S), then observe."""
        n_lat = n_obs_steps + self.K - 1
        Z = self.dynamics.rollout(state0, n_lat - 1, None, 0.0)
        Z = torch.cat([state0[:, None], Z], dim=1)
        return self.observe(Z), Z
