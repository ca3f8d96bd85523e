"""Forcing schedules for generalized teacher forcing (docs/method.md §4)."""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.options import DEFAULT_ALPHA, TrainOptions

#: adaptive α evaluates Jacobian norms on every JACOBIAN_STRIDE-th frame of a batch
JACOBIAN_STRIDE = 4
#: default interval of sparse teacher forcing (ALRNN tutorial)
DEFAULT_SPARSE_INTERVAL = 16


class AlphaSchedule:
    """Produces the per-step forcing weights α_t for one teacher-forced rollout of T steps.

    mode "fixed": α_t = α. "sparse": α_t = 1 every τ steps (t = τ−1, 2τ−1, …), else 0.
    "adaptive": α from the Jacobian norms of data-inferred states (GTF paper), starting at 1.
    A fixed α with ``end`` (and ``epochs``) is annealed geometrically from ``alpha`` at epoch 0 to
    ``end`` at the last epoch (`at_epoch`): strong forcing while the model is poor, weak forcing
    (long free-running stretches) once it is good.
    """

    def __init__(self, mode: str = "fixed", alpha: float = DEFAULT_ALPHA, interval: int = DEFAULT_SPARSE_INTERVAL,
                 end: float | None = None, epochs: int = 1):
        self.mode = mode
        self.alpha = 1.0 if mode == "adaptive" else float(alpha)
        self.interval = int(interval)
        self.start, self.end, self.epochs = self.alpha, end, max(int(epochs), 1)

    @classmethod
    def from_options(cls, opts: TrainOptions) -> "AlphaSchedule":
        """The schedule the training options ask for (`TrainOptions.schedule`: checked)."""
        return cls(**opts.schedule())

    def at_epoch(self, epoch: int) -> None:
        """Set α for the epoch with 0-based index ``epoch`` of an annealed schedule (a function of the
        epoch alone, so a resumed fit gets the same α); other schedules are left as they are."""
        if self.mode != "fixed" or self.end is None:
            return
        frac = min(max(epoch / max(self.epochs - 1, 1), 0.0), 1.0)
        if self.start > 0 and self.end > 0:
            self.alpha = float(self.start * (self.end / self.start) ** frac)
        else:  # a geometric path needs two positive ends; to or from 0 it is linear
            self.alpha = float(self.start + (self.end - self.start) * frac)

    def weights(self, T: int) -> np.ndarray:
        if self.mode == "sparse":
            a = np.zeros(T, np.float32)
            a[self.interval - 1 :: self.interval] = 1.0
            return a
        return np.full(T, self.alpha, np.float32)

    @property
    def value(self) -> float:
        return 1.0 / self.interval if self.mode == "sparse" else self.alpha

    def update_adaptive(self, G: float) -> None:
        """α_est = max(0, 1 − 1/G); α ← α_est if larger, else 0.999 α + 0.001 α_est."""
        if not math.isfinite(G) or G <= 0:
            return
        a_est = max(0.0, 1.0 - 1.0 / G)
        self.alpha = a_est if a_est > self.alpha else 0.999 * self.alpha + 0.001 * a_est

    def state(self) -> dict:
        return {"mode": self.mode, "alpha": self.alpha, "interval": self.interval}

    def load(self, st: dict) -> None:
        self.mode, self.alpha, self.interval = st["mode"], float(st["alpha"]), int(st["interval"])


@torch.no_grad()
def jacobian_growth(net, teacher: torch.Tensor) -> float:
    """G = max over sequences of the geometric mean over time of ‖J(ẑ_t)‖₂ on data-inferred states.

    teacher: (B, T, N) with NaN where missing; states ẑ_t = init_state(d̂_t) on finite frames.
    """
    teacher = teacher[:, ::JACOBIAN_STRIDE]  # the geometric mean over time is estimated on every 4th frame
    B, T, N = teacher.shape
    flat = teacher.reshape(B * T, N)
    ok = torch.isfinite(flat).all(dim=1)
    if not ok.any():
        return float("nan")
    z = net.init_state(flat[ok])
    J = net.dynamics.jacobian(z)
    # ‖J‖₂² = λ_max(JᵀJ): a batched symmetric eigensolve is several times cheaper than an SVD
    norms = 0.5 * torch.linalg.eigvalsh(J.mT @ J)[..., -1].clamp_min(1e-24).log()
    logs = torch.full((B * T,), float("nan"), dtype=norms.dtype)
    logs[ok] = norms
    per_seq = torch.nanmean(logs.reshape(B, T), dim=1)
    return float(per_seq.nan_to_num(float("-inf")).max().exp())
