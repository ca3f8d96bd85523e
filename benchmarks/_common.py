"""Helpers shared by the benchmark scripts: the Lorenz-BOLD recording, z-scoring, the latent scores,
``--set KEY=VALUE`` parsing, and the commit a run measured.

Not a package: ``python benchmarks/NAME.py`` puts benchmarks/ first on ``sys.path``, so a maintained
script imports this file as ``from _common import ...``. The one-off scripts in
benchmarks/experiments/ run as ``PYTHONPATH=benchmarks python benchmarks/experiments/NAME.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
#: the Lorenz-BOLD benchmark's sampling: one Lorenz63 step of dt 0.01 system time per frame of TR 0.2 s
LORENZ_DT, LORENZ_TR = 0.01, 0.2


def zscore(a: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1."""
    return (a - a.mean(0)) / a.std(0)


def true_lorenz(n: int, seed: int) -> np.ndarray:
    """An n-step Lorenz63 trajectory (dt 0.01, after 50 time units of transient; initial state from
    stream 1000 + seed), z-scored: the latent scores' reference."""
    from dsrecon.systems import get_system, integrate

    sys_ = get_system("lorenz63")
    return zscore(integrate(sys_, n, LORENZ_DT, transient=50.0, rng=np.random.default_rng(1000 + seed)))


def recording(seed: int, n_fit: int, noise: float, kernel: str = "spm") -> dict:
    """Seed's simulated data: Lorenz63 (dt 0.01 per frame) through ``kernel`` at TR 0.2 s with
    noise σ, n_fit frames handed to fit and 500 more held out (`dsrecon.systems.simulate_system`'s
    dict: ``observed``, ``latent``, ``names``)."""
    from dsrecon.systems import simulate_system

    return simulate_system("lorenz63", n_fit + 500, LORENZ_DT, LORENZ_TR, kernel=kernel, noise=noise, seed=seed)


def latent_scores(model, n_gen: int, seed: int, ref: np.ndarray) -> dict:
    """The latent scores of a fit: its first 3 latent units over an n_gen-step free run (z-scored)
    against the true trajectory ``ref``: D_stsp (30 bins) and D_H (smoothing 20)."""
    from dsrecon.metrics.spectrum import hellinger_spectral
    from dsrecon.metrics.stsp import stsp_binned

    try:
        lat = model.simulate(n_gen, seed=seed)["latent"][:, :3]
        gen = zscore(lat) if np.all(lat.std(0) > 1e-8) else lat
        return {"D_stsp_latent": float(stsp_binned(gen, ref, bins=30)),
                "D_H_latent": float(hellinger_spectral(gen, ref, smoothing=20)), "bounded": True}
    except Exception as e:  # a diverged free run is a result, not a crash
        return {"D_stsp_latent": float("inf"), "D_H_latent": float("nan"), "bounded": False, "error": str(e)}


@torch.no_grad()
def published_protocol_dstsp(model, rec, match_noise: bool = False) -> float:
    """D_stsp as the published convSSM code reports it during training (humml-lab/GTF-ConvSSM,
    training_vanilla_conv.jl): a free run from the first reliable teacher state, as many BOLD
    frames as the recording has, against the recording itself (observation space, 30 bins; the
    recording is the whole n_fit frames, training part and validation tail, as there). A different
    measure from the latent one, shown so the two protocols can be compared.

    ``match_noise``: add the recording's observation noise, estimated from the recording itself
    (`dsrecon.training.validation.with_observation_noise`), to the noise-free run first ("D_pub+σ̂"),
    as ``lorenz_bold.py --ceiling``'s "noisy truth" adds the true noise to a true run: at σ 0.1 a
    noise-free run, even of the true system, cannot score near the paper's 0.71 otherwise
    (docs/experiments/lorenz-bold-reconstruction.md#round-7-2026-12-02-100-000-frames-the-floor-and-the-teacher-space-term)."""
    from dsrecon.errors import DivergenceError
    from dsrecon.metrics.stsp import stsp_binned

    x = model.norm_.apply(rec.data)
    try:  # the replay of the recording from its first reliable teacher state (`simulate(start="start")`)
        gen = model.simulate(x.shape[0], data=rec, start="start")["observed_normalised"]
    except DivergenceError:
        return float("inf")
    if match_noise:
        from dsrecon.training.validation import with_observation_noise

        gen = with_observation_noise(gen, x)
    return float(stsp_binned(gen, x, bins=30))


def parse_set(pairs: list[str]) -> dict:
    """``--set KEY=VALUE ...`` → ConvSSM keyword arguments (true/false, then int, then float, else text)."""
    extra: dict = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        if v.lower() in ("true", "false"):
            extra[k] = v.lower() == "true"
            continue
        for cast in (int, float, str):
            try:
                extra[k] = cast(v)
                break
            except ValueError:
                continue
    return extra


def git_commit() -> str:
    """The checkout's commit (short hash, '+' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")
