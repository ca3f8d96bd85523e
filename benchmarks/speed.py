"""Training speed: a plain eager PyTorch loop (the baseline) vs dsrecon, side by side in one run.

Configs (fit and speed issues):
  convssm: cshPLRNN convSSM, M 3, L 50, TR 0.2 s (SPM HRF, K 161), sequence 200, batch 16,
           50 batches/epoch, α 0.15, RAdam — Lorenz63 BOLD, 2 000 samples.
  alrnn:   ALRNN M 20, P 2, no kernel, batch 16, sequence 200, sparse TF every 16 steps,
           50 batches/epoch, RAdam — Lorenz63 observed directly.

    python benchmarks/speed.py [--epochs 5] [--threads 2] [--configs convssm alrnn] [--ensemble 1 8 64]

Prints seconds per epoch (median of timed epochs after one warm-up epoch) for the baseline and
dsrecon's training engine (a plain fit: E = 1), and their ratio; then the ensemble throughput
(model-epochs per second) of `dsrecon fit --ensemble K` (the same engine at E = K) for each K,
with peak memory.
Set NUMBA_NUM_THREADS to the thread count as well (numba reads it at import).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import numpy as np
import torch

from dsrecon import ConvSSM, Recording
from dsrecon.models.backends.plrnn import PLRNN, ClippedSHPLRNN
from dsrecon.signal.kernels import spm_hrf
from dsrecon.systems import simulate_system
from dsrecon.training.prepare import prepare
from dsrecon.training.trainer import Trainer

CONFIGS = {
    "convssm": dict(backend="cshplrnn", latent_dim=3, hidden_dim=50, kernel="spm", tr=0.2, alpha="0.15", sparse=None),
    "alrnn": dict(backend="alrnn", latent_dim=20, pwl_units=2, kernel="none", tr=0.2, alpha="0", sparse=16),
}


def lorenz(kernel: str, tr: float) -> Recording:
    out = simulate_system("lorenz63", 2000, 0.01, tr, kernel=kernel, noise=0.01, seed=0)
    return Recording(out["observed"], tr=tr, names=out["names"])


# ----------------------------------------------------------------------------- the baseline
class EagerBaseline:
    """A straightforward eager PyTorch GTF loop, written the way one would without a fused path:
    a Python loop over time steps calling the model step, forcing after each step, a conv1d for the
    kernel, MSE, RAdam. It shares nothing with dsrecon's trainer but the data."""

    def __init__(self, cfg: dict, rec: Recording, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        M, N = cfg["latent_dim"], rec.n_regions
        if cfg["backend"] == "cshplrnn":
            self.model = ClippedSHPLRNN(M, cfg["hidden_dim"])
        else:
            self.model = PLRNN(M, pwl_units=cfg["pwl_units"])
        self.taps = torch.tensor(spm_hrf(cfg["tr"]) if cfg["kernel"] == "spm" else np.ones(1), dtype=torch.float32).flip(0)[None, None]
        self.K = self.taps.shape[-1]
        self.N, self.M = N, M
        self.L_init = torch.zeros(M - N, N, requires_grad=True)
        self.opt = torch.optim.RAdam(list(self.model.parameters()) + [self.L_init], lr=1e-3)
        # teacher signals from dsrecon's deconvolution (data preparation is not what is timed)
        from dsrecon.signal.kernels import make_kernel

        data = prepare([rec], make_kernel(cfg["kernel"], cfg["tr"]), 0.25)
        self.x = torch.tensor(data.train[0].x)
        self.d = torch.tensor(data.train[0].teacher)
        ok = torch.isfinite(self.d).all(1)
        T = self.x.shape[0]
        self.starts = [s for s in range(T - 200) if ok[s]]
        self.rng = np.random.default_rng(seed)

    def step(self, z):
        m = self.model
        if isinstance(m, ClippedSHPLRNN):
            pre = z @ m.W2.T
            return m.A * z + (torch.relu(pre + m.h2) - torch.relu(pre)) @ m.W1.T + m.h1
        W = m.W * (1 - torch.eye(self.M))
        phi = torch.cat([z[:, : self.M - m.P], torch.relu(z[:, self.M - m.P :])], 1)
        return m.A * z + phi @ W.T + m.h

    def epoch(self) -> float:
        cfg, K, N = self.cfg, self.K, self.N
        losses = []
        for _ in range(50):
            idx = self.rng.choice(len(self.starts), 16)
            s = [self.starts[i] for i in idx]
            d = torch.stack([self.d[j : j + 200] for j in s]) + 0.05 * torch.randn(16, 200, N)
            x = torch.stack([self.x[j + K - 1 : j + 200] for j in s]) + 0.05 * torch.randn(16, 201 - K, N)
            z = torch.cat([d[:, 0], d[:, 0] @ self.L_init.T], 1)
            zs = [z]
            for t in range(1, 200):
                z = self.step(z)
                zs.append(z)
                dt = d[:, t]
                ok = torch.isfinite(dt)
                a = (1.0 if t % cfg["sparse"] == 0 else 0.0) if cfg["sparse"] else float(cfg["alpha"])
                zf = torch.where(ok, (1 - a) * z[:, :N] + a * torch.nan_to_num(dt), z[:, :N])
                z = torch.cat([zf, z[:, N:]], 1)
            Z = torch.stack(zs, 1)[..., :N]
            y = torch.nn.functional.conv1d(Z.transpose(1, 2).reshape(-1, 1, 200), self.taps).reshape(16, N, -1).transpose(1, 2)
            loss = ((y - x) ** 2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        return float(np.mean(losses))


def dsrecon_trainer(cfg: dict, rec: Recording, size: int = 1, seed: int = 0) -> Trainer:
    """The engine as `dsrecon fit --ensemble size` runs it on this config (members seed, seed+1, …;
    size 1: a plain fit), validation off."""
    opts = dict(epochs=1000, batches_per_epoch=50, batch_size=16, sequence_length=200, alpha=cfg["alpha"],
                sparse_tf_interval=cfg["sparse"], val_every=10**9, checkpoint_every=10**9)
    bopts = {"pwl_units": cfg["pwl_units"]} if "pwl_units" in cfg else {}
    from dsrecon.signal.kernels import make_kernel

    kern = make_kernel(cfg["kernel"], cfg["tr"])
    data = prepare([rec], kern, 0.25)
    ms = [ConvSSM(backend=cfg["backend"], latent_dim=cfg["latent_dim"], hidden_dim=cfg.get("hidden_dim", 50), kernel=cfg["kernel"],
                  backend_options=bopts, seed=seed + k, **opts) for k in range(size)]
    nets = [m._build(rec.n_regions, 0, kern, torch.Generator().manual_seed(m.seed)) for m in ms]
    return Trainer(nets, data, [m.train_options for m in ms], [m.seed for m in ms])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_epochs(fn, n: int) -> float:
    fn()  # warm-up (numba compile cache, allocator)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per measurement")
    ap.add_argument("--baseline-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), help="side-by-side configs (none: skip)")
    ap.add_argument("--ensemble", nargs="*", type=int, default=[1, 8, 64], help="ensemble sizes K for the throughput table")
    ap.add_argument("--ensemble-configs", nargs="+", default=["convssm", "alrnn"], choices=list(CONFIGS))
    ap.add_argument("--ensemble-epochs", type=int, default=2, help="timed epochs per ensemble size")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import os

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
          f"{torch.get_num_threads()} torch threads, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}, torch {torch.__version__}")
    print(f"{'config':10s} {'baseline s/epoch':>17s} {'dsrecon s/epoch':>16s} {'speed-up':>9s}")
    for name in a.configs:
        cfg = CONFIGS[name]
        rec = lorenz(cfg["kernel"], cfg["tr"])
        base = EagerBaseline(cfg, rec)
        tb = time_epochs(base.epoch, a.baseline_epochs)
        td = time_epochs(dsrecon_trainer(cfg, rec).run_epoch, a.epochs)
        print(f"{name:10s} {tb:17.3f} {td:16.3f} {tb / td:8.1f}x", flush=True)
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")
    if a.ensemble:
        print()
        print("ensemble throughput (Trainer.run_epoch with E = K, validation off; model-epochs/s = K / s per epoch)")
        print(f"{'config':10s} {'K':>5s} {'s/epoch':>9s} {'model-epochs/s':>15s} {'vs K=1':>7s} {'peak RSS MiB':>13s}")
        for name in a.ensemble_configs:
            cfg = CONFIGS[name]
            rec = lorenz(cfg["kernel"], cfg["tr"])
            base_thr = None
            for K in sorted(a.ensemble):
                ens = dsrecon_trainer(cfg, rec, K)
                t = time_epochs(ens.run_epoch, a.ensemble_epochs)
                thr = K / t
                base_thr = base_thr or (thr if K == 1 else None)
                rel = f"{thr / base_thr:6.1f}x" if base_thr else "     - "
                print(f"{name:10s} {K:5d} {t:9.3f} {thr:15.2f} {rel:>7s} {peak_rss_mib():13.0f}", flush=True)
                del ens
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
