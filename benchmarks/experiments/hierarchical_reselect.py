# Frozen experiment, not maintained: last ran at 7b68dbb (2026-12-03); results in
# docs/experiments/hierarchical.md#two-features-and-a-longer-schedule-for-the-loso-target-2026-12-03-later
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/hierarchical_reselect.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Re-select each fitted subject's features among the group's, by validation (issue #16, a try at LOSO R²).

Takes a group run kept by ``benchmarks/hierarchical.py --save DIR`` and, for each of its subjects
(the benchmark's recording of that seed), runs the transfer's start rule on the subject's own data:
`GroupConvSSM.transfer` with one epoch at learning rate 1e-9 keeps the candidate (the mean of the
group's features or one subject's) that validates best. It prints, per subject, the latent D_stsp
and λ_max of the subject's own model and of the re-selected one (`hierarchical.score`), then the
medians and the LOSO R² of ρ on the own and the re-selected features.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/experiments/hierarchical_reselect.py DIR/group-seed0 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import hierarchical as H  # noqa: E402

from dsrecon import load_run  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a group run (hierarchical.py --save DIR: DIR/group-seedN)")
    p.add_argument("--seed", type=int, default=0, help="the benchmark seed the run was fitted with (picks the recordings)")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--n-gen", type=int, default=100_000)
    p.add_argument("--lyap-steps", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = load_run(a.run)
    rhos = np.linspace(28, 45, len(g.subjects))
    own_f = np.asarray(g.features_)
    rows = []
    print(f"{'subject':>7s} {'ρ':>6s} {'own D_stsp':>10s} {'own λ':>6s} {'chosen':>6s} {'new D_stsp':>10s} {'new λ':>6s}", flush=True)
    for i, (sid, rho) in enumerate(zip(g.subjects, rhos)):
        rec = H.recording(rho, a.frames, 1000 * a.seed + i, f"sub-{sid}")
        own = H.score(g.subject(sid), rho, a.n_gen, a.seed, a.lyap_steps)
        tr = g.transfer({sid: rec}, epochs=1, seed=a.seed, learning_rate=1e-9, lr_end=1e-9)
        new = H.score(tr.subject(sid), rho, a.n_gen, a.seed, a.lyap_steps)
        rows.append({"subject": sid, "rho": float(rho), "own": own, "chosen": tr.config["transfer_start"][sid], "new": new,
                     "features": np.asarray(tr.features_[0]).tolist()})
        print(f"{sid:>7s} {rho:6.2f} {own['D_stsp']:10.3f} {own.get('lambda_max', float('nan')):6.2f} {rows[-1]['chosen']:>6s} "
              f"{new['D_stsp']:10.3f} {new.get('lambda_max', float('nan')):6.2f}", flush=True)
    new_f = np.array([r["features"] for r in rows])
    med = lambda k: float(np.median([r[k]["D_stsp"] for r in rows]))  # noqa: E731
    print(json.dumps({"median_own": med("own"), "median_reselected": med("new"), "loso_own": H.loso_r2(own_f, rhos),
                      "loso_reselected": H.loso_r2(new_f, rhos)}))


if __name__ == "__main__":
    main()
