"""The GTF training loop: schedule, validation, best model, early stopping, checkpoints, resume.

One epoch = `batches_per_epoch` RAdam steps on batches of `batch_size` sequences. The learning rate
decays exponentially once per epoch from `learning_rate` to `lr_end` over `epochs`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dsrecon.errors import DivergenceError, DsreconError
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.batches import SequenceSampler
from dsrecon.training.gtf import AlphaSchedule, jacobian_growth
from dsrecon.training.prepare import PreparedData

LOG_COLUMNS = ["epoch", "loss", "alpha", "lr", "seconds", "val_D_stsp", "val_D_H"]
#: states beyond this magnitude (in z-scored units) count as a diverged free run
DIVERGENCE_BOUND = 1e4
MAX_DIVERGENCE_RETRIES = 3
#: validation compares at least this many generated steps with the data ...
VAL_MIN_STEPS = 10_000
#: ... taken from the end of a free run this long: a model whose chaos is only a transient (it
#: settles on a fixed point after 10-20 thousand steps) must not pass as a reconstruction
VAL_HORIZON = 50_000
#: a validation free run whose spread is below this fraction of the data's (every region) has
#: collapsed onto a fixed point or a tiny cycle
COLLAPSE_SPREAD = 0.05


@dataclass
class TrainOptions:
    epochs: int = 1000
    batches_per_epoch: int = 50
    batch_size: int = 16
    sequence_length: int = 200
    learning_rate: float = 1e-3
    lr_end: float = 1e-6
    alpha: str = "0.15"  # a number or "adaptive"
    sparse_tf_interval: int | None = None
    adaptive_every: int = 5
    noise: float = 0.05
    l2: float = 0.0
    grad_clip: float = 10.0
    test_fraction: float = 0.25
    val_every: int = 25
    patience: int = 20  # validations without improvement; 0 disables early stopping
    restore_on_collapse: bool = False  # a collapsed validation free run restores the best model so far (opt-in)
    min_epochs: int | None = None  # no early stop before this epoch (default: half of `epochs`)
    stsp: str = "auto"
    bins: int = 30
    gmm_var: float = 1.0
    smoothing: float = 20.0
    checkpoint_every: int = 25
    # testing hooks (not CLI options): stop after this epoch as if killed; poison a batch
    stop_after_epoch: int | None = field(default=None, repr=False)
    nan_at_batch: int | None = field(default=None, repr=False)

    def schedule(self) -> AlphaSchedule:
        if self.sparse_tf_interval:
            return AlphaSchedule("sparse", interval=self.sparse_tf_interval)
        if str(self.alpha).lower() == "adaptive":
            return AlphaSchedule("adaptive")
        try:
            a = float(self.alpha)
        except ValueError:
            raise DsreconError(f"--alpha must be a number in [0, 1] or 'adaptive', got '{self.alpha}'") from None
        if not 0.0 <= a <= 1.0:
            raise DsreconError(f"--alpha must be in [0, 1], got {a}")
        return AlphaSchedule("fixed", alpha=a)

    def public(self) -> dict:
        d = asdict(self)
        d.pop("stop_after_epoch")
        d.pop("nan_at_batch")
        return d


def should_restore_best(v: dict, best_d_stsp: float, opts: TrainOptions) -> bool:
    """With --restore-on-collapse, a validation result v calls for going back to the best model: its
    free run collapsed, and the best model was a real improvement on it (D_stsp at most half of the
    collapsed run's; inf while there is no best model). Early in training every model sits near a
    fixed point; going back to one of those helps nothing and only changes the random path of the fit."""
    d = v.get("D_stsp", float("nan"))
    return (opts.restore_on_collapse and bool(v.get("collapsed")) and math.isfinite(best_d_stsp)
            and (not math.isfinite(d) or best_d_stsp <= 0.5 * d))


class Interrupted(Exception):
    """Raised by the stop_after_epoch hook, as if the process had been killed after a checkpoint."""


def validate(net: ConvSSMNet, data: PreparedData, opts: TrainOptions, seed: int = 0) -> dict:
    """Free-run the model past the training split and compare with the observed recording.

    Used to pick the best model and to stop early; the held-out tail is what makes this a check of
    generalisation in time (the model never trained on it). Final scores follow §6 (`ConvSSM.score`).
    """
    from dsrecon.metrics.spectrum import hellinger_spectral
    from dsrecon.metrics.stsp import state_space_divergence

    if not data.test:
        return {"D_stsp": float("nan"), "D_H": float("nan"), "D_stsp_method": None}
    if next(net.parameters()).device.type != "cpu":  # free runs are sequential: the fused CPU path is faster
        net = copy.deepcopy(net).cpu()
    gens, refs, dhs, spreads = [], [], [], []
    for tr, te in zip(data.train, data.test):
        # Reference: all observed frames of the recording (training head + held-out tail), as the
        # published convSSM code validates; a 25 % tail alone covers too little of an attractor.
        # Generated: the end of a long free run past the training data. Its length estimates the
        # model's invariant distribution well (a run as short as the data leaves most occupied cells
        # empty); taking it from the end of a VAL_HORIZON-step run judges the long-term behaviour,
        # so transient chaos that later collapses onto a fixed point scores as the collapse.
        full = np.concatenate([tr.x, te.x])
        fmask = np.concatenate([tr.mask, te.mask])
        T = full.shape[0]
        n = max(T, VAL_MIN_STEPS)
        gen = generate_after(net, tr, n, total=max(VAL_HORIZON, math.ceil(1.25 * n)))
        if gen is None:
            return {"D_stsp": float("inf"), "D_H": float("nan"), "D_stsp_method": None, "diverged": True}
        gens.append(gen)
        refs.append(full[fmask])
        spreads.append(float(np.max(gen.std(0) / np.maximum(full[fmask].std(0), 1e-12))))
        if T >= 8:
            dhs.append(hellinger_spectral(gen[-T:], full, smoothing=opts.smoothing))
    ref = np.concatenate(refs)
    # Binned D_stsp needs a few reference points per occupied cell to tell models apart: with a
    # couple of thousand frames and 30^3 cells it mostly measures sampling noise, so validation
    # caps the bins at (n_ref/2)^(1/N) (10 for 2 000 frames of 3 regions); reported scores use --bins.
    bins = max(5, min(opts.bins, int((ref.shape[0] / 2) ** (1.0 / ref.shape[1]))))
    # Validation concatenates the runs (and references) of all recordings, so a mixture keeps
    # evenly spaced points of the whole set rather than the first recording's only.
    d, method = state_space_divergence(np.concatenate(gens), ref, method=opts.stsp, bins=bins, var=opts.gmm_var, seed=seed,
                                       gmm_points="even")
    return {"D_stsp": float(d), "D_H": float(np.mean(dhs)) if dhs else float("nan"), "D_stsp_method": method,
            "collapsed": max(spreads) < COLLAPSE_SPREAD}


@torch.no_grad()
def generate_after(net: ConvSSMNet, train, n: int, total: int | None = None) -> np.ndarray | None:
    """The last n of ``total`` (default 1.25·n) observations generated from the last reliable
    training teacher state; None when there is no such state or the run diverged."""
    state0 = net.state_from_last_reliable(train.teacher)
    if state0 is None:
        return None
    n_total = max(n, int(math.ceil(1.25 * n)) if total is None else int(total))
    x, Z = net.free_run(state0, n_total)
    x = x[0, n_total - n :].numpy()
    if not np.isfinite(x).all() or np.abs(Z.numpy()).max() > DIVERGENCE_BOUND:
        return None
    return x


class Trainer:
    def __init__(self, net: ConvSSMNet, data: PreparedData, opts: TrainOptions, seed: int, run_dir: Path | None = None,
                 progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None = None):
        self.net, self.data, self.opts, self.seed = net, data, opts, seed
        self.run_dir = run_dir
        self.progress = progress or (lambda *a: None)
        self.log = log or (lambda s: None)
        self.sampler = SequenceSampler(data.train, opts.sequence_length, net.K)
        self.device = next(net.parameters()).device
        self.alpha = opts.schedule()
        self.opt = torch.optim.RAdam(net.parameters(), lr=opts.learning_rate, foreach=True)
        self.gamma = (opts.lr_end / opts.learning_rate) ** (1.0 / max(opts.epochs, 1))
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.lr_scale = 1.0
        self.divergences = 0
        self.rows: list[dict] = []
        self.best_state: dict | None = None
        self.best_score = (float("inf"), float("inf"))
        self.best_epoch = 0
        self.best_metrics = (float("nan"), float("nan"))
        self.bad_validations = 0
        self.stopped_early = False
        self.batches_done = 0
        self.collapse_restores = 0
        self._nan_fired = False

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        if self.ckpt_dir is None:
            return
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        opt_t, opt_meta = ckpt.optimizer_to_flat(self.opt)
        tensors.update(opt_t)
        ckpt.save_tensors(self.ckpt_dir / "state.safetensors", tensors)
        ckpt.write_state_json(self.ckpt_dir / "state.json", {
            "epoch": self.epoch, "lr_scale": self.lr_scale, "divergences": self.divergences, "rows": self.rows,
            "best_score": list(self.best_score), "best_metrics": list(self.best_metrics), "best_epoch": self.best_epoch, "bad_validations": self.bad_validations,
            "alpha": self.alpha.state(), "rng": ckpt.rng_state_to_json(self.rng), "optimizer": opt_meta,
            "batches_done": self.batches_done, "has_best": self.best_state is not None,
            "collapse_restores": self.collapse_restores,
        })

    def load_checkpoint(self) -> bool:
        if self.ckpt_dir is None or not (self.ckpt_dir / "state.json").exists():
            return False
        st = ckpt.read_state_json(self.ckpt_dir / "state.json")
        tensors = ckpt.load_tensors(self.ckpt_dir / "state.safetensors")
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        if st["has_best"]:
            self.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        ckpt.optimizer_from_flat(self.opt, tensors, st["optimizer"])
        self.epoch, self.lr_scale, self.divergences = st["epoch"], st["lr_scale"], st["divergences"]
        self.rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in st["rows"]]
        bs = st["best_score"]
        self.best_score = tuple(float("inf") if v is None else v for v in bs)
        self.best_epoch, self.bad_validations = st["best_epoch"], st["bad_validations"]
        self.best_metrics = tuple(float("nan") if v is None else v for v in st.get("best_metrics", [None, None]))
        self.alpha.load(st["alpha"])
        self.rng = ckpt.rng_from_json(st["rng"])
        self.batches_done = st["batches_done"]
        self.collapse_restores = st.get("collapse_restores", 0)
        return True

    # ------------------------------------------------------------------ the loop
    def _lr(self) -> float:
        return self.opts.learning_rate * self.gamma**self.epoch * self.lr_scale

    def _batch_loss(self, batch: dict) -> torch.Tensor:
        o = self.opts
        d = batch["teacher"]
        x = batch["x"]
        if o.noise > 0:
            x = x + o.noise * self.rng.standard_normal(x.shape, dtype=np.float32)
            d = d + o.noise * self.rng.standard_normal(d.shape, dtype=np.float32)
        dev = self.device
        d_t = torch.from_numpy(d).to(dev)
        a = torch.from_numpy(self.alpha.weights(d.shape[1] - 1)).to(dev)
        reg = None if batch["regressors"] is None else torch.from_numpy(batch["regressors"]).to(dev)
        xhat, _ = self.net.teacher_forced(d_t, a, reg)
        m = torch.from_numpy(batch["mask"]).to(dev, xhat.dtype)[..., None]
        err = ((xhat - torch.from_numpy(x).to(dev)) ** 2 * m).sum() / (m.sum() * x.shape[-1]).clamp_min(1.0)
        if o.l2 > 0:
            err = err + o.l2 * sum((p**2).sum() for n, p in self.net.named_parameters() if n.split(".")[-1] in ("W", "W1", "W2", "B"))
        return err

    def _update_alpha(self, batch: dict) -> None:
        if self.alpha.mode == "adaptive" and self.batches_done % self.opts.adaptive_every == 0:
            G = jacobian_growth(self.net, torch.from_numpy(batch["teacher"]).to(self.device))
            self.alpha.update_adaptive(G)

    def run_epoch(self) -> float:
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        losses = []
        for b in range(self.opts.batches_per_epoch):
            batch = self.sampler.sample(self.opts.batch_size, self.rng)
            self._update_alpha(batch)
            loss = self._batch_loss(batch)
            nb = self.opts.nan_at_batch
            if nb is not None and (nb == -1 or (nb == self.batches_done and not self._nan_fired)):
                self._nan_fired = True  # a one-off fault fires once; -1 poisons every batch
                loss = loss * float("nan")
            if not torch.isfinite(loss):
                return float("nan")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.opts.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.opts.grad_clip, foreach=True)
            self.opt.step()
            self.batches_done += 1
            losses.append(loss.item())
        return float(np.mean(losses))

    def _snapshot(self) -> dict:
        return {"net": copy.deepcopy(self.net.state_dict()), "opt": copy.deepcopy(self.opt.state_dict()),
                "rng": copy.deepcopy(self.rng.bit_generator.state), "alpha": self.alpha.state(), "batches": self.batches_done}

    def _restore(self, snap: dict) -> None:
        self.net.load_state_dict(snap["net"])
        self.opt.load_state_dict(snap["opt"])
        self.rng.bit_generator.state = snap["rng"]
        self.alpha.load(snap["alpha"])
        self.batches_done = snap["batches"]

    def _restore_best(self) -> None:
        """The free run has collapsed onto a fixed point (or a tiny cycle) and the model is clearly
        worse than its best: continue from the best state with fresh optimiser moments instead of
        training on in the collapsed regime (`--restore-on-collapse`). The batch stream goes on, so
        the retried stretch sees other batches. Opt-in: on Lorenz63-BOLD one seed that had collapsed
        at epoch 425 was still collapsed at epoch 2 000 and gained from it, another recovered by itself
        without it and lost (docs/benchmarks.md, round 5)."""
        self.net.load_state_dict(self.best_state)
        self.opt.state.clear()
        self.collapse_restores += 1
        self.log(f"free run collapsed at epoch {self.epoch}: restored the best model (epoch {self.best_epoch})")

    def fit(self) -> dict:
        o = self.opts
        total = o.epochs
        while self.epoch < total:
            t0 = time.perf_counter()
            snap = self._snapshot()
            loss = self.run_epoch()
            while not math.isfinite(loss):
                self.divergences += 1
                self._restore(snap)
                if self.divergences > MAX_DIVERGENCE_RETRIES:
                    raise DivergenceError(
                        f"training diverged (non-finite loss) at epoch {self.epoch + 1} after {MAX_DIVERGENCE_RETRIES} restarts "
                        "with halved learning rates; try a smaller --learning-rate or a larger --alpha"
                    )
                self.lr_scale *= 0.5
                self.log(f"non-finite loss at epoch {self.epoch + 1}: restored the last good state, learning rate halved to {self._lr():.3g}")
                snap = self._snapshot()
                loss = self.run_epoch()
            self.epoch += 1
            row = {"epoch": self.epoch, "loss": loss, "alpha": self.alpha.value, "lr": self._lr(),
                   "seconds": time.perf_counter() - t0, "val_D_stsp": float("nan"), "val_D_H": float("nan")}
            do_val = bool(self.data.test) and (self.epoch % o.val_every == 0 or self.epoch == total)
            if do_val:
                v = validate(self.net, self.data, o, seed=self.seed)
                row["val_D_stsp"], row["val_D_H"] = v["D_stsp"], v["D_H"]
                score = (v["D_stsp"] if math.isfinite(v["D_stsp"]) else float("inf"), v["D_H"] if math.isfinite(v["D_H"]) else float("inf"))
                if score < self.best_score:
                    self.best_score, self.best_epoch, self.bad_validations = score, self.epoch, 0
                    self.best_metrics = (v["D_stsp"], v["D_H"])
                    self.best_state = copy.deepcopy(self.net.state_dict())
                else:
                    self.bad_validations += 1
                    if should_restore_best(v, self.best_score[0], o):
                        self._restore_best()
            self.rows.append(row)
            status = f"loss {loss:.4g} α {self.alpha.value:.3g}"
            if self.best_epoch:
                status += f" best D_stsp {self.best_score[0]:.3g}@{self.best_epoch}"
            self.progress(self.epoch, total, status)
            min_epochs = o.epochs // 2 if o.min_epochs is None else o.min_epochs
            # chaotic training is not monotone in D_stsp: an attractor often appears only after a
            # long plateau, so early stopping waits for half the budget (measured on Lorenz63-BOLD)
            early = do_val and o.patience > 0 and self.bad_validations >= o.patience and self.epoch >= min_epochs
            if self.epoch % o.checkpoint_every == 0 or do_val or early:
                self.save_checkpoint()
            if early:
                self.stopped_early = True
                self.log(f"early stop at epoch {self.epoch}: no validation improvement in {o.patience} checks")
                break
            if o.stop_after_epoch is not None and self.epoch >= o.stop_after_epoch:
                raise Interrupted(self.epoch)  # like a kill: whatever is not checkpointed is lost
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        return {
            "epochs_run": self.epoch, "best_epoch": self.best_epoch or self.epoch,
            "best_val_D_stsp": self.best_metrics[0] if self.best_epoch else None,
            "best_val_D_H": self.best_metrics[1] if self.best_epoch else None,
            "stopped_early": self.stopped_early, "final_loss": self.rows[-1]["loss"] if self.rows else None,
            "divergence_restarts": self.divergences, "final_alpha": self.alpha.value,
            "collapse_restores": self.collapse_restores,
        }
