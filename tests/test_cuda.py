"""The CUDA training kernel (`plrnn_cuda`) and the ensemble on the device, with or without a GPU.

Without a GPU (CI) every check runs on numba's CUDA simulator at a tiny size: numba reads
NUMBA_ENABLE_CUDASIM when it is imported, so each check runs in a fresh interpreter
(`tests/cuda_sim_checks.py`) with NUMBA_ENABLE_CUDASIM=1 and DSRECON_CUDA_SIMULATOR=1, and this
process is left as it was. On a machine with a GPU the same checks run on it, the kernel check at
the default convSSM's full size. The references are the CPU paths: repeated `step` in float64 with
autograd for the kernel, plain CPU fits with seeds SEED + k for the ensemble members.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hostile_util import ENV, dsrecon, lorenz_table

ROOT = Path(__file__).resolve().parents[1]
GPU = torch.cuda.is_available()
SIM = {"NUMBA_ENABLE_CUDASIM": "1", "DSRECON_CUDA_SIMULATOR": "1"}


def _check(*args: str, timeout: float = 300) -> dict:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for k in SIM:
        env.pop(k, None)
    if not GPU:
        env.update(SIM)
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_sim_checks.py"), *args], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_cuda_kernel_loss_and_gradients_equal_the_float64_reference():
    """Loss (GTF rollout, decoder, HRF convolution, masked MSE + L2) and its gradient with respect
    to every member's packed row, float32 on the kernel, against repeated `step` in float64."""
    res = _check("kernel", *(["--full"] if GPU else []))
    assert res["device"] == ("cuda" if GPU else "cpu")
    assert {c["backend"] for c in res["cases"]} == ({"cshplrnn"} if GPU else {"cshplrnn", "shplrnn", "plrnn"})
    for c in res["cases"]:
        assert c["loss_rel_err"] < 2e-5, c
        assert c["grad_rel_err"] < 2e-4, c


def test_cuda_ensemble_member_equals_the_cpu_fit_with_its_seed():
    """fit_ensemble(K = 2, device="cuda"): member k's loss curve, validation D_stsp and selection
    equal plain CPU fits with seeds SEED + k; the batched validation free runs on the device equal
    the CPU's one-by-one free runs, and so do the validation metrics of moving free runs."""
    res = _check("trainer")
    assert res["engine"] == "cuda"
    assert res["seeds"] == [3, 4]
    assert res["loss_rel_err"] < 1e-4, res
    assert res["free_run_rel_err"] < 1e-4, res
    assert res["best_member"] == res["best_member_cpu"]
    for m in res["members"]:
        assert len(m["loss"]) == len(m["loss_cpu"]) == 2
        for a, b in zip(m["val_D_stsp"], m["val_D_stsp_cpu"]):
            assert a == pytest.approx(b, rel=1e-4)
        # D_H compares normalised spectra: of a free run that has settled on a fixed point (spread
        # ~1e-7 here, after two epochs) it measures rounding noise (a number or NaN by chance), so
        # it is compared only where the runs move
        if min(res["free_run_spread"]) > 1e-3:
            for a, b in zip(m["val_D_H"], m["val_D_H_cpu"]):
                assert a == pytest.approx(b, rel=1e-3, nan_ok=True)
    # the members set to bounded oscillations: moving free runs, validated on the device and on the CPU
    mv = res["moving"]
    assert min(mv["spread"]) > 0.1
    assert mv["free_run_rel_err"] < 1e-4
    assert mv["batched_cpu_rel_err"] < 1e-4  # trainer.VAL_DEVICE = "cpu": all members at once on the CPU kernel
    assert mv["D_stsp"] == pytest.approx(mv["D_stsp_cpu"], rel=1e-4)
    assert mv["D_H"] == pytest.approx(mv["D_H_cpu"], rel=1e-4)


def test_cli_fit_ensemble_device_cuda_runs_the_kernel(tmp_path):
    """`dsrecon fit --ensemble 2 --device cuda` end to end (on the simulator without a GPU): the
    member runs record the cuda engine."""
    x = lorenz_table(tmp_path / "x.tsv", frames=120, tr=2.0)
    out = tmp_path / "ens"
    env = {} if GPU else SIM
    r = dsrecon("fit", x, "-o", out, "--ensemble", "2", "--device", "cuda", "--epochs", "1", "--batches-per-epoch", "2",
                "--batch-size", "3", "--hidden-dim", "5", "--sequence-length", "30", "--test-fraction", "0", "--seed", "1",
                "--json", "--quiet", cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert [m["seed"] for m in res["members"]] == [1, 2]
    cfg = json.loads((out / "member-01" / "config.json").read_text())
    assert cfg["ensemble"]["engine"] == "cuda"


@pytest.mark.skipif(GPU, reason="a machine with a GPU fits on it instead of failing")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    x = lorenz_table(tmp_path / "x.tsv", frames=120, tr=2.0)
    r = dsrecon("fit", x, "-o", tmp_path / "run", "--ensemble", "2", "--device", "cuda", "--epochs", "1", "--quiet", cwd=tmp_path,
                env={k: "0" for k in SIM})
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "--device cuda" in lines[0] and "no CUDA device" in lines[0], r.err
    assert not (tmp_path / "run").exists()


def test_device_batches_equal_the_host_draws_bit_for_bit():
    """The cuda engine's batches (data on the device, each member's draws on a thread pool, one
    batch ahead) equal `Trainer._draw`'s: the same gather and the same noise, in float32."""
    import numpy as np

    from dsrecon.training.batches import Prepared, SequenceSampler, normal_fill
    from dsrecon.training.device_batches import DeviceBatches

    rng = np.random.default_rng(0)
    recs = []
    for T in (70, 90):
        x = rng.standard_normal((T, 2)).astype(np.float32)
        mask = rng.random(T) > 0.1
        teacher = rng.standard_normal((T, 2)).astype(np.float32)
        teacher[~mask] = np.nan
        recs.append(Prepared(x, mask, teacher, rng.standard_normal((T, 1)).astype(np.float32), "r"))
    sampler = SequenceSampler(recs, 20, 4)
    E, B, noise = 7, 5, 0.05
    dev = DeviceBatches(sampler, "cpu", threads=3)
    mine = [np.random.default_rng(10 + e) for e in range(E)]
    got = list(dev.epoch(mine, 3, B, noise))
    ref = [np.random.default_rng(10 + e) for e in range(E)]
    for batch in got:  # `_draw`: all start indices, then per member observation and teacher noise
        b = sampler.gather(np.stack([r.integers(0, len(sampler), size=B) for r in ref]))
        nx, nd = np.empty_like(b["x"]), np.empty_like(b["teacher"])
        for j, r in enumerate(ref):
            normal_fill(r, nx[j], nd[j])
        nx *= np.float32(noise)
        nd *= np.float32(noise)
        b["x"] += nx
        b["teacher"] += nd
        np.testing.assert_array_equal(batch["x_t"].numpy(), b["x"])
        np.testing.assert_array_equal(batch["teacher_t"].numpy(), b["teacher"])
        np.testing.assert_array_equal(batch["mask_t"].numpy(), b["mask"].astype(np.float32))
        np.testing.assert_array_equal(batch["reg_t"].numpy(), b["regressors"])
    assert [r.bit_generator.state for r in mine] == [r.bit_generator.state for r in ref]  # no draw more, none fewer


def test_benchmark_batched_lambda_max_equals_the_qr_method():
    """benchmarks/gpu.py's λ_max of all members at once (one tangent vector, closed-form Jacobian)
    equals `dynamics_lyapunov` (QR method over the full spectrum) member by member."""
    import importlib.util

    import numpy as np

    from dsrecon.metrics.lyapunov import dynamics_lyapunov
    from dsrecon.models.backends.plrnn import ClippedSHPLRNN, SHPLRNN
    from dsrecon.models.convssm import ConvSSMNet
    from dsrecon.models.decoders import IdentityDecoder
    from dsrecon.training.stack import Stack

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for cls, gain in ((ClippedSHPLRNN, 3.0), (SHPLRNN, 1.0)):  # (the unclipped one unbounded with a large gain)
        g = torch.Generator().manual_seed(2)
        nets = []
        for _ in range(3):
            net = ConvSSMNet(cls(3, hidden_dim=8, generator=g), IdentityDecoder(3, 3), torch.tensor([0.5, 0.5]), 3)
            with torch.no_grad():
                net.dynamics.W1.mul_(gain)
                net.dynamics.A.fill_(0.8)
            nets.append(net)
        stack = Stack(nets)
        z0 = torch.randn(3, 3, generator=g) * 0.3
        lam = bench.batched_lambda_max(stack, stack.flat, z0, n_steps=400, transient=50, dt=0.01)
        for e, net in enumerate(nets):
            ref = dynamics_lyapunov(net.dynamics, z0[e].double().numpy(), n_steps=400, transient=50, dt=0.01, n_exponents=1)
            assert np.isfinite(lam[e])
            assert lam[e] == pytest.approx(ref.per_second[0], rel=1e-5, abs=1e-3)
