# Frozen experiment, not maintained: last ran at 66f2836 (2026-12-05, both sets of members); results in
# docs/experiments/ensembles.md#other-selection-rules-on-the-same-kept-members
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/ensemble_reselect.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Selection rules for an ensemble, tried on kept runs (issue 15, target 3: "selection must work").

benchmarks/experiments/ensemble_select.py --runs DIR keeps each seed's ensemble (DIR/ens_sSEED/member-XX) and
its --out JSON has every member's latent D_stsp (against the true Lorenz63 trajectory, which a user
does not have). This script scores every kept member again by rules that need only the recording,
and asks of each rule what ensemble_select.py asks of the engine's: the chosen member's latent
D_stsp per seed, its rank among the members, in how many seeds it is in the best quarter, and the
Spearman correlation between the rule's score and latent D_stsp over all members.

Rules (each computed on the member's kept model, from the free run that validation makes: from the
last reliable training teacher state, the end of a run past the training data, as long as the
recording; the reference is the whole recording, z-scored with the training statistics):
- ``val``: validation's D_stsp (`dsrecon.training.validation.validation_scores` on this run: what the engine selects by);
- ``val_DH``: validation's D_H (the same call);
- ``val_gmm``: the Gaussian-mixture D_stsp (σ² 1) on the same run and reference;
- ``teacher``: D_stsp in teacher space: the run's latent units (z-scored) against the Wiener teacher
  of the training split (z-scored), bins capped as validation caps them;
- ``pe20``, ``pe100``: the n-step prediction error (`dsrecon.metrics.prediction.prediction_error`,
  the PE_n of `ConvSSM.score`) of the frames of the validation tail, n = 20 and 100 frames (0.2 and 1
  Lorenz time units; λ_max⁻¹ is 1.1): from the Wiener teacher of the whole recording, as score takes it;
- ``consensus``: how far the member's run is from the other members' (the median Hellinger distance
  between occupation histograms on the recording's grid, the validation bins; points outside the
  grid counted in its edge cells). It uses what the ensemble itself knows, not the validation tail:
  members that found the attractor agree with each other, and a wrong one is wrong in its own way;
- ``val+DH``, ``val+teacher``, ``val+DH+teacher``, ``val+consensus``: the mean rank within the seed's ensemble.

    python benchmarks/experiments/ensemble_reselect.py /work/sel/sel_a.json /work/sel/sel_b.json \\
        --runs /work/sel/runs_a /work/sel/runs_b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from ensemble_select import rank_of, seed_recording  # noqa: E402
from _common import zscore  # noqa: E402

from dsrecon import Recording, load_run  # noqa: E402
from dsrecon.metrics.prediction import prediction_error  # noqa: E402
from dsrecon.metrics.stsp import _bin_index, _joint_codes, bin_edges, stsp_binned, stsp_gmm  # noqa: E402
from dsrecon.signal.deconvolution import wiener_deconvolve  # noqa: E402
from dsrecon.training.prepare import prepare  # noqa: E402
from dsrecon.training.validation import DIVERGENCE_BOUND, validation_bins, validation_scores, validation_steps  # noqa: E402

RULES = ("val", "val_DH", "val_gmm", "teacher", "pe20", "pe100", "consensus")
COMBOS = {"val+DH": ("val", "val_DH"), "val+teacher": ("val", "teacher"), "val+DH+teacher": ("val", "val_DH", "teacher"),
          "val+consensus": ("val", "consensus"), "val+pe100": ("val", "pe100")}


def occupation(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Normalised occupation histogram of a run (T, N) on a fixed grid; points outside it fall in the edge cells."""
    k = len(edges[0]) - 1
    idx, _ = _bin_index(x, edges)  # binned D_stsp's cell of every point, clipped into the grid
    counts = np.bincount(_joint_codes(idx, k), minlength=k ** x.shape[1]).astype(np.float64)
    return counts / counts.sum()


def consensus_scores(runs: list[np.ndarray | None], edges: list[np.ndarray]) -> list[float]:
    """Per member: the median Hellinger distance of its occupation histogram to the other members'
    (a diverged or flat run: inf, and it is left out of the others' medians)."""
    hist = [occupation(x, edges) if x is not None else None for x in runs]
    ok = [i for i, h in enumerate(hist) if h is not None]
    out = []
    for i, h in enumerate(hist):
        if h is None or len(ok) < 2:
            out.append(float("inf"))
            continue
        d = [np.sqrt(0.5 * np.sum((np.sqrt(h) - np.sqrt(hist[j])) ** 2)) for j in ok if j != i]
        out.append(float(np.median(d)))
    return out


@torch.no_grad()
def member_scores(run: Path, rec: Recording) -> tuple[dict, np.ndarray | None, list[np.ndarray]]:
    """The rules' scores of one kept member (all but ``consensus``, which needs the others), its run
    (None when it diverged) and validation's grid (bin edges over the whole recording)."""
    model = load_run(run)
    net = model.net_.cpu().eval()
    data = prepare([rec], model.kernel_, model.train_options.test_fraction)
    trn, tst = data.train[0], data.test[0]
    whole = np.concatenate([trn.x, tst.x])
    full = whole[np.concatenate([trn.mask, tst.mask])]
    bins = validation_bins(full, 30)  # as validation_scores caps them
    edges = bin_edges(full, bins)
    n, total = validation_steps(trn, tst)
    state0 = net.state_from_last_reliable(trn.teacher)
    x, Z = net.free_run(state0, total)
    x, Z = x[0, total - n:].numpy(), Z[0].numpy()
    if not np.isfinite(x).all() or np.abs(Z).max() > DIVERGENCE_BOUND:
        return {r: float("inf") for r in RULES}, None, edges
    v = validation_scores(net, data, model.train_options, generated=[x])  # the engine's own score of this run
    lat = Z[-n:, :3].astype(np.float64)
    teach = trn.teacher[np.isfinite(trn.teacher).all(axis=1)]
    z = zscore(lat) if np.all(lat.std(0) > 1e-8) else lat
    whole = whole.astype(np.float32)
    teacher = wiener_deconvolve(whole, model.kernel_.taps).astype(np.float32)
    tail = np.concatenate([np.zeros(trn.x.shape[0], bool), tst.mask])  # predicted frames: the validation tail's
    out = {"val": v["D_stsp"], "val_DH": v["D_H"],
           "pe20": prediction_error(net, whole, teacher, 20, tail), "pe100": prediction_error(net, whole, teacher, 100, tail),
           "val_gmm": float(stsp_gmm(x, full, var=1.0, seed=0, points="even")),
           "teacher": float(stsp_binned(z, zscore(teach), bins=bins))}
    return {k: v if np.isfinite(v) else float("inf") for k, v in out.items()}, x, edges  # a flat run has no spectrum: worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="ensemble_select.py --out files")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="their --runs directories, in the same order")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    per_seed: dict[int, list[dict]] = {}
    for res, runs in zip(a.results, a.runs):
        doc = json.loads(res.read_text())
        for seed in doc["seeds_done"]:
            rec = seed_recording(seed)
            rows = [r for r in doc["rows"] if r["data_seed"] == seed]
            gens, edges = [], None
            for r in rows:
                if r["failed"]:
                    sc, x = {k: float("inf") for k in RULES}, None
                else:
                    sc, x, edges = member_scores(runs / f"ens_s{seed}" / f"member-{r['member']:02d}", rec)
                r["rules"] = sc
                gens.append(x)
            for r, c in zip(rows, consensus_scores(gens, edges)):
                r["rules"]["consensus"] = c
            for r in rows:
                sc = r["rules"]
                print(f"seed {seed} member {r['member']:2d}: latent {r['latent_D_stsp']:7.3f}  engine val {r['val_D_stsp'] or float('nan'):7.3f}  "
                      + "  ".join(f"{k} {v:7.3f}" for k, v in sc.items()), flush=True)
            per_seed[seed] = rows
    print(f"\n{'rule':16s} {'selected latent per seed':>40s} {'median':>7s} {'worst':>7s} {'best ¼':>6s} {'Spearman':>8s}")
    for rule in ("engine", *RULES, *COMBOS):
        chosen, quarter, xs, ys = [], 0, [], []
        for seed, rows in per_seed.items():
            lat = [r["latent_D_stsp"] for r in rows]
            if rule == "engine":
                score = [0.0 if r["selected"] else 1.0 for r in rows]
                corr = [r["val_D_stsp"] if r["val_D_stsp"] is not None else float("inf") for r in rows]
            elif rule in COMBOS:
                score = list(np.mean([rankdata([r["rules"][k] for r in rows]) for k in COMBOS[rule]], axis=0))
                corr = score
            else:
                score = corr = [r["rules"][rule] for r in rows]
            k = int(np.argmin(score))
            chosen.append(lat[k])
            quarter += rank_of(lat, k) <= max(1, len(rows) // 4)
            ok = [(c, la) for c, la in zip(corr, lat) if np.isfinite(c) and np.isfinite(la)]
            xs += [o[0] for o in ok] if rule not in COMBOS else []
            ys += [o[1] for o in ok] if rule not in COMBOS else []
        rho = spearmanr(xs, ys)[0] if len(xs) > 2 else float("nan")
        print(f"{rule:16s} {' / '.join(f'{c:.2f}' for c in chosen):>40s} {np.median(chosen):7.3f} {np.max(chosen):7.3f} "
              f"{quarter:3d}/{len(per_seed):<2d} {rho:8.2f}")
    print("Spearman: the rule's score against latent D_stsp over all members (pooled over seeds; combined ranks: —)")
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
