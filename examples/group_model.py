"""The hierarchical group model end to end: simulate 6 Lorenz-63 "subjects" whose ρ differs
(28 … 40, seen through the SPM HRF at TR 0.5 s), fit one group model (F = 2) on all of them, see
how the learned features order the subjects by ρ, and transfer the model to a new subject.
Tiny settings: a few minutes on a laptop; use more epochs for real work.

    python examples/group_model.py [OUT_DIR]
"""

import sys
from pathlib import Path

import numpy as np

from dsrecon import GroupConvSSM, Recording, load_run
from dsrecon.systems import simulate_system


def subject(rho: float, seed: int) -> Recording:
    sim = simulate_system("lorenz63", 800, 0.01, 0.5, kernel="spm", noise=0.01, seed=seed, params={"rho": rho})
    return Recording(sim["observed"], tr=0.5, names=sim["names"], source=f"rho{rho:g}.tsv")


def main(out: Path) -> None:
    rhos = np.linspace(28, 40, 6)
    subs = {f"{i + 1:02d}": subject(r, i) for i, r in enumerate(rhos)}
    g = GroupConvSSM(features=2, latent_dim=3, hidden_dim=32, epochs=60, batches_per_epoch=20, learning_rate=3e-3, lr_end=3e-4,
                     seed=0).fit(subs, run_dir=out / "group", overwrite=True, log=print)
    print("\nsubject  rho    features")
    for sid, rho, f in zip(g.subjects, rhos, g.features_):
        print(f"{sid}       {rho:5.1f}  {np.round(f, 3)}")
    corr = [abs(np.corrcoef(g.features_[:, k], rhos)[0, 1]) for k in range(g.features_.shape[1])]
    print(f"|correlation| of each feature with rho: {np.round(corr, 2)}")
    sim = g.subject("01").simulate(2000)
    print(f"subject 01: generated {sim['observed'].shape[0]} frames of {sim['observed'].shape[1]} regions")
    new = load_run(out / "group").transfer({"07": subject(34.0, 99)}, run_dir=out / "group_new", overwrite=True)
    print(f"transfer: subject 07 (rho 34) got features {np.round(new.features_[0], 3)} in "
          f"{new.config['training']['updates']} updates; see {out / 'group_new' / 'subject_features.tsv'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("group_example"))
