"""Observation decoders for the convSSM (docs/method.md §2).

All map latent states (B, T, M) to observations (B, T, N); because the kernel is shared across
channels, B(h∗z) = h∗(Bz), so the model decodes first and convolves the N decoded channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsrecon.errors import DsreconError, OptionError

DECODERS = ("identity", "affine", "regressor", "pca")


class Decoder(nn.Module):
    kind = ""
    #: parameters the L2 penalty (--l2) applies to
    l2_parameters: tuple[str, ...] = ()

    def __init__(self, latent_dim: int, n_obs: int, n_regressors: int = 0):
        super().__init__()
        self.M, self.N, self.R = latent_dim, n_obs, n_regressors

    def latent_to_obs(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def regress(self, r: torch.Tensor | None) -> torch.Tensor | None:
        return None


class IdentityDecoder(Decoder):
    """B = [I_N 0]: the first N latent units are the (pre-kernel) regions."""

    kind = "identity"

    def __init__(self, latent_dim: int, n_obs: int, n_regressors: int = 0):
        super().__init__(latent_dim, n_obs, n_regressors)
        if latent_dim < n_obs:
            raise DsreconError(
                f"--latent-dim {latent_dim} is smaller than the number of regions ({n_obs}); "
                "the identity decoder needs M >= N (use --decoder affine or a larger --latent-dim)"
            )

    def latent_to_obs(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., : self.N]


class AffineDecoder(Decoder):
    """x̂ = B z with a learned (N, M) matrix."""

    kind = "affine"
    l2_parameters = ("B",)

    def __init__(self, latent_dim: int, n_obs: int, n_regressors: int = 0, generator: torch.Generator | None = None):
        super().__init__(latent_dim, n_obs, n_regressors)
        B = torch.zeros(n_obs, latent_dim)
        k = min(n_obs, latent_dim)
        B[:k, :k] = torch.eye(k)  # start at the identity read-out so teacher forcing is meaningful
        B += (torch.rand(n_obs, latent_dim, generator=generator) * 2 - 1) * (0.1 / math.sqrt(latent_dim))
        self.B = nn.Parameter(B)

    def latent_to_obs(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.B.T


class RegressorDecoder(AffineDecoder):
    """x̂ = B z + J r: nuisance regressors (motion, WM/CSF signals) enter the observations directly."""

    kind = "regressor"

    def __init__(self, latent_dim: int, n_obs: int, n_regressors: int = 0, generator: torch.Generator | None = None):
        if n_regressors < 1:
            raise OptionError("`decoder` regressor needs nuisance regressors (e.g. `regressor_columns` or fMRIPrep confounds)")
        super().__init__(latent_dim, n_obs, n_regressors, generator)
        self.J = nn.Parameter(torch.zeros(n_obs, n_regressors))

    def regress(self, r: torch.Tensor | None) -> torch.Tensor | None:
        return None if r is None else r @ self.J.T


class PCADecoder(AffineDecoder):
    """x̂ = B z for M < N latent units that stand for the top M principal components of the teacher
    signals: the forced teacher of the latent units is P d̂ (P (M, N): the principal axes of the
    training split's deconvolved signals, orthonormal rows), and B starts at Pᵀ, the read-out that
    maps the components back to the regions. A whole-brain recording (N 100–400) then trains M-unit
    dynamics instead of N-unit ones; B is learned, P is fixed once from the data (`set_axes`)."""

    kind = "pca"

    def __init__(self, latent_dim: int, n_obs: int, n_regressors: int = 0, generator: torch.Generator | None = None):
        if latent_dim > n_obs:
            raise OptionError(f"`decoder` pca: `latent_dim` {latent_dim} is larger than the number of regions ({n_obs}); "
                               "the principal components are at most N")
        super().__init__(latent_dim, n_obs, n_regressors, generator)
        self.register_buffer("P", torch.zeros(latent_dim, n_obs))

    @torch.no_grad()
    def set_axes(self, teacher: torch.Tensor | list) -> "PCADecoder":
        """Fix P from the teacher signals (T, N) (or a list of them; NaN rows skipped) and start B at Pᵀ."""
        import numpy as np

        parts = [np.asarray(t, dtype=np.float64) for t in (teacher if isinstance(teacher, list) else [teacher])]
        X = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in parts])
        if X.shape[0] < 2:
            raise OptionError("`decoder` pca: no reliable teacher frames to find the principal components")
        _, _, Vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
        axes = Vt[: self.M]
        axes *= np.sign(axes[np.arange(self.M), np.abs(axes).argmax(axis=1)])[:, None]  # a reproducible sign
        self.P.copy_(torch.as_tensor(axes, dtype=self.P.dtype))
        self.B.copy_(self.P.T)
        return self


#: latent units of the pca decoder when --latent-dim is not given (at most N)
PCA_DEFAULT_LATENT_DIM = 20


def default_latent_dim(n_obs: int, decoder: str) -> int:
    """M when --latent-dim is not given: N (at least 3), or for the pca decoder min(N, PCA_DEFAULT_LATENT_DIM)."""
    return min(n_obs, PCA_DEFAULT_LATENT_DIM) if decoder == "pca" else max(n_obs, 3)


def make_decoder(kind: str, latent_dim: int, n_obs: int, n_regressors: int = 0, generator: torch.Generator | None = None) -> Decoder:
    if kind == "identity":
        return IdentityDecoder(latent_dim, n_obs, n_regressors)
    if kind == "affine":
        return AffineDecoder(latent_dim, n_obs, n_regressors, generator)
    if kind == "regressor":
        return RegressorDecoder(latent_dim, n_obs, n_regressors, generator)
    if kind == "pca":
        return PCADecoder(latent_dim, n_obs, n_regressors, generator)
    raise OptionError(f"`decoder`: unknown decoder '{kind}' (choose {', '.join(DECODERS)})")
