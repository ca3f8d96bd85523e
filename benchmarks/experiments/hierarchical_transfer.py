# Frozen experiment, not maintained: last ran at bb0f078 (2026-12-03, the --epochs 70 rerun; the script of 2b0b8a9); results in
# docs/experiments/hierarchical.md#transfer-where-the-new-subjects-features-start-2026-12-03
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/hierarchical_transfer.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Where should a transfer start? (issue #16's transfer target)

`GroupConvSSM.transfer` learns a new subject's features with the group parameters frozen. It starts
from the candidate that validates best on the new subject (the mean of the group's features or one
group subject's) and keeps that start unless training validates better. This script takes a group
run kept by ``benchmarks/hierarchical.py --save DIR`` and the held-out subject of that seed (ρ 36.5,
the same recording as the benchmark's ``transfer`` arm), and runs the library's transfer ("auto")
and one transfer from each single starting point: the mean, and each group subject's features.
Per row it prints the best epoch (0: the start was kept), the best validation D_stsp (what the fit
can see) and the latent D_stsp, D_H and λ_max of the transferred model against the truth (what it
cannot; `hierarchical.score`). So it shows whether the start matters and whether validation can
pick a good one.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/experiments/hierarchical_transfer.py /tmp/save/group-seed0 \\
        --seed 0 --epochs 100 --jsonl rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import hierarchical as H  # noqa: E402

from dsrecon import load_run  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a group run (hierarchical.py --save DIR: DIR/group-seedN)")
    p.add_argument("--seed", type=int, default=0, help="the benchmark seed the run was fitted with (picks the held-out recording)")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100, help="transfer epochs (the benchmark: a tenth of the group fit's)")
    p.add_argument("--n-gen", type=int, default=100_000)
    p.add_argument("--lyap-steps", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jsonl", type=Path, default=None)
    p.add_argument("--starts", nargs="+", default=None,
                   help="which rows: 'auto' (the library's choice among the mean and every subject's features, by "
                        "validation), 'mean', subject ids (default: all)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    held = H.recording(H.HELD_OUT_RHO, a.frames, 1000 * a.seed + 999, "sub-99")
    g = load_run(a.run)
    feats = np.asarray(g.features_, np.float32)
    starts = [("auto", "auto"), ("mean", None)] + [(sid, k) for k, sid in enumerate(g.subjects)]
    if a.starts:
        starts = [s for s in starts if s[0] in a.starts]
    print(f"{'start':>9s} {'best ep':>7s} {'val D_stsp':>10s} {'D_stsp':>7s} {'D_H':>6s} {'λ_max':>7s} {'wall s':>6s}  features", flush=True)
    for name, k in starts:
        # transfer chooses its start among the mean and each of the source's features: hand it one
        # row to start from it ("auto": all of them, the library's choice)
        g.features_ = feats if k in (None, "auto") else feats[k : k + 1]
        if k is None:  # the mean alone: one row
            g.features_ = feats.mean(0, keepdims=True)
        t0 = time.perf_counter()
        tr = g.transfer({"99": held}, epochs=a.epochs, seed=a.seed)
        wall = time.perf_counter() - t0
        chosen = tr.config.get("transfer_start", {}).get("99", name)
        if isinstance(k, int):
            start_row = feats[k]
        else:
            start_row = feats[g.subjects.index(chosen)] if chosen in g.subjects else feats.mean(0)
        if k == "auto":
            name = f"auto→{chosen}"
        row = {"start": name, "start_features": start_row.tolist(),
               "val_D_stsp": tr.config["training"]["best_val_D_stsp"], "best_epoch": tr.config["training"]["best_epoch"],
               **H.score(tr.subject("99"), H.HELD_OUT_RHO, a.n_gen, a.seed, a.lyap_steps), "wall_s": wall,
               "features": np.asarray(tr.features_[0]).tolist(), "seed": a.seed, "run": str(a.run)}
        print(f"{name:>9s} {row['best_epoch']:7d} {row['val_D_stsp']:10.3f} {row['D_stsp']:7.3f} {row.get('D_H', float('nan')):6.3f} "
              f"{row.get('lambda_max', float('nan')):7.3f} {wall:6.0f}  {np.round(row['features'], 3).tolist()}", flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    g.features_ = feats


if __name__ == "__main__":
    main()
