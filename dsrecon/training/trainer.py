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
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dsrecon._util import check_interrupt
from dsrecon.errors import DivergenceError, DsreconError
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.options import TrainOptions, choose_preset  # TrainOptions: defined with every other option; imported from here too
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.batches import SequenceSampler
from dsrecon.training.gtf import jacobian_growth
from dsrecon.training.prepare import PreparedData, training_samples

LOG_COLUMNS = ["epoch", "loss", "alpha", "lr", "seconds", "val_D_stsp", "val_D_H"]
#: states beyond this magnitude (in z-scored units) count as a diverged free run
DIVERGENCE_BOUND = 1e4
MAX_DIVERGENCE_RETRIES = 3
#: validation compares at least this many generated steps with the data ...
VAL_MIN_STEPS = 10_000
#: ... taken from the end of a free run this long: a model whose chaos is only a transient (it
#: settles on a fixed point after 10-20 thousand steps) must not pass as a reconstruction
VAL_HORIZON = 50_000
#: where the cuda engine makes the validation free runs of all its members (one batched run):
#: "cpu", the numba CPU kernel parallel over the members, or None, the training device (the CUDA
#: kernel, one GPU thread per member). A free run is one long sequential recurrence per member
#: (50 000 steps of ~600 dependent flops at M 3, L 50): a GPU thread is latency-bound there (an
#: estimate of ~25 s per run, against ~15 ms on a CPU core), and a thousand of them keep only a few
#: warps busy, so the CPU is expected to win at every ensemble size. Not measured yet:
#: benchmarks/gpu.py times both and uses the faster.
VAL_DEVICE: str | None = "cpu"
#: a validation free run whose spread is below this fraction of the data's (every region) has
#: collapsed onto a fixed point or a tiny cycle
COLLAPSE_SPREAD = 0.05


def should_restore_best(v: dict, best_d_stsp: float, opts: TrainOptions) -> bool:
    """With --restore-on-collapse, a validation result v calls for going back to the best model: its
    free run collapsed, and the best model was a real improvement on it (D_stsp at most half of the
    collapsed run's; inf while there is no best model). Early in training every model sits near a
    fixed point; going back to one of those helps nothing and only changes the random path of the fit."""
    d = v.get("D_stsp", float("nan"))
    return (opts.restore_on_collapse and bool(v.get("collapsed")) and math.isfinite(best_d_stsp)
            and (not math.isfinite(d) or best_d_stsp <= 0.5 * d))


class Interrupted(KeyboardInterrupt):
    """Raised by the stop_after_epoch testing hook, as if the process had been killed after a
    checkpoint (a KeyboardInterrupt, so the run's staging directory is kept for --resume, as after
    a kill)."""


@dataclass
class FaultHooks:
    """Faults a test injects into training (never set by a user; not options, not recorded):
    stop after this epoch as if killed; poison the loss of this batch (-1: every batch)."""

    stop_after_epoch: int | None = None
    nan_at_batch: int | None = None


_HOOKS = FaultHooks()


@contextmanager
def inject_faults(**faults):
    """``with inject_faults(stop_after_epoch=5): model.fit(...)`` (tests only)."""
    global _HOOKS
    old, _HOOKS = _HOOKS, FaultHooks(**faults)
    try:
        yield _HOOKS
    finally:
        _HOOKS = old


def validation_steps(train, test) -> tuple[int, int]:
    """(n, total) of a validation free run on one recording: its last n of total observations are compared."""
    n = max(train.x.shape[0] + test.x.shape[0], VAL_MIN_STEPS)
    return n, max(VAL_HORIZON, math.ceil(1.25 * n))


def validation_bins(reference: np.ndarray, max_bins: int) -> int:
    """Bins per dimension of validation's binned D_stsp against a (T, N) reference.

    Binned D_stsp needs a few reference points per occupied cell to tell models apart: with a
    couple of thousand frames and 30^N cells it mostly measures sampling noise, so validation caps
    the bins at (T/2)^(1/N) (10 for 2 000 frames of 3 regions), at least 5; reported scores use --bins."""
    return max(5, min(int(max_bins), int((reference.shape[0] / 2) ** (1.0 / reference.shape[1]))))


def validate(net: ConvSSMNet, data: PreparedData, opts: TrainOptions, seed: int = 0,
             generated: list[np.ndarray | None] | None = None) -> dict:
    """Free-run the model past the training split and compare with the observed recording.

    Used to pick the best model and to stop early; the held-out tail is what makes this a check of
    generalisation in time (the model never trained on it). Final scores follow §6 (`ConvSSM.score`).
    ``generated``: the free runs (`generate_after`, one per recording), when they were made
    elsewhere (all members at once on the device: `generate_after_members`).
    """
    from dsrecon.metrics.spectrum import hellinger_spectral
    from dsrecon.metrics.stsp import state_space_divergence

    if not data.test:
        return {"D_stsp": float("nan"), "D_H": float("nan"), "D_stsp_method": None}
    if generated is None and next(net.parameters()).device.type != "cpu":  # one sequential free run: the fused CPU path is faster
        net = copy.deepcopy(net).cpu()
    gens, refs, dhs, spreads = [], [], [], []
    noisy = []  # the runs the state-space comparison sees (with the recording's noise under --match-noise)
    for i, (trn, tst) in enumerate(zip(data.train, data.test)):
        # Reference: all observed frames of the recording (training head + held-out tail), as the
        # published convSSM code validates; a 25 % tail alone covers too little of an attractor.
        # Generated: the end of a long free run past the training data. Its length estimates the
        # model's invariant distribution well (a run as short as the data leaves most occupied cells
        # empty); taking it from the end of a VAL_HORIZON-step run judges the long-term behaviour,
        # so transient chaos that later collapses onto a fixed point scores as the collapse.
        full = np.concatenate([trn.x, tst.x])
        fmask = np.concatenate([trn.mask, tst.mask])
        T = full.shape[0]
        n, total = validation_steps(trn, tst)
        gen = generate_after(net, trn, n, total=total, test=tst) if generated is None else generated[i]
        if gen is None:
            return {"D_stsp": float("inf"), "D_H": float("nan"), "D_stsp_method": None, "diverged": True}
        gens.append(gen)
        refs.append(full[fmask])
        spreads.append(float(np.max(gen.std(0) / np.maximum(full[fmask].std(0), 1e-12))))
        noisy.append(with_observation_noise(gen, full[fmask], seed + i) if opts.match_noise else gen)
        if T >= 8:
            dhs.append(hellinger_spectral(gen[-T:], full, smoothing=opts.smoothing))
    ref = np.concatenate(refs)
    bins = validation_bins(ref, opts.bins)
    # Validation concatenates the runs (and references) of all recordings, so a mixture keeps
    # evenly spaced points of the whole set rather than the first recording's only.
    d, method = state_space_divergence(np.concatenate(noisy), ref, method=opts.stsp, bins=bins, var=opts.gmm_var, seed=seed,
                                       gmm_points="even")
    return {"D_stsp": float(d), "D_H": float(np.mean(dhs)) if dhs else float("nan"), "D_stsp_method": method,
            "collapsed": max(spreads) < COLLAPSE_SPREAD}


def inputs_after(train, test, n_steps: int) -> np.ndarray | None:
    """The external inputs of a free run started at the last reliable training teacher frame:
    the rest of the training split's, then the held-out tail's, then the whole recording's design
    repeated (a driven system is judged under the same design it was recorded with); (1, n_steps, K)."""
    if train.inputs is None:
        return None
    ok = np.flatnonzero(np.isfinite(train.teacher).all(axis=1))
    start = int(ok[-1]) + 1 if ok.size else train.inputs.shape[0]
    whole = train.inputs if test is None or test.inputs is None else np.concatenate([train.inputs, test.inputs])
    head = whole[start:]
    reps = int(math.ceil(max(n_steps - head.shape[0], 0) / max(whole.shape[0], 1)))
    seq = np.concatenate([head] + [whole] * reps)[:n_steps]
    return seq[None].astype(np.float32)


def with_observation_noise(gen: np.ndarray, reference: np.ndarray, seed: int = 0) -> np.ndarray:
    """``gen`` (T', N) plus Gaussian noise of the recording's noise level per channel: σ̂_j =
    `noise_level` (the MAD of the finest wavelet details) of ``reference[:, j]``, the recording's
    observed frames in the same units. A free run is noise-free and a recording is not; at σ 0.1
    that difference alone dominates the state-space divergence (docs/benchmarks.md, round 11)."""
    from dsrecon.signal.deconvolution import noise_level

    sigma = np.array([noise_level(reference[:, j]) for j in range(reference.shape[1])])
    return gen + sigma * np.random.default_rng(seed).standard_normal(gen.shape)


@torch.no_grad()
def generate_after(net: ConvSSMNet, train, n: int, total: int | None = None, test=None) -> np.ndarray | None:
    """The last n of ``total`` (default 1.25·n) observations generated from the last reliable
    training teacher state (driven by `inputs_after` when the data have inputs); None when there is
    no such state or the run diverged."""
    state0 = net.state_from_last_reliable(train.teacher)
    if state0 is None:
        return None
    n_total = max(n, int(math.ceil(1.25 * n)) if total is None else int(total))
    u = inputs_after(train, test, n_total + net.K) if net.n_inputs else None
    x, Z = net.free_run(state0, n_total, None if u is None else torch.from_numpy(u))
    x = x[0, n_total - n :].numpy()
    if not np.isfinite(x).all() or np.abs(Z.numpy()).max() > DIVERGENCE_BOUND:
        return None
    return x


@torch.no_grad()
def generate_after_members(stack: "Stack", rows: torch.Tensor, train, n: int, total: int,
                           device: str | torch.device | None = None) -> list[np.ndarray | None]:
    """`generate_after` for the members ``rows`` (E', P) of a fused stack at once: one batched free
    run of E' sequences on ``device`` (default: the rows'; the CUDA kernel there, or the numba CPU
    kernel over the members), decoded and convolved there."""
    t, E = stack.template, rows.shape[0]
    rows = rows if device is None else rows.to(device)
    ok = np.flatnonzero(np.isfinite(train.teacher).all(axis=1))
    if ok.size == 0:
        return [None] * E
    v = stack.views(rows)
    d0 = torch.as_tensor(train.teacher[ok[-1]], dtype=torch.float32, device=rows.device)
    z0 = d0[: t.F].expand(E, t.F)
    if t.M > t.F:
        z0 = torch.cat([z0, torch.einsum("n,ekn->ek", d0, v["L_init"])], dim=1)
    z0 = z0[:, None].contiguous()  # (E', 1, M)
    n_lat = total + t.K - 1
    Z = t.dynamics.fused_rollout(rows[:, : stack.P_dyn], z0, z0.new_zeros(E, 1, n_lat - 1, 0), z0.new_zeros(E, n_lat - 1))
    Z = torch.cat([z0[:, :, None], Z], dim=2)[:, 0]  # (E', n_lat, M)
    y = torch.einsum("etm,enm->etn", Z, v["decoder.B"]) if "decoder.B" in v else Z[..., : t.N]
    if y.device == t.taps.device:
        y = t.convolve(y)
    elif t.K > 1:  # ConvSSMNet.convolve's conv1d, with the taps on this device
        y = torch.nn.functional.conv1d(y.transpose(1, 2).reshape(E * t.N, 1, -1), t.taps.to(y)).reshape(E, t.N, -1).transpose(1, 2)
    x = y[:, total - n :]
    bad = (~torch.isfinite(x).all(dim=2).all(dim=1) | (Z.abs().amax(dim=(1, 2)) > DIVERGENCE_BOUND)).cpu().numpy()
    x = x.cpu().numpy()
    return [None if bad[j] else x[j] for j in range(E)]


# ----------------------------------------------------------------------------- E members as one matrix
class Stack:
    """E ConvSSMNets of one architecture as one (E, P) parameter matrix ``flat``.

    Row layout: the dynamics block in the backend's `packed_layout()` (what its fused kernel
    reads), then the rest of the net (L_init, decoder) in declaration order."""

    def __init__(self, nets: list[ConvSSMNet]):
        t = self.template = nets[0]
        dyn = [(f"dynamics.{n}", shp) for n, shp in t.dynamics.packed_layout()]
        assert sorted(n for n, _ in dyn) == sorted(n for n, _ in t.named_parameters() if n.startswith("dynamics."))
        rest = [(n, tuple(p.shape)) for n, p in t.named_parameters() if not n.startswith("dynamics.")]
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        o = 0
        for n, shp in dyn + rest:
            self.layout[n] = (o, shp)
            o += math.prod(shp)
        self.P, self.P_dyn = o, sum(math.prod(shp) for _, shp in dyn)
        self.device = next(t.parameters()).device
        self.flat = torch.stack([self.row_of(n) for n in nets]).to(self.device)
        l2 = {f"dynamics.{n}" for n in t.dynamics.l2_parameters} | {f"decoder.{n}" for n in t.decoder.l2_parameters}
        self.l2_mask = torch.zeros(self.P, dtype=torch.bool, device=self.device)
        for n in l2:
            o, shp = self.layout[n]
            self.l2_mask[o : o + math.prod(shp)] = True
        self.fused = t.dynamics.has_fused(self.flat)
        #: what trains the rows: "cuda" (plrnn_cuda's kernels), "fused" (the numba CPU kernels) or "vmap"
        self.engine = t.dynamics.fused_engine(self.flat) if self.fused else "vmap"

    def row_of(self, net: ConvSSMNet) -> torch.Tensor:
        params = dict(net.named_parameters())
        return torch.cat([params[n].detach().reshape(-1).to(torch.float32) for n in self.layout])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: (E', *shape)} views of the rows of ``flat`` (E', P)."""
        return {n: flat[:, o : o + math.prod(shp)].reshape(flat.shape[0], *shp) for n, (o, shp) in self.layout.items()}

    def load_into(self, net: ConvSSMNet, row: torch.Tensor) -> ConvSSMNet:
        """Copy one row (P,) into an ordinary ConvSSMNet of this architecture."""
        params = dict(net.named_parameters())
        with torch.no_grad():
            for n, v in self.views(row[None]).items():
                params[n].copy_(v[0])
        return net

    def losses(self, flat: torch.Tensor, batch: dict, alpha: torch.Tensor, l2: float, teacher_weight: float = 0.0) -> torch.Tensor:
        """Per-member GTF loss (E',) of rows ``flat`` (E', P) on their batches (E', B, …); alpha (E', T−1).
        teacher_weight λ adds λ·MSE(pre-forcing latent, teacher) over the forced units (finite teacher entries)."""
        t = self.template
        d = batch["teacher_t"]  # (E, B, T, N)
        E, B, T, N = d.shape
        if self.fused:  # the backend's kernel over all E·B sequences, then decoder and kernel as ConvSSMNet.observe
            v = self.views(flat)
            z0 = d[:, :, 0, : t.F]
            if t.M > t.F:
                z0 = torch.cat([z0, torch.einsum("ebn,ekn->ebk", d[:, :, 0], v["L_init"])], dim=-1)
            inp = batch.get("inp_t")
            Z = t.dynamics.fused_rollout(flat[:, : self.P_dyn], z0.contiguous(), d[:, :, 1:, : t.F], alpha,
                                         None if inp is None else inp[:, :, 1:])
            k = t.M if "decoder.B" in v else N  # the units the decoder reads (identity: the first N)
            Z = torch.cat([z0[:, :, None, :k], Z[..., :k]], dim=2)  # (E, B, T, k)
            Zf = Z[..., : t.F]
            y = torch.einsum("ebtm,enm->ebtn", Z, v["decoder.B"]) if "decoder.B" in v else Z
            y = t.convolve(y.reshape(E * B, T, N)).reshape(E, B, -1, N)
            if "decoder.J" in v and batch["reg_t"] is not None:
                y = y + torch.einsum("ebtr,enr->ebtn", batch["reg_t"][:, :, t.K - 1 :], v["decoder.J"])
        else:  # any backend: its own rollout, vectorised over the members
            reg, inp = batch["reg_t"], batch.get("inp_t")
            if inp is None:
                one = lambda p, d, a, r=None: torch.func.functional_call(t, p, (d, a, r))  # noqa: E731
                args = (self.views(flat), d, alpha) + (() if reg is None else (reg,))
            elif reg is None:
                one = lambda p, d, a, u: torch.func.functional_call(t, p, (d, a, None, u))  # noqa: E731
                args = (self.views(flat), d, alpha, inp)
            else:
                one = lambda p, d, a, r, u: torch.func.functional_call(t, p, (d, a, r, u))  # noqa: E731
                args = (self.views(flat), d, alpha, reg, inp)
            y, Zs = torch.func.vmap(one)(*args)
            Zf = Zs[..., : t.F]
        m = batch["mask_t"]  # (E, B, T−K+1)
        loss = (((y - batch["x_t"]) ** 2) * m[..., None]).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2)) * N).clamp_min(1.0)
        if teacher_weight > 0:  # the teacher-space term: the latent itself held near the deconvolved data
            dt = d[..., : t.F]
            fin = torch.isfinite(dt)
            sq = torch.where(fin, Zf - torch.where(fin, dt, 0.0), 0.0) ** 2
            loss = loss + teacher_weight * sq.sum(dim=(1, 2, 3)) / fin.sum(dim=(1, 2, 3)).clamp_min(1)
        if l2 > 0:
            loss = loss + l2 * ((flat**2) * self.l2_mask).sum(1)
        return loss


class StackedRAdam:
    """torch.optim.RAdam (β 0.9/0.999, ε 1e-8, no weight decay) over the rows of an (E, P) matrix,
    with a learning rate and a step count per row: row e follows exactly the trajectory an
    independent RAdam on member e's parameters would (elementwise arithmetic)."""

    BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

    def __init__(self, E: int, P: int, device: torch.device):
        self.m = torch.zeros(E, P, device=device)
        self.v = torch.zeros(E, P, device=device)
        self.step_count = np.zeros(E, dtype=np.int64)

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, lr: np.ndarray, m: torch.Tensor, v: torch.Tensor, steps: np.ndarray) -> None:
        """One step of rows ``flat`` with moments m, v and step counts ``steps`` (updated in place)."""
        b1, b2 = self.BETA1, self.BETA2
        steps += 1
        t = steps.astype(np.float64)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2**t) / bc2
        adaptive = rho_t > 5.0
        rect = np.sqrt(np.where(adaptive, (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 1.0))
        col = lambda a: torch.as_tensor(a, dtype=flat.dtype, device=flat.device)[:, None]  # noqa: E731
        if adaptive.all():
            flat.sub_(m * col(lr / bc1) * (col(np.sqrt(bc2) * rect) / (v.sqrt() + self.EPS)))
        elif not adaptive.any():
            flat.sub_(m * col(lr / bc1))
        else:
            ad = torch.as_tensor(adaptive, device=flat.device)[:, None]
            flat.sub_(m * col(lr / bc1) * torch.where(ad, col(np.sqrt(bc2) * rect) / (v.sqrt() + self.EPS), torch.ones_like(v)))

    def reset(self, e: int) -> None:
        """Fresh moments for row e, as a new torch optimiser would have."""
        self.m[e].zero_()
        self.v[e].zero_()
        self.step_count[e] = 0


def clip_rows_(grad: torch.Tensor, max_norm: float) -> None:
    """Per-row (per-member) `clip_grad_norm_`: scale row e by min(1, max_norm / (‖g_e‖ + 1e-6))."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    grad.mul_(torch.clamp(max_norm / (norms + 1e-6), max=1.0)[:, None])


# ----------------------------------------------------------------------------- one member's bookkeeping
class Member:
    """What is a member's own: its seed and options, α schedule, batch/noise stream, learning-rate
    scale, best model, patience, divergence retries, collapse restores and training log."""

    #: fields saved in the checkpoint as they are
    SCALARS = ("lr_scale", "divergences", "batches_done", "best_epoch", "bad_validations", "stopped_early", "failed",
               "collapse_restores", "epochs_run")

    def __init__(self, seed: int, opts: TrainOptions):
        self.seed, self.opts = int(seed), opts
        self.alpha = opts.schedule()
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
        score = (v["D_stsp"] if math.isfinite(v["D_stsp"]) else float("inf"), v["D_H"] if math.isfinite(v["D_H"]) else float("inf"))
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


def kernel_free(net: ConvSSMNet) -> ConvSSMNet:
    """A copy of ``net`` that observes its latent itself (kernel taps [1]): the model of teacher-space pretraining."""
    p = copy.deepcopy(net)
    p.taps = torch.ones(1, 1, 1, dtype=p.taps.dtype, device=p.taps.device)
    p.__dict__.pop("_toeplitz_cache", None)
    return p


def teacher_space(data: PreparedData) -> PreparedData:
    """``data`` with every training split's observations replaced by its teacher signals (the frames
    with a reliable teacher; the rest masked out) and no validation split: what pretraining fits."""
    from dsrecon.training.batches import Prepared

    train = []
    for r in data.train:
        ok = r.mask & np.isfinite(r.teacher).all(axis=1)
        train.append(Prepared(np.where(ok[:, None], r.teacher, 0.0).astype(np.float32), ok, r.teacher, r.regressors,
                              f"{r.source} (teacher signals)", r.inputs))
    return replace(data, train=train, test=[])


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
        opts = [o.with_preset(choose_preset("auto", n_train)) for o in opts]
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
        """`validate` member e (the group engine validates every subject); ``generated``: its free
        runs when the device made them for all members at once."""
        m = self.members[e]
        return validate(self.member_net(e), self.data, m.opts, seed=m.seed, **({} if generated is None else {"generated": generated}))

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
                self.members[e].rng.standard_normal(out=nx[j], dtype=np.float32)
                self.members[e].rng.standard_normal(out=nd[j], dtype=np.float32)
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
            if _HOOKS.nan_at_batch is not None:
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
        nb, out = _HOOKS.nan_at_batch, np.ones(idx.size)
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
        without it and lost (docs/benchmarks.md, round 5)."""
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
        optimiser. Deterministic, so a fit killed while pretraining reruns it identically; its result
        is checkpointed (epoch 0), so a fit killed later resumes without it."""
        if self.pretrained:  # done, or none asked (n_pretrain 0)
            return
        pre = [kernel_free(self.member_net(e)) for e in range(self.E)]
        sub = Trainer(pre, teacher_space(self.data), self.pretrain_options(), [m.seed for m in self.members], None,
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

    def _finish_pretraining(self, sub: "Trainer") -> None:
        """Run the pretraining engine ``sub`` and start the kernel stage from its parameters."""
        with inject_faults():  # a test's faults are for the epochs through the kernel
            sub.fit()
        self.stack.flat = sub.stack.flat.clone()
        self.pretrained = True
        self.save_checkpoint()

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
            if _HOOKS.stop_after_epoch is not None and self.epoch >= _HOOKS.stop_after_epoch and not self.stopped_early:
                raise Interrupted(self.epoch)  # like a kill: whatever is not checkpointed is lost
        for e, m in enumerate(self.members):
            self.member_net(e, m.best_row)  # the best state (or the last one) into the member's net
        return [{**m.summary(), "pretrain_epochs": self.n_pretrain, "teacher_weight": self.teacher_weight} for m in self.members]

    def _device_free_runs(self, idx: np.ndarray) -> list[list[np.ndarray | None]]:
        """The validation free runs of the members idx, all members at once on the device: for each
        member, one run per recording (as `validate` would make them one by one)."""
        rows = self.stack.flat[torch.as_tensor(idx, device=self.device)]
        per_rec = [generate_after_members(self.stack, rows, trn, *validation_steps(trn, tst), device=VAL_DEVICE)
                   for trn, tst in zip(self.data.train, self.data.test)]
        return [[runs[j] for runs in per_rec] for j in range(idx.size)]

    def _status(self, idx: np.ndarray, losses: np.ndarray) -> str:
        if self.E == 1:
            m = self.members[0]
            s = f"loss {losses[0]:.4g} α {m.alpha.value:.3g}"
            return s + (f" best D_stsp {m.best_score[0]:.3g}@{m.best_epoch}" if m.best_epoch else "")
        finite = [float(v) for v, e in zip(losses, idx) if not self.members[e].failed]
        return f"{len(finite)} members, loss min {min(finite):.4g}" if finite else "all members failed"
