"""GPU benchmark: a thousand convSSMs at once on one GPU (plrnn_cuda; docs/benchmarks.md#gpu).

One run does, in this order:

1. the kernel check: the loss and gradients of 8 default convSSMs (M 3, L 50, SPM HRF at TR 0.2 =
   161 taps, sequence 200, batch 16) in float32 on the CUDA kernel against repeated `step` in
   float64, on fresh random inputs (`dsrecon.training.cuda_check.kernel_errors`);
2. throughput: model-epochs per second (K members × epochs / wall time of `Trainer.run_epoch`, 50
   batches of 16 per epoch, noise and teacher forcing as a default fit) for K = 1, 64, 256, 1 024
   on the GPU and K = 1, 64 on the CPU fused path; for each device run also the host's share (the
   members' random draws alone) and the time of one batched validation free run of 1 024 members
   (5 000 steps, a tenth of a validation's) on the GPU and on the CPU kernel: the faster one makes
   the experiment's validation free runs;
3. the experiment: 1 000 convSSMs (seeds 0…999) on one Lorenz63-BOLD series of 1 000 frames (TR 0.2,
   noise 0.01), the default budget (2 000 epochs) unless the time left does not allow it (then the
   epochs that fit, printed), validated twice (half way and at the end: a validation of 1 000 members
   costs their free runs and ~1 000 CPU metric evaluations); then λ_max of every member (its best model) per
   Lorenz time unit (dt 0.01 per frame): median, IQR and the share of chaotic models (λ_max > 0.05)
   against 0.9056. λ_max comes from one tangent vector propagated with the closed-form Jacobian for
   all members at once (`batched_lambda_max`), checked against `dynamics_lyapunov` on two members.

It prints one table last and writes every number to --out (JSON). The whole run is sized to stay
under 8 minutes on an H200 (--budget-s, default 450 s: the experiment takes what the rest left).

    python benchmarks/gpu.py --out gpu.json                 # on a machine with a CUDA GPU
    NUMBA_ENABLE_CUDASIM=1 DSRECON_CUDA_SIMULATOR=1 python benchmarks/gpu.py --smoke --out gpu-smoke.json
                                                            # no GPU: every step at a tiny size on numba's simulator
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


LORENZ_DT, LORENZ_LMAX = 0.01, 0.9056
#: λ_max above this (per Lorenz time unit) counts as chaotic: a limit cycle's finite-time estimate
#: over 100 time units is within a few hundredths of 0
CHAOS_THRESHOLD = 0.05

FULL = dict(latent_dim=3, hidden_dim=50, tr=0.2, frames=1000, sequence_length=200, batch_size=16, batches_per_epoch=50,
            Ks=[1, 64, 256, 1024], cpu_Ks=[1, 64], members=1000, epochs=2000, validations=2, lyap_steps=10_000, lyap_transient=2000,
            min_time_s=3.0, val_members=1024)
SMOKE = dict(latent_dim=3, hidden_dim=6, tr=2.0, frames=200, sequence_length=30, batch_size=4, batches_per_epoch=2,
             Ks=[1, 2], cpu_Ks=[1, 2], members=3, epochs=2, validations=1, lyap_steps=300, lyap_transient=50, min_time_s=0.3,
             val_members=2)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _cpu_kernels:
    """Within this block the CPU numba kernels serve CPU tensors even under the simulator switch."""

    def __enter__(self):
        self.old = os.environ.get("DSRECON_CUDA_SIMULATOR")
        os.environ["DSRECON_CUDA_SIMULATOR"] = "0"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("DSRECON_CUDA_SIMULATOR", None)
        else:
            os.environ["DSRECON_CUDA_SIMULATOR"] = self.old


def lorenz_bold(cfg: dict, seed: int = 0):
    from dsrecon import Recording
    from dsrecon.systems import simulate_system

    out = simulate_system("lorenz63", cfg["frames"], LORENZ_DT, cfg["tr"], kernel="spm", noise=0.01, seed=seed)
    return Recording(out["observed"], tr=cfg["tr"], names=out["names"], source="lorenz63-bold")


def build(K: int, device: str, rec, cfg: dict, **train):
    """A Trainer of K convSSMs with seeds 0…K−1, built as `fit_ensemble` builds its members (no run directory)."""
    from dsrecon import ConvSSM
    from dsrecon._util import seed_everything
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare
    from dsrecon.training.trainer import Trainer

    opts = dict(latent_dim=cfg["latent_dim"], hidden_dim=cfg["hidden_dim"], sequence_length=cfg["sequence_length"],
                batch_size=cfg["batch_size"], batches_per_epoch=cfg["batches_per_epoch"], device=device, **train)
    models = [ConvSSM(seed=k, **opts) for k in range(K)]
    models = [m.resolved([rec], None) for m in models]
    kern = make_kernel(models[0].kernel, rec.tr, tau_decay=models[0].tau_decay, tau_rise=models[0].tau_rise)
    data = prepare([rec], kern, models[0].train_options.test_fraction)
    nets = []
    for m in models:
        seed_everything(m.seed)
        nets.append(m._build(len(data.names), 0, kern, torch.Generator().manual_seed(m.seed)).to(m.device))
    return Trainer(nets, data, [m.train_options for m in models], [m.seed for m in models]), data


def throughput(K: int, device: str, rec, cfg: dict) -> dict:
    """Model-epochs per second of K members (one warm-up epoch, then epochs for at least min_time_s)."""
    tr, data = build(K, device, rec, cfg, epochs=cfg["epochs"])
    t0 = time.perf_counter()
    tr.run_epoch()  # compiles the kernels, allocates, copies the data to the device
    _sync()
    warm = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while True:
        tr.run_epoch()
        n += 1
        _sync()
        el = time.perf_counter() - t0
        if el >= cfg["min_time_s"]:
            break
    row = {"K": K, "device": device, "engine": tr.stack.engine, "epochs_timed": n, "seconds_per_epoch": el / n,
           "model_epochs_per_s": K * n / el, "warmup_s": warm}
    if tr.stack.engine == "cuda" and tr._device_batches is not None:  # the host's share: the members' draws alone
        db = tr._device_batches
        rngs = [np.random.default_rng(k) for k in range(K)]
        buf = db._buffers(K, cfg["batch_size"], True)
        t0 = time.perf_counter()
        for _ in range(cfg["batches_per_epoch"]):
            db._host_draws(rngs, cfg["batch_size"], tr.o.noise, buf)
        row["host_draws_s_per_epoch"] = time.perf_counter() - t0
    return row


def free_run_times(rec, cfg: dict, device: str) -> dict:
    """One batched validation free run (the trainer's horizon) of val_members members on the training
    device and on the CPU kernel (seconds each), and the CPU cost of one member's validation metrics."""
    from dsrecon.training import validation as trm

    tr, data = build(cfg["val_members"], device, rec, cfg, epochs=cfg["epochs"])
    tr.run_epoch()
    train0 = data.train[0]
    horizon = trm.validation_steps(train0, data.test[0])[1] + tr.nets[0].K - 1  # the latent steps of one validation free run
    n, total = (200, 300) if cfg is SMOKE else (4_000, 5_000)  # a tenth of the horizon, timed; the rest is linear
    rows = tr.stack.flat
    out = {"members": int(rows.shape[0]), "steps": total + tr.nets[0].K - 1, "validation_steps": horizon}
    trm.generate_after_members(tr.stack, rows[:1], train0, 10, 20)  # compiles
    _sync()
    t0 = time.perf_counter()
    dev_runs = trm.generate_after_members(tr.stack, rows, train0, n, total)
    _sync()
    out["device_s"] = time.perf_counter() - t0
    with _cpu_kernels():
        trm.generate_after_members(tr.stack, rows[:1], train0, 10, 20, device="cpu")
        t0 = time.perf_counter()
        cpu_runs = trm.generate_after_members(tr.stack, rows, train0, n, total, device="cpu")
        out["cpu_s"] = time.perf_counter() - t0
    k = min(200, n)  # chaotic runs part after a while: the first steps must agree
    diffs = [float(np.abs(a[:k] - b[:k]).max() / max(np.abs(b[:k]).max(), 1e-6)) for a, b in zip(dev_runs, cpu_runs)
             if a is not None and b is not None]
    out["max_rel_diff_first_steps"] = max(diffs) if diffs else None
    for k in ("device_s", "cpu_s"):  # a free run is linear in its length
        out[f"{k[:-2]}_validation_s"] = out[k] * horizon / out["steps"]
    m = min(3, rows.shape[0])
    t0 = time.perf_counter()
    for e in range(m):
        trm.validation_scores(tr.member_net(e), data, tr.members[e].opts, seed=e, generated=[dev_runs[e]])
    out["metrics_s_per_member"] = (time.perf_counter() - t0) / m
    return out


@torch.no_grad()
def batched_lambda_max(stack, rows: torch.Tensor, z0: torch.Tensor, n_steps: int, transient: int, dt: float) -> np.ndarray:
    """λ_max per unit time of every shPLRNN row (E, P) from z0 (E, M), float64: ``transient`` steps,
    then one tangent vector (e_1 at the start, as the QR method's first column) propagated by the
    closed-form Jacobian and renormalised every step. NaN for a member whose orbit diverged."""
    v = stack.views(rows.double())
    A, W1, W2, h1, h2 = (v[f"dynamics.{n}"] for n in ("A", "W1", "W2", "h1", "h2"))
    clipped = bool(stack.template.dynamics.clipped)
    z = z0.double()

    def pre_of(z):
        return torch.einsum("elm,em->el", W2, z)

    def step(z, pre):
        act = torch.relu(pre + h2) - (torch.relu(pre) if clipped else 0.0)
        return A * z + torch.einsum("eml,el->em", W1, act) + h1

    for _ in range(transient):
        z = step(z, pre_of(z))
    q = torch.zeros_like(z)
    q[:, 0] = 1.0
    s = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    for _ in range(n_steps):
        pre = pre_of(z)
        d = (pre + h2 > 0).double() - ((pre > 0).double() if clipped else 0.0)
        jq = A * q + torch.einsum("eml,el->em", W1, d * torch.einsum("elm,em->el", W2, q))
        z = step(z, pre)
        nrm = torch.linalg.vector_norm(jq, dim=1)
        s += torch.log(nrm)
        q = jq / nrm[:, None]
    lam = (s / n_steps / dt).cpu().numpy()
    bad = (~torch.isfinite(z).all(1) | (z.abs().amax(1) > 1e4)).cpu().numpy()
    lam[bad] = np.nan
    return lam


def experiment(rec, cfg: dict, device: str, epochs: int) -> dict:
    from dsrecon.metrics.lyapunov import dynamics_lyapunov

    K = cfg["members"]
    val_every = max(1, epochs // cfg["validations"])
    tr, data = build(K, device, rec, cfg, epochs=epochs, val_every=val_every)
    t0 = time.perf_counter()
    summaries = tr.fit()
    _sync()
    fit_s = time.perf_counter() - t0
    rows = torch.stack([m.best_row if m.best_row is not None else tr.stack.flat[e] for e, m in enumerate(tr.members)])
    teacher = data.train[-1].teacher
    z0 = torch.cat([tr.nets[e].state_from_last_reliable(teacher) for e in range(K)]).to(rows.device)
    t0 = time.perf_counter()
    lam = batched_lambda_max(tr.stack, rows, z0, cfg["lyap_steps"], cfg["lyap_transient"], LORENZ_DT)
    lyap_s = time.perf_counter() - t0
    check = []
    for e in range(min(2, K)):  # the batched estimate against the library's QR method on the same orbit
        if not math.isfinite(lam[e]):
            continue
        net = tr.stack.load_into(tr.nets[e], rows[e])
        with _cpu_kernels():
            ref = dynamics_lyapunov(net.dynamics, z0[e].double().cpu().numpy(), n_steps=cfg["lyap_steps"],
                                    transient=cfg["lyap_transient"], dt=LORENZ_DT, n_exponents=1)
        check.append({"member": e, "batched": float(lam[e]), "dynamics_lyapunov": float(ref.per_second[0])})
    ok = lam[np.isfinite(lam)]
    q1, med, q3 = (np.percentile(ok, [25, 50, 75]) if ok.size else (np.nan,) * 3)
    return {"members": K, "epochs": epochs, "val_every": val_every, "fit_s": fit_s, "lyapunov_s": lyap_s,
            "model_epochs_per_s_incl_validation": K * epochs / fit_s, "failed": sum(1 for s in summaries if s["failed"]),
            "diverged_orbits": int((~np.isfinite(lam)).sum()), "lambda_max_median": float(med), "lambda_max_q1": float(q1),
            "lambda_max_q3": float(q3), "lambda_max_iqr": float(q3 - q1), "chaotic_share": float((ok > CHAOS_THRESHOLD).mean()) if ok.size else 0.0,
            "median_error_vs_lorenz": float(abs(med - LORENZ_LMAX) / LORENZ_LMAX), "lambda_max_check": check,
            "lambda_max_all": [None if not math.isfinite(x) else float(x) for x in lam]}


def machine(device: str) -> dict:
    from dsrecon._util import versions

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "versions": versions()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_runtime"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                            text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info["gpu"] = "none: numba CUDA simulator on the CPU"
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="every step at a tiny size (runs on numba's CUDA simulator)")
    ap.add_argument("--out", default="gpu.json", help="JSON file with every number")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-time budget of the whole run (the experiment takes the rest)")
    ap.add_argument("--threads", type=int, default=None, help="torch/numba threads on the host (default: all cores)")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    from dsrecon.models.backends import plrnn_cuda
    from dsrecon.training.cuda_check import kernel_errors
    from dsrecon.training import validation as trm

    cfg = SMOKE if a.smoke else FULL
    if a.smoke:  # the simulator interprets every step: short validation free runs
        trm.VAL_MIN_STEPS, trm.VAL_HORIZON = 200, 300
    if torch.cuda.is_available():
        device = "cuda"
        if not plrnn_cuda.available_for(torch.zeros(1, device="cuda")):
            print("numba cannot compile for this GPU (install the gpu extra: pip install -e '.[gpu]')", file=sys.stderr)
            return 1
    elif plrnn_cuda.simulating():
        device = "cpu"  # CPU tensors, the CUDA kernels on numba's simulator
    else:
        print("no CUDA device: run on a GPU machine, or on the simulator with NUMBA_ENABLE_CUDASIM=1 DSRECON_CUDA_SIMULATOR=1", file=sys.stderr)
        return 1
    res: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "smoke": a.smoke, "config": cfg,
                 "machine": machine(device)}
    say = lambda msg: print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)  # noqa: E731

    say("1. kernel check against repeated step (float64)")
    t0 = time.perf_counter()
    res["kernel_check"] = kernel_errors(full=not a.smoke, seed=int(np.random.SeedSequence().entropy % 2**31))
    res["kernel_check"]["seconds"] = time.perf_counter() - t0
    kc = res["kernel_check"]
    say(f"   loss rel err {kc['loss_rel_err']:.2e}, gradient rel err {kc['grad_rel_err']:.2e}")
    if not (kc["loss_rel_err"] < 2e-5 and kc["grad_rel_err"] < 2e-4):
        say("   the kernel does not match the reference: stopping")
        Path(a.out).write_text(json.dumps(res, indent=1))
        return 1

    say("2. throughput")
    rec = lorenz_bold(cfg)
    res["throughput"] = []
    for K in cfg["Ks"]:
        row = throughput(K, device, rec, cfg)
        row["path"] = "gpu" if device == "cuda" else "simulator"
        res["throughput"].append(row)
        say(f"   {row['path']:9s} K {K:5d}: {row['model_epochs_per_s']:9.1f} model-epochs/s ({row['seconds_per_epoch']:.3f} s/epoch)")
    with _cpu_kernels():
        for K in cfg["cpu_Ks"]:
            row = throughput(K, "cpu", rec, cfg)
            row["path"] = "cpu fused"
            res["throughput"].append(row)
            say(f"   cpu fused K {K:5d}: {row['model_epochs_per_s']:9.1f} model-epochs/s ({row['seconds_per_epoch']:.3f} s/epoch)")
    dev_rows = {r["K"]: r for r in res["throughput"] if r["path"] != "cpu fused"}
    cpu_rows = {r["K"]: r for r in res["throughput"] if r["path"] == "cpu fused"}
    kmax, kmin = max(dev_rows), min(dev_rows)
    res["ratio_device"] = dev_rows[kmax]["model_epochs_per_s"] / dev_rows[kmin]["model_epochs_per_s"]
    res["ratio_cpu"] = cpu_rows[max(cpu_rows)]["model_epochs_per_s"] / cpu_rows[min(cpu_rows)]["model_epochs_per_s"]

    say("   validation free runs, all members at once")
    res["free_runs"] = fr = free_run_times(rec, cfg, device)
    say(f"   {fr['members']} members x {fr['steps']} steps: device {fr['device_s']:.2f} s, cpu kernel {fr['cpu_s']:.2f} s "
        f"(x {fr['validation_steps'] / fr['steps']:.1f} for a validation); metrics {fr['metrics_s_per_member'] * 1e3:.1f} ms per member")
    trm.VAL_DEVICE = "cpu" if fr["cpu_s"] < fr["device_s"] else None

    K = cfg["members"]
    rate = dev_rows[kmax]["model_epochs_per_s"]
    left = a.budget_s - (time.perf_counter() - t_start) - 30.0  # λ_max and writing
    val_s = cfg["validations"] * (min(fr["device_validation_s"], fr["cpu_validation_s"]) * K / fr["members"] + fr["metrics_s_per_member"] * K)
    # run_epoch's rate, less a fifth for what fit adds per epoch (snapshots, per-member bookkeeping)
    fit_epochs = cfg["epochs"] if a.smoke else int(max(1, min(cfg["epochs"], 0.8 * (left - val_s) * rate / K)))
    res["experiment_plan"] = {"default_epochs": cfg["epochs"], "epochs": fit_epochs, "reduced": fit_epochs < cfg["epochs"],
                              "validation_estimate_s": val_s, "free_runs_on": trm.VAL_DEVICE or device}
    say(f"3. experiment: {K} convSSMs on Lorenz63-BOLD ({cfg['frames']} frames), {fit_epochs} epochs"
        + (f" (reduced from {cfg['epochs']} to fit the budget)" if fit_epochs < cfg["epochs"] else ""))
    res["experiment"] = ex = experiment(rec, cfg, device, fit_epochs)
    say(f"   fit {ex['fit_s']:.1f} s; lambda_max median {ex['lambda_max_median']:.3f} (IQR {ex['lambda_max_q1']:.3f}-"
        f"{ex['lambda_max_q3']:.3f}), chaotic {100 * ex['chaotic_share']:.0f} %")
    res["wall_s"] = time.perf_counter() - t_start
    Path(a.out).write_text(json.dumps(res, indent=1))

    m = res["machine"]
    print()
    print(f"GPU benchmark ({'smoke, ' if a.smoke else ''}{m['gpu']}{', driver ' + str(m.get('driver')) if device == 'cuda' else ''}; "
          f"{res['wall_s']:.0f} s; numbers in {a.out})")
    print(f"{'what':44s} {'value':>14s}  target")
    rows = [("kernel check: loss rel. error", f"{kc['loss_rel_err']:.2e}", "< 2e-5"),
            ("kernel check: gradient rel. error", f"{kc['grad_rel_err']:.2e}", "< 2e-4")]
    for r in res["throughput"]:
        tgt = "≥ 2 000 (aim 10 000)" if (r["path"] == "gpu" and r["K"] == 1024) else ""
        rows.append((f"{r['path']} K = {r['K']}: model-epochs/s", f"{r['model_epochs_per_s']:.1f}", tgt))
    rows += [(f"ratio K {kmax} / K {kmin} ({dev_rows[kmax]['path']})", f"{res['ratio_device']:.1f}", "≥ 200" if device == "cuda" else ""),
             (f"ratio K {max(cpu_rows)} / K {min(cpu_rows)} (cpu fused)", f"{res['ratio_cpu']:.1f}", ""),
             (f"{fr['members']} free runs x {fr['steps']} steps: device s", f"{fr['device_s']:.2f}", ""),
             (f"{fr['members']} free runs x {fr['steps']} steps: cpu kernel s", f"{fr['cpu_s']:.2f}", ""),
             (f"experiment: {K} members x {fit_epochs} epochs, s", f"{ex['fit_s']:.1f}", ""),
             ("λ_max median (per Lorenz time)", f"{ex['lambda_max_median']:.4f}", f"within 10 % of {LORENZ_LMAX}"),
             ("λ_max median error", f"{100 * ex['median_error_vs_lorenz']:.1f} %", "≤ 10 %"),
             ("λ_max IQR", f"{ex['lambda_max_q1']:.3f}-{ex['lambda_max_q3']:.3f}", ""),
             (f"share chaotic (λ_max > {CHAOS_THRESHOLD})", f"{100 * ex['chaotic_share']:.1f} %", ""),
             ("wall time of this run, s", f"{res['wall_s']:.0f}", "< 480")]
    for what, val, tgt in rows:
        print(f"{what:44s} {val:>14s}  {tgt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
