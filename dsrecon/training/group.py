"""The training engine for the hierarchical group model (`dsrecon.models.group`).

What is optimised is one row: the group vector g (G,) and the subjects' features l (S, F), flat
(a transfer to new subjects optimises the features alone, g is a constant). Every RAdam step draws
``batch_size`` sequences from every subject (its own recordings, normalisation and teacher
signals), generates every subject's parameters θ_j from g and l_j, and runs all subjects as the
rows of the engine's `Stack` (the backend's fused kernel over S·B sequences, else vmap): subjects
whose measurement kernels are identical share one computation, subjects with another kernel (TR)
form another. The loss is the mean of the subjects' GTF losses, plus, with ``feature_decay`` λ_f > 0,
λ_f/2·(‖g_proj‖² + ‖l‖²) over the projections (every number of g past b) and the features. The
linear scheme's subject variation is l Pᵀ, and this sum is at its least over the factorisations of
a given l Pᵀ at λ_f·‖l Pᵀ‖_* (the nuclear norm): a low-rank prior that leaves feature axes the data
do not need at zero, where unpenalised they keep what they started with
(docs/experiments/hierarchical.md#a-low-rank-penalty-on-the-features-2026-12-03-evening-seeds-0-1-2).
A transfer (group frozen) penalises its features alone: a pull towards the origin of the feature space.

Everything else is the single-fit engine's (`Trainer`): one `Member` holds the seed, batch/noise
stream, α schedule, best model, patience and divergence retries; checkpoints and --resume are the
same files. Validation runs `validation_scores` on every subject and averages D_stsp and D_H.
With one subject and F = 0 the arithmetic is exactly a single fit's (tests/test_group.py), with
teacher-space pretraining too (`--pretrain-epochs N`; a group fit has none unless asked).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.group import GroupLayout
from dsrecon.options import TrainOptions, choose_preset
from dsrecon.training import hooks
from dsrecon.training.batches import SequenceSampler, normal_fill
from dsrecon.training.gtf import jacobian_growth
from dsrecon.training.prepare import PreparedData, training_samples
from dsrecon.training.member import Member
from dsrecon.training.stack import Stack, StackedRAdam, clip_rows_
from dsrecon.training.pretrain import kernel_free, teacher_space
from dsrecon.training.trainer import Trainer
from dsrecon.training.validation import validation_scores


class _Row:
    """The optimised row (1, Q), where `Trainer`'s bookkeeping expects ``stack.flat``."""

    engine = "group"  # (its subjects run through their Stack's kernel, see GroupTrainer.run_epoch)

    def __init__(self, flat: torch.Tensor):
        self.flat = flat
        self.P = flat.shape[1]


class GroupTrainer(Trainer):
    """GTF training of S subjects' generated models in one computation (module docstring).

    nets: one ConvSSMNet per subject (one architecture; each with its subject's kernel taps);
    datas: each subject's PreparedData; g0 (G,) and feats0 (S, F) the initial group vector and
    features; ``frozen_group``: optimise the features only (transfer); ``feature_decay`` λ_f of the
    low-rank penalty (module docstring)."""

    def __init__(self, nets: list[ConvSSMNet], datas: list[PreparedData], layout: GroupLayout, g0: torch.Tensor,
                 feats0: torch.Tensor, opts: TrainOptions, seed: int, run_dir=None, progress=None, log=None,
                 frozen_group: bool = False, feature_decay: float = 0.0):
        if not nets or len(nets) != len(datas) or feats0.shape != (len(nets), layout.F):
            raise ValueError("one net and one PreparedData per subject, features (S, F)")
        median_samples = int(np.median([training_samples(d.train) for d in datas]))
        opts = opts.with_preset(choose_preset("auto", median_samples, len(datas[0].names)))  # any option left unset: the median subject's auto preset
        self.nets, self.datas, self.layout, self.o, self.run_dir = nets, datas, layout, opts, run_dir
        self.S, self.E = len(nets), 1
        self.progress = progress or (lambda *a: None)
        self.log = log or (lambda s: None)
        self.members = [Member(seed, opts)]
        # teacher-space pretraining only when asked (--pretrain-epochs N): a group fit's default is none
        self.n_pretrain = opts.pretraining() if opts.pretrain_epochs is not None else 0
        self.pretrained = not self.n_pretrain
        # λ of the teacher-space term, by the training samples of the median subject (each subject has its own teacher)
        self.teacher_weight = opts.teacher_weighting(median_samples)
        self.device = next(nets[0].parameters()).device
        self.frozen = bool(frozen_group)
        self.feature_decay = float(feature_decay)
        self.validate_start = self.frozen  # a transfer keeps its start when training makes it worse
        self.g_fixed = g0.detach().to(self.device, torch.float32).clone() if self.frozen else None
        vec = feats0.reshape(-1) if self.frozen else torch.cat([g0.reshape(-1), feats0.reshape(-1)])
        self.stack = _Row(vec.detach().to(self.device, torch.float32).clone()[None])
        self.opt = StackedRAdam(1, self.stack.P, self.device)
        self.gamma = (opts.lr_end / opts.learning_rate) ** (1.0 / max(opts.epochs, 1))
        self.epoch = 0
        self.checkpoint_epoch = None
        self.samplers = [SequenceSampler(d.train, opts.sequence_length, n.K) for d, n in zip(datas, nets)]
        # subjects with identical kernel taps share one Stack (one fused computation)
        groups: dict[tuple, list[int]] = {}
        for s, n in enumerate(nets):
            groups.setdefault(tuple(n.taps.reshape(-1).tolist()), []).append(s)
        self.kgroups = [(np.array(ix), Stack([nets[i] for i in ix])) for ix in groups.values()]
        self.data = SimpleNamespace(test=[t for d in datas for t in d.test])  # what `fit` asks of the data

    # ------------------------------------------------------------------ the generated parameters
    def split(self, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The optimised row (Q,) → (g (G,), features (S, F))."""
        if self.frozen:
            return self.g_fixed, vec.reshape(self.S, self.layout.F)
        G = self.layout.G
        return vec[:G], vec[G:].reshape(self.S, self.layout.F)

    def rows(self, vec: torch.Tensor) -> torch.Tensor:
        """Every subject's packed parameters (S, P) from the optimised row (Q,)."""
        g, f = self.split(vec)
        return self.layout.generate(g, f)

    def subject_net(self, s: int, rows: torch.Tensor) -> ConvSSMNet:
        return self.kgroups[0][1].load_into(self.nets[s], rows[s].detach())

    def member_net(self, e: int, row: torch.Tensor | None = None) -> ConvSSMNet:
        """Load the (current or given) row's generated parameters into every subject's net; subject 0's."""
        rows = self.rows(self.stack.flat[0] if row is None else row)
        for s in range(self.S):
            self.subject_net(s, rows)
        return self.nets[0]

    def _validate(self, e: int, generated: list | None = None) -> dict:  # noqa: ARG002 (CPU free runs per subject)
        """`validation_scores` of every subject: D_stsp and D_H are the subjects' means (inf when one diverged)."""
        vs = self._validate_subjects(self.rows(self.stack.flat[e]))
        if len(vs) == 1:
            return vs[0]
        d = [v["D_stsp"] for v in vs]
        dh = [v["D_H"] for v in vs if math.isfinite(v["D_H"])]
        return {"D_stsp": float(np.mean(d)) if all(math.isfinite(x) for x in d) else float("inf"),
                "D_H": float(np.mean(dh)) if dh else float("nan"), "D_stsp_method": vs[0].get("D_stsp_method"),
                "collapsed": any(bool(v.get("collapsed")) for v in vs), "per_subject": d}

    def _validate_subjects(self, rows: torch.Tensor) -> list[dict]:
        """`validation_scores` of every subject's model, its packed parameters the rows (S, P)."""
        m = self.members[0]
        return [validation_scores(self.subject_net(s, rows), d, m.opts, seed=m.seed) for s, d in enumerate(self.datas)]

    def subject_validation(self, feats: torch.Tensor) -> list[float]:
        """Every subject's validation D_stsp (inf when its free run diverged) with features ``feats`` (S, F)."""
        g = self.split(self.stack.flat[0])[0]
        vs = self._validate_subjects(self.layout.generate(g, feats.to(self.device, torch.float32)))
        return [v["D_stsp"] if math.isfinite(v["D_stsp"]) else float("inf") for v in vs]

    def choose_start(self, candidates: torch.Tensor) -> list[int]:
        """A transfer's starting features: for every subject, the candidate (C, F) whose model
        validates best on that subject's data (ties: the first). Returns the chosen indices.

        The candidates are the mean of the source's features and each source subject's: a new
        subject often resembles one of them, and training from a start can lose an attractor the
        start had (docs/experiments/hierarchical.md#correction-and-fix-the-transfer-validates-its-start-2026-12-03-later)."""
        if not self.frozen or candidates.shape[0] < 2 or not all(d.test for d in self.datas):
            return [0] * self.S
        scores = np.array([self.subject_validation(c[None].expand(self.S, -1)) for c in candidates])  # (C, S)
        pick = [int(np.argmin(scores[:, s])) for s in range(self.S)]
        with torch.no_grad():
            self.stack.flat[0] = candidates[pick].to(self.device, torch.float32).reshape(-1)
        return pick

    def pretrain(self) -> None:
        """Teacher-space pretraining of the group (`Trainer.pretrain`): the group vector and features
        (the features alone in a transfer) are first fitted to every subject's teacher signals with
        no kernel, by a group engine of kernel-free subject models, then trained through the kernels."""
        if self.pretrained:
            return
        g, f = self.split(self.stack.flat[0])
        sub = GroupTrainer([kernel_free(n) for n in self.nets], [teacher_space(d) for d in self.datas], self.layout, g, f,
                           self.pretrain_options()[0], self.members[0].seed, self.pretrain_dir, self._pretrain_progress(), self.log,
                           frozen_group=self.frozen, feature_decay=self.feature_decay)
        self._finish_pretraining(sub)

    # ------------------------------------------------------------------ one epoch
    def _draw_group(self, flat: torch.Tensor) -> list[dict]:
        """Every subject's batch from the one batch/noise stream: the start indices of every
        subject, then an adaptive-α update (the subjects' mean Jacobian growth), then observation
        and teacher noise subject by subject (for one subject: exactly a plain fit's draws)."""
        o, m = self.o, self.members[0]
        bs = [s.gather(m.rng.integers(0, len(s), size=o.batch_size)[None]) for s in self.samplers]
        if m.alpha.mode == "adaptive" and m.batches_done % o.adaptive_every == 0:
            rows = self.rows(flat[0].detach())
            gs = [jacobian_growth(self.subject_net(s, rows), torch.from_numpy(b["teacher"][0]).to(self.device)) for s, b in enumerate(bs)]
            m.alpha.update_adaptive(gs[0] if len(gs) == 1 else float(np.mean(gs)))
        if o.noise > 0:
            for b in bs:
                nx, nd = np.empty_like(b["x"]), np.empty_like(b["teacher"])
                normal_fill(m.rng, nx[0], nd[0])
                nx *= np.float32(o.noise)
                nd *= np.float32(o.noise)
                b["x"] += nx
                b["teacher"] += nd
        return bs

    def _batch_of(self, bs: list[dict], ix: np.ndarray) -> dict:
        """The batches of subjects ix as one (len(ix), B, …) batch on the device."""
        dev = self.device
        cat = lambda k: bs[ix[0]][k] if ix.size == 1 else np.concatenate([bs[i][k] for i in ix])  # noqa: E731
        reg = None if bs[ix[0]]["regressors"] is None else torch.from_numpy(cat("regressors")).to(dev)
        return {"teacher": cat("teacher"), "teacher_t": torch.from_numpy(cat("teacher")).to(dev), "x_t": torch.from_numpy(cat("x")).to(dev),
                "mask_t": torch.from_numpy(cat("mask")).to(dev, torch.float32), "reg_t": reg}

    def group_loss(self, flat: torch.Tensor, bs: list[dict], alpha: torch.Tensor) -> torch.Tensor:
        """The mean GTF loss over subjects (1,) of the optimised row ``flat`` (1, Q); alpha (T−1,)."""
        rows = self.rows(flat[0])
        parts = []
        for ix, stack in self.kgroups:
            r = rows if len(self.kgroups) == 1 else rows[torch.as_tensor(ix, device=self.device)]
            parts.append(stack.losses(r, self._batch_of(bs, ix), alpha[None].expand(ix.size, -1), self.o.l2,
                                      self.teacher_weight))
        loss = (parts[0] if len(parts) == 1 else torch.cat(parts)).mean()[None]
        if self.feature_decay > 0 and self.layout.F > 0:
            loss = loss + self.feature_penalty(flat[0])
        return loss

    def feature_penalty(self, vec: torch.Tensor) -> torch.Tensor:
        """λ_f/2·(‖projections‖² + ‖features‖²) of the optimised row (Q,) (module docstring); the
        projections are a transfer's constants, so there the features alone."""
        if self.frozen:
            return 0.5 * self.feature_decay * (vec**2).sum()
        return 0.5 * self.feature_decay * (vec[self.layout.P :] ** 2).sum()

    def run_epoch(self, idx: np.ndarray | None = None) -> np.ndarray:
        """One epoch (`batches_per_epoch` steps) → the mean loss (1,), NaN when it became non-finite."""
        o, m = self.o, self.members[0]
        flat = self.stack.flat.requires_grad_(True)
        mom, var = self.opt.m, self.opt.v
        steps = self.opt.step_count[[0]].copy()
        lr = np.array([self._lr(0)])
        T = o.sequence_length - 1
        weights = lambda: torch.from_numpy(np.asarray(m.alpha.weights(T))).to(self.device)  # noqa: E731
        adaptive = m.alpha.mode == "adaptive"
        alpha = None if adaptive else weights()
        total, bad = 0.0, False
        for _ in range(o.batches_per_epoch):
            bs = self._draw_group(flat)
            loss = self.group_loss(flat, bs, weights() if adaptive else alpha)
            if hooks.current().nan_at_batch is not None:
                loss = loss * torch.as_tensor(self._poison(np.array([0])), dtype=loss.dtype, device=loss.device)
            lv = float(loss.detach().cpu().numpy().astype(np.float64)[0])
            bad |= not math.isfinite(lv)
            total += 0.0 if bad else lv
            flat.grad = None
            loss.sum().backward()
            g = flat.grad
            if bad:
                g.zero_()
            if o.grad_clip:
                clip_rows_(g, o.grad_clip)
            self.opt.step(flat, g, lr, mom, var, steps)
            m.batches_done += 1
        flat.grad = None
        flat.requires_grad_(False)
        self.opt.step_count[[0]] = steps
        out = np.array([total / o.batches_per_epoch])
        if bad:
            out[0] = np.nan
        return out
