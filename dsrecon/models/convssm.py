"""The composed generative model: latent dynamics → decoder → measurement kernel (docs/method.md §2, §5)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fnn
from torch import nn

from dsrecon.models.base import LatentDynamics
from dsrecon.models.decoders import Decoder
from dsrecon.models.noise import NoiseModel

#: sequences up to this length are convolved by a Toeplitz matmul, longer ones by conv1d
TOEPLITZ_MAX_T = 1024


class ConvSSMNet(nn.Module):
    """x̂_t = B Σ_k h_k z_{t−k} (+ J r_t), z_t = F(z_{t−1}).

    The first F = min(N, M) latent units are teacher-forced by the N deconvolved regions (the first F
    of them, or for the pca decoder their F principal components); the M − F others start from
    L_init · d̂_0.
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
        #: the noise model (`dsrecon.models.noise`), estimated after fitting; None: deterministic only
        self.noise: NoiseModel | None = None

    def set_noise(self, noise: NoiseModel | None) -> "ConvSSMNet":
        """Attach (or remove) the noise model of stochastic free runs."""
        self.noise = None if noise is None else noise.to(self.taps.device)
        return self

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

    def fit_axes(self, parts) -> "ConvSSMNet":
        """Fix what the decoder takes from the training data before training (the pca decoder's
        principal axes, from the teacher signals of the prepared splits ``parts``); returns self."""
        if hasattr(self.decoder, "set_axes"):
            self.decoder.set_axes([p.teacher for p in parts])
        return self

    def forced_teacher(self, d: torch.Tensor) -> torch.Tensor:
        """The teacher of the F forced latent units from teacher signals d (..., N) → (..., F): the
        first F regions, or their principal components (P d) for the pca decoder."""
        P = getattr(self.decoder, "P", None)
        return d[..., : self.F] if P is None else d @ P.T.to(d.dtype)

    def init_state(self, d0: torch.Tensor) -> torch.Tensor:
        """Initial state from a teacher frame d0 (B, N) → (B, S)."""
        z = self.forced_teacher(d0)
        if self.M > self.F:
            z = torch.cat([z, d0 @ self.L_init.T], dim=1)
        return self.dynamics.init_state(z)

    def state_from_last_reliable(self, teacher: np.ndarray) -> torch.Tensor | None:
        """Initial state (1, S) from the last teacher frame (T, N) with no NaN; None if there is none."""
        found = self.state_from_reliable(teacher, "last")
        return None if found is None else found[0]

    def state_from_reliable(self, teacher: np.ndarray, which: str = "last") -> tuple[torch.Tensor, int] | None:
        """(initial state (1, S), its frame) from the first or last teacher frame (T, N) with no NaN;
        None if there is none."""
        ok = np.flatnonzero(np.isfinite(teacher).all(axis=1))
        if ok.size == 0:
            return None
        f = int(ok[0] if which == "first" else ok[-1])
        d0 = torch.as_tensor(teacher[f][None], dtype=torch.float32, device=self.taps.device)
        return self.init_state(d0), f

    def observe(self, Z: torch.Tensor, regressors: torch.Tensor | None = None) -> torch.Tensor:
        """Latent states (B, T, ≥M) → observations (B, T−K+1, N) (causal valid convolution)."""
        if self.M < self.N:  # B(h∗z) = h∗(Bz): fewer channels to convolve
            y = self.decoder.latent_to_obs(self.convolve(Z[..., : self.M]))
        else:
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

    def teacher_forced(self, d: torch.Tensor, alpha: torch.Tensor | float, regressors: torch.Tensor | None = None,
                       inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """GTF rollout over a teacher sequence d (B, T̃, N) (d[:, 0] finite) → (x̂ (B, T̃−K+1, N), Z (B, T̃, S)).
        inputs (B, T̃, K): the external inputs of the same frames (row 0, the initial frame's, unused)."""
        T = d.shape[1]
        z0 = self.init_state(d[:, 0])
        Z = self.dynamics.rollout(z0, T - 1, self.forced_teacher(d[:, 1:]), alpha, None if inputs is None else inputs[:, 1:])
        Z = torch.cat([z0[:, None], Z], dim=1)
        reg = None if regressors is None else regressors[:, self.K - 1 :]
        return self.observe(Z, reg), Z

    forward = teacher_forced  # torch.func.functional_call runs a module through forward

    def step_inputs(self, frame_inputs, n_obs_steps: int) -> torch.Tensor:
        """Inputs given per generated observation frame (L, K) (row f: the design at observation f)
        → the rollout inputs of `free_run` (1, n_obs_steps + K − 2, K): observation f reads latent
        state f + K − 1, so its input drives that step; the K − 1 warm-up states get zero input."""
        S = torch.as_tensor(np.asarray(frame_inputs), dtype=torch.float32)
        n_lat = n_obs_steps + self.K - 1
        u = torch.zeros(1, max(n_lat - 1, 0), S.shape[-1])
        k = min(S.shape[0], n_obs_steps)
        # latent state i (i ≥ 1) is rollout row i − 1; observation f ↔ latent f + K − 1 ↔ row f + K − 2
        if k and n_lat > 1:
            lo = self.K - 2
            if lo >= 0:
                u[0, lo : lo + k] = S[:k]
            else:  # K = 1: observation 0 is the initial state itself, its input is not used
                u[0, : k - 1] = S[1:k]
        return u

    @property
    def n_inputs(self) -> int:
        return self.dynamics.n_inputs

    @torch.no_grad()
    def free_run(self, state0: torch.Tensor, n_obs_steps: int, inputs: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, noise: NoiseModel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Free run giving n_obs_steps observations: T + K − 1 latent states (B, ·, S), then observe.

        inputs (B, L, K): the inputs of the steps after state0 (row j drives latent state j + 1);
        zero beyond the L given (without inputs: the autonomous system). With a ``generator`` the
        run is stochastic (`dsrecon.models.noise`: process noise on every step, observation noise on
        every observation, drawn from it) with ``noise`` or the model's own noise model."""
        noise = self.noise if noise is None else noise
        if generator is not None and noise is None:
            raise ValueError("a stochastic free run needs the model's noise model (estimated by fit)")
        n_lat = n_obs_steps + self.K - 1
        u = None
        if inputs is not None and n_lat > 1:
            inputs = torch.as_tensor(inputs, dtype=state0.dtype, device=state0.device)
            u = inputs.new_zeros(state0.shape[0], n_lat - 1, inputs.shape[-1])
            k = min(n_lat - 1, inputs.shape[1])
            u[:, :k] = inputs[:, :k]
        if generator is None:
            Z = self.dynamics.rollout(state0, n_lat - 1, None, 0.0, u)
        else:
            eta = noise.process((state0.shape[0], n_lat - 1), generator).to(state0)
            Z = self.dynamics.noisy_rollout(state0, n_lat - 1, eta, u)
        Z = torch.cat([state0[:, None], Z], dim=1)
        x = self.observe(Z)
        if generator is not None:
            x = x + noise.observation(tuple(x.shape[:2]), generator).to(x)
        return x, Z
