"""The GTF training engine: E members at once (a plain fit is E = 1, `--ensemble K` is E = K).

One epoch = `batches_per_epoch` RAdam steps on batches of `batch_size` sequences. The learning rate
decays exponentially once per epoch from `learning_rate` to `lr_end` over `epochs`.

Member k is exactly the model a plain fit with its seed and α trains: its parameters are a row
of one (E, P) matrix, its batches and noise come from its own `np.random.default_rng(seed)`, its
optimiser is RAdam with its own learning rate and step count (one vectorised step over the rows),
its gradient is clipped by its own norm. What members share is the arithmetic: one rollout of
E·B sequences (the backend's fused kernel, else `torch.func.vmap` over the members), one
measurement-kernel product and one backward pass of the summed losses (the rows are disjoint, so
each member's gradient is its own). Per-member bookkeeping (validation, best model, patience,
divergence retries, collapse restores, α schedule) lives in `Member`; the loop is `Trainer.fit`.

Units: losses are mean squared errors in z-scored units; seconds are wall time of the whole step.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dsrecon._util import check_interrupt
from dsrecon.errors import DivergenceError, DsreconError
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.options import TrainOptions, choose_preset  # TrainOptions: defined with every other option; imported from here too
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.batches import SequenceSampler, normal_fill
from dsrecon.training.gtf import jacobian_growth
from dsrecon.training.prepare import PreparedData, training_samples
from dsrecon.training.pretrain import kernel_free, teacher_space
from dsrecon.training import hooks, validation
from dsrecon.training.hooks import InjectedKill, inject_faults  # noqa: F401 (the engine's interrupt; tests import it from here)
from dsrecon.training.member import Member
from dsrecon.training.stack import Stack, StackedRAdam, clip_rows_
from dsrecon.training.validation import generate_after_members, validation_scores, validation_steps

LOG_COLUMNS = ["epoch", "loss", "alpha", "lr", "seconds", "val_D_stsp", "val_D_H"]
MAX_DIVERGENCE_RETRIES = 3


# ----------------------------------------------------------------------------- the engine
class Trainer:
    """GTF training of E members (one architecture) in one computation; `fit()` returns one summary each.

    nets: the freshly built members; opts: one TrainOptions per member (they may differ only in
    ``alpha``), or one for all; seeds: one per member (its batch/noise stream and validation seed).
    With ``run_dir`` the engine checkpoints into run_dir/checkpoint and resumes from it."""

    def __init__(self, nets: list[ConvSSMNet], data: PreparedData, opts: TrainOptions | list[TrainOptions], seeds: list[int],
                 run_dir: Path | None = None, progress: Callable[[int, int, str], None] | None = None,
                 log: Callable[[str], None] | None = None):
        opts = [opts] * len(nets) if isinstance(opts, TrainOptions) else list(opts)
        # options a fit resolved are kept; any left unset take the auto preset of these data (`choose_preset`)
        n_train = training_samples(data.train)
        opts = [o.with_preset(choose_preset("auto", n_train, len(data.names))) for o in opts]
        if not nets or not (len(nets) == len(opts) == len(seeds)):
            raise ValueError("nets, opts and seeds must have one entry per member")
        if any(replace(o, alpha="0") != replace(opts[0], alpha="0") for o in opts):
            raise DsreconError("ensemble members may differ only in seed and --alpha")
        self.nets, self.data, self.o, self.run_dir = nets, data, opts[0], run_dir
        self.E = len(nets)
        self.progress = progress or (lambda *a: None)
        self.log = log or (lambda s: None)
        self.members = [Member(s, o) for s, o in zip(seeds, opts)]
        self.stack = Stack(nets)
        self.device = self.stack.device
        self.sampler = SequenceSampler(data.train, self.o.sequence_length, nets[0].K)
        self.opt = StackedRAdam(self.E, self.stack.P, self.device)
        self.gamma = (self.o.lr_end / self.o.learning_rate) ** (1.0 / max(self.o.epochs, 1))
        self.epoch = 0
        self.checkpoint_epoch: int | None = None  # the epoch the checkpoint on disk holds
        self.n_pretrain = self.o.pretraining()  # epochs of teacher-space pretraining
        self.pretrained = not self.n_pretrain  # teacher-space pretraining done (or none asked)
        self.teacher_weight = self.o.teacher_weighting(n_train)  # λ of the teacher-space term
        self._device_batches = None  # DeviceBatches, made on the first epoch of the cuda engine

    @property
    def stopped_early(self) -> bool:
        return not any(m.active for m in self.members) and any(m.stopped_early for m in self.members)

    def _say(self, e: int, msg: str) -> None:
        self.log(msg if self.E == 1 else f"member {e} (seed {self.members[e].seed}): {msg}")

    def member_net(self, e: int, row: torch.Tensor | None = None) -> ConvSSMNet:
        """Member e as an ordinary ConvSSMNet holding its current (or the given) parameters."""
        return self.stack.load_into(self.nets[e], self.stack.flat[e] if row is None else row)

    def _validate(self, e: int, generated: list | None = None) -> dict:
        """`validation_scores` of member e (the group engine validates every subject); ``generated``: its free
        runs when the device made them for all members at once."""
        m = self.members[e]
        return validation_scores(self.member_net(e), self.data, m.opts, seed=m.seed, **({} if generated is None else {"generated": generated}))

    def _lr(self, e: int) -> float:
        return self.o.learning_rate * self.gamma**self.epoch * self.members[e].lr_scale

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        """Write the checkpoint so that a kill at any moment leaves a consistent one: the tensors go
        to a new file, then state.json (written atomically) names it, then older tensor files go.
        Until state.json is replaced it still names the previous, complete tensor file."""
        if self.ckpt_dir is None:
            return
        tensors = {"flat": self.stack.flat, "opt.m": self.opt.m, "opt.v": self.opt.v}
        tensors.update({f"best.{e}": m.best_row for e, m in enumerate(self.members) if m.best_row is not None})
        batches = sum(m.batches_done for m in self.members)
        name = f"state-{self.epoch:06d}-{batches}.safetensors"
        ckpt.save_tensors(self.ckpt_dir / name, tensors)
        ckpt.write_state_json(self.ckpt_dir / "state.json", {
            "format": "dsrecon-engine/1", "epoch": self.epoch, "pretrained": self.pretrained, "members": [m.state() for m in self.members],
            "opt_steps": self.opt.step_count.tolist(), "tensors": name})
        self.checkpoint_epoch = self.epoch
        ckpt.write_live_log(self.run_dir, [m.rows for m in self.members], LOG_COLUMNS)  # a running fit can be followed
        for old in self.ckpt_dir.glob("state*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def checkpoint_on_disk(self) -> int | None:
        """The epoch of the checkpoint state.json names now (None: none yet). An interrupt can land
        after state.json was replaced and before `save_checkpoint` notes it; this reads the file."""
        if self.ckpt_dir is None or not (self.ckpt_dir / "state.json").exists():
            return self.checkpoint_epoch
        try:
            return int(ckpt.read_state_json(self.ckpt_dir / "state.json")["epoch"])
        except Exception:  # noqa: BLE001 (unreadable: what this process last wrote)
            return self.checkpoint_epoch

    def load_checkpoint(self) -> bool:
        if self.ckpt_dir is None or not (self.ckpt_dir / "state.json").exists():
            return False
        for tmp in [*self.ckpt_dir.glob(".state*.tmp"), *self.run_dir.glob(".training_log.tsv.*.tmp")]:  # a write cut off by a kill (SIGKILL mid-save)
            tmp.unlink(missing_ok=True)
        st = ckpt.read_state_json(self.ckpt_dir / "state.json")
        if st.get("format") != "dsrecon-engine/1" or len(st["members"]) != self.E:
            raise DsreconError(f"{self.ckpt_dir}: a checkpoint of another dsrecon version or ensemble size; start over with --force")
        tensors = ckpt.load_tensors(self.ckpt_dir / st["tensors"])
        dev = self.device
        self.stack.flat = tensors["flat"].to(dev)
        self.opt.m, self.opt.v = tensors["opt.m"].to(dev), tensors["opt.v"].to(dev)
        self.opt.step_count = np.asarray(st["opt_steps"], dtype=np.int64)
        for e, (m, ms) in enumerate(zip(self.members, st["members"])):
            m.load(ms, tensors[f"best.{e}"].to(dev) if ms["has_best"] else None)
        self.epoch = self.checkpoint_epoch = st["epoch"]
        self.pretrained = bool(st.get("pretrained", True))
        return True

    # ------------------------------------------------------------------ one epoch
    def _draw(self, idx: np.ndarray, flat: torch.Tensor) -> dict:
        """Every member's batch from its own rng, in the order of draws a plain fit makes (start
        indices, then an adaptive-α update on the clean teacher, then observation and teacher noise)."""
        o = self.o
        b = self.sampler.gather(np.stack([self.members[e].rng.integers(0, len(self.sampler), size=o.batch_size) for e in idx]))
        for j, e in enumerate(idx):
            m = self.members[e]
            if m.alpha.mode == "adaptive" and m.batches_done % o.adaptive_every == 0:
                net = self.member_net(e, flat[j].detach())
                m.alpha.update_adaptive(jacobian_growth(net, torch.from_numpy(b["teacher"][j]).to(self.device)))
        if o.noise > 0:
            nx, nd = np.empty_like(b["x"]), np.empty_like(b["teacher"])
            for j, e in enumerate(idx):
                normal_fill(self.members[e].rng, nx[j], nd[j])
            nx *= np.float32(o.noise)  # x + noise·n in float32, in place
            nd *= np.float32(o.noise)
            b["x"] += nx
            b["teacher"] += nd
        dev = self.device
        b["teacher_t"], b["x_t"] = torch.from_numpy(b["teacher"]).to(dev), torch.from_numpy(b["x"]).to(dev)
        b["mask_t"] = torch.from_numpy(b["mask"]).to(dev, torch.float32)
        b["reg_t"] = None if b["regressors"] is None else torch.from_numpy(b["regressors"]).to(dev)
        b["inp_t"] = None if b.get("inputs") is None else torch.from_numpy(b["inputs"]).to(dev)
        return b

    def _batches(self, idx: np.ndarray, flat: torch.Tensor, adaptive: bool):
        """The epoch's batches: `_draw` one by one, or, on the cuda engine, `DeviceBatches` (data
        on the device, host draws on threads one batch ahead; the same numbers)."""
        if self.stack.engine == "cuda" and not adaptive:
            if self._device_batches is None:
                from dsrecon.training.device_batches import DeviceBatches

                self._device_batches = DeviceBatches(self.sampler, self.device, threads=torch.get_num_threads())
            yield from self._device_batches.epoch([self.members[e].rng for e in idx], self.o.batches_per_epoch, self.o.batch_size,
                                                  self.o.noise)
            return
        while True:
            yield self._draw(idx, flat)

    def run_epoch(self, idx: np.ndarray | None = None) -> np.ndarray:
        """One epoch of the members idx (default: the active ones) → their mean losses, NaN for a
        member whose loss became non-finite (it is restored by `fit`)."""
        idx = np.array([e for e, m in enumerate(self.members) if m.active] if idx is None else idx, dtype=int)
        o = self.o
        full = idx.size == self.E
        it = torch.as_tensor(idx, device=self.device)
        flat = (self.stack.flat if full else self.stack.flat[it].clone()).requires_grad_(True)
        mom, var = (self.opt.m, self.opt.v) if full else (self.opt.m[it].clone(), self.opt.v[it].clone())
        steps = self.opt.step_count[idx].copy()
        lr = np.array([self._lr(e) for e in idx])
        T = o.sequence_length - 1
        alphas = lambda: torch.from_numpy(np.stack([self.members[e].alpha.weights(T) for e in idx])).to(self.device)  # noqa: E731
        adaptive = any(self.members[e].alpha.mode == "adaptive" for e in idx)
        alpha = None if adaptive else alphas()  # fixed and sparse schedules do not change within an epoch
        sums, bad = np.zeros(idx.size), np.zeros(idx.size, dtype=bool)
        batches = self._batches(idx, flat, adaptive)
        for _ in range(o.batches_per_epoch):
            check_interrupt()  # a Ctrl-C whose exception numba swallowed stops the fit here
            batch = next(batches)
            losses = self.stack.losses(flat, batch, alphas() if adaptive else alpha, o.l2, self.teacher_weight)
            if hooks.current().nan_at_batch is not None:
                losses = losses * torch.as_tensor(self._poison(idx), dtype=losses.dtype, device=losses.device)
            lv = losses.detach().cpu().numpy().astype(np.float64)
            bad |= ~np.isfinite(lv)
            sums += np.where(bad, 0.0, lv)
            flat.grad = None
            losses.sum().backward()
            g = flat.grad
            if bad.any():  # a diverged member is restored after the epoch; keep its NaNs out of its row
                g[torch.as_tensor(bad, device=self.device)] = 0.0
            if o.grad_clip:
                clip_rows_(g, o.grad_clip)
            self.opt.step(flat, g, lr, mom, var, steps)
            for e in idx:
                self.members[e].batches_done += 1
        batches.close()
        flat.grad = None
        flat.requires_grad_(False)
        self.opt.step_count[idx] = steps
        if not full:
            with torch.no_grad():
                self.stack.flat[it], self.opt.m[it], self.opt.v[it] = flat, mom, var
        out = sums / o.batches_per_epoch
        out[bad] = np.nan
        return out

    def _poison(self, idx: np.ndarray) -> np.ndarray:
        """The nan_at_batch testing hook: NaN for a member whose loss is to be poisoned (a one-off
        fault fires once; -1 poisons every batch), else 1."""
        nb, out = hooks.current().nan_at_batch, np.ones(idx.size)
        for j, e in enumerate(idx):
            m = self.members[e]
            if nb is not None and (nb == -1 or (nb == m.batches_done and not m.nan_fired)):
                m.nan_fired, out[j] = True, np.nan
        return out

    def _snapshot(self, idx: np.ndarray) -> dict:
        it = torch.as_tensor(idx, device=self.device)
        return {"flat": self.stack.flat[it].clone(), "m": self.opt.m[it].clone(), "v": self.opt.v[it].clone(),
                "steps": self.opt.step_count[idx].copy(), "rng": [self.members[e].rng.bit_generator.state for e in idx],  # (a new dict each read)
                "alpha": [self.members[e].alpha.state() for e in idx], "batches": [self.members[e].batches_done for e in idx]}

    def _restore(self, snap: dict, idx: np.ndarray, which: np.ndarray) -> None:
        """Restore the members idx[which] from a snapshot taken over idx."""
        for j in np.flatnonzero(which):
            e, m = idx[j], self.members[idx[j]]
            with torch.no_grad():
                self.stack.flat[e], self.opt.m[e], self.opt.v[e] = snap["flat"][j], snap["m"][j], snap["v"][j]
            self.opt.step_count[e] = snap["steps"][j]
            m.rng.bit_generator.state = copy.deepcopy(snap["rng"][j])
            m.alpha.load(snap["alpha"][j])
            m.batches_done = snap["batches"][j]

    def _epoch_with_retries(self, idx: np.ndarray) -> np.ndarray:
        """`run_epoch`; a member whose loss became non-finite is restored to the epoch's start and
        redoes it with a halved learning rate, at most MAX_DIVERGENCE_RETRIES times in the fit."""
        snap = self._snapshot(idx)
        losses = self.run_epoch(idx)
        todo = ~np.isfinite(losses)
        while todo.any():
            self._restore(snap, idx, todo)
            redo = []
            for e in idx[todo]:
                m = self.members[e]
                m.divergences += 1
                if m.divergences > MAX_DIVERGENCE_RETRIES:
                    m.failed = (f"training diverged (non-finite loss) at epoch {self.epoch + 1} after {MAX_DIVERGENCE_RETRIES} "
                                "restarts with halved learning rates")
                    self._say(e, m.failed)
                else:
                    m.lr_scale *= 0.5
                    redo.append(e)
                    self._say(e, f"non-finite loss at epoch {self.epoch + 1}: restored the last good state, learning rate halved to {self._lr(e):.3g}")
            if not redo:
                break
            snap = self._snapshot(idx)  # (the members not redone are unchanged by the restore)
            again = self.run_epoch(np.array(redo))
            pos = {e: j for j, e in enumerate(idx)}
            todo = np.zeros(idx.size, dtype=bool)
            for e, v in zip(redo, again):
                losses[pos[e]], todo[pos[e]] = v, not math.isfinite(v)
        return losses

    def _restore_best(self, e: int) -> None:
        """The free run has collapsed onto a fixed point (or a tiny cycle) and the model is clearly
        worse than its best: continue from the best state with fresh optimiser moments instead of
        training on in the collapsed regime (`--restore-on-collapse`). The batch stream goes on, so
        the retried stretch sees other batches. Opt-in: on Lorenz63-BOLD one seed that had collapsed
        at epoch 425 was still collapsed at epoch 2 000 and gained from it, another recovered by itself
        without it and lost (docs/experiments/lorenz-bold-reconstruction.md#round-5-2026-12-01-what-the-030-target-needs)."""
        m = self.members[e]
        with torch.no_grad():
            self.stack.flat[e] = m.best_row
        self.opt.reset(e)
        m.collapse_restores += 1
        self._say(e, f"free run collapsed at epoch {self.epoch}: restored the best model (epoch {m.best_epoch})")

    # ------------------------------------------------------------------ the loop
    def pretrain(self) -> None:
        """Teacher-space pretraining (``pretrain_epochs``): every member's latent model is first fitted
        to its teacher signals directly, as a fit with no measurement kernel on the deconvolved data
        would be (same seeds, α, noise and learning-rate schedule over the pretraining epochs; no
        validation), and training through the kernel then starts from those parameters with a fresh
        optimiser. It checkpoints like the rest of the fit (`_finish_pretraining`), so --resume
        continues a fit interrupted while pretraining; its result is checkpointed (epoch 0,
        ``pretrained``), so a fit killed later resumes without it."""
        if self.pretrained:  # done, or none asked (n_pretrain 0)
            return
        pre = [kernel_free(self.member_net(e)) for e in range(self.E)]
        sub = Trainer(pre, teacher_space(self.data), self.pretrain_options(), [m.seed for m in self.members], self.pretrain_dir,
                      self._pretrain_progress(), self.log)
        self._finish_pretraining(sub)

    def pretrain_options(self) -> list[TrainOptions]:
        """The members' options for the pretraining stage (its epochs, no validation, no teacher term)."""
        n = self.n_pretrain
        self.log(f"teacher-space pretraining: {n} epochs on the deconvolved data, then {self.o.epochs} through the kernel")
        return [replace(m.opts, epochs=n, pretrain_epochs=0, patience=0, teacher_weight=0.0) for m in self.members]

    def _pretrain_progress(self) -> Callable[[int, int, str], None]:
        # progress: epoch 0 of the kernel epochs while pretraining, its own count in the status
        return lambda e, t, msg: self.progress(0, self.o.epochs, f"teacher-space pretraining {e}/{t} · {msg}")

    @property
    def pretrain_dir(self) -> Path | None:
        """The pretraining engine's run directory, checkpoint/pretrain/ (its checkpoint/ below it)."""
        return None if self.ckpt_dir is None else self.ckpt_dir / "pretrain"

    def _finish_pretraining(self, sub: "Trainer") -> None:
        """Run the pretraining engine ``sub`` and start the kernel stage from its parameters.

        The phase is checkpointed: this engine's state.json says ``pretrained: false`` (written
        first, at epoch 0, so that --resume finds the fit) while ``sub`` checkpoints its epochs below
        `pretrain_dir`; a resumed fit continues them there. Its result is then this engine's epoch-0
        checkpoint (``pretrained: true``), and the pretraining checkpoint goes."""
        if self.ckpt_dir is not None and not (self.ckpt_dir / "state.json").exists():
            self.save_checkpoint()
        try:
            sub.load_checkpoint()  # a resumed fit: the pretraining epochs already done
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise DsreconError(f"{sub.ckpt_dir}: damaged pretraining checkpoint ({e.__class__.__name__}: {e}); "
                               "run the command without --resume to start over") from None
        # a test's faults are for the epochs through the kernel, or the pretraining epoch it names
        with inject_faults(stop_after_epoch=hooks.current().stop_after_pretrain_epoch):
            sub.fit()
        self.stack.flat = sub.stack.flat.clone()
        self.pretrained = True
        self.save_checkpoint()
        if sub.run_dir is not None:
            shutil.rmtree(sub.run_dir, ignore_errors=True)

    #: validate the starting parameters (epoch 0) as a candidate best model: a transfer's start is
    #: already a model of the group, which its first epochs can make worse (GroupTrainer)
    validate_start = False

    def fit(self) -> list[dict]:
        o = self.o
        self.pretrain()
        total = o.epochs
        if self.validate_start and self.epoch == 0 and self.data.test:
            for e, m in enumerate(self.members):
                m.record(self._validate(e), 0, self.stack.flat[e])
        while self.epoch < total:
            idx = np.array([e for e, m in enumerate(self.members) if m.active], dtype=int)
            if idx.size == 0:
                break
            for e in idx:  # an annealed α is a function of the epoch (a resumed fit gets the same)
                self.members[e].alpha.at_epoch(self.epoch)
            t0 = time.perf_counter()
            losses = self._epoch_with_retries(idx)
            if all(m.failed for m in self.members):
                raise DivergenceError(self.members[0].failed + "; try a smaller --learning-rate or a larger --alpha" if self.E == 1 else
                                      f"all {self.E} ensemble members diverged; try a smaller --learning-rate or a larger --alpha")
            self.epoch += 1
            seconds = time.perf_counter() - t0
            do_val = bool(self.data.test) and (self.epoch % o.val_every == 0 or self.epoch == total)
            gens = self._device_free_runs(idx) if do_val and self.stack.engine == "cuda" else None
            early = False
            for j, e in enumerate(idx):
                m = self.members[e]
                if m.failed:
                    continue
                m.epochs_run = self.epoch
                row = {"epoch": self.epoch, "loss": float(losses[j]), "alpha": m.alpha.value, "lr": self._lr(e), "seconds": seconds,
                       "val_D_stsp": float("nan"), "val_D_H": float("nan")}
                if do_val:
                    v = self._validate(e, None if gens is None else gens[j])
                    row["val_D_stsp"], row["val_D_H"] = v["D_stsp"], v["D_H"]
                    if m.record(v, self.epoch, self.stack.flat[e]):
                        self._restore_best(e)
                m.rows.append(row)
                min_epochs = o.epochs // 2 if o.min_epochs is None else o.min_epochs
                # chaotic training is not monotone in D_stsp: an attractor often appears only after a
                # long plateau, so early stopping waits for half the budget (measured on Lorenz63-BOLD)
                if do_val and o.patience > 0 and m.bad_validations >= o.patience and self.epoch >= min_epochs:
                    m.stopped_early = early = True
                    self._say(e, f"early stop at epoch {self.epoch}: no validation improvement in {o.patience} checks")
            self.progress(self.epoch, total, self._status(idx, losses))
            if self.epoch % o.checkpoint_every == 0 or do_val or early:
                self.save_checkpoint()
            stop = hooks.current().stop_after_epoch
            if stop is not None and self.epoch >= stop and not self.stopped_early:
                raise InjectedKill(self.epoch)  # like a kill: whatever is not checkpointed is lost
        for e, m in enumerate(self.members):
            self.member_net(e, m.best_row)  # the best state (or the last one) into the member's net
        return [{**m.summary(), "pretrain_epochs": self.n_pretrain, "teacher_weight": self.teacher_weight} for m in self.members]

    def _device_free_runs(self, idx: np.ndarray) -> list[list[np.ndarray | None]]:
        """The validation free runs of the members idx, all members at once on the device: for each
        member, one run per recording (as `validation_scores` would make them one by one)."""
        rows = self.stack.flat[torch.as_tensor(idx, device=self.device)]
        per_rec = [generate_after_members(self.stack, rows, trn, *validation_steps(trn, tst), device=validation.VAL_DEVICE)
                   for trn, tst in zip(self.data.train, self.data.test)]
        return [[runs[j] for runs in per_rec] for j in range(idx.size)]

    def _status(self, idx: np.ndarray, losses: np.ndarray) -> str:
        if self.E == 1:
            m = self.members[0]
            s = f"loss {losses[0]:.4g} α {m.alpha.value:.3g}"
            return s + (f" best D_stsp {m.best_score[0]:.3g}@{m.best_epoch}" if m.best_epoch else "")
        finite = [float(v) for v, e in zip(losses, idx) if not self.members[e].failed]
        return f"{len(finite)} members, loss min {min(finite):.4g}" if finite else "all members failed"
