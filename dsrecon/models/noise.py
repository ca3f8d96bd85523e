"""The model's noise: what its deterministic map and kernel leave unexplained, as two Gaussians.

A fitted convSSM is a deterministic map F observed through a deterministic kernel. Recordings are
not deterministic: resting-state BOLD is driven by fluctuations the model cannot predict, and the
scanner adds measurement noise. A free run of F alone therefore settles on its attractor (for
resting-state data often a fixed point), while the data keep fluctuating. The noise model makes the
generative model stochastic, as a linear VAR with Gaussian innovations is:

    z_t = F(z_{t−1}) + η_t,   η_t ~ N(0, Σ_η)  on the F forced latent units
    x_t = B (h ∗ z)_t + ε_t,  ε_t ~ N(0, Σ_ε)  on the N regions

Both covariances are estimated once, after training, from the training split's residuals (in the
z-scored units of the fit):
- η̂_t = z(d̂_t) − F(z(d̂_{t−1})) on the forced units, for every pair of reliable teacher frames
  (d̂: the Wiener-deconvolved teacher signals, z(·): the model's initial-state map);
- Σ_ε then makes the model's covariance of the regions that of the training data (the lag-0
  moment, which FC compares): Σ_ε = C_x − C_s, projected onto the positive semi-definite matrices
  (eigenvalues at least OBS_FLOOR of the data's mean variance), where C_x is the training
  observations' covariance and C_s that of a free run driven by the process noise alone
  (SIGNAL_STEPS steps). The residuals ε̂_t = x_t − x̂_t (x̂: the observation of the teacher
  states) are the fallback when that run leaves the bounded regime. A linear VAR(1) reproduces
  C_x by construction (Yule–Walker); the residuals alone left FC 0.03–0.2 short of it on HCP
  subjects (docs/experiments/whole-brain.md).
They are stored with the weights as Cholesky factors (``noise.process_chol`` (F, F),
``noise.obs_chol`` (N, N)).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: added to the diagonal of an estimated covariance before its Cholesky factor (z-units²)
JITTER = 1e-6
#: at least this many residual vectors are needed to estimate a covariance
MIN_RESIDUALS = 10
#: steps of the process-noise-driven free run whose covariance the observation noise completes
SIGNAL_STEPS = 20_000
SIGNAL_BURN_IN = 500
#: smallest eigenvalue of the moment-matched observation noise covariance, as a fraction of the
#: data's mean variance (keeps it positive definite where the signal alone already exceeds the data)
OBS_FLOOR = 1e-3


class NoiseModel(nn.Module):
    """Cholesky factors of the process (F, F) and observation (N, N) noise covariances."""

    def __init__(self, n_forced: int, n_obs: int):
        super().__init__()
        self.register_buffer("process_chol", torch.zeros(n_forced, n_forced))
        self.register_buffer("obs_chol", torch.zeros(n_obs, n_obs))

    @classmethod
    def from_covariances(cls, process: np.ndarray, obs: np.ndarray) -> "NoiseModel":
        nm = cls(process.shape[0], obs.shape[0])
        nm.process_chol.copy_(torch.as_tensor(_chol(process), dtype=torch.float32))
        nm.obs_chol.copy_(torch.as_tensor(_chol(obs), dtype=torch.float32))
        return nm

    def process(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of η: (*shape, F)."""
        F = self.process_chol.shape[0]
        return torch.randn(*shape, F, generator=generator) @ self.process_chol.T

    def observation(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of ε: (*shape, N)."""
        N = self.obs_chol.shape[0]
        return torch.randn(*shape, N, generator=generator) @ self.obs_chol.T

    def summary(self) -> dict:
        """Per-unit noise std (mean over units) of both terms, for config.json and reports."""
        sp = torch.linalg.vector_norm(self.process_chol, dim=1)
        so = torch.linalg.vector_norm(self.obs_chol, dim=1)
        return {"process_std_mean": float(sp.mean()), "observation_std_mean": float(so.mean())}


def _chol(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    c = 0.5 * (c + c.T) + JITTER * np.eye(c.shape[0])
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:  # not positive definite in floating point: clip the eigenvalues
        w, v = np.linalg.eigh(c)
        return np.linalg.cholesky((v * np.maximum(w, JITTER)) @ v.T)


@torch.no_grad()
def residuals(net, parts) -> tuple[np.ndarray, np.ndarray]:
    """(η̂ (n, F), ε̂ (m, N)) of ``net`` (a ConvSSMNet) on the prepared training splits ``parts``
    (`dsrecon.training.batches.Prepared`: x, mask, teacher; module docstring)."""
    etas, epss = [], []
    dev = net.taps.device
    for p in parts:
        teacher = np.asarray(p.teacher)
        ok = np.isfinite(teacher).all(axis=1)
        if ok.sum() < 2:
            continue
        d = torch.as_tensor(np.nan_to_num(teacher), dtype=torch.float32, device=dev)
        Z = net.init_state(d)  # (T, S): the state each teacher frame stands for
        pair = ok[1:] & ok[:-1]
        if pair.any():
            inp = None
            if net.n_inputs and p.inputs is not None:  # row t drives the step into frame t
                inp = torch.as_tensor(np.asarray(p.inputs, np.float32)[1:], device=dev)
            pred = net.dynamics.step(Z[:-1], inp)
            etas.append((Z[1:, : net.F] - pred[:, : net.F]).cpu().numpy()[pair])
        K = net.K
        if p.x.shape[0] >= K:
            reg = None
            if p.regressors is not None:
                reg = torch.as_tensor(np.asarray(p.regressors, np.float32)[K - 1 :][None], device=dev)
            xr = net.observe(Z[None], reg)[0].cpu().numpy()  # x̂ of frames K−1 … T−1
            hist = np.convolve(ok.astype(float), np.ones(K), mode="valid") == K  # K reliable frames up to each
            good = hist & np.asarray(p.mask, bool)[K - 1 :]
            epss.append((np.asarray(p.x)[K - 1 :] - xr)[good])
    eta = np.concatenate(etas) if etas else np.empty((0, net.F))
    eps = np.concatenate(epss) if epss else np.empty((0, net.N))
    return eta, eps


def _cov(a: np.ndarray) -> np.ndarray:
    return np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _psd(c: np.ndarray, floor: float) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return (v * np.maximum(w, floor)) @ v.T


@torch.no_grad()
def signal_covariance(net, process_cov: np.ndarray, parts, seed: int = 0) -> np.ndarray | None:
    """Covariance (N, N) of the observations of a free run driven by the process noise alone
    (SIGNAL_STEPS steps after SIGNAL_BURN_IN, from the last reliable training teacher state); None
    when there is no such state or the run leaves the bounded regime."""
    start = None
    for p in reversed(parts):
        start = net.state_from_last_reliable(np.asarray(p.teacher))
        if start is not None:
            break
    if start is None:
        return None
    quiet = NoiseModel(process_cov.shape[0], net.N)
    quiet.process_chol.copy_(torch.as_tensor(_chol(process_cov), dtype=torch.float32))  # obs_chol stays 0
    x, Z = net.free_run(start, SIGNAL_STEPS + SIGNAL_BURN_IN, generator=torch.Generator().manual_seed(seed), noise=quiet)
    x = x[0, SIGNAL_BURN_IN:].cpu().numpy().astype(np.float64)
    if not np.isfinite(x).all() or float(Z.abs().max()) > 1e4:
        return None
    return _cov(x)


def estimate(net, parts) -> NoiseModel | None:
    """The NoiseModel of ``net`` on the training splits (module docstring); None when a residual set
    is too small to estimate a covariance (fewer than MIN_RESIDUALS vectors) or not finite."""
    eta, eps = residuals(net, parts)
    if eta.shape[0] < MIN_RESIDUALS or eps.shape[0] < MIN_RESIDUALS:
        return None
    if not (np.isfinite(eta).all() and np.isfinite(eps).all()):
        return None
    process = _cov(eta)
    obs = _cov(eps)
    xs = [np.asarray(p.x, np.float64)[np.asarray(p.mask, bool)] for p in parts]
    data = np.concatenate([x for x in xs if x.shape[0]]) if any(x.shape[0] for x in xs) else None
    signal = signal_covariance(net, process, parts) if data is not None and data.shape[0] > 1 else None
    if signal is not None:
        cx = _cov(data)
        obs = _psd(cx - signal, OBS_FLOOR * float(np.mean(np.diag(cx))))
    return NoiseModel.from_covariances(process, obs)
