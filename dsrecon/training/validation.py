"""Validation: free runs past the training split, scored against the observed recording.

The engine (`training.trainer`) calls `validation_scores` every ``val_every`` epochs to pick the best model
and to stop early; the cuda engine makes all members' free runs at once (`generate_after_members`).
Final scores follow docs/method.md §6 (`ConvSSM.score`); this is the model selection's own check.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from dsrecon.models.convssm import ConvSSMNet
from dsrecon.options import TrainOptions
from dsrecon.training.prepare import PreparedData

if TYPE_CHECKING:
    from dsrecon.training.stack import Stack

#: states beyond this magnitude (in z-scored units) count as a diverged free run
DIVERGENCE_BOUND = 1e4
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


def validation_scores(net: ConvSSMNet, data: PreparedData, opts: TrainOptions, seed: int = 0,
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
    generator = noise = None
    if opts.generation == "stochastic" and generated is None:  # judge the model its users will run
        from dsrecon.models.noise import estimate

        noise = estimate(net, data.train)
        generator = None if noise is None else torch.Generator().manual_seed(int(seed))
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
        gen = generate_after(net, trn, n, total=total, test=tst, generator=generator, noise=noise) if generated is None else generated[i]
        if gen is None:
            return {"D_stsp": float("inf"), "D_H": float("nan"), "D_stsp_method": None, "diverged": True}
        gens.append(gen)
        refs.append(full[fmask])
        spreads.append(float(np.max(gen.std(0) / np.maximum(full[fmask].std(0), 1e-12))))
        noisy.append(with_observation_noise(gen, full[fmask], seed + i) if opts.match_noise else gen)
        if T >= 8:
            dhs.append(hellinger_spectral(gen[-T:], full, smoothing=opts.smoothing))
    conn = {}
    if opts.select_by == "connectivity":  # the field's statistics, per recording, averaged
        from dsrecon.metrics.connectivity import connectivity_metrics

        cs = [connectivity_metrics(g, r, data.tr) for g, r in zip(gens, refs) if r.shape[0] >= 3 and r.shape[1] >= 2]
        fcd = [c["FCD_KS"] for c in cs if np.isfinite(c["FCD_KS"])]
        fc = [c["FC_corr"] for c in cs if np.isfinite(c["FC_corr"])]
        if fcd and fc:
            conn = {"FCD_KS": float(np.mean(fcd)), "FC_corr": float(np.mean(fc))}
    ref = np.concatenate(refs)
    bins = validation_bins(ref, opts.bins)
    # Validation concatenates the runs (and references) of all recordings, so a mixture keeps
    # evenly spaced points of the whole set rather than the first recording's only.
    d, method = state_space_divergence(np.concatenate(noisy), ref, method=opts.stsp, bins=bins, var=opts.gmm_var, seed=seed,
                                       gmm_points="even")
    out = {"D_stsp": float(d), "D_H": float(np.mean(dhs)) if dhs else float("nan"), "D_stsp_method": method,
           "collapsed": max(spreads) < COLLAPSE_SPREAD, **conn}
    if conn and np.isfinite(out["D_H"]):  # what picks the best checkpoint (`Member.record`)
        out["selection"] = conn["FCD_KS"] + (1.0 - conn["FC_corr"]) + out["D_H"]
    return out


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
    that difference alone dominates the state-space divergence
    (docs/experiments/lorenz-bold-reconstruction.md#round-11-2026-12-05-validation-that-compares-noisy-with-noisy---match-noise)."""
    from dsrecon.signal.deconvolution import noise_level

    sigma = np.array([noise_level(reference[:, j]) for j in range(reference.shape[1])])
    return gen + sigma * np.random.default_rng(seed).standard_normal(gen.shape)


@torch.no_grad()
def generate_after(net: ConvSSMNet, train, n: int, total: int | None = None, test=None,
                   generator: torch.Generator | None = None, noise=None) -> np.ndarray | None:
    """The last n of ``total`` (default 1.25·n) observations generated from the last reliable
    training teacher state (driven by `inputs_after` when the data have inputs); None when there is
    no such state or the run diverged. With ``generator``: the stochastic run (`ConvSSMNet.free_run`),
    with ``noise`` (a NoiseModel) or the net's own."""
    state0 = net.state_from_last_reliable(train.teacher)
    if state0 is None:
        return None
    n_total = max(n, int(math.ceil(1.25 * n)) if total is None else int(total))
    u = inputs_after(train, test, n_total + net.K) if net.n_inputs else None
    x, Z = net.free_run(state0, n_total, None if u is None else torch.from_numpy(u), generator=generator, noise=noise)
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
    z0 = t.forced_teacher(d0).expand(E, t.F)
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
