# Frozen experiment, not maintained: last ran at 2f15c36 (2026-12-05); results in
# docs/experiments/ensembles.md#is-the-limit-the-models-scores-or-the-recording
# Run from the repository root as PYTHONPATH=benchmarks python benchmarks/experiments/ensemble_reference.py ...
# (it imports benchmarks/_common.py and its siblings); no maintained script imports it.
"""Is selection on 2 000 frames limited by the model's scores or by the recording? (issue 15, target 3)

benchmarks/experiments/ensemble_select.py --runs DIR keeps each seed's ensemble; its --out JSON has every
member's latent D_stsp against a 100 000-step true Lorenz63 trajectory, which no user has. Validation
and every rule of ensemble_reselect.py compare a member with its own recording and rank the members
poorly. This script separates the two things that could be at fault:

- ``recording``: an observation-space score that needs only the data: D_stsp (30 bins) of a long free
  run of the member's BOLD (``--n-gen`` frames) against the whole recording handed to fit (2 667
  frames), each z-scored by its own mean and standard deviation, as the latent score z-scores the
  latent and the true trajectory (so it compares shapes, not the fitted scale);
- ``long BOLD``: the same free run against an independent, ``--n-gen``-frame BOLD recording of the
  same system, kernel and noise (data seed 777 000 + seed), which no user has either;
- ``long, fit's scale``: the long free run against the long recording in the fit's normalisation
  (the training split's mean and standard deviation for both, as validation compares them), so a
  member whose attractor has the right shape at the wrong amplitude or offset scores worse.

If the long-reference score ranks members by their latent D_stsp and the recording-reference score
does not, the models' observation statistics do carry the latent geometry, and what the selection
lacks is a reference long enough to see it: the recording itself is the limit. Per seed it prints the
Spearman correlation of each score with latent D_stsp within the seed's members and the latent
D_stsp of the member each would choose; then, per set, the chosen members' median, worst, and how
often the choice is in the best quarter (issue 15, target 3's terms).

A member's free run is fast (the CPU path runs 100 000 steps in about 0.1 s), so a set of 96
members takes well under a minute.

    python benchmarks/experiments/ensemble_reference.py /work/sel/sel_a.json /work/sel/sel_b.json /work/sel/sel_c.json \\
        --runs /work/sel/runs_a /work/sel/runs_b /work/sel/runs_c
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ensemble_select import NOISE, TR, rank_of, seed_recording  # noqa: E402
from _common import zscore  # noqa: E402

from dsrecon import load_run  # noqa: E402
from dsrecon.errors import DsreconError  # noqa: E402
from dsrecon.metrics.stsp import stsp_binned  # noqa: E402
from dsrecon.systems import simulate_system  # noqa: E402

SCORES = ("recording", "long BOLD", "long, fit's scale")
LONG_SEED = 777_000  # the independent long recording of data seed s uses seed LONG_SEED + s


def long_bold(seed: int, n: int) -> np.ndarray:
    """An independent n-frame BOLD recording of seed's setup (Lorenz63 through the SPM HRF at TR 0.2, σ 0.01)."""
    return simulate_system("lorenz63", n, 0.01, TR, kernel="spm", noise=NOISE, seed=LONG_SEED + seed)["observed"]


def member_scores(run: Path, member_seed: int, recording: np.ndarray, long_ref: np.ndarray, n_gen: int) -> dict:
    """The three scores of one kept member; inf where the free run diverges or collapses to a point."""
    model = load_run(run)
    try:
        sim = model.simulate(n_gen, seed=member_seed)
        gen = sim["observed"]
        if not np.all(gen.std(0) > 1e-8):
            raise DsreconError("the free run is constant in a channel")
        gen = zscore(gen)
        return {"recording": float(stsp_binned(gen, zscore(recording), bins=30)),
                "long BOLD": float(stsp_binned(gen, zscore(long_ref), bins=30)),
                "long, fit's scale": float(stsp_binned(sim["observed_normalised"], model.norm_.apply(long_ref), bins=30))}
    except DsreconError:  # a diverged free run, or one too flat to bin
        return {k: float("inf") for k in SCORES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="ensemble_select.py --out files")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="their --runs directories, in the same order")
    ap.add_argument("--n-gen", type=int, default=100_000, help="frames of each free run and of the long reference")
    a = ap.parse_args()
    if len(a.runs) != len(a.results):
        raise SystemExit("give one --runs directory per results file")
    torch.set_num_threads(1)
    chosen = {k: [] for k in SCORES}
    best_q = {k: 0 for k in SCORES}
    print(f"{'seed':>4s} {'members':>7s} " + " ".join(f"{'ρ ' + k:>19s} {'chosen':>7s}" for k in SCORES)
          + f" {'best':>7s} {'median':>7s}")
    for res, runs in zip(a.results, a.runs):
        doc = json.loads(res.read_text())
        for s in doc["seeds_done"]:
            rows = [r for r in doc["rows"] if r["data_seed"] == s]
            rec, ref = seed_recording(s).data, long_bold(s, a.n_gen)
            sc = [member_scores(runs / f"ens_s{s}" / f"member-{r['member']:02d}", r["seed"], rec, ref, a.n_gen)
                  if not r["failed"] else {k: float("inf") for k in SCORES} for r in rows]
            lat = [r["latent_D_stsp"] for r in rows]
            line = f"{s:4d} {len(rows):7d} "
            for k in SCORES:
                v = [c[k] for c in sc]
                ok = [(x, y) for x, y in zip(v, lat) if np.isfinite(x) and np.isfinite(y)]
                rho = float(spearmanr(*zip(*ok))[0]) if len(ok) > 2 else float("nan")
                i = int(np.argmin(v))
                chosen[k].append(lat[i])
                best_q[k] += rank_of(lat, i) <= max(1, len(rows) // 4)
                line += f"{rho:19.2f} {lat[i]:7.2f} "
            print(line + f"{np.min(lat):7.2f} {np.median(lat):7.2f}", flush=True)
    n = len(chosen[SCORES[0]])
    for k in SCORES:
        print(f"chosen by {k}: median {np.median(chosen[k]):.3f}, worst {np.max(chosen[k]):.3f}, "
              f"best quarter {best_q[k]} of {n}")


if __name__ == "__main__":
    main()
