"""Real data against an echo-state network: dsrecon's ConvSSM beside a reservoirpy ESN (issue 15, target 4).

nitime's resting-state ROI table (250 frames, TR 1.89 s), WM/Vent/Brain dropped (28 regions), read
from the installed nitime wheel. Splits, in time order:

    train = first 75 % (188 frames)   test = last 25 % (62 frames)
    inside train: fit = first 80 % (150 frames), validation = last 20 % (38 frames)

Every method is handled by the same rule: each configuration of its small grid is fitted on `fit`
and scored on `validation` (seeds --val-seeds); the configuration with the best validation score
(the sum of its ranks in mean D_H and mean PE10 among the configurations bounded in every
validation seed; ties broken by D_H) is refitted on all of `train` and scored on `test` (seeds
--seeds). The test split is never used to choose anything.

One protocol for every row, in the units of the z-scored fitting data (mean and std of the part the
model was fitted on):
  * free run: FREE_RUN (100 000) closed-loop steps continuing from the end of the fitting data;
    bounded = the whole run finite and max |x| <= BOUND (100, z units);
  * D_stsp (GMM, σ² 1, first points) and D_H (smoothing 1) of the run's last T_eval frames against
    the evaluated split, both by `dsrecon.metrics.attractor_metrics` (the same call for every row);
  * PE10: MSE of 10-step predictions of x_{t+10} from the state at t, t = 11 … T_eval − 11 (dsrecon:
    `ConvSSM.score`, from the deconvolved teacher; ESN: from its reservoir state driven by the data).
Reference rows: Gaussian noise with the fitting data's covariance (PE10: predicting the mean), the
fitting data itself (its last T_eval frames; no PE), and a direct linear 10-step predictor
x̂_{t+10} = W x_t (ridge; λ chosen on validation by PE10; PE10 only).

    OMP_NUM_THREADS=1 python benchmarks/nitime_esn.py [--seeds 0 1 2 3 4] [--val-seeds 0 1] [--methods esn dsrecon]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import resources

import numpy as np
import torch

from dsrecon._util import cpu_name
from dsrecon import ConvSSM
from dsrecon.errors import DivergenceError
from dsrecon.io.load import InputSpec, load_inputs
from dsrecon.io.recording import Recording
from dsrecon.metrics import attractor_metrics

NUISANCE = ["WM", "Vent", "Brain"]
TEST_FRACTION = 0.25
VAL_FRACTION = 0.20  # of the training part
FREE_RUN = 100_000
BOUND = 100.0
N_PE = 10
# PE10 uses t = PE_FIRST_T … T_eval − 11 for every method: the t's dsrecon's PE10 can use. Its
# teacher (Wiener deconvolution of the evaluated split, 17-tap SPM kernel at TR 1.89 s) is unreliable
# in its first ceil(K/4) = 5 rows, and x_{t+10} needs the K − 10 = 7 frames of history up to t:
# first t = 5 + 7 − 1 = 11 (checked against dsrecon.metrics.prediction's rule).
PE_FIRST_T = 11
GMM_VAR = 1.0
SMOOTHING = 1.0

# ---------------------------------------------------------------- grids (a handful each)
ESN_GRID = [
    {"units": 300, "sr": 0.9, "lr": 0.3, "ridge": 1e-1, "input_scaling": 0.5},
    {"units": 300, "sr": 1.2, "lr": 0.3, "ridge": 1e-1, "input_scaling": 0.5},
    {"units": 500, "sr": 0.9, "lr": 0.5, "ridge": 1.0, "input_scaling": 0.3},
    {"units": 500, "sr": 1.1, "lr": 0.2, "ridge": 1e-2, "input_scaling": 0.5},
    {"units": 100, "sr": 0.9, "lr": 0.5, "ridge": 1e-1, "input_scaling": 1.0},
    {"units": 500, "sr": 0.9, "lr": 1.0, "ridge": 1.0, "input_scaling": 0.5},
]
# the third grid tried: around the second's validation winner (alpha 0.3, noise 0.5;
# docs/experiments/real-data-nitime.md#esn-comparison-what-each-try-measured-all-chosen-on-validation)
DSRECON_GRID = [
    {"hidden_dim": 50, "alpha": "0.3", "noise": 0.5, "epochs": 300},
    {"hidden_dim": 50, "alpha": "0.3", "noise": 1.0, "epochs": 300},
    {"hidden_dim": 50, "alpha": "0.5", "noise": 0.5, "epochs": 300},
    {"latent_dim": 10, "decoder": "affine", "hidden_dim": 50, "alpha": "0.3", "noise": 0.5, "epochs": 300},
    {"latent_dim": 20, "decoder": "affine", "hidden_dim": 50, "alpha": "0.3", "noise": 0.5, "epochs": 300},
]


def table_path() -> str:
    return str(resources.files("nitime") / "data" / "fmri_timeseries.csv")


def load_splits() -> dict[str, np.ndarray]:
    rec = load_inputs([table_path()], InputSpec(tr=1.89, drop_columns=NUISANCE))[0]
    train, test = rec.split(TEST_FRACTION)
    fit, val = train.split(VAL_FRACTION)
    return {"tr": rec.tr, "names": rec.names, "train": train.data, "test": test.data, "fit": fit.data, "val": val.data}


class Scaler:
    def __init__(self, x: np.ndarray):
        self.mean, self.std = x.mean(0), x.std(0)

    def z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


# ---------------------------------------------------------------- the echo-state network (reservoirpy)
class ESN:
    """Reservoir (reservoirpy.nodes.Reservoir) + ridge readout (reservoirpy.nodes.Ridge), one-step-ahead
    prediction in z units, generation in closed loop (the prediction is the next input)."""

    WARMUP = 10

    def __init__(self, units: int, sr: float, lr: float, ridge: float, input_scaling: float, seed: int):
        from reservoirpy.nodes import Reservoir, Ridge

        self.res = Reservoir(units=units, sr=sr, lr=lr, input_scaling=input_scaling, seed=seed)
        self.out = Ridge(ridge=ridge)

    def fit(self, z: np.ndarray) -> "ESN":
        self.res.reset() if self.res.initialized else None
        states = self.res.run(z[:-1])
        self.out.fit(states[self.WARMUP:], z[1 + self.WARMUP:])
        self.last_state = self.res.step(z[-1])  # state after the last fitting frame: predicts frame T
        return self

    def _readout(self, s: np.ndarray) -> np.ndarray:
        return s @ self.out.Wout + self.out.bias.ravel()

    def free_run(self, n: int) -> np.ndarray:
        self.res.state = {"out": self.last_state.copy()}
        y = np.empty((n, self.out.Wout.shape[1]))
        s = self.last_state
        for i in range(n):
            y[i] = self._readout(s)
            if not np.isfinite(y[i]).all() or np.abs(y[i]).max() > 1e6:
                y[i:] = np.nan
                break
            s = self.res.step(y[i])
        return y

    def predictions(self, z_eval: np.ndarray, n: int, ts: np.ndarray) -> np.ndarray:
        """x̂_{t+n} for each t in ts: the reservoir driven by the data up to frame t of z_eval
        (continuing from the fitting data), then n − 1 closed-loop steps."""
        self.res.state = {"out": self.last_state.copy()}
        drive = [self.last_state]  # drive[t] = state after input z_eval[t−1] (predicts z_eval[t])
        for t in range(z_eval.shape[0]):
            drive.append(self.res.step(z_eval[t]))
        out = np.empty((len(ts), z_eval.shape[1]))
        for k, t in enumerate(ts):
            s = drive[t + 1]  # after input z_eval[t]
            self.res.state = {"out": s.copy()}
            y = self._readout(s)  # predicts t+1
            for _ in range(n - 1):
                s = self.res.step(y)
                y = self._readout(s)
            out[k] = y
        return out


# ---------------------------------------------------------------- one protocol for every row
def pe_ts(T: int) -> np.ndarray:
    return np.arange(PE_FIRST_T, T - N_PE)


def scores(gen_z: np.ndarray | None, eval_z: np.ndarray, pe: float, seed: int) -> dict:
    T = eval_z.shape[0]
    if gen_z is None:
        return {"D_stsp": float("nan"), "D_H": float("nan"), "PE10": pe, "bounded": False, "max_abs": float("inf")}
    finite = bool(np.isfinite(gen_z).all())
    max_abs = float(np.abs(gen_z).max()) if finite else float("inf")
    bounded = finite and max_abs <= BOUND
    if not bounded:
        return {"D_stsp": float("nan"), "D_H": float("nan"), "PE10": pe, "bounded": False, "max_abs": max_abs}
    m = attractor_metrics(gen_z[-T:], eval_z, stsp="gmm", gmm_var=GMM_VAR, smoothing=SMOOTHING, seed=seed, gmm_points="first")
    return {"D_stsp": m["D_stsp"], "D_H": m["D_H"], "PE10": pe, "bounded": True, "max_abs": max_abs}


def run_esn(cfg: dict, fit_x: np.ndarray, eval_x: np.ndarray, seed: int) -> dict:
    sc = Scaler(fit_x)
    fz, ez = sc.z(fit_x), sc.z(eval_x)
    esn = ESN(seed=seed, **cfg).fit(fz)
    gen = esn.free_run(FREE_RUN)
    ts = pe_ts(ez.shape[0])
    pred = esn.predictions(ez, N_PE, ts)
    pe = float(np.mean((pred - ez[ts + N_PE]) ** 2))
    return scores(gen, ez, pe, seed)


def run_dsrecon(cfg: dict, fit_x: np.ndarray, eval_x: np.ndarray, seed: int, tr: float, names: list[str]) -> dict:
    sc = Scaler(fit_x)
    ez = sc.z(eval_x)
    m = ConvSSM(seed=seed, sequence_length=60, test_fraction=0.0, **cfg)
    m.fit(Recording(fit_x, tr, names=list(names), source="nitime fit"))
    ev = Recording(eval_x, tr, names=list(names), source="nitime eval")
    pe = m.score(ev, n_pe=N_PE, stsp="gmm", gmm_var=GMM_VAR, smoothing=SMOOTHING, seed=seed)["PE10"]
    try:
        gen = sc.z(m.simulate(FREE_RUN, seed=seed)["observed"])
    except DivergenceError:
        gen = None
    return scores(gen, ez, float(pe), seed)


def run_reference(kind: str, fit_x: np.ndarray, eval_x: np.ndarray, seed: int) -> dict:
    sc = Scaler(fit_x)
    fz, ez = sc.z(fit_x), sc.z(eval_x)
    T = ez.shape[0]
    ts = pe_ts(T)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        gen = rng.multivariate_normal(np.zeros(fz.shape[1]), np.cov(fz, rowvar=False), size=T)
        pe = float(np.mean(ez[ts + N_PE] ** 2))  # predicting the fitting mean
    else:  # the fitting data itself: its last T frames
        gen, pe = fz[-T:], float("nan")
    return scores(gen, ez, pe, seed)


LINEAR_RIDGE = [1.0, 10.0, 100.0, 1000.0, 10_000.0]


def run_linear(ridge: float, fit_x: np.ndarray, eval_x: np.ndarray) -> dict:
    """PE10 of a direct linear predictor x̂_{t+10} = W x_t (ridge regression on the fitting data):
    how much of x_{t+10} is linearly predictable at all. No free run."""
    sc = Scaler(fit_x)
    fz, ez = sc.z(fit_x), sc.z(eval_x)
    X, Y = fz[:-N_PE], fz[N_PE:]
    W = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ Y)
    ts = pe_ts(ez.shape[0])
    pe = float(np.mean((ez[ts] @ W - ez[ts + N_PE]) ** 2))
    return {"D_stsp": float("nan"), "D_H": float("nan"), "PE10": pe, "bounded": True, "max_abs": float("nan")}


def run(method: str, cfg: dict, fit_x, eval_x, seed, d) -> dict:
    t0 = time.perf_counter()
    if method == "esn":
        r = run_esn(cfg, fit_x, eval_x, seed)
    elif method == "linear":
        r = run_linear(cfg["ridge"], fit_x, eval_x)
    elif method == "dsrecon":
        r = run_dsrecon(cfg, fit_x, eval_x, seed, d["tr"], d["names"])
    else:
        r = run_reference(method, fit_x, eval_x, seed)
    r["wall_s"] = time.perf_counter() - t0
    return r


def choose(results: list[list[dict]]) -> tuple[int, list[dict]]:
    """results[c] = validation results of configuration c over the validation seeds. Returns the
    chosen index and a per-configuration summary (mean D_H, mean PE10, all bounded, rank sum)."""
    summ = []
    for rs in results:
        ok = all(r["bounded"] for r in rs)
        summ.append({"D_H": float(np.mean([r["D_H"] for r in rs])) if ok else float("inf"),
                     "PE10": float(np.mean([r["PE10"] for r in rs])) if ok else float("inf"),
                     "D_stsp": float(np.mean([r["D_stsp"] for r in rs])) if ok else float("inf"), "bounded": ok})
    # an undefined (NaN) D_H means a collapsed (constant) dimension: ranked last
    dh = np.nan_to_num(np.array([s["D_H"] for s in summ]), nan=np.inf)
    pe = np.nan_to_num(np.array([s["PE10"] for s in summ]), nan=np.inf)
    rank = np.argsort(np.argsort(dh)) + np.argsort(np.argsort(pe))
    for s, k in zip(summ, rank):
        s["rank_sum"] = int(k) if s["bounded"] else None
    cand = [i for i, s in enumerate(summ) if s["bounded"]] or list(range(len(summ)))
    best = min(cand, key=lambda i: (rank[i], dh[i]))
    return best, summ


def fmt(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--val-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=["esn", "dsrecon"], choices=["esn", "dsrecon"])
    ap.add_argument("--dsrecon-grid", type=str, default=None, help="JSON list of ConvSSM option dicts (replaces the built-in grid)")
    ap.add_argument("--esn-grid", type=str, default=None, help="JSON list of ESN option dicts (replaces the built-in grid)")
    ap.add_argument("--json-out", type=str, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    grids = {"esn": json.loads(a.esn_grid) if a.esn_grid else ESN_GRID,
             "dsrecon": json.loads(a.dsrecon_grid) if a.dsrecon_grid else DSRECON_GRID}
    d = load_splits()
    print(f"frames: fit {len(d['fit'])}, validation {len(d['val'])}, train {len(d['train'])}, test {len(d['test'])}; regions {d['train'].shape[1]}", flush=True)
    record = {"command": " ".join(sys.argv), "validation": {}, "chosen": {}, "test": []}
    chosen = {}
    for method in a.methods:
        print(f"\n## validation: {method} (fit {len(d['fit'])} frames → validation {len(d['val'])} frames, seeds {a.val_seeds})", flush=True)
        res = []
        for ci, cfg in enumerate(grids[method]):
            rs = []
            for s in a.val_seeds:
                r = run(method, cfg, d["fit"], d["val"], s, d)
                rs.append(r)
                print(f"  cfg {ci} seed {s}: D_stsp {fmt(r['D_stsp'])} D_H {fmt(r['D_H'])} PE10 {fmt(r['PE10'])} bounded {r['bounded']} ({r['wall_s']:.0f} s)  {cfg}", flush=True)
            res.append(rs)
        best, summ = choose(res)
        for ci, s in enumerate(summ):
            print(f"  cfg {ci}: mean D_H {fmt(s['D_H'])} mean PE10 {fmt(s['PE10'])} bounded {s['bounded']} rank sum {s['rank_sum']}{'  <- chosen' if ci == best else ''}", flush=True)
        chosen[method] = grids[method][best]
        record["validation"][method] = [{"config": c, "runs": rs, "summary": s} for c, rs, s in zip(grids[method], res, summ)]
        record["chosen"][method] = chosen[method]
    # reference predictor (PE10 only): its ridge chosen on validation by PE10
    lin = [run("linear", {"ridge": lam}, d["fit"], d["val"], 0, d)["PE10"] for lam in LINEAR_RIDGE]
    chosen["linear"] = {"ridge": LINEAR_RIDGE[int(np.argmin(lin))]}
    print("\n## validation: linear 10-step ridge predictor (PE10 only): " + ", ".join(f"ridge {lam:g}: {v:.3f}" for lam, v in zip(LINEAR_RIDGE, lin)), flush=True)
    record["validation"]["linear"] = [{"config": {"ridge": lam}, "PE10": v} for lam, v in zip(LINEAR_RIDGE, lin)]
    record["chosen"]["linear"] = chosen["linear"]
    rows = []
    print(f"\n## test: refit on train ({len(d['train'])} frames) → test ({len(d['test'])} frames)", flush=True)
    for method in [*a.methods, "noise", "train", "linear"]:
        for s in a.seeds:
            r = run(method, chosen.get(method, {}), d["train"], d["test"], s, d)
            r.update(method=method, seed=s)
            rows.append(r)
            print(f"  {method} seed {s}: D_stsp {fmt(r['D_stsp'])} D_H {fmt(r['D_H'])} PE10 {fmt(r['PE10'])} bounded {r['bounded']} ({r['wall_s']:.0f} s)", flush=True)
            if method in ("train", "linear"):
                break  # deterministic: one row
    record["test"] = rows
    labels = {"esn": "reservoirpy ESN", "dsrecon": "dsrecon ConvSSM", "noise": "Gaussian noise (data covariance); PE10: the mean",
              "train": "training part itself", "linear": "linear 10-step ridge predictor (PE10 only)"}
    print("\n| method | configuration (chosen on validation) | seed | D_stsp (GMM, σ² 1) | D_H (smoothing 1) | PE10 | bounded | wall s |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        cfg = chosen.get(r["method"], {})
        cs = ", ".join(f"{k} {v}" for k, v in cfg.items()) or "—"
        b = "—" if r["method"] == "linear" else ("yes" if r["bounded"] else "no")
        print(f"| {labels[r['method']]} | {cs} | {r['seed']} | {fmt(r['D_stsp'])} | {fmt(r['D_H'])} | {fmt(r['PE10'])} | {b} | {r['wall_s']:.0f} |")
    print("\n| method | median D_stsp | median D_H | median PE10 | bounded seeds |")
    print("|---|---:|---:|---:|---:|")
    for method in [*a.methods, "noise", "train", "linear"]:
        rs = [r for r in rows if r["method"] == method]
        med = lambda k: float(np.median([r[k] for r in rs]))  # noqa: E731
        print(f"| {labels[method]} | {fmt(med('D_stsp'))} | {fmt(med('D_H'))} | {fmt(med('PE10'))} | {sum(r['bounded'] for r in rs)}/{len(rs)} |")
    print(f"\ncommand: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores (shared), torch threads {torch.get_num_threads()}, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(record, f, indent=1, default=float)


if __name__ == "__main__":
    main()
