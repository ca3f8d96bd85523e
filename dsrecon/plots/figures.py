"""Figures (matplotlib, Agg): each function takes arrays and an output path stem and writes
``stem.png`` and ``stem.svg``; it returns the list of written paths.

Arrays are (time, regions) unless said otherwise; ``tr`` is seconds per sample.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dsrecon._util import atomic_path  # noqa: E402

DATA_COLOR, MODEL_COLOR = "#1f4e79", "#c0504d"
_STABILITY_MARKER = {"stable": ("o", "#2e7d32"), "unstable": ("X", "#b71c1c"), "saddle": ("D", "#ef6c00")}


def save(fig: "plt.Figure", stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as stem.png and stem.svg atomically; close it."""
    out = []
    stem = Path(stem)
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        out.append(p)
    plt.close(fig)
    return out


def pca_project(x: np.ndarray, n: int, basis: np.ndarray | None = None, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project (T, N) onto ``n`` principal axes (of x, or of a given basis (N, n) / mean (N,))."""
    x = np.asarray(x, dtype=np.float64)
    if mean is None:
        mean = x.mean(0)
    if basis is None:
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        basis = vt[:n].T
    return (x - mean) @ basis, basis, mean


def time_series(observed: np.ndarray | None, generated: np.ndarray, stem, tr: float = 1.0, names: list[str] | None = None, max_regions: int = 8) -> list[Path]:
    """Observed vs generated time series, one panel per region (first ``max_regions``)."""
    generated = np.asarray(generated)
    N = min(generated.shape[1], max_regions)
    names = names or [f"region {i}" for i in range(generated.shape[1])]
    fig, axes = plt.subplots(N, 1, figsize=(9, 1.4 * N + 0.6), sharex=True, squeeze=False)
    for i in range(N):
        ax = axes[i, 0]
        if observed is not None:
            ax.plot(np.arange(len(observed)) * tr, observed[:, i], color=DATA_COLOR, lw=0.9, label="observed")
        ax.plot(np.arange(len(generated)) * tr, generated[:, i], color=MODEL_COLOR, lw=0.9, label="generated")
        ax.set_ylabel(names[i], fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Observed vs generated time series")
    return save(fig, stem)


def attractor(observed: np.ndarray | None, generated: np.ndarray, stem, dims: int = 3) -> list[Path]:
    """2-D (dims=2) or 3-D (dims=3) projection of data and model; PCA (fitted on the data) when N > dims."""
    generated = np.asarray(generated, dtype=np.float64)
    N = generated.shape[1]
    ref = observed if observed is not None else generated
    if N > dims:
        _, basis, mean = pca_project(ref, dims)
        proj = lambda a: pca_project(a, dims, basis, mean)[0]  # noqa: E731
        labels = [f"PC{i + 1}" for i in range(dims)]
    else:
        proj = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        labels = [f"x{i + 1}" for i in range(N)]
    d = min(dims, N)
    fig = plt.figure(figsize=(10, 4.6))
    for j, (arr, title, col) in enumerate([(observed, "data", DATA_COLOR), (generated, "model", MODEL_COLOR)]):
        if d == 3:
            ax = fig.add_subplot(1, 2, j + 1, projection="3d")
        else:
            ax = fig.add_subplot(1, 2, j + 1)
        ax.set_title(title)
        if arr is None:
            # Axes3D.text takes (x, y, z, s); text2D places a label in axes coordinates on both kinds
            text = ax.text2D if d == 3 else ax.text
            text(0.5, 0.5, "no data given", transform=ax.transAxes, ha="center")
            continue
        p = proj(arr)
        if d == 3:
            ax.plot(p[:, 0], p[:, 1], p[:, 2], color=col, lw=0.5)
            ax.set_zlabel(labels[2])
        elif d == 2:
            ax.plot(p[:, 0], p[:, 1], color=col, lw=0.5)
        else:
            ax.plot(p[:, 0], color=col, lw=0.5)
        ax.set_xlabel(labels[0])
        if d >= 2:
            ax.set_ylabel(labels[1])
    fig.suptitle(f"{d}-D attractor projection")
    return save(fig, stem)


def power_spectra(observed: np.ndarray | None, generated: np.ndarray, stem, tr: float = 1.0, max_regions: int = 4) -> list[Path]:
    """Power spectra (z-scored series, |rfft|²) of data and model, overlaid, per region."""
    generated = np.asarray(generated, dtype=np.float64)
    N = min(generated.shape[1], max_regions)
    fig, axes = plt.subplots(1, N, figsize=(3.2 * N, 2.8), squeeze=False)
    for i in range(N):
        ax = axes[0, i]
        for arr, lab, col in [(observed, "observed", DATA_COLOR), (generated, "generated", MODEL_COLOR)]:
            if arr is None:
                continue
            s = np.asarray(arr[:, i], dtype=np.float64)
            s = (s - s.mean()) / (s.std() + 1e-12)
            p = np.abs(np.fft.rfft(s)) ** 2
            f = np.fft.rfftfreq(s.size, d=tr)
            if not p[1:].sum() > 0:  # a constant series (e.g. a model at a fixed point) has no spectrum
                ax.text(0.5, 0.5 if col == DATA_COLOR else 0.4, f"{lab}: constant", transform=ax.transAxes, ha="center", fontsize=8, color=col)
                continue
            ax.semilogy(f[1:], p[1:] / p[1:].sum(), color=col, lw=0.8, label=lab)
        ax.set_xlabel("frequency (Hz)")
        ax.set_title(f"region {i}", fontsize=9)
    axes[0, 0].set_ylabel("normalised power")
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=8)
    return save(fig, stem)


def training_curves(log_path: str | os.PathLike, stem) -> list[Path]:
    """Loss, α and validation D_stsp / D_H against epoch, from a run's training_log.tsv."""
    import pandas as pd

    df = pd.read_csv(log_path, sep="\t")
    panels = [c for c in ("loss", "alpha", "val_D_stsp", "val_D_H") if c in df.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False)
    for ax, col in zip(axes[0], panels):
        y = pd.to_numeric(df[col], errors="coerce")
        ok = np.isfinite(y.to_numpy(dtype=float))
        ax.plot(df["epoch"][ok], y[ok], marker="o" if col.startswith("val_") else None, ms=3, lw=1)
        if col == "loss" and ok.any() and (y[ok] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(col)
    fig.suptitle("Training")
    return save(fig, stem)


def lyapunov_convergence(steps: np.ndarray, running: np.ndarray, stem, unit: str = "1/s") -> list[Path]:
    """Running Lyapunov estimates (n_records, n_exponents) against step count."""
    running = np.asarray(running)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    k = running.shape[1] if running.ndim == 2 else 0
    for i in range(min(k, 6)):
        ax.plot(steps, running[:, i], lw=1, label=f"λ{i + 1}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel(f"running estimate ({unit})")
    ax.set_title("Lyapunov spectrum convergence")
    if k:
        ax.legend(fontsize=8)
    return save(fig, stem)


def fixed_points_on_attractor(latent: np.ndarray, cycles: list[dict], stem) -> list[Path]:
    """Fixed points and cycles (markers by stability) over the latent trajectory (T, M), 2-D (PCA when M > 2)."""
    latent = np.asarray(latent, dtype=np.float64)
    M = latent.shape[1]
    if M > 2:
        p, basis, mean = pca_project(latent, 2)
        proj = lambda a: pca_project(a, 2, basis, mean)[0]  # noqa: E731
        labels = ("PC1", "PC2")
    elif M == 2:
        p, proj, labels = latent, (lambda a: np.asarray(a)), ("z1", "z2")
    else:
        p = np.c_[latent[:-1, 0], latent[1:, 0]]
        proj = lambda a: np.c_[np.asarray(a)[:, 0], np.asarray(a)[:, 0]]  # noqa: E731
        labels = ("z_t", "z_{t+1}")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(p[:, 0], p[:, 1], color="#9e9e9e", lw=0.4, label="trajectory")
    seen = set()
    for c in cycles:
        pts = proj(np.asarray(c["points"])[:, :M])
        mk, col = _STABILITY_MARKER.get(c["stability"], ("s", "k"))
        lab = f"{c['stability']} (period {c['period']})"
        ax.scatter(pts[:, 0], pts[:, 1], marker=mk, color=col, s=40, zorder=3, label=None if lab in seen else lab)
        seen.add(lab)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title("Fixed points and cycles")
    ax.legend(fontsize=7, loc="best")
    return save(fig, stem)


def feature_scatter(features: np.ndarray, ids: list[str], stem, color: list | None = None, color_label: str | None = None) -> list[Path]:
    """Subjects in the feature space of a group model: f1 vs f2 (F = 1: f1 against the subject's
    index; F > 2: the first two principal components), coloured by ``color`` (a value per subject:
    numbers on a colour scale, else one colour per category)."""
    f = np.asarray(features, dtype=float)
    S, F = f.shape
    if F >= 2:
        xy, xl, yl = (f[:, :2], "f1", "f2") if F == 2 else (pca_project(f, 2)[0], "PC1 of the features", "PC2 of the features")
    else:
        xy, xl, yl = np.column_stack([np.arange(S), f[:, 0] if F else np.zeros(S)]), "subject", "f1"
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], c=MODEL_COLOR, s=40)
    else:
        try:
            vals = np.asarray([float(v) for v in color])
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=vals, cmap="viridis", s=40)
            fig.colorbar(sc, ax=ax, label=color_label or "")
        except (TypeError, ValueError):
            cats = sorted({str(v) for v in color})
            cmap = plt.get_cmap("tab10")
            for k, c in enumerate(cats):
                m = np.array([str(v) == c for v in color])
                ax.scatter(xy[m, 0], xy[m, 1], color=cmap(k % 10), s=40, label=c)
            ax.legend(title=color_label, fontsize=8)
    for (x, y), s in zip(xy, ids):
        ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title("Subjects in the feature space")
    return save(fig, stem)


def event_locked(observed: dict, generated: dict, stem, tr: float = 1.0, names: list[str] | None = None, max_regions: int = 6) -> list[Path]:
    """Event-locked mean responses, one column per condition: {condition: (window, N)} observed vs
    generated (the model driven by the same events); one row per region (first ``max_regions``)."""
    conds = list(observed)
    N = min(next(iter(observed.values())).shape[1], max_regions)
    names = names or [f"region {i}" for i in range(N)]
    fig, axes = plt.subplots(N, len(conds), figsize=(3.2 * len(conds) + 0.6, 1.5 * N + 0.8), sharex=True, squeeze=False)
    for j, c in enumerate(conds):
        o, g = observed[c], generated.get(c)
        t = np.arange(o.shape[0]) * tr
        for i in range(N):
            ax = axes[i, j]
            ax.axhline(0, color="#bbb", lw=0.6)
            ax.plot(t, o[:, i], color=DATA_COLOR, lw=1.1, label="observed")
            if g is not None:
                ax.plot(t, g[:, i], color=MODEL_COLOR, lw=1.1, label="model")
            if j == 0:
                ax.set_ylabel(names[i], fontsize=8)
        axes[0, j].set_title(str(c), fontsize=9)
        axes[-1, j].set_xlabel("seconds after onset")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return save(fig, stem)
