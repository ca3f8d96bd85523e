"""One member's bookkeeping in the engine: α schedule, batch/noise stream, learning-rate scale, best
model, patience, divergence retries, collapse restores and training log (`Member`), and when a
collapsed free run calls for going back to the best model (`should_restore_best`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from dsrecon.options import TrainOptions
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.gtf import AlphaSchedule


def should_restore_best(v: dict, best_d_stsp: float, opts: TrainOptions) -> bool:
    """With --restore-on-collapse, a validation result v calls for going back to the best model: its
    free run collapsed, and the best model was a real improvement on it (D_stsp at most half of the
    collapsed run's; inf while there is no best model). Early in training every model sits near a
    fixed point; going back to one of those helps nothing and only changes the random path of the fit.
    (With --select-by connectivity the comparison is of the selection scores.)"""
    d = v.get("selection", v.get("D_stsp", float("nan")))
    return (opts.restore_on_collapse and bool(v.get("collapsed")) and math.isfinite(best_d_stsp)
            and (not math.isfinite(d) or best_d_stsp <= 0.5 * d))


class Member:
    """What is a member's own: its seed and options, α schedule, batch/noise stream, learning-rate
    scale, best model, patience, divergence retries, collapse restores and training log."""

    #: fields saved in the checkpoint as they are
    SCALARS = ("lr_scale", "divergences", "batches_done", "best_epoch", "bad_validations", "stopped_early", "failed",
               "collapse_restores", "epochs_run")

    def __init__(self, seed: int, opts: TrainOptions):
        self.seed, self.opts = int(seed), opts
        self.alpha = AlphaSchedule.from_options(opts)
        self.rng = np.random.default_rng(self.seed)
        self.lr_scale, self.divergences, self.batches_done = 1.0, 0, 0
        self.rows: list[dict] = []
        self.best_row: torch.Tensor | None = None
        self.best_score = (float("inf"), float("inf"))
        self.best_metrics = (float("nan"), float("nan"))
        self.best_epoch = self.bad_validations = self.collapse_restores = self.epochs_run = 0
        self.stopped_early = False
        self.failed: str | None = None
        self.nan_fired = False

    @property
    def active(self) -> bool:
        return not self.stopped_early and self.failed is None

    def record(self, v: dict, epoch: int, row: torch.Tensor) -> bool:
        """Book a validation result v of the model ``row`` at ``epoch``; True when the free run
        collapsed and the best model should come back (`should_restore_best`)."""
        first = v.get("selection", v["D_stsp"])  # --select-by connectivity: FCD_KS + 1 − FC_corr + D_H (validation_scores)
        score = (first if math.isfinite(first) else float("inf"), v["D_H"] if math.isfinite(v["D_H"]) else float("inf"))
        if score < self.best_score:
            self.best_score, self.best_epoch, self.bad_validations = score, epoch, 0
            self.best_metrics = (v["D_stsp"], v["D_H"])
            self.best_row = row.detach().clone()
            return False
        self.bad_validations += 1
        return should_restore_best(v, self.best_score[0], self.opts)

    def state(self) -> dict:
        return {**{k: getattr(self, k) for k in self.SCALARS}, "seed": self.seed, "rows": self.rows,
                "best_score": list(self.best_score), "best_metrics": list(self.best_metrics), "alpha": self.alpha.state(),
                "rng": ckpt.rng_state_to_json(self.rng), "has_best": self.best_row is not None}

    def load(self, st: dict, best_row: torch.Tensor | None) -> None:
        filled = lambda vals, fill: tuple(fill if x is None else x for x in vals)  # noqa: E731 (JSON writes inf/nan as null)
        for k in self.SCALARS:
            setattr(self, k, st[k])
        self.rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in st["rows"]]
        self.best_score, self.best_metrics = filled(st["best_score"], float("inf")), filled(st["best_metrics"], float("nan"))
        self.alpha.load(st["alpha"])
        self.rng = ckpt.rng_from_json(st["rng"])
        self.best_row = best_row

    def summary(self) -> dict:
        # (a best model exists once a validation was recorded; its epoch is 0 when it is the starting point)
        has = self.best_row is not None
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch if has else self.epochs_run,
                "best_val_D_stsp": self.best_metrics[0] if has else None, "best_val_D_H": self.best_metrics[1] if has else None,
                "stopped_early": self.stopped_early, "final_loss": self.rows[-1]["loss"] if self.rows else None,
                "divergence_restarts": self.divergences, "final_alpha": self.alpha.value, "collapse_restores": self.collapse_restores,
                "failed": self.failed}
