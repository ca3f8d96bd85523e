# Frozen experiment, not maintained: last ran at bb65b36 (2026-12-03, the library of that commit); results in
# docs/experiments/hierarchical.md#feature-identifiability-the-features-initial-scale-2026-12-03-one-seed
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/hierarchical_features.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Feature identifiability of the group model (issue #16): does the features' initial scale decide
whether they encode ρ?

10 Lorenz63 subjects (ρ evenly spaced 28…45, dt 0.01 per sample), observed directly (``kernel
none``, noise 0.01, 1 000 frames each; no HRF, so the question is the feature learning alone),
one `GroupConvSSM(features=3)` fit with the subjects' initial features N(0, SCALE²)
(`dsrecon.models.group.FEATURE_INIT_STD`; the library's default is now 0.1); learning rate
3e-3 → 3e-4 and pretraining off as in benchmarks/hierarchical.py. Prints one JSON line: the
leave-one-subject-out R² of ρ on the features (`hierarchical.loso_r2`), each feature's
correlation with ρ, the features' spread, and each subject's latent D_stsp (`hierarchical.score`,
20 000 generated steps); wall s covers the fit and the scoring.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/experiments/hierarchical_features.py SCALE EPOCHS [SEED]
"""

import json
import sys
import time

import numpy as np
import torch

import hierarchical as H  # noqa: E402

import dsrecon.models.group as MG  # noqa: E402
from dsrecon import GroupConvSSM  # noqa: E402


def main() -> None:
    scale, epochs = float(sys.argv[1]), int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    MG.FEATURE_INIT_STD = scale  # the initial features are N(0, scale²)
    torch.set_num_threads(1)
    rhos = np.linspace(28, 45, 10)
    subs = {f"{i + 1:02d}": H.recording(r, 1000, 1000 * seed + i, f"sub-{i + 1:02d}", kernel="none") for i, r in enumerate(rhos)}
    t = time.perf_counter()
    g = GroupConvSSM(features=3, latent_dim=3, kernel="none", epochs=epochs, seed=seed, device="cpu",
                     learning_rate=3e-3, lr_end=3e-4, pretrain_epochs=0).fit(subs)
    f = g.features_
    ds = [H.score(g.subject(sid), r, 20000, seed, 2000)["D_stsp"] for sid, r in zip(g.subjects, rhos)]
    print(json.dumps({"scale": scale, "epochs": epochs, "seed": seed, "loso_r2": H.loso_r2(f, rhos),
                      "corr": [float(np.corrcoef(f[:, k], rhos)[0, 1]) for k in range(f.shape[1])],
                      "feat_std": f.std(0).tolist(), "D_stsp_median": float(np.median(ds)), "D_stsp": ds,
                      "wall": time.perf_counter() - t}))


if __name__ == "__main__":
    main()
