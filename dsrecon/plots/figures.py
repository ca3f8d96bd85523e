"""Figures (matplotlib, Agg): each function takes arrays and an output path stem and writes
``stem.png`` and ``stem.svg``; it returns the list of written paths.

Arrays are (time, regions) unless said otherwise; ``tr`` is seconds per sample. Data and model
are always drawn on one scale: panels that compare them share their axis limits, and a model
whose run has collapsed is drawn as the point or flat line it is, on the data's axes. Every PNG
records the limits of its axes (:func:`axes_metadata`, PNG text chunk ``dsrecon:axes``) so that a
test can check this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dsrecon._util import atomic_path  # noqa: E402

DATA_COLOR, MODEL_COLOR = "#1f4e79", "#c0504d"
_STABILITY_MARKER = {"stable": ("o", "#2e7d32"), "unstable": ("X", "#b71c1c"), "saddle": ("D", "#ef6c00")}


#: the PNG text chunk holding the axes' limits (JSON: [{"title", "xlim", "ylim"[, "zlim"][, "texts"]}, …])
AXES_KEY = "dsrecon:axes"
#: a model series whose std is below this fraction of the data's (or this, in z-units, without
#: data) is constant: it has no spectrum and is drawn as a flat line
CONSTANT_REL = 1e-6
#: the band where resting-state BOLD fluctuations live (Hz), shaded on spectra of BOLD data
BOLD_BAND = (0.01, 0.1)


def axes_metadata(fig: "plt.Figure") -> list[dict]:
    """Title, limits and text labels of every axes of ``fig`` (colour bars left out)."""
    out = []
    for ax in fig.get_axes():
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        d = {"title": ax.get_title() or ax.get_title("left") or ax.get_title("right") or ax.get_label(), "xlim": [float(v) for v in ax.get_xlim()], "ylim": [float(v) for v in ax.get_ylim()]}
        if hasattr(ax, "get_zlim"):
            d["zlim"] = [float(v) for v in ax.get_zlim()]
        d["xscale"] = ax.get_xscale()
        texts = [t.get_text() for t in ax.texts if t.get_text()]
        if texts:
            d["texts"] = texts
        out.append(d)
    return out


def read_axes_metadata(png: str | os.PathLike | bytes) -> list[dict]:
    """The axes limits a figure of this module recorded in its PNG (a path or the PNG's bytes)."""
    import io

    from PIL import Image

    src = io.BytesIO(png) if isinstance(png, (bytes, bytearray)) else png
    with Image.open(src) as im:
        return json.loads(im.text.get(AXES_KEY, "[]"))


def save(fig: "plt.Figure", stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as stem.png and stem.svg atomically (the PNG records its axes' limits); close it."""
    out = []
    stem = Path(stem)
    meta = json.dumps(axes_metadata(fig))
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else {AXES_KEY: meta} if fmt == "png" else None)
        out.append(p)
    plt.close(fig)
    return out


def shown_regions(n: int, k: int) -> np.ndarray:
    """Indices of the regions a figure with room for ``k`` shows out of ``n``: all, or ``k`` evenly spaced."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def is_constant(x: np.ndarray, scale: np.ndarray | float | None = None) -> np.ndarray:
    """Per column: True when the column's std is below CONSTANT_REL × ``scale`` (the data's std;
    default 1, z-units), i.e. a collapsed run whose only variation is rounding noise."""
    sd = np.nanstd(np.asarray(x, dtype=np.float64), axis=0)
    ref = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)
    return ~(sd >= CONSTANT_REL * ref)


def _union_limits(arrays: list[np.ndarray], pad: float = 0.05, min_span: float = 0.0) -> list[tuple[float, float]]:
    """Per column, the (low, high) covering every array, padded, at least ``min_span`` wide."""
    lo = np.min([np.nanmin(a, axis=0) for a in arrays], axis=0)
    hi = np.max([np.nanmax(a, axis=0) for a in arrays], axis=0)
    span = np.maximum(hi - lo, min_span)
    mid = (hi + lo) / 2
    return [(float(m - s * (0.5 + pad)), float(m + s * (0.5 + pad))) for m, s in zip(mid, span)]


def pca_project(x: np.ndarray, n: int, basis: np.ndarray | None = None, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project (T, N) onto ``n`` principal axes (of x, or of a given basis (N, n) / mean (N,))."""
    x = np.asarray(x, dtype=np.float64)
    if mean is None:
        mean = x.mean(0)
    if basis is None:
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        basis = vt[:n].T
    return (x - mean) @ basis, basis, mean


def time_series(observed: np.ndarray | None, generated: np.ndarray, stem, tr: float = 1.0, names: list[str] | None = None,
                max_regions: int = 8, min_span: float = 0.0) -> list[Path]:
    """Observed vs generated time series, one panel per region (all, or ``max_regions`` evenly
    spaced ones: `shown_regions`). Data and model share each panel's axes, and every panel the
    same y-limits (the series are in one unit, e.g. z-units), at least ``min_span`` tall: a
    collapsed model is a flat line on the data's scale, never a magnified wiggle."""
    generated = np.asarray(generated, dtype=np.float64)
    n_all = generated.shape[1]
    idx = shown_regions(n_all, max_regions)
    names = list(names) if names else [f"region {i}" for i in range(n_all)]
    arrays = [generated[:, idx]] + ([np.asarray(observed, dtype=np.float64)[:, idx]] if observed is not None else [])
    lims = _union_limits([np.ravel(a)[:, None] for a in arrays], min_span=min_span)[0]
    fig, axes = plt.subplots(len(idx), 1, figsize=(9, 1.1 * len(idx) + 0.8), sharex=True, squeeze=False)
    for row, i in enumerate(idx):
        ax = axes[row, 0]
        if observed is not None:
            ax.plot(np.arange(len(observed)) * tr, observed[:, i], color=DATA_COLOR, lw=0.9, label="data")
        ax.plot(np.arange(len(generated)) * tr, generated[:, i], color=MODEL_COLOR, lw=0.9, label="model (free run)")
        ax.set_ylim(*lims)
        ax.set_title(names[i], fontsize=8, loc="left", pad=2)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("time (s)")
    shown = f"{len(idx)} of {n_all} regions, evenly spaced" if len(idx) < n_all else f"all {n_all} regions"
    fig.suptitle(f"Data and the model's free run ({shown})", fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def attractor(observed: np.ndarray | None, generated: np.ndarray, stem, dims: int = 3, names: list[str] | None = None,
              min_span: float = 0.0) -> list[Path]:
    """2-D (dims=2) or 3-D (dims=3) projection of data and model; PCA (fitted on the data) when N > dims.

    Both panels have the same limits (the union of both clouds, at least ``min_span`` wide): a
    model whose run collapsed is a dot on the data's axes, labelled with its spread."""
    generated = np.asarray(generated, dtype=np.float64)
    N = generated.shape[1]
    ref = observed if observed is not None else generated
    if N > dims:
        _, basis, mean = pca_project(ref, dims)
        proj = lambda a: pca_project(a, dims, basis, mean)[0]  # noqa: E731
        labels = [f"PC{i + 1}" for i in range(dims)]
    else:
        proj = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        labels = list(names[:N]) if names and len(names) >= N else [f"x{i + 1}" for i in range(N)]
    d = min(dims, N)
    pg = proj(generated)
    po = None if observed is None else proj(np.asarray(observed, dtype=np.float64))
    lims = _union_limits([a for a in (pg, po) if a is not None], min_span=min_span)
    spread = float(np.max(np.std(pg, axis=0))) if pg.size else 0.0
    scale = float(np.max(np.std(po, axis=0))) if po is not None else 1.0
    fig = plt.figure(figsize=(10, 4.6))
    for j, (p, title, col) in enumerate([(po, "data", DATA_COLOR), (pg, "model", MODEL_COLOR)]):
        if d == 3:
            ax = fig.add_subplot(1, 2, j + 1, projection="3d")
        else:
            ax = fig.add_subplot(1, 2, j + 1)
        ax.set_title(title)
        if p is None:
            # Axes3D.text takes (x, y, z, s); text2D places a label in axes coordinates on both kinds
            text = ax.text2D if d == 3 else ax.text
            text(0.5, 0.5, "no data given", transform=ax.transAxes, ha="center")
        elif d == 3:
            ax.plot(p[:, 0], p[:, 1], p[:, 2], color=col, lw=0.5)
        elif d == 2:
            ax.plot(p[:, 0], p[:, 1], color=col, lw=0.5)
        else:
            ax.plot(p[:, 0], color=col, lw=0.5)
        if p is not None and title == "model" and spread < 0.01 * scale:
            # below 1 % of the data's spread the run sits on a point: mark it, it would be invisible
            if d >= 2:
                ax.scatter(*[p[-1:, k] for k in range(d)], color=col, s=25, zorder=3)
            text = ax.text2D if d == 3 else ax.text
            text(0.5, 0.92, f"collapsed: spread {spread:.2g}", transform=ax.transAxes, ha="center", fontsize=9, color=col)
        if d >= 2:
            ax.set_xlim(*lims[0])
            ax.set_ylim(*lims[1])
            ax.set_ylabel(labels[1])
            if d == 3:
                ax.set_zlim(*lims[2])
                ax.set_zlabel(labels[2])
        else:
            ax.set_ylim(*lims[0])
        ax.set_xlabel(labels[0])
    fig.suptitle(f"{d}-D projection of data and model, on the same axes")
    return save(fig, stem)


def _spectra(x: np.ndarray, smoothing: float) -> np.ndarray:
    from dsrecon.metrics.spectrum import power_spectra as _ps

    return _ps(x, smoothing)


def power_spectra(observed: np.ndarray | None, generated: np.ndarray, stem, tr: float = 1.0, max_regions: int = 4,
                  names: list[str] | None = None, smoothing: float = 0.0, baseline: np.ndarray | None = None,
                  band: tuple[float, float] | None = None) -> list[Path]:
    """Power spectra of data (blue), model (red) and, when given, the linear baseline (grey),
    normalised as D_H compares them (z-scored, smoothed by ``smoothing`` bins, summing to 1), on
    log-log axes from the lowest frequency to Nyquist; ``band`` (Hz) is shaded (the BOLD band).

    With at most ``max_regions`` regions one panel each; with more, one panel of the median over
    all regions with the quartile band. A model series that is constant (std below CONSTANT_REL
    of the data's) has no spectrum: the panel says so instead of drawing normalised rounding noise."""
    generated = np.asarray(generated, dtype=np.float64)
    N = generated.shape[1]
    names = list(names) if names else [f"region {i}" for i in range(N)]
    scale = None if observed is None else np.nanstd(np.asarray(observed, dtype=np.float64), axis=0)
    const = is_constant(generated, scale)
    series = [(observed, "data", DATA_COLOR, "-"), (generated, "model", MODEL_COLOR, "-"), (baseline, "VAR(1)", "#7f7f7f", "--")]
    per_region = N <= max_regions
    panels = [[i] for i in range(N)] if per_region else [list(range(N))]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(3.4 * len(panels), 6.5), 3.0), squeeze=False)
    for ax, cols in zip(axes[0], panels):
        if band is not None:
            ax.axvspan(*band, color="#f2e9c9", zorder=0, label=f"{band[0]:g}–{band[1]:g} Hz")
        for arr, lab, col, ls in series:
            if arr is None:
                continue
            a = np.asarray(arr, dtype=np.float64)[:, cols]
            if lab == "model" and const[cols].all():
                ax.text(0.5, 0.93, "model: no spectrum, the run is constant", transform=ax.transAxes, ha="center", va="top", fontsize=8,
                        color=col, bbox={"facecolor": "white", "edgecolor": col, "lw": 0.6})
                continue
            keep = [j for j, c in enumerate(cols) if not (lab == "model" and const[c])]
            p = _spectra(a[:, keep], smoothing)
            f = np.fft.rfftfreq(a.shape[0], d=tr)
            p, f = p[1:], f[1:]
            if p.shape[1] == 1:
                ax.loglog(f, p[:, 0], color=col, lw=0.9, ls=ls, label=lab)
            else:
                q = np.nanpercentile(p, [25, 50, 75], axis=1)
                ax.loglog(f, q[1], color=col, lw=1.0, ls=ls, label=f"{lab} (median of {p.shape[1]})")
                ax.fill_between(f, q[0], q[2], color=col, alpha=0.18, lw=0)
        ax.set_xlabel("frequency (Hz)")
        ax.set_title(names[cols[0]] if per_region else f"all {N} regions: median and quartiles", fontsize=9)
    axes[0, 0].set_ylabel("power (normalised, as D_H sees it)")
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def fc_matrices(fc_data: np.ndarray, fc_model: np.ndarray, stem, names: list[str] | None = None, title: str = "") -> list[Path]:
    """The data's and the model's FC matrices side by side, and model − data, on one colour scale
    ([−1, 1]; the difference clipped to it). Tick labels: every region up to 30, else about 20
    evenly spaced names, so the figure stays readable at 400 regions."""
    N = fc_data.shape[0]
    names = list(names) if names else [f"region {i}" for i in range(N)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    step = 1 if N <= 30 else int(np.ceil(N / 20))
    ticks = np.arange(0, N, step)
    for ax, m, t, cmap in ((axes[0], fc_data, "data", "RdBu_r"), (axes[1], fc_model, "model", "RdBu_r"),
                           (axes[2], np.clip(fc_model - fc_data, -1, 1), "model − data", "PuOr_r")):
        im = ax.imshow(m, vmin=-1, vmax=1, cmap=cmap, interpolation="nearest" if N <= 150 else "antialiased")  # (cells under a pixel: averaged)
        ax.set_title(t)
        fs = 7 if N <= 30 else 6
        ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=fs)
        ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fs)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)


def fcd_panels(mats: dict[str, np.ndarray], values: dict[str, np.ndarray], stem, window_s: float, title: str = "") -> list[Path]:
    """FCD: the window-by-window matrices of data and model (``mats``: {"data", "model"}), and the
    distributions of their values (``values``: {"data", "model"[, "VAR(1)"]}) that FCD_KS compares."""
    keys = [k for k in ("data", "model") if k in mats]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.6 * (len(keys) + 1), 4.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        im = ax.imshow(mats[k], vmin=-1, vmax=1, cmap="viridis", interpolation="nearest")
        ax.set_title(f"FCD, {k}")
        ax.set_xlabel("window")
        ax.set_ylabel("window")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax = axes[0, -1]
    colors = {"data": DATA_COLOR, "model": MODEL_COLOR, "VAR(1)": "#7f7f7f"}
    bins = np.linspace(-1, 1, 41)
    for k, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4, color=colors.get(k, "k"), ls="--" if k == "VAR(1)" else "-",
                    label=f"{k} ({v.size})")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("correlation between window FCs")
    ax.set_ylabel("density")
    ax.set_title(f"FCD distributions ({window_s:g} s windows)")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)


def region_dh(model: np.ndarray, names: list[str], stem, baseline: np.ndarray | None = None, n_named: int = 6) -> list[Path]:
    """Per-region D_H of every region, sorted from best to worst (dots), with the linear baseline's
    D_H of the same regions (grey) when given. Up to 30 regions every name is on the axis; beyond,
    the ``n_named`` worst are labelled, so the plot reads the same at 94 or 400 regions."""
    v = np.asarray(model, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(v), v, np.inf), kind="stable")
    N = v.size
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(1, N + 1)
    if baseline is not None:
        ax.scatter(x, np.asarray(baseline, dtype=np.float64)[order], s=10, color="#9e9e9e", label="VAR(1)", zorder=2)
    ax.scatter(x, v[order], s=14, color=MODEL_COLOR, label="model", zorder=3)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, N + 1)
    ax.set_ylabel("D_H (0 = same spectrum)")
    if N <= 30:
        ax.set_xticks(x, [names[i] for i in order], rotation=90, fontsize=7)
    else:
        ax.set_xlabel(f"regions, sorted by the model's D_H ({N})")
        worst = [i for i in order[::-1] if np.isfinite(v[i])][:n_named]
        if not worst:
            ax.text(0.5, 0.5, "model: no D_H (its run is constant or diverged)", transform=ax.transAxes, ha="center", fontsize=8,
                    color=MODEL_COLOR)
        else:
            ax.text(0.99, 0.03, "worst: " + ", ".join(f"{names[i]} {v[i]:.2f}" for i in worst), transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=7, bbox={"facecolor": "white", "edgecolor": "#ccc", "lw": 0.5})
    ax.set_title("Spectral distance per region, sorted")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, stem)


def training_curves(log_path: str | os.PathLike, stem) -> list[Path]:
    """Loss, α and validation D_stsp / D_H against epoch, from a run's training_log.tsv."""
    import pandas as pd

    df = pd.read_csv(log_path, sep="\t")
    panels = [c for c in ("loss", "alpha", "val_D_stsp", "val_D_H") if c in df.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False)
    titles = {"loss": "training loss", "alpha": "forcing α", "val_D_stsp": "validation D_stsp", "val_D_H": "validation D_H"}
    for ax, col in zip(axes[0], panels):
        y = pd.to_numeric(df[col], errors="coerce")
        ok = np.isfinite(y.to_numpy(dtype=float))
        ax.plot(df["epoch"][ok], y[ok], marker="o" if col.startswith("val_") else None, ms=3, lw=1)
        if col == "loss" and ok.any() and (y[ok] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(titles.get(col, col))
    fig.suptitle("Training")
    fig.tight_layout()
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


def fixed_points_on_attractor(latent: np.ndarray, cycles: list[dict], stem, reference: np.ndarray | None = None) -> list[Path]:
    """Fixed points and cycles (markers by stability) over the latent free run (T, M), 2-D (PCA
    when M > 2). ``reference`` (T', M): the latent states the model infers from the data; when
    given they are drawn too (light blue), the projection is theirs and the limits cover both, so
    a collapsed run is a point on the data's scale, not a magnified cloud."""
    latent = np.asarray(latent, dtype=np.float64)
    M = latent.shape[1]
    ref = None if reference is None or len(reference) < 3 else np.asarray(reference, dtype=np.float64)[:, :M]
    base = ref if ref is not None else latent
    if M > 2:
        _, basis, mean = pca_project(base, 2)
        proj = lambda a: pca_project(np.asarray(a)[:, :M], 2, basis, mean)[0]  # noqa: E731
        labels = ("PC1", "PC2")
    elif M == 2:
        proj, labels = (lambda a: np.asarray(a, dtype=np.float64)[:, :2]), ("z1", "z2")
    else:
        proj = lambda a: np.c_[np.asarray(a)[:-1, 0], np.asarray(a)[1:, 0]] if len(a) > 1 else np.c_[np.asarray(a)[:, 0], np.asarray(a)[:, 0]]  # noqa: E731
        labels = ("z_t", "z_{t+1}")
    p = proj(latent)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    clouds = [p]
    if ref is not None:
        pr = proj(ref)
        clouds.append(pr)
        ax.plot(pr[:, 0], pr[:, 1], color="#9ecae1", lw=0.5, label="latent inferred from the data")
    ax.plot(p[:, 0], p[:, 1], color=MODEL_COLOR if ref is not None else "#9e9e9e", lw=0.5, label="free run")
    seen = set()
    for c in cycles:
        pts = np.asarray(c["points"])[:, :M]
        pts = pca_project(pts, 2, basis, mean)[0] if M > 2 else (pts[:, :2] if M == 2 else np.c_[pts[:, 0], pts[:, 0]])
        clouds.append(pts)
        mk, col = _STABILITY_MARKER.get(c["stability"], ("s", "k"))
        lab = f"{c['stability']} (period {c['period']})"
        ax.scatter(pts[:, 0], pts[:, 1], marker=mk, color=col, s=40, zorder=3, label=None if lab in seen else lab)
        seen.add(lab)
    if ref is not None:
        lims = _union_limits(clouds)
        ax.set_xlim(*lims[0])
        ax.set_ylim(*lims[1])
        spread = float(np.max(np.std(p, axis=0)))
        if spread < 0.01 * float(np.max(np.std(pr, axis=0))):
            ax.text(0.5, 0.95, f"the free run is a point (spread {spread:.2g})", transform=ax.transAxes, ha="center", fontsize=8,
                    color=MODEL_COLOR)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title("Fixed points and cycles")
    ax.legend(fontsize=7, loc="lower right")
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
