"""Checks of the CUDA training kernel (`plrnn_cuda`) that run on a GPU or on numba's CUDA simulator.

numba reads NUMBA_ENABLE_CUDASIM when it is imported, so `tests/test_cuda.py` runs this file in a
fresh interpreter with NUMBA_ENABLE_CUDASIM=1 and DSRECON_CUDA_SIMULATOR=1 (CPU tensors, the
kernels interpreted) when there is no GPU, and with the tensors on the GPU when there is one.
The kernel check itself is `dsrecon.training.cuda_check.kernel_errors`, which `benchmarks/gpu.py`
runs too, on fresh random inputs. Each check prints one JSON object: the largest errors, which the
caller holds to its tolerances.

    python tests/cuda_sim_checks.py kernel|trainer [--full] [--seed S]
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dsrecon.training.cuda_check import kernel_device, kernel_errors, relative_error


def trainer_errors(seed: int = 3) -> dict:
    """A tiny ensemble of K = 2 on the device (`fit_ensemble(..., device="cuda")`), against plain CPU
    fits (the numba CPU kernels) with seeds SEED + k: loss curves, validation metrics and selection."""
    import dsrecon
    from dsrecon import ConvSSM, Recording
    from dsrecon.ensemble import fit_ensemble
    from dsrecon.systems import simulate_system
    from dsrecon.training import validation
    from dsrecon.training.stack import Stack

    sim = os.environ.get("DSRECON_CUDA_SIMULATOR") == "1"
    validation.VAL_MIN_STEPS, validation.VAL_HORIZON = 300, 400  # short validation free runs (the simulator interprets them)
    validation.VAL_DEVICE = None  # the ensemble validates on the device (the CPU kernel's batched runs: below)
    out = simulate_system("lorenz63", 260, 0.01, 2.0, kernel="spm", noise=0.01, seed=0)
    rec = Recording(out["observed"], tr=2.0, names=out["names"])
    opts = dict(hidden_dim=8, latent_dim=4, epochs=2, batches_per_epoch=2, batch_size=3, sequence_length=30, val_every=1,
                test_fraction=0.25)
    with tempfile.TemporaryDirectory() as tmp:
        s = fit_ensemble(rec, Path(tmp) / "ens", 2, seed=seed, device="cuda", **opts)
        members = [dsrecon.load_run(Path(tmp) / "ens" / f"member-{k:02d}") for k in range(2)]
        if sim:
            os.environ["DSRECON_CUDA_SIMULATOR"] = "0"  # the reference: plain fits on the numba CPU kernels
        singles = [ConvSSM(seed=seed + k, device="cpu", **opts).fit(rec) for k in range(2)]
        res = {"engine": members[0].config["ensemble"].get("engine") if "ensemble" in members[0].config else None,
               "engine_recorded": json.loads((Path(tmp) / "ens" / "ensemble.json").read_text()).get("engine"),
               "seeds": [m["seed"] for m in s["members"]], "best_member": s["best_member"], "members": []}
        vals = []
        for k, (m, single) in enumerate(zip(members, singles)):
            lm = [r["loss"] for r in m.history_] if getattr(m, "history_", None) else None
            if lm is None:
                log = np.genfromtxt(Path(tmp) / "ens" / f"member-{k:02d}" / "training_log.tsv", names=True, delimiter="\t")
                lm, vm = list(log["loss"]), list(log["val_D_stsp"])
                hm = list(log["val_D_H"])
            else:
                vm, hm = [r["val_D_stsp"] for r in m.history_], [r["val_D_H"] for r in m.history_]
            ls = [r["loss"] for r in single.history_]
            vs, hs = [r["val_D_stsp"] for r in single.history_], [r["val_D_H"] for r in single.history_]
            rel = lambda a, b: max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b))  # noqa: E731
            res["members"].append({"loss": lm, "loss_cpu": ls, "loss_rel_err": rel(lm, ls), "val_D_stsp": vm, "val_D_stsp_cpu": vs, "val_D_H": hm, "val_D_H_cpu": hs,
                                   "val_rel_err": max(rel(vm, vs), rel(hm, hs)), "finite": bool(all(math.isfinite(v) for v in vm + hm))})
            vals.append((single.config["training"]["best_val_D_stsp"], single.config["training"]["best_val_D_H"]))
        res["best_member_cpu"] = int(min(range(2), key=lambda k: vals[k]))
        # the validation free runs themselves, of the trained CPU models: all members at once on the
        # device (`generate_after_members`) against one by one on the CPU kernels (`generate_after`)
        nets = [single.net_ for single in singles]
        tr = _train_split(rec, opts)
        n, total = 300, 400
        cpu_runs = [validation.generate_after(net, tr, n, total=total) for net in nets]
        if sim:
            os.environ["DSRECON_CUDA_SIMULATOR"] = "1"
        stack = Stack([net.to(kernel_device()) for net in nets])
        dev_runs = validation.generate_after_members(stack, stack.flat, tr, n, total)
        res["free_run_rel_err"] = max(relative_error(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(dev_runs, cpu_runs))
        res["free_run_spread"] = [float(b.std(0).max()) for b in cpu_runs]
        # two minutes of training leave fixed points; the same comparison with moving free runs:
        # the members set to saturated rotations (bounded oscillations), validated both ways
        data = _prepared(rec, opts)
        for k, net in enumerate(nets):
            _oscillator(net, theta=0.3 + 0.2 * k)
        if sim:
            os.environ["DSRECON_CUDA_SIMULATOR"] = "0"
        cpu_nets = [copy.deepcopy(net).cpu() for net in nets]
        cpu_runs = [validation.generate_after(net, tr, n, total=total) for net in cpu_nets]
        cpu_val = [validation.validation_scores(net, data, singles[0].train_options, seed=k) for k, net in enumerate(cpu_nets)]
        batched_cpu = validation.generate_after_members(Stack(nets), Stack(nets).flat, tr, n, total, device="cpu")
        if sim:
            os.environ["DSRECON_CUDA_SIMULATOR"] = "1"
        stack = Stack(nets)
        dev_runs = validation.generate_after_members(stack, stack.flat, tr, n, total)
        gens = list(zip(*[validation.generate_after_members(stack, stack.flat, t_, *validation.validation_steps(t_, te))
                          for t_, te in zip(data.train, data.test)]))  # per member: one run per recording
        dev_val = [validation.validation_scores(net, data, singles[0].train_options, seed=k, generated=list(gens[k])) for k, net in enumerate(nets)]
        res["moving"] = {"spread": [float(b.std(0).max()) for b in cpu_runs],
                         "free_run_rel_err": max(relative_error(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(dev_runs, cpu_runs)),
                         "batched_cpu_rel_err": max(relative_error(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(batched_cpu, cpu_runs)),
                         "D_stsp": [v["D_stsp"] for v in dev_val], "D_stsp_cpu": [v["D_stsp"] for v in cpu_val],
                         "D_H": [v["D_H"] for v in dev_val], "D_H_cpu": [v["D_H"] for v in cpu_val]}
    res["loss_rel_err"] = max(m["loss_rel_err"] for m in res["members"])
    res["val_rel_err"] = max(m["val_rel_err"] for m in res["members"])
    return res


def _prepared(rec, opts):
    from dsrecon import ConvSSM
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare

    spec = ConvSSM(**opts).resolved([rec], None)
    return prepare([rec], make_kernel(spec.kernel, rec.tr), spec.train_options.test_fraction)


def _oscillator(net, theta: float, gain: float = 1.2, c: float = 1.0) -> None:
    """Set a clipped shPLRNN (M even, L = 2M) to z' = R·clip(z, −c, c) + h1 with R block-diagonal
    rotations by theta (gain > 1): W2 = [I; −I], h2 = c, W1 = [R, −R] make W1[relu(W2 z + h2) −
    relu(W2 z)] = R·clip(z, −c, c); A = 0. Bounded, oscillating, not chaotic."""
    dyn = net.dynamics
    M = dyn.M
    R = torch.zeros(M, M)
    for i in range(0, M - 1, 2):
        ct, st = gain * math.cos(theta * (1 + i)), gain * math.sin(theta * (1 + i))
        R[i : i + 2, i : i + 2] = torch.tensor([[ct, -st], [st, ct]])
    with torch.no_grad():
        dyn.A.zero_()
        dyn.W2.copy_(torch.cat([torch.eye(M), -torch.eye(M)]))
        dyn.h2.fill_(c)
        dyn.W1.copy_(torch.cat([R, -R], dim=1))
        dyn.h1.fill_(0.01)


def _train_split(rec, opts):
    """The first training split a fit with these options prepares (what validation free-runs from)."""
    from dsrecon import ConvSSM
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare

    spec = ConvSSM(**opts).resolved([rec], None)
    return prepare([rec], make_kernel(spec.kernel, rec.tr), spec.train_options.test_fraction).train[0]


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    what, full = argv[0], "--full" in argv
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    res = kernel_errors(full, seed) if what == "kernel" else trainer_errors()
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
