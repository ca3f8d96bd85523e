"""Train E independent convSSMs in one batched computation (`dsrecon fit --ensemble E`).

Member k is the model a single `dsrecon fit --seed s_k` (with its α) would train: its initial
parameters come from `ConvSSM._build` with seed s_k, its batches and noise from its own
`np.random.default_rng(s_k)` stream drawn in the same order as `Trainer.run_epoch`, and its
optimiser is RAdam with the same learning-rate schedule and per-member gradient-norm clipping.
What is shared is the arithmetic: all members' parameters live in one (E, P) tensor, the
teacher-forced rollouts of all E·B sequences run in one numba kernel (`fused_ensemble`), the
measurement kernel is one Toeplitz matrix product for every member and sequence, the loss is
the sum of the members' losses (their parameters are disjoint, so each member's gradient is its
own), and one vectorised RAdam step updates every row. Per-member bookkeeping — validation, best
state, early stopping, divergence restarts with a halved learning rate — follows
`dsrecon.training.trainer.Trainer` member by member.

Units: losses are mean squared errors in z-scored units; seconds are wall time of the ensemble.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from dsrecon.errors import DsreconError
from dsrecon.models.convssm import TOEPLITZ_MAX_T, ConvSSMNet
from dsrecon.models.fused_ensemble import PL_KINDS, SH_KINDS, RolloutSpec, ensemble_rollout
from dsrecon.training.batches import SequenceSampler
from dsrecon.training.gtf import jacobian_growth
from dsrecon.training.prepare import PreparedData
from dsrecon.training.trainer import MAX_DIVERGENCE_RETRIES, TrainOptions, should_restore_best, validate

SUPPORTED_BACKENDS = SH_KINDS + PL_KINDS
_L2_NAMES = ("W", "W1", "W2", "B")
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


# ----------------------------------------------------------------------------- stacked parameters
class EnsembleNet:
    """E ConvSSMNets of one architecture as one (E, P) parameter matrix.

    Row layout: the dynamics parameters first (in the backend's `named_parameters()` order, the
    layout `fused_ensemble` expects), then the other parameters of the net (L_init, decoder).
    """

    def __init__(self, nets: list[ConvSSMNet]):
        if not nets:
            raise DsreconError("an ensemble needs at least one member")
        t = nets[0]
        kind = t.dynamics.name
        if kind not in SUPPORTED_BACKENDS:
            raise DsreconError(f"--ensemble supports the PLRNN family ({', '.join(SUPPORTED_BACKENDS)}), not --backend {kind}")
        self.template = t
        self.E, self.M, self.N, self.F, self.K = len(nets), t.M, t.N, t.F, t.K
        dyn_names = [f"dynamics.{n}" for n, _ in t.dynamics.named_parameters()]
        other = [n for n, _ in t.named_parameters() if not n.startswith("dynamics.")]
        self.names = dyn_names + other
        shapes = dict((n, tuple(p.shape)) for n, p in t.named_parameters())
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        o = 0
        for n in self.names:
            self.layout[n] = (o, shapes[n])
            o += int(np.prod(shapes[n], dtype=int))
        self.P = o
        L = getattr(t.dynamics, "L", 0)
        relu = t.dynamics.relu_mask.cpu().numpy() if kind in PL_KINDS else None
        self.spec = RolloutSpec(kind, self.M, L, relu)
        self.P_dyn = self.spec.P
        assert self.P_dyn == sum(int(np.prod(shapes[n], dtype=int)) for n in dyn_names)
        self.decoder_kind = t.decoder.kind
        self.device = next(t.parameters()).device
        self.flat = torch.stack([self.row_of(n) for n in nets]).to(self.device)
        l2 = torch.zeros(self.P, dtype=torch.bool)
        for n in self.names:
            if n.split(".")[-1] in _L2_NAMES:
                o, shp = self.layout[n]
                l2[o : o + int(np.prod(shp, dtype=int))] = True
        self.l2_mask = l2.to(self.device)

    def row_of(self, net: ConvSSMNet) -> torch.Tensor:
        params = dict(net.named_parameters())
        return torch.cat([params[n].detach().reshape(-1).to(torch.float32) for n in self.names])

    def load_into(self, net: ConvSSMNet, row: torch.Tensor) -> ConvSSMNet:
        """Copy one parameter row (P,) into an ordinary ConvSSMNet of the same architecture."""
        params = dict(net.named_parameters())
        with torch.no_grad():
            for n in self.names:
                o, shp = self.layout[n]
                params[n].copy_(row[o : o + int(np.prod(shp, dtype=int))].reshape(shp))
        return net

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        o, shp = self.layout[name]
        return flat[:, o : o + int(np.prod(shp, dtype=int))].reshape(flat.shape[0], *shp)

    def member_losses(self, flat: torch.Tensor, batch: dict, alpha: np.ndarray, l2: float = 0.0) -> torch.Tensor:
        """Per-member GTF loss (E',) for a batch from `EnsembleBatcher.draw` (member-major arrays)."""
        d = batch["teacher_t"]  # (E, B, T, N)
        E, Bs, T, N = d.shape
        z0 = d[:, :, 0, : self.F]
        if self.M > self.F:
            Lw = self.view(flat, "L_init")  # (E, M−F, N)
            z0 = torch.cat([z0, torch.einsum("ebn,ekn->ebk", d[:, :, 0], Lw)], dim=-1)
        Z = ensemble_rollout(self.spec, flat[:, : self.P_dyn], z0.contiguous(), batch["teacher"], alpha, self.F)  # (E, B, T, M)
        if self.decoder_kind == "identity":
            y = Z[..., : self.N]
        else:
            y = torch.einsum("ebtm,enm->ebtn", Z[..., : self.M], self.view(flat, "decoder.B"))
        K = self.K
        if K > 1:  # one (T−K+1, T) Toeplitz product for all members and sequences (time-major copy)
            Y = y.permute(2, 0, 1, 3).reshape(T, -1)
            if T <= 4 * TOEPLITZ_MAX_T:
                Yh = self.template._toeplitz(T, y.dtype, y.device) @ Y
            else:
                Yh = torch.nn.functional.conv1d(Y.T.reshape(-1, 1, T), self.template.taps.to(y.dtype)).reshape(-1, T - K + 1).T
            y = Yh.reshape(T - K + 1, E, Bs, N).permute(1, 2, 0, 3)
        if self.decoder_kind == "regressor" and batch["reg_t"] is not None:
            y = y + torch.einsum("ebtr,enr->ebtn", batch["reg_t"][:, :, K - 1 :], self.view(flat, "decoder.J"))
        m = batch["mask_t"]  # (E, B, T−K+1)
        se = (((y - batch["x_t"]) ** 2) * m[..., None]).sum(dim=(1, 2, 3))
        loss = se / (m.sum(dim=(1, 2)) * N).clamp_min(1.0)
        if l2 > 0:
            loss = loss + l2 * ((flat**2) * self.l2_mask).sum(1)
        return loss


# ----------------------------------------------------------------------------- batches
class EnsembleBatcher:
    """Draws every member's batch from its own rng, exactly as `SequenceSampler.sample` then
    `Trainer._batch_loss` would (start indices, then observation noise, then teacher noise), and
    gathers all of them at once (one fancy index per array) into (E, B, …) arrays."""

    def __init__(self, sampler: SequenceSampler, noise: float, device: torch.device):
        self.s = sampler
        self.noise = float(noise)
        self.device = device
        recs = sampler.recs
        lens = np.array([r.x.shape[0] for r in recs])
        self.offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
        self.Dc = np.concatenate([r.teacher for r in recs]).astype(np.float32)
        self.Xc = np.concatenate([r.x for r in recs]).astype(np.float32)
        self.Mc = np.concatenate([r.mask for r in recs])
        self.Rc = None if sampler.R == 0 else np.concatenate([r.regressors for r in recs]).astype(np.float32)
        self.gstart = self.offsets[sampler.starts[:, 0]] + sampler.starts[:, 1]

    def indices(self, rngs: list[np.random.Generator], B: int) -> np.ndarray:
        return np.stack([rng.integers(0, len(self.s), size=B) for rng in rngs])

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Start indices (E, B) → teacher (E, B, T, N), x (E, B, T−K+1, N), mask (E, B, T−K+1), regressors (E, B, T, R)."""
        T, K = self.s.seq_len, self.s.K
        g = self.gstart[idx][:, :, None]  # (E, B, 1)
        tt = g + np.arange(T)
        to = g + np.arange(K - 1, T)
        return {"teacher": self.Dc[tt], "x": self.Xc[to], "mask": self.Mc[to], "regressors": None if self.Rc is None else self.Rc[tt]}

    def draw(self, rngs: list[np.random.Generator], B: int, before_noise: Callable[[dict], None] | None = None) -> dict:
        idx = self.indices(rngs, B)
        b = self.gather(idx)
        if before_noise is not None:
            before_noise(b)
        if self.noise > 0:
            T, K, N = self.s.seq_len, self.s.K, self.s.N
            E = len(rngs)
            nx = np.empty((E, B, T - K + 1, N), np.float32)
            nd = np.empty((E, B, T, N), np.float32)
            for e, rng in enumerate(rngs):  # the same order of draws as Trainer._batch_loss
                rng.standard_normal(out=nx[e], dtype=np.float32)
                rng.standard_normal(out=nd[e], dtype=np.float32)
            # x + noise·n in float32, in place (bitwise what Trainer._batch_loss computes)
            nx *= np.float32(self.noise)
            nd *= np.float32(self.noise)
            b["x"] += nx
            b["teacher"] += nd
        dev = self.device
        b["teacher_t"] = torch.from_numpy(b["teacher"]).to(dev)
        b["x_t"] = torch.from_numpy(b["x"]).to(dev)
        b["mask_t"] = torch.from_numpy(b["mask"]).to(dev, torch.float32)
        b["reg_t"] = None if b["regressors"] is None else torch.from_numpy(b["regressors"]).to(dev)
        return b


# ----------------------------------------------------------------------------- optimiser
class StackedRAdam:
    """torch.optim.RAdam (defaults: β 0.9/0.999, ε 1e-8, no weight decay) over the rows of an
    (E, P) matrix, with a learning rate and a step count per row. Elementwise, so row e follows
    exactly the trajectory an independent RAdam on member e's parameters would."""

    def __init__(self, E: int, P: int, device: torch.device):
        self.m = torch.zeros(E, P, device=device)
        self.v = torch.zeros(E, P, device=device)
        self.step_count = np.zeros(E, dtype=np.int64)

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, lr: np.ndarray) -> None:
        self.step_count += 1
        t = self.step_count.astype(np.float64)
        self.m.lerp_(grad, 1 - _BETA1)
        self.v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        bc1 = 1 - _BETA1**t
        bc2 = 1 - _BETA2**t
        rho_inf = 2 / (1 - _BETA2) - 1
        rho_t = rho_inf - 2 * t * (_BETA2**t) / bc2
        adaptive = rho_t > 5.0
        rect = np.sqrt(np.where(adaptive, (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 1.0))
        dev = flat.device
        c1 = torch.as_tensor(lr / bc1, dtype=flat.dtype, device=dev)[:, None]
        if adaptive.all():
            c2 = torch.as_tensor(np.sqrt(bc2) * rect, dtype=flat.dtype, device=dev)[:, None]
            flat.sub_(self.m * c1 * (c2 / (self.v.sqrt() + _EPS)))
        elif not adaptive.any():
            flat.sub_(self.m * c1)
        else:
            c2 = torch.as_tensor(np.sqrt(bc2) * rect, dtype=flat.dtype, device=dev)[:, None]
            ad = torch.as_tensor(adaptive, device=dev)[:, None]
            flat.sub_(self.m * c1 * torch.where(ad, c2 / (self.v.sqrt() + _EPS), torch.ones_like(self.v)))

    def take(self, idx: np.ndarray) -> "StackedRAdam":
        o = StackedRAdam.__new__(StackedRAdam)
        it = torch.as_tensor(idx, device=self.m.device)
        o.m, o.v, o.step_count = self.m[it].clone(), self.v[it].clone(), self.step_count[idx].copy()
        return o

    def put(self, idx: np.ndarray, sub: "StackedRAdam") -> None:
        it = torch.as_tensor(idx, device=self.m.device)
        self.m[it], self.v[it] = sub.m, sub.v
        self.step_count[idx] = sub.step_count


def clip_rows_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Per-row (per-member) `clip_grad_norm_`: scale row e by min(1, max_norm / (‖g_e‖ + 1e-6))."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    grad.mul_(coef[:, None])
    return norms


# ----------------------------------------------------------------------------- the trainer
class EnsembleTrainer:
    """GTF training of E members in one computation; `fit()` returns one summary per member.

    nets: freshly built members (one architecture); opts: one TrainOptions per member (they may
    differ only in ``alpha``); seeds: one per member (its batch/noise stream and validation seed).
    """

    def __init__(self, nets: list[ConvSSMNet], data: PreparedData, opts: list[TrainOptions], seeds: list[int],
                 progress: Callable[[int, int, str], None] | None = None, log: Callable[[str], None] | None = None):
        if not (len(nets) == len(opts) == len(seeds)):
            raise ValueError("nets, opts and seeds must have one entry per member")
        base = replace(opts[0], alpha="0")
        for o in opts[1:]:
            if replace(o, alpha="0") != base:
                raise DsreconError("ensemble members may differ only in seed and --alpha")
        if any(o.stop_after_epoch is not None or o.nan_at_batch is not None for o in opts):
            raise DsreconError("the stop_after_epoch / nan_at_batch testing hooks are not supported for ensembles")
        self.nets, self.data, self.opts_list, self.seeds = nets, data, opts, [int(s) for s in seeds]
        self.o = opts[0]
        self.E = len(nets)
        self.progress = progress or (lambda *a: None)
        self.log = log or (lambda s: None)
        self.enet = EnsembleNet(nets)
        self.device = self.enet.device
        self.sampler = SequenceSampler(data.train, self.o.sequence_length, nets[0].K)
        self.batcher = EnsembleBatcher(self.sampler, self.o.noise, self.device)
        self.alphas = [o.schedule() for o in opts]
        self.rngs = [np.random.default_rng(s) for s in self.seeds]
        self.opt = StackedRAdam(self.E, self.enet.P, self.device)
        self.gamma = (self.o.lr_end / self.o.learning_rate) ** (1.0 / max(self.o.epochs, 1))
        self.epoch = 0
        E = self.E
        self.lr_scale = np.ones(E)
        self.divergences = np.zeros(E, dtype=int)
        self.batches_done = np.zeros(E, dtype=int)
        self.rows: list[list[dict]] = [[] for _ in range(E)]
        self.best_row: list[torch.Tensor | None] = [None] * E
        self.best_score = [(float("inf"), float("inf"))] * E
        self.best_epoch = [0] * E
        self.bad_validations = [0] * E
        self.stopped_early = [False] * E
        self.failed: list[str | None] = [None] * E
        self.epochs_run = [0] * E
        self.collapse_restores = [0] * E

    # ------------------------------------------------------------------ pieces
    def active(self) -> np.ndarray:
        return np.array([e for e in range(self.E) if not self.stopped_early[e] and self.failed[e] is None], dtype=int)

    def _lr(self, idx: np.ndarray) -> np.ndarray:
        return self.o.learning_rate * self.gamma**self.epoch * self.lr_scale[idx]

    def _alpha_weights(self, idx: np.ndarray, T: int) -> np.ndarray:
        return np.ascontiguousarray(np.stack([self.alphas[e].weights(T) for e in idx]), dtype=np.float32)

    def member_net(self, e: int, row: torch.Tensor | None = None) -> ConvSSMNet:
        """Member e as an ordinary ConvSSMNet holding its current (or the given) parameters."""
        return self.enet.load_into(self.nets[e], self.enet.flat[e] if row is None else row)

    def run_epoch(self, idx: np.ndarray | None = None) -> np.ndarray:
        """One epoch for the members idx (default: the active ones). Returns their mean losses,
        NaN for a member whose loss became non-finite (as `Trainer.run_epoch`)."""
        idx = self.active() if idx is None else np.asarray(idx, dtype=int)
        o = self.o
        full = idx.size == self.E and (idx == np.arange(self.E)).all()
        it = torch.as_tensor(idx, device=self.device)
        flat = (self.enet.flat if full else self.enet.flat[it].clone()).requires_grad_(True)
        opt = self.opt if full else self.opt.take(idx)
        rngs = [self.rngs[e] for e in idx]
        lr = self._lr(idx)
        T = o.sequence_length
        adaptive = [e for e in idx if self.alphas[e].mode == "adaptive"]
        static_alpha = None if adaptive else self._alpha_weights(idx, T - 1)
        sums = np.zeros(idx.size)
        bad = np.zeros(idx.size, dtype=bool)
        for _ in range(o.batches_per_epoch):
            hook = self._adaptive_hook(idx, flat) if adaptive else None
            batch = self.batcher.draw(rngs, o.batch_size, hook)
            alpha = static_alpha if static_alpha is not None else self._alpha_weights(idx, T - 1)
            losses = self.enet.member_losses(flat, batch, alpha, o.l2)
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
            with torch.no_grad():
                opt.step(flat, g, lr)
            self.batches_done[idx] += 1
        flat.grad = None
        flat.requires_grad_(False)
        if not full:
            with torch.no_grad():
                self.enet.flat[it] = flat
            self.opt.put(idx, opt)
        out = sums / o.batches_per_epoch
        out[bad] = np.nan
        return out

    def _adaptive_hook(self, idx: np.ndarray, flat: torch.Tensor) -> Callable[[dict], None]:
        def hook(b: dict) -> None:
            for j, e in enumerate(idx):
                if self.alphas[e].mode == "adaptive" and self.batches_done[e] % self.o.adaptive_every == 0:
                    net = self.member_net(e, flat[j].detach())
                    teacher = torch.from_numpy(b["teacher"][j]).to(self.device)
                    self.alphas[e].update_adaptive(jacobian_growth(net, teacher))
        return hook

    def _snapshot(self, idx: np.ndarray) -> dict:
        it = torch.as_tensor(idx, device=self.device)
        return {"flat": self.enet.flat[it].clone(), "opt": self.opt.take(idx), "rng": [copy.deepcopy(self.rngs[e].bit_generator.state) for e in idx],
                "alpha": [self.alphas[e].state() for e in idx], "batches": self.batches_done[idx].copy()}

    def _restore(self, snap: dict, idx: np.ndarray, which: np.ndarray) -> None:
        """Restore the members idx[which] from a snapshot taken over idx."""
        for j in np.flatnonzero(which):
            e = idx[j]
            with torch.no_grad():
                self.enet.flat[e] = snap["flat"][j]
            self.opt.m[e], self.opt.v[e] = snap["opt"].m[j], snap["opt"].v[j]
            self.opt.step_count[e] = snap["opt"].step_count[j]
            self.rngs[e].bit_generator.state = copy.deepcopy(snap["rng"][j])
            self.alphas[e].load(snap["alpha"][j])
            self.batches_done[e] = snap["batches"][j]

    def _restore_best(self, e: int) -> None:
        """As `Trainer._restore_best`: member e's free run collapsed; continue from its best state
        with fresh RAdam moments (and step count, as a new torch optimiser would have)."""
        with torch.no_grad():
            self.enet.flat[e] = self.best_row[e]
            self.opt.m[e].zero_()
            self.opt.v[e].zero_()
        self.opt.step_count[e] = 0
        self.collapse_restores[e] += 1
        self.log(f"member {e} (seed {self.seeds[e]}): free run collapsed at epoch {self.epoch}: restored its best model (epoch {self.best_epoch[e]})")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[dict]:
        o = self.o
        total = o.epochs
        while self.epoch < total:
            idx = self.active()
            if idx.size == 0:
                break
            t0 = time.perf_counter()
            snap = self._snapshot(idx)
            losses = self.run_epoch(idx)
            todo = ~np.isfinite(losses)
            while todo.any():  # divergence: restore, halve the learning rate, redo the epoch (per member)
                sub = idx[todo]
                self._restore(snap, idx, todo)
                for e in sub:
                    self.divergences[e] += 1
                    if self.divergences[e] > MAX_DIVERGENCE_RETRIES:
                        self.failed[e] = (f"training diverged (non-finite loss) at epoch {self.epoch + 1} after {MAX_DIVERGENCE_RETRIES} "
                                          "restarts with halved learning rates")
                        self.log(f"member {e} (seed {self.seeds[e]}): {self.failed[e]}")
                    else:
                        self.lr_scale[e] *= 0.5
                        self.log(f"member {e}: non-finite loss at epoch {self.epoch + 1}: restored, learning rate halved")
                retry = np.array([self.failed[e] is None for e in sub])
                if not retry.any():
                    break
                rsub = sub[retry]
                snap = self._snapshot(idx)  # (the members not redone are unchanged by the restore)
                l2 = self.run_epoch(rsub)
                pos = {e: j for j, e in enumerate(idx)}
                todo = np.zeros(idx.size, dtype=bool)
                for e, v in zip(rsub, l2):
                    losses[pos[e]] = v
                    todo[pos[e]] = not math.isfinite(v)
            self.epoch += 1
            seconds = time.perf_counter() - t0
            do_val = bool(self.data.test) and (self.epoch % o.val_every == 0 or self.epoch == total)
            for j, e in enumerate(idx):
                if self.failed[e] is not None:
                    continue
                self.epochs_run[e] = self.epoch
                row = {"epoch": self.epoch, "loss": float(losses[j]), "alpha": self.alphas[e].value, "lr": float(self._lr(np.array([e]))[0]),
                       "seconds": seconds, "val_D_stsp": float("nan"), "val_D_H": float("nan")}
                if do_val:
                    v = validate(self.member_net(e), self.data, self.opts_list[e], seed=self.seeds[e])
                    row["val_D_stsp"], row["val_D_H"] = v["D_stsp"], v["D_H"]
                    score = (v["D_stsp"] if math.isfinite(v["D_stsp"]) else float("inf"), v["D_H"] if math.isfinite(v["D_H"]) else float("inf"))
                    if score < self.best_score[e]:
                        self.best_score[e], self.best_epoch[e], self.bad_validations[e] = score, self.epoch, 0
                        self.best_row[e] = self.enet.flat[e].detach().clone()
                    else:
                        self.bad_validations[e] += 1
                        if should_restore_best(v, self.best_score[e][0], self.opts_list[e]):
                            self._restore_best(e)
                self.rows[e].append(row)
                min_epochs = o.epochs // 2 if o.min_epochs is None else o.min_epochs  # as in Trainer.fit
                if do_val and o.patience > 0 and self.bad_validations[e] >= o.patience and self.epoch >= min_epochs:
                    self.stopped_early[e] = True
                    self.log(f"member {e} (seed {self.seeds[e]}): early stop at epoch {self.epoch}")
            finite = [float(losses[j]) for j, e in enumerate(idx) if self.failed[e] is None]
            self.progress(self.epoch, total, f"{len(finite)} members, loss min {min(finite):.4g}" if finite else "all members failed")
            if all(f is not None for f in self.failed):
                break
        out = []
        for e in range(self.E):
            self.member_net(e, self.best_row[e])  # the best state (or the last one) into the member's net
            be = self.best_epoch[e]
            out.append({
                "epochs_run": self.epochs_run[e], "best_epoch": be or self.epochs_run[e],
                "best_val_D_stsp": self.best_score[e][0] if be else None, "best_val_D_H": self.best_score[e][1] if be else None,
                "stopped_early": self.stopped_early[e], "final_loss": self.rows[e][-1]["loss"] if self.rows[e] else None,
                "divergence_restarts": int(self.divergences[e]), "final_alpha": self.alphas[e].value, "failed": self.failed[e],
                "collapse_restores": self.collapse_restores[e],
            })
        return out


# ----------------------------------------------------------------------------- runs on disk
ENSEMBLE_FILE = "ensemble.json"


def member_seeds(seed: int, size: int) -> list[int]:
    """Member k trains with seed + k: member 0 is the single fit with --seed seed."""
    return [int(seed) + k for k in range(int(size))]


def member_alphas(alphas: list[str] | None, size: int, default: str) -> list[str]:
    """α of member k: alphas[k mod len(alphas)] (so K = len·n gives n seeds per α), else the default."""
    if not alphas:
        return [str(default)] * size
    return [str(alphas[k % len(alphas)]) for k in range(size)]


def fit_ensemble(recordings, run_dir, size: int, *, seeds: list[int] | None = None, alphas: list[str] | None = None,
                 overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None,
                 log: Callable[[str], None] | None = None, inputs: list[str] | None = None, **convssm_kwargs) -> dict:
    """Fit `size` convSSMs in one batched computation and write each as its own run directory.

    run_dir/member-XX/ is an ordinary run (`dsrecon.load_run` reads it; its config.json records
    its seed, α and the ensemble); run_dir/ensemble.json lists the members and names the best by
    validation (lowest D_stsp, then D_H; by final training loss when there is no held-out tail);
    run_dir/best is a relative symlink to that member. The directory appears only when complete.
    convssm_kwargs: the `dsrecon.ConvSSM` arguments (seed: of member 0; alpha: the default α).
    Returns the content of ensemble.json.
    """
    import json
    from pathlib import Path

    from dsrecon.api import ConvSSM
    from dsrecon.errors import DataError
    from dsrecon.io.recording import Recording
    from dsrecon.options import DEFAULT_ALPHA

    t_start = time.perf_counter()
    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise DataError("no recordings to fit")
    size = int(size)
    if size < 1:
        raise DsreconError(f"--ensemble must be at least 1, got {size}")
    base_seed = int(convssm_kwargs.pop("seed", 0))
    seeds = member_seeds(base_seed, size) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != size or len(set(seeds)) != size:
        raise DsreconError(f"--ensemble {size}: need {size} distinct seeds, got {seeds}")
    default_alpha = str(convssm_kwargs.pop("alpha", DEFAULT_ALPHA))
    al = member_alphas(alphas, size, default_alpha)
    models = [ConvSSM(seed=s, alpha=a, **convssm_kwargs) for s, a in zip(seeds, al)]
    for m in models:
        m.train_options.schedule()  # validate α early (one-line error)
    m0 = models[0]
    if m0.backend not in SUPPORTED_BACKENDS:
        raise DsreconError(f"--ensemble supports the PLRNN family ({', '.join(SUPPORTED_BACKENDS)}), not --backend {m0.backend}")
    models = [m.resolved(recs, log if k == 0 else None) for k, m in enumerate(models)]  # kernel, sequence length, device
    run = Path(run_dir)
    from dsrecon.io.runs import StagedRun

    with StagedRun(run, force=overwrite, log=log) as st:
        try:
            _fit_ensemble_staged(st, recs, run, size, seeds, al, models, base_seed, t_start, progress, log, inputs)
        except KeyboardInterrupt:  # ensembles have no checkpoint to resume from: leave nothing behind
            import shutil

            shutil.rmtree(st.dir, ignore_errors=True)
            raise
    return json.loads((run / ENSEMBLE_FILE).read_text())


def _fit_ensemble_staged(st, recs, run, size, seeds, al, models, base_seed, t_start, progress, log, inputs) -> None:
    """Train the members and write them into the staging directory ``st.dir``; commit it."""
    import datetime as _dt
    import os

    from dsrecon._util import array_hash, seed_everything, versions, write_json_atomic
    from dsrecon.api import _write_dataset_description, _write_teacher_cache
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare

    m0 = models[0]
    kern = make_kernel(m0.kernel, recs[0].tr, tau_decay=m0.tau_decay, tau_rise=m0.tau_rise)
    data_hash = array_hash(*[r.data for r in recs], *[r.mask for r in recs])
    from dsrecon.training.memory import check_fit_memory

    N = recs[0].n_regions
    check_fit_memory([r.n_frames for r in recs], N, m0.latent_dim or max(N, 3), m0.hidden_dim, kern.K, m0.train_options,
                     m0.device, recs[0].source, members=size)
    data = prepare(recs, kern, m0.train_options.test_fraction)
    n_reg = 0 if recs[0].regressors is None else recs[0].regressors.shape[1]
    nets = []
    for m in models:  # exactly what ConvSSM.fit does before training, member by member
        seed_everything(m.seed)
        nets.append(m._build(len(data.names), n_reg, kern, torch.Generator().manual_seed(m.seed)).to(m.device))
    trainer = EnsembleTrainer(nets, data, [m.train_options for m in models], seeds, progress, log)
    summaries = trainer.fit()
    if all(s["failed"] for s in summaries):
        from dsrecon.errors import DivergenceError

        raise DivergenceError(f"all {size} ensemble members diverged; try a smaller --learning-rate or a larger --alpha")

    tmp = st.dir
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    members = []
    for k, (m, net, summ) in enumerate(zip(models, nets, summaries)):
        name = f"member-{k:02d}" if size <= 100 else f"member-{k:03d}"
        entry = {"member": k, "run": name, "seed": m.seed, "alpha": m.train_options.alpha, **summ}
        members.append(entry)
        if summ["failed"]:
            continue
        net = net.cpu()
        net.register_buffer("z_init", net.state_from_last_reliable(data.train[-1].teacher).detach()[0])
        config = m._config(recs, kern, data_hash, inputs)
        config.update({"normalisation": data.norm.to_dict(), "data": data.info, "latent_dim": net.M,
                       "backend_kwargs": net.dynamics.extra_config(), "status": "complete", "training": summ,
                       "ensemble": {"size": size, "member": k, "seeds": seeds, "alphas": al, "directory": str(run),
                                    "engine": "batched" if trainer.device.type == "cpu" else str(trainer.device)}})
        m.net_, m.config_, m.run_dir_ = net, config, run / name
        m.history_ = trainer.rows[k]
        mdir = tmp / name
        mdir.mkdir()
        _write_teacher_cache(mdir, data, recs)
        _write_dataset_description(mdir)
        m.save(mdir, trainer.rows[k])
    ok_members = [e for e in members if not e["failed"]]
    has_val = any(e["best_val_D_stsp"] is not None for e in ok_members)
    if has_val:
        key = lambda e: (e["best_val_D_stsp"] if e["best_val_D_stsp"] is not None and math.isfinite(e["best_val_D_stsp"]) else float("inf"),  # noqa: E731
                         e["best_val_D_H"] if e["best_val_D_H"] is not None and math.isfinite(e["best_val_D_H"]) else float("inf"))
        selection = "lowest validation D_stsp on the held-out tail, then D_H"
    else:
        key = lambda e: e["final_loss"] if e["final_loss"] is not None and math.isfinite(e["final_loss"]) else float("inf")  # noqa: E731
        selection = "lowest final training loss (no held-out tail: --test-fraction 0)"
    best = min(ok_members, key=key)
    summary = {
        "format": "dsrecon-ensemble/1", "created": created, "versions": versions(), "size": size, "seed": base_seed,
        "seeds": seeds, "alphas": al, "backend": m0.backend, "selection": selection, "best_member": best["member"],
        "best_run": best["run"], "members": members, "epochs": trainer.epoch,
        "seconds": time.perf_counter() - t_start, "device": str(trainer.device), "data_hash": data_hash,
    }
    write_json_atomic(tmp / ENSEMBLE_FILE, summary)
    try:
        os.symlink(best["run"], tmp / "best", target_is_directory=True)
    except OSError:  # filesystems without symlinks: ensemble.json's best_run names it
        pass
    st.commit()


def convssm_kwargs(model) -> dict:
    """The constructor arguments of a (not yet fitted) `dsrecon.ConvSSM`, for `fit_ensemble`."""
    from dataclasses import asdict

    kw = {k: getattr(model, k) for k in ("backend", "latent_dim", "hidden_dim", "kernel", "tau_decay", "tau_rise", "decoder",
                                         "backend_options", "seed", "device")}
    kw.update(model.train_options.public())
    return kw


def fit_ensemble_cli(model, recs, output, size: int, alphas: str | None, *, resume: bool, force: bool, quiet: bool,
                     as_json: bool, inputs: list[str]) -> None:
    """`dsrecon fit --ensemble E [--ensemble-alpha a1,a2,…]`: train, write OUT/member-XX + ensemble.json, report."""
    from dsrecon.cli.common import emit, log, progress_bar

    if resume:
        raise DsreconError("--resume is not supported with --ensemble (ensembles are written only when complete); rerun with --force")
    al = [a.strip() for a in alphas.split(",") if a.strip()] if alphas else None
    if alphas is not None and not al:
        raise DsreconError(f"--ensemble-alpha expects comma-separated numbers, got '{alphas}'")
    kw = convssm_kwargs(model)
    epochs = kw["epochs"]
    log(f"ensemble of {size}: seeds {kw['seed']}…{kw['seed'] + size - 1}" + (f", α cycling over {', '.join(al)}" if al else ""), quiet)
    t0 = time.perf_counter()
    with progress_bar(quiet) as prog:
        task_id = prog.add_task("fit", total=epochs, status="")

        def on_epoch(epoch: int, total: int, status: str) -> None:
            prog.update(task_id, completed=epoch, total=total, status=status)

        summary = fit_ensemble(recs, output, size, alphas=al, overwrite=force, progress=on_epoch, log=lambda s: log(s, quiet),
                               inputs=inputs, **kw)
    best = summary["members"][summary["best_member"]]
    result = {"run": str(output), "seconds": time.perf_counter() - t0, "size": size, "seed": kw["seed"], "versions": summary["versions"],
              "best_member": summary["best_member"],
              "best_run": str(output / summary["best_run"]) if hasattr(output, "joinpath") else summary["best_run"],
              "best_val_D_stsp": best["best_val_D_stsp"], "best_val_D_H": best["best_val_D_H"],
              "members": [{k: m[k] for k in ("run", "seed", "alpha", "best_val_D_stsp", "best_val_D_H", "final_loss", "epochs_run", "failed")}
                          for m in summary["members"]]}
    log(f"wrote {output}/member-XX (one run each), ensemble.json, best → {summary['best_run']}", quiet)
    emit(result, as_json, title=f"dsrecon fit --ensemble {size} → {output}", quiet=quiet)
