# Frozen experiment, not maintained: last ran at 24268fd (2026-12-05, round 11); results in
# docs/experiments/lorenz-bold-reconstruction.md#round-11-2026-12-05-validation-that-compares-noisy-with-noisy---match-noise
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/lorenz_validation_tracking.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Does validation pick the right checkpoint? (fit issue, Lorenz63 through the HRF)

Trains one default fit per seed (no early stopping) on the lorenz_bold.py setup and, at every
validation, also measures what validation cannot see: the latent D_stsp of the current model
(first 3 latent units of a 100 000-step free run, z-scored, 30 bins, against a 100 000-step true
Lorenz63 trajectory, exactly as lorenz_bold.py scores the final model). Prints the pairs, the
within-run Spearman correlation, and the latent D_stsp of the checkpoint validation keeps against
the best one in the run, and the same for two other scores of each checkpoint: validation in
teacher space, and validation with each side z-scored by its own statistics ("own scale"; "own
scale + σ" adds the recording's observation noise, the benchmark's --noise, to the free run first),
and validation as `--match-noise` computes it (the fit's scale, the noise level estimated from the recording).

    python benchmarks/experiments/lorenz_validation_tracking.py --seeds 0 2 --epochs 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import lorenz_bold  # noqa: E402

import dsrecon.training.trainer as trainer_mod  # noqa: E402
import dsrecon.training.validation as validation_mod  # noqa: E402
from dsrecon.metrics.stsp import stsp_binned  # noqa: E402


@torch.no_grad()
def teacher_space_validation(net, data) -> float:
    """The candidate of issue 15's "validate in teacher space": validation's protocol (the last
    max(T, 10 000) steps of a 50 000-step free run from the last reliable training teacher state,
    binned D_stsp with validation's capped bins), but comparing the free run's latent units with
    the deconvolved recording (Wiener teacher of the training head and held-out tail together)
    instead of its observations with the BOLD frames."""
    from dsrecon.signal.deconvolution import wiener_deconvolve
    from dsrecon.training.validation import VAL_HORIZON, validation_steps

    trn, tst = data.train[0], data.test[0]
    full = np.concatenate([trn.x, tst.x]).astype(np.float64)
    taps = net.taps.flip(-1).reshape(-1).numpy().astype(np.float64)
    teacher = wiener_deconvolve(full, taps)
    teacher = teacher[np.isfinite(teacher).all(1)]
    n, _ = validation_steps(trn, tst)
    _, Z = net.free_run(net.state_from_last_reliable(trn.teacher), VAL_HORIZON)
    gen = Z[0, -n:, : full.shape[1]].numpy().astype(np.float64)
    if not np.isfinite(gen).all() or np.abs(gen).max() > 1e4:
        return float("inf")
    bins = validation_mod.validation_bins(teacher, 30)
    return float(stsp_binned(gen, teacher, bins=bins))


def own_scale_validation(gen: np.ndarray | None, data, noise: float = 0.0) -> float:
    """Validation's comparison with each side z-scored by its own statistics instead of both in the
    fit's normalisation: validation's own free run ``gen`` (`generate_after`, validation's length;
    None if it diverged) against the same reference (the whole recording), 30 bins. It ignores an attractor's amplitude and offset, as the
    latent score does (benchmarks/experiments/ensemble_reference.py: against a long reference it ranks ensemble
    members by latent D_stsp far better than the fit's scale does). ``noise``: Gaussian noise of
    that fraction of each channel's standard deviation added to the free run first, as the
    recording has it (the benchmark's σ: known here, estimated in a real fit)."""
    trn, tst = data.train[0], data.test[0]
    full = np.concatenate([trn.x, tst.x])[np.concatenate([trn.mask, tst.mask])].astype(np.float64)
    if gen is None or not np.all(gen.std(0) > 1e-8):
        return float("inf")
    gen = gen.astype(np.float64)
    gen = gen + noise * gen.std(0) * np.random.default_rng(0).standard_normal(gen.shape)
    return float(stsp_binned(lorenz_bold.zscore(gen), lorenz_bold.zscore(full), bins=30))


def track(seed: int, epochs: int, n_fit: int, extra: dict | None = None, noise: float = 0.01) -> list[dict]:
    ref = lorenz_bold.true_lorenz(100_000, seed)
    rows: list[dict] = []
    original = trainer_mod.validate

    def validate(net, data, opts, seed=0, generated=None):
        if generated is None:  # validation's free run, made once for every score below that compares it
            trn, tst = data.train[0], data.test[0]
            n, total = validation_mod.validation_steps(trn, tst)
            generated = [validation_mod.generate_after(net, trn, n, total=total, test=tst)]
        v = original(net, data, opts, seed, generated=generated)
        with torch.no_grad():
            _, Z = net.free_run(net.state_from_last_reliable(data.train[0].teacher), 100_000)
        lat = Z[0, -100_000:, :3].numpy().astype(np.float64)
        ok = np.isfinite(lat).all() and np.all(lat.std(0) > 1e-8)
        latent = float(stsp_binned(lorenz_bold.zscore(lat), ref, bins=30)) if ok else float("inf")
        # the trainer validates every val_every epochs and once more at the last epoch
        rows.append({"epoch": min((len(rows) + 1) * opts.val_every, epochs), "val": v["D_stsp"], "latent": latent,
                     "teacher": teacher_space_validation(net, data), "own_scale": own_scale_validation(generated[0], data),
                     "own_scale_noise": own_scale_validation(generated[0], data, noise),
                     "match_noise": original(net, data, replace(opts, match_noise=True), seed, generated=generated)["D_stsp"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress, and what a stopped run measured
        return v

    trainer_mod.validate = validate
    try:
        lorenz_bold.run_one(seed, "default", epochs, 1000, {**(extra or {}), "patience": 0}, None, n_fit=n_fit, noise=noise)
    finally:
        trainer_mod.validate = original
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--n-fit", type=int, default=2667)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--noise", type=float, default=0.01, help="observation noise σ (as lorenz_bold.py)")
    ap.add_argument("--set", nargs="*", default=[], help="extra ConvSSM options KEY=VALUE (as lorenz_bold.py)")
    ap.add_argument("--jsonl", type=Path, default=None, help="append each seed's (epoch, val, latent, teacher) rows here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{'seed':>4s} {'Spearman(val, latent)':>22s} {'kept epoch':>10s} {'kept latent':>11s} {'best epoch':>10s} {'best latent':>11s} "
          f"{'Spearman(teacher, latent)':>26s} {'teacher-kept epoch':>18s} {'teacher-kept latent':>19s} "
          f"{'Spearman(own scale, latent)':>27s} {'own-scale-kept latent':>21s} "
          f"{'Spearman(own scale + σ, latent)':>31s} {'own-scale-σ-kept latent':>23s} "
          f"{'Spearman(--match-noise, latent)':>31s} {'match-noise-kept latent':>23s}")
    for seed in a.seeds:
        rows = [r for r in track(seed, a.epochs, a.n_fit, lorenz_bold.parse_set(a.set), a.noise) if np.isfinite(r["val"]) and np.isfinite(r["latent"])]
        val = np.array([r["val"] for r in rows])
        lat = np.array([r["latent"] for r in rows])
        tea = np.array([r["teacher"] for r in rows])
        own = np.array([r["own_scale"] for r in rows])
        own_n = np.array([r["own_scale_noise"] for r in rows])
        mn = np.array([r["match_noise"] for r in rows])
        k, b, t, o, on, m = (int(np.argmin(val)), int(np.argmin(lat)), int(np.argmin(tea)), int(np.argmin(own)),
                             int(np.argmin(own_n)), int(np.argmin(mn)))
        print(f"{seed:4d} {spearmanr(val, lat)[0]:22.2f} {rows[k]['epoch']:10d} {lat[k]:11.3f} {rows[b]['epoch']:10d} {lat[b]:11.3f} "
              f"{spearmanr(tea, lat)[0]:26.2f} {rows[t]['epoch']:18d} {lat[t]:19.3f} "
              f"{spearmanr(own, lat)[0]:27.2f} {lat[o]:21.3f} {spearmanr(own_n, lat)[0]:31.2f} {lat[on]:23.3f} "
              f"{spearmanr(mn, lat)[0]:31.2f} {lat[m]:23.3f}", flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps({"seed": seed, "rows": rows}) + "\n")
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
