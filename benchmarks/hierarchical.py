"""Benchmark: the hierarchical group model against single-subject fits (issue #16).

Data: S Lorenz63 subjects with ρ evenly spaced from 28 to 45 (σ 10, β 8/3, dt 0.01 per sample),
each seen through the SPM HRF at TR 0.2 s with noise 0.01, `--frames` frames per subject (fit
keeps the last 25 % for validation). Arms, per seed:

* ``group``: `GroupConvSSM(features=F)` on the S subjects, `--epochs` × `--batches-per-epoch`
  updates (each update: `batch_size` sequences of every subject);
* ``single``: S independent `ConvSSM` fits of the same per-subject data and the same number of
  updates each (so every subject's model is updated, and sees its own sequences, as often as in
  the group fit; the S fits together make S times the group's updates of S times fewer sequences);
* ``single/S``: the other reading of "the same total number of updates": S fits of
  epochs/S each (their updates sum to the group's);
* ``transfer``: a held-out subject (ρ 36.5) added to the group fit by `GroupConvSSM.transfer`
  (group parameters frozen, features only) with a tenth of the group fit's epochs, against
  ``group+1``: a full group fit on the S + 1 subjects.

Per subject: latent D_stsp (first 3 latent units of a 100 000-step free run, z-scored, against a
100 000-step true trajectory of the subject's ρ, z-scored, 30 bins), D_H (smoothing 20), λ_max
per unit system time (model: 20 000-step QR on the latent map, one step = dt 0.01; truth:
`dsrecon.metrics.lyapunov.system_lyapunov`, what `dsrecon evaluate system` computes, with the
subject's ρ), wall time of the fit. The features' leave-one-subject-out linear regression R² for ρ.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/hierarchical.py --seeds 0 1 2 --epochs 150 --rows rows.jsonl
    python benchmarks/hierarchical.py --seeds 0 --epochs 1000 --pretrain-epochs 500 --skip-single-s --no-transfer --rows rows.jsonl
    python benchmarks/hierarchical.py --subjects 5 --frames 2000 --seeds 0 --epochs 150 --rows rows.jsonl
    python benchmarks/hierarchical.py --summarise rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

import dsrecon.models.group as MG
from dsrecon import ConvSSM, GroupConvSSM, Recording
from dsrecon.metrics.lyapunov import dynamics_lyapunov, system_lyapunov
from dsrecon.metrics.spectrum import hellinger_spectral
from dsrecon.metrics.stsp import stsp_binned
from dsrecon.systems import get_system, integrate, simulate_system
from _common import parse_set  # --set KEY=VALUE (benchmarks/ is sys.path[0] when run as a script)

HELD_OUT_RHO = 36.5


def zscore(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / a.std(0)


_TRUE: dict = {}


def truth(rho: float, n: int) -> tuple[np.ndarray, float]:
    """(z-scored 100 000-step true trajectory, true λ_max per unit time) of Lorenz63 at ρ."""
    key = (round(rho, 6), n)
    if key not in _TRUE:
        sys_ = get_system("lorenz63", rho=rho)
        traj = zscore(integrate(sys_, n, 0.01, transient=50.0, rng=np.random.default_rng(12345)))
        lam = system_lyapunov("lorenz63", n_steps=100_000, params={"rho": rho}).lambda_max
        _TRUE[key] = (traj, float(lam))
    return _TRUE[key]


def recording(rho: float, frames: int, seed: int, name: str, kernel: str = "spm") -> Recording:
    d = simulate_system("lorenz63", frames, 0.01, 0.2, kernel=kernel, noise=0.01, seed=seed, params={"rho": rho})
    return Recording(d["observed"], tr=0.2, names=d["names"], source=f"{name}.tsv")


def score(model: ConvSSM, rho: float, n_gen: int, seed: int, lyap_steps: int) -> dict:
    ref, lam_true = truth(rho, n_gen)
    row = {"rho": rho, "lambda_true": lam_true}
    try:
        sim = model.simulate(n_gen, seed=seed)
        lat = sim["latent"][:, :3]
        gen = zscore(lat) if np.all(lat.std(0) > 1e-8) else lat
        row["D_stsp"] = float(stsp_binned(gen, ref, bins=30))
        row["D_H"] = float(hellinger_spectral(gen, ref, smoothing=20))
        z0 = sim["latent"][-1]
        ly = dynamics_lyapunov(model.dynamics, z0, n_steps=lyap_steps, transient=1000, dt=0.01)
        row["lambda_max"] = float(ly.lambda_max)
    except Exception as e:  # a diverged free run is a result
        row.update(D_stsp=float("inf"), D_H=float("nan"), lambda_max=float("nan"), error=str(e)[:200])
    return row


def loso_r2(feats: np.ndarray, rho: np.ndarray) -> float:
    """Leave-one-subject-out linear regression (with intercept) of ρ on the features → R²."""
    S = len(rho)
    pred = np.empty(S)
    X = np.column_stack([np.ones(S), feats])
    for i in range(S):
        keep = np.arange(S) != i
        coef, *_ = np.linalg.lstsq(X[keep], rho[keep], rcond=None)
        pred[i] = X[i] @ coef
    return float(1 - ((rho - pred) ** 2).sum() / ((rho - rho.mean()) ** 2).sum())


def run_seed(seed: int, a) -> list[dict]:
    S = a.subjects
    rhos = np.linspace(28, 45, S)
    ids = [f"{i + 1:02d}" for i in range(S)]
    subs = {sid: recording(r, a.frames, 1000 * seed + i, f"sub-{sid}") for i, (sid, r) in enumerate(zip(ids, rhos))}
    held = recording(HELD_OUT_RHO, a.frames, 1000 * seed + 999, "sub-99")
    # the same teacher-space pretraining in every arm (--pretrain-epochs; default none), so the single
    # fits get the group's updates through the kernel and before it
    extra = parse_set(a.set)
    common = dict(latent_dim=3, epochs=a.epochs, batches_per_epoch=a.batches_per_epoch, seed=seed, device="cpu",
                  learning_rate=a.learning_rate, lr_end=a.lr_end, pretrain_epochs=a.pretrain_epochs, **extra)
    rows = []

    def emit(row):
        row.update(seed=seed, subjects=S, frames=a.frames, feature_std=MG.FEATURE_INIT_STD, feature_decay=a.feature_decay, options=extra)
        rows.append(row)
        if a.rows:
            with open(a.rows, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    g = GroupConvSSM(features=a.features, feature_decay=a.feature_decay, **common).fit(subs, None if a.save is None else f"{a.save}/group-seed{seed}")
    wall = time.perf_counter() - t0
    upd = g.config["training"]["updates"]
    r2 = loso_r2(g.features_, rhos) if a.features else float("nan")
    for sid, rho in zip(ids, rhos):
        emit({"arm": "group", "subject": sid, **score(g.subject(sid), rho, a.n_gen, seed, a.lyap_steps), "wall_s": wall, "updates": upd,
              "loso_r2": r2, "features": g.features_[ids.index(sid)].tolist()})
    for arm, ep in (("single", a.epochs), ("single/S", max(1, a.epochs // S))):
        if (arm == "single/S" and a.skip_single_s) or (arm == "single" and a.skip_single):
            continue
        for sid, rho in zip(ids, rhos):
            t0 = time.perf_counter()
            m = ConvSSM(**{**common, "epochs": ep, "pretrain_epochs": a.pretrain_epochs * ep // a.epochs}).fit(subs[sid])
            wall = time.perf_counter() - t0  # the fit alone (scoring is not timed)
            emit({"arm": arm, "subject": sid, **score(m, rho, a.n_gen, seed, a.lyap_steps), "wall_s": wall,
                  "updates": m.config["training"]["epochs_run"] * a.batches_per_epoch})
    if a.transfer:
        t0 = time.perf_counter()
        tr = g.transfer({"99": held}, epochs=max(1, a.epochs // 10), pretrain_epochs=a.pretrain_epochs // 10)
        wall = time.perf_counter() - t0
        emit({"arm": "transfer", "subject": "99", **score(tr.subject("99"), HELD_OUT_RHO, a.n_gen, seed, a.lyap_steps),
              "wall_s": wall, "updates": tr.config["training"]["updates"],
              "group_identical": bool(torch.equal(tr.g_, g.g_)), "features": tr.features_[0].tolist()})
        t0 = time.perf_counter()
        full = GroupConvSSM(features=a.features, feature_decay=a.feature_decay, **common).fit({**subs, "99": held})
        wall = time.perf_counter() - t0
        emit({"arm": "group+1", "subject": "99", **score(full.subject("99"), HELD_OUT_RHO, a.n_gen, seed, a.lyap_steps),
              "wall_s": wall, "updates": full.config["training"]["updates"]})
    return rows


def med(v) -> float:
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else float("nan")


def summarise(rows: list[dict]) -> str:
    out = []
    S = rows[0]["subjects"]
    arms = [a for a in ("group", "single", "single/S", "transfer", "group+1") if any(r["arm"] == a for r in rows)]
    out.append("| arm | subject | ρ | latent D_stsp | D_H | λ_max | λ_max true | wall s | updates |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm in arms:
        subs = sorted({r["subject"] for r in rows if r["arm"] == arm})
        for sid in subs:
            rs = [r for r in rows if r["arm"] == arm and r["subject"] == sid]
            out.append(f"| {arm} | {sid} | {rs[0]['rho']:.2f} | {med([r['D_stsp'] for r in rs]):.3f} | {med([r['D_H'] for r in rs]):.3f} | "
                       f"{med([r['lambda_max'] for r in rs]):.3f} | {rs[0]['lambda_true']:.3f} | {med([r['wall_s'] for r in rs]):.0f} | "
                       f"{med([r['updates'] for r in rs]):.0f} |")
    out.append("")
    out.append("Medians over subjects and seeds (each seed's value is the median over its subjects; then the median over seeds):")
    out.append("")
    out.append("| arm | latent D_stsp | D_H | abs. λ_max error | wall s (fit) |")
    out.append("|---|---:|---:|---:|---:|")
    seeds = sorted({r["seed"] for r in rows})
    summ = {}
    for arm in arms:
        per = []
        for s in seeds:
            rs = [r for r in rows if r["arm"] == arm and r["seed"] == s]
            if rs:
                walls = {r["subject"]: r["wall_s"] for r in rs}
                wall = rs[0]["wall_s"] if arm in ("group", "group+1", "transfer") else sum(walls.values())
                per.append((med([r["D_stsp"] for r in rs]), med([r["D_H"] for r in rs]),
                            med([abs(r["lambda_max"] - r["lambda_true"]) for r in rs]), wall))
        summ[arm] = [med([p[k] for p in per]) for k in range(4)]
        out.append(f"| {arm} | {summ[arm][0]:.3f} | {summ[arm][1]:.3f} | {summ[arm][2]:.3f} | {summ[arm][3]:.0f} |")
    out.append("")
    if "group" in summ and "single" in summ:
        gain = 1 - summ["group"][0] / summ["single"][0]
        out.append(f"- group vs single (equal updates per subject): median latent D_stsp {summ['group'][0]:.3f} vs {summ['single'][0]:.3f}: "
                   f"{100 * gain:.0f} % lower (target ≥ 30 %: {'met' if gain >= 0.3 else 'not met'})")
    if "single/S" in summ:
        gain = 1 - summ["group"][0] / summ["single/S"][0]
        out.append(f"- group vs single/S (updates summing to the group's): {summ['group'][0]:.3f} vs {summ['single/S'][0]:.3f}: {100 * gain:.0f} % lower")
    r2 = [next(r["loso_r2"] for r in rows if r["arm"] == "group" and r["seed"] == s) for s in seeds if any(r["arm"] == "group" and r["seed"] == s for r in rows)]
    out.append(f"- LOSO R² of ρ on the features, per seed: {', '.join(f'{x:.2f}' for x in r2)}; median {med(r2):.2f} "
               f"(target ≥ 0.8: {'met' if med(r2) >= 0.8 else 'not met'})")
    if "transfer" in summ and "group+1" in summ:
        t = [r for r in rows if r["arm"] == "transfer"]
        f = [r for r in rows if r["arm"] == "group+1"]
        ratio = summ["transfer"][0] / summ["group+1"][0]
        ur = med([r["updates"] for r in t]) / med([r["updates"] for r in f])
        out.append(f"- transfer (ρ {HELD_OUT_RHO}) vs full group fit: latent D_stsp {summ['transfer'][0]:.3f} vs {summ['group+1'][0]:.3f} "
                   f"(ratio {ratio:.2f}; target ≤ 1.20: {'met' if ratio <= 1.2 else 'not met'}), updates {med([r['updates'] for r in t]):.0f} vs "
                   f"{med([r['updates'] for r in f]):.0f} ({ur:.2f} of them), wall {summ['transfer'][3]:.0f} s vs {summ['group+1'][3]:.0f} s; "
                   f"group parameters bit-identical after transfer: {all(r.get('group_identical') for r in t)}")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batches-per-epoch", type=int, default=50)
    p.add_argument("--features", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=3e-3, help="every arm (the CLI default 1e-3 → 1e-6 is for 2 000 epochs)")
    p.add_argument("--lr-end", type=float, default=3e-4)
    p.add_argument("--pretrain-epochs", type=int, default=0, help="teacher-space pretraining epochs of every arm "
                   "(single/S and transfer: the same fraction of their epochs)")
    p.add_argument("--n-gen", type=int, default=100_000)
    p.add_argument("--lyap-steps", type=int, default=20_000)
    p.add_argument("--no-transfer", dest="transfer", action="store_false")
    p.add_argument("--skip-single-s", action="store_true")
    p.add_argument("--skip-single", action="store_true", help="skip the single arm (e.g. when another run of the same seed has it)")
    p.add_argument("--feature-std", type=float, default=None,
                   help="std of the subjects' initial features (default: the library's FEATURE_INIT_STD)")
    p.add_argument("--feature-decay", type=float, default=None, help="the group arms' --feature-decay (low-rank penalty λ; "
                   "default: the library's FEATURE_DECAY; runs from before it existed had 0)")
    p.add_argument("--set", nargs="*", default=[], help="extra options of every arm, KEY=VALUE (as lorenz_bold.py)")
    p.add_argument("--save", type=str, default=None, help="keep each seed's group run here (DIR/group-seedN)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=str, default=None, help="append one JSON line per result here")
    p.add_argument("--summarise", type=str, default=None, help="only print the tables of this rows file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.feature_std is not None:
        MG.FEATURE_INIT_STD = a.feature_std
    if a.feature_decay is None:
        a.feature_decay = MG.FEATURE_DECAY
    if a.summarise:
        rows = [json.loads(line) for line in open(a.summarise) if line.strip()]
        for n in sorted({(r["subjects"], r["frames"]) for r in rows}):
            print(f"\n### {n[0]} subjects × {n[1]} frames\n")
            print(summarise([r for r in rows if (r["subjects"], r["frames"]) == n]))
        return
    rows = []
    for s in a.seeds:
        rows += run_seed(s, a)
    print(summarise(rows))


if __name__ == "__main__":
    main()
