"""Every metric beside its yardsticks, the metric settings by data kind, and the one-line verdict.

A score means little on its own: a D_stsp of 42 for 94 regions is good or bad only against what a
simple model and the data themselves score *the same way*. So every comparison metric
(:data:`COMPARED`) is computed three times on one reference (the test data):

- **model**: the model's free run (the §6 protocol: its last T frames);
- **VAR1**: a linear VAR(1) (ridge 1 on z-scored data, Gaussian innovations with the residual
  covariance, :class:`dsrecon.metrics.baselines.LinearVAR`) fitted to the model's training data,
  run freely for as many frames after a burn-in;
- **floor**: the training data themselves in place of the generated series (their last T frames):
  how far apart two stretches of the same recording are, i.e. the best a model can hope for.

Arrays are ``(time, regions)``; numpy only. The verdict rule is :func:`verdict` (docs/metrics.md,
"The verdict").
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from dsrecon.errors import DataError
from dsrecon.metrics.baselines import DEFAULT_RIDGE, LinearVAR
from dsrecon.metrics.connectivity import DEFAULT_FCD_WINDOW_S, connectivity_metrics
from dsrecon.metrics.spectrum import DEFAULT_SMOOTHING, hellinger_spectral
from dsrecon.metrics.stsp import DEFAULT_BINS, DEFAULT_GMM_POINTS, DEFAULT_GMM_VAR, state_space_divergence

#: the metrics that stand beside their yardsticks, in the order reports show them
COMPARED = ("D_stsp", "D_H", "PE_n", "FC_corr", "FC_rmse", "FCD_KS")
#: metrics where higher is better (the others: lower is better)
HIGHER_IS_BETTER = frozenset({"FC_corr"})
#: what each metric says about, in the verdict's words
ASPECT = {"D_stsp": "state space", "D_H": "spectra", "PE_n": "prediction", "FC_corr": "FC", "FC_rmse": "FC", "FCD_KS": "FCD"}
#: a difference smaller than this fraction of the larger magnitude is a draw in the verdict
VERDICT_MARGIN = 0.05
#: order and burn-in of the linear baseline's free run
VAR_ORDER = 1
VAR_BURN_IN = 1000

#: metric settings by data kind (docs/metrics.md, "Settings follow the data"): the GMM σ² and the
#: D_H smoothing σ in frequency bins. BOLD: the convSSM paper's choice for short z-scored BOLD
#: series (docs/method.md §6); everything else keeps the general defaults.
KIND_SETTINGS = {
    "bold": {"gmm_var": 0.3, "smoothing": 1.0},
    "calcium": {"gmm_var": DEFAULT_GMM_VAR, "smoothing": DEFAULT_SMOOTHING},
    "generic": {"gmm_var": DEFAULT_GMM_VAR, "smoothing": DEFAULT_SMOOTHING},
}


# ----------------------------------------------------------------------------- settings by data kind
def kind_of_run(config: dict) -> tuple[str, str]:
    """(data kind, why) of a fitted run from its config.json: calcium when the data or the kernel
    say so; BOLD for an HRF kernel (spm, glover) or BOLD data (NIfTI/fMRIPrep); generic otherwise
    (kernel none: a system observed directly; a kernel from a file on data of unknown kind)."""
    kern = config.get("kernel") or {}
    kind = str(kern.get("kind") or config.get("kernel_name") or "")
    prov = (config.get("provenance") or [{}])[0] or {}
    modality = prov.get("modality") if isinstance(prov, dict) else None
    if modality == "calcium" or kind == "calcium":
        return "calcium", f"calcium imaging ({'the data' if modality == 'calcium' else 'kernel calcium'})"
    if kind in ("spm", "glover"):
        return "bold", f"BOLD (kernel {kind})"
    if modality == "bold":
        return "bold", "BOLD data"
    return "generic", f"kernel {kind or 'unknown'}: not BOLD or calcium"


def kind_of_sidecar(side: dict) -> tuple[str, str]:
    """(data kind, why) of a table from its JSON sidecar: ``Modality`` (written by dsrecon for
    BOLD and calcium tables) or ``kernel`` (written by ``dsrecon simulate``); generic otherwise."""
    mod = str(side.get("Modality") or "").lower()
    if mod in ("bold", "calcium"):
        return mod, f"Modality {mod} in the sidecar"
    kern = str(side.get("kernel") or "").lower()
    if kern in ("spm", "glover"):
        return "bold", f"kernel {kern} in the sidecar"
    if kern == "calcium":
        return "calcium", "kernel calcium in the sidecar"
    return "generic", "the sidecar names no modality" if side else "no sidecar names the data's kind"


def metric_settings(kind: str, why: str, gmm_var: float | None = None, smoothing: float | None = None) -> dict[str, Any]:
    """The GMM σ² and D_H smoothing to use: the given ones, else the data kind's. The record goes
    into every output (``metric_settings``) so that numbers computed at other settings are never
    compared by mistake."""
    base = KIND_SETTINGS.get(kind, KIND_SETTINGS["generic"])
    given = [n for n, v in (("--gmm-var", gmm_var), ("--smoothing", smoothing)) if v is not None]
    return {
        "gmm_var": float(base["gmm_var"] if gmm_var is None else gmm_var),
        "smoothing": float(base["smoothing"] if smoothing is None else smoothing),
        "data_kind": kind,
        "chosen_by": f"{why}" + (f"; given: {', '.join(given)}" if given else ""),
    }


# ----------------------------------------------------------------------------- one scoring protocol
def score_series(generated: np.ndarray, reference: np.ndarray, *, tr: float | None, mask: np.ndarray | None = None,
                 stsp: str = "auto", bins: int = DEFAULT_BINS, gmm_var: float = DEFAULT_GMM_VAR, smoothing: float = DEFAULT_SMOOTHING,
                 seed: int = 0, gmm_points: str = DEFAULT_GMM_POINTS, fcd_window_s: float = DEFAULT_FCD_WINDOW_S) -> dict[str, Any]:
    """D_stsp, D_H, FC_corr, FC_rmse, FCD_KS of a generated (T_g, N) series against a reference
    (T, N): the one protocol the model, the VAR(1) and the floor are all scored with.

    ``mask`` (T,): the reference's valid frames; D_stsp and FC use those frames (and the
    generated frames at the same rows when the lengths agree), FCD the valid frames joined. A
    non-finite generated series (a diverged run) scores D_stsp inf and NaN elsewhere. ``tr`` None:
    FCD_KS is NaN (no window without a TR)."""
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    m = np.ones(r.shape[0], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    gm = g[m] if g.shape[0] == r.shape[0] else g
    out: dict[str, Any] = {}
    if not np.isfinite(g).all():
        return {"D_stsp": float("inf"), "D_stsp_method": stsp, "D_H": float("nan"), "FC_corr": float("nan"), "FC_rmse": float("nan"),
                "FCD_KS": float("nan"), "diverged": True}
    d, method = state_space_divergence(gm, r[m], method=stsp, bins=bins, var=gmm_var, seed=seed, gmm_points=gmm_points)
    out.update(D_stsp=float(d), D_stsp_method=method, D_H=float(hellinger_spectral(g, r, smoothing=smoothing)))
    out.update(connectivity(gm, r[m], tr, fcd_window_s))
    return out


def connectivity(generated: np.ndarray, reference: np.ndarray, tr: float | None,
                 fcd_window_s: float = DEFAULT_FCD_WINDOW_S) -> dict[str, Any]:
    """FC_corr, FC_rmse, FCD_KS (NaN where undefined: one region, too few frames, no TR)."""
    nan = float("nan")
    if np.shape(reference)[1] < 2 or np.shape(reference)[0] < 3 or np.shape(generated)[0] < 3:
        return {"FC_corr": nan, "FC_rmse": nan, "FCD_KS": nan}
    if tr is None:
        from dsrecon.metrics.connectivity import fc_scores

        return {**fc_scores(generated, reference), "FCD_KS": nan}
    c = connectivity_metrics(generated, reference, float(tr), fcd_window_s)
    return {k: c[k] for k in ("FC_corr", "FC_rmse", "FCD_KS")}


def valid_runs(x: np.ndarray, min_len: int = 3) -> list[np.ndarray]:
    """The stretches of consecutive finite rows of x (T, N), each at least ``min_len`` long."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    out, start = [], None
    for t, v in enumerate(np.append(ok, False)):
        if v and start is None:
            start = t
        elif not v and start is not None:
            if t - start >= min_len:
                out.append(x[start:t])
            start = None
    return out


def var_prediction_error(var: LinearVAR, x: np.ndarray, n: int, mask: np.ndarray | None = None) -> float:
    """The VAR's PE_n on the same footing as the model's: the MSE of its n-step-ahead mean
    predictions of x_{t+n} from x_t, over valid targets whose history is valid."""
    x = np.asarray(x, dtype=np.float64)
    m = np.isfinite(x).all(axis=1) if mask is None else np.asarray(mask, bool) & np.isfinite(x).all(axis=1)
    pred, idx = var.predict(np.nan_to_num(x), n)
    if idx.size == 0:
        return float("nan")
    src = idx - n
    ok = m[idx] & m[src]
    if not ok.any():
        return float("nan")
    return float(np.mean((pred[ok] - x[idx[ok]]) ** 2))


def yardsticks(train: Sequence[np.ndarray], reference: np.ndarray, *, tr: float | None, n_frames: int | None = None,
               mask: np.ndarray | None = None, n_pe: int | None = None, seed: int = 0, zscore: bool = False,
               **score_kw: Any) -> dict[str, Any]:
    """{"VAR1": scores, "floor": scores, "info": how each was made, "series": the two series
    scored} against ``reference``.

    train: the model's training data, one (T_i, N) array per recording (NaN rows: censored
    frames; a VAR never spans them). n_frames: frames of the scored generated series (default:
    the reference's). The VAR(1) (ridge 1) is fitted to z-scored data when ``zscore`` (tables
    in data units), else as given (already normalised). ``n_pe``: also the VAR's PE_n (the
    floor has none). ``score_kw``: the settings of :func:`score_series`."""
    ref = np.asarray(reference, dtype=np.float64)
    T = int(n_frames or ref.shape[0])
    segs = [s for seg in train for s in valid_runs(seg, VAR_ORDER + 2)]
    if not segs:
        raise DataError("the training data have no stretch of valid frames to fit the linear baseline to")
    pooled = np.concatenate(segs)
    mu, sd = (pooled.mean(0), np.where(pooled.std(0) > 0, pooled.std(0), 1.0)) if zscore else (0.0, 1.0)
    var = LinearVAR.fit([(s - mu) / sd for s in segs], order=VAR_ORDER, ridge=DEFAULT_RIDGE)
    burn = max(VAR_BURN_IN, T // 4)
    sim = var.simulate(T, seed=seed, burn_in=burn) * sd + mu
    v = score_series(sim, ref, tr=tr, mask=mask, seed=seed, **score_kw)
    if n_pe is not None:
        v["PE_n"] = var_prediction_error(var, (ref - mu) / sd, int(n_pe), mask) if not v.get("diverged") else float("nan")
    # the floor: the training data's own last T valid frames in place of the generated series
    floor_series = pooled[-T:]
    f = score_series(floor_series, ref, tr=tr, mask=mask if floor_series.shape[0] == ref.shape[0] else None, seed=seed, **score_kw)
    if n_pe is not None:
        f["PE_n"] = None  # a recording predicts nothing: a prediction error has no floor (0 is ideal)
    info = {"VAR1": {"order": VAR_ORDER, "ridge": DEFAULT_RIDGE, "innovations": "Gaussian (residual covariance)", "burn_in": burn,
                     "frames": T, "spectral_radius": var.spectral_radius(), "training_frames": int(pooled.shape[0])},
            "floor": {"frames": int(floor_series.shape[0]), "what": "the last frames of the training data in place of the generated series"}}
    v.pop("diverged", None)
    f.pop("diverged", None)
    return {"VAR1": v, "floor": f, "info": info, "series": {"VAR1": sim, "floor": floor_series}}


# ----------------------------------------------------------------------------- the verdict
def better(metric: str, a: float | None, b: float | None, margin: float = VERDICT_MARGIN) -> int | None:
    """+1 when value a is better than b on ``metric`` by more than ``margin`` of the larger
    magnitude, −1 when worse, 0 for a draw; None when either is missing or NaN. inf (a diverged
    run's D_stsp) is worse than any finite value."""
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return None
    if a == b:
        return 0
    sign = 1 if metric in HIGHER_IS_BETTER else -1
    if math.isinf(a) or math.isinf(b):
        return 1 if sign * (a - b) > 0 else -1
    if abs(a - b) <= margin * max(abs(a), abs(b)):
        return 0
    return 1 if sign * (a - b) > 0 else -1


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def informative(metric: str, var: dict, floor: dict | None) -> bool:
    """Whether ``metric`` can tell a model from the linear baseline on this test set: the floor
    (the data themselves) beats the VAR(1) on it. A metric without a floor value (PE_n, or no
    floor) counts; one where the data score no better than linear noise (the GMM D_stsp of a
    short test in many dimensions, for example) does not."""
    if not floor:
        return True
    f = floor.get(metric)
    if f is None or (isinstance(f, float) and math.isnan(f)):
        return True
    return better(metric, f, var.get(metric)) == 1


def compare_to(scores: dict, other: dict, metrics: Sequence[str] = COMPARED, floor: dict | None = None) -> dict[str, list[str]]:
    """Aspects (state space, spectra, prediction, FC, FCD) where ``scores`` beat / lose to
    ``other``: an aspect is won when every metric of it that both have is better, lost when every
    one is worse; draws and mixed aspects are in neither list. With ``floor``, metrics that are
    not :func:`informative` are left out (listed under "uninformative")."""
    res: dict[str, list[int]] = {}
    skipped = []
    for k in metrics:
        c = better(k, scores.get(k), other.get(k))
        if c is None:
            continue
        if not informative(k, other, floor):
            skipped.append(k)
            continue
        res.setdefault(ASPECT[k], []).append(c)
    won = [a for a, cs in res.items() if all(c > 0 for c in cs)]
    lost = [a for a, cs in res.items() if all(c < 0 for c in cs)]
    return {"won": won, "lost": lost, "compared": list(res), "uninformative": skipped}


def verdict(scores: dict | None, baselines: dict | None, *, regime: str | None = None, spread: float | None = None,
            diverged: bool = False, collapse_spread: float = 0.05) -> dict[str, Any]:
    """The report's first line, from the numbers (docs/metrics.md, "The verdict").

    1. diverged (the free run leaves the bounded regime) → "diverged";
    2. the free run's spread (largest std over regions of its last quarter, z-units) below
       ``collapse_spread`` → "collapsed to a fixed point" (the fit's own collapse test);
    3. else its dynamics: "bounded and chaotic" / "bounded and periodic or quasi-periodic" /
       "bounded, settling on a fixed point" (from the regime of λ_max) / "bounded";
    then, with a VAR(1) baseline, the aspects it wins and loses against it (:func:`compare_to`,
    counting only metrics on which the floor beats the VAR(1), :func:`informative`): all lost and
    none won → "loses to the linear baseline"; none won or lost → "level with the linear
    baseline". Returns {"text", "state", "won", "lost"[, "uninformative"]}."""
    if diverged:
        return {"text": "diverged: the free run leaves the bounded regime", "state": "diverged", "won": [], "lost": []}
    if spread is not None and math.isfinite(spread) and spread < collapse_spread:
        return {"text": f"collapsed to a fixed point (free-run spread {spread:.2g} in z-units; the data's is about 1)",
                "state": "collapsed", "won": [], "lost": []}
    state = {"chaotic": "bounded and chaotic", "periodic or quasi-periodic": "bounded and periodic or quasi-periodic",
             "fixed point": "bounded, settling on a fixed point"}.get(regime or "", "bounded")
    if not scores or not baselines or not baselines.get("VAR1"):
        return {"text": f"{state}; no linear baseline to compare with", "state": state, "won": [], "lost": []}
    c = compare_to(scores, baselines["VAR1"], floor=baselines.get("floor"))
    won, lost = c["won"], c["lost"]
    # aspects with no informative metric: named, so that "every aspect" never hides them
    unjudged = list(dict.fromkeys(ASPECT[k] for k in c["uninformative"] if ASPECT[k] not in c["compared"]))
    every = not unjudged
    if lost and not won:
        tail = "loses to the linear baseline" + (" on every aspect" if every and len(lost) == len(c["compared"]) else f" on {_join(lost)}")
    elif won and not lost:
        tail = "beats the linear baseline" + (" on every aspect" if every and len(won) == len(c["compared"]) else f" on {_join(won)}")
    elif won:
        tail = f"beats the linear baseline on {_join(won)}, loses on {_join(lost)}"
    elif c["compared"]:
        tail = "level with the linear baseline"
    else:
        tail = "no metric here tells it from the linear baseline (the data themselves do no better)"
    if unjudged and c["compared"]:
        tail += f" ({_join(unjudged)}: uninformative on this test set)"
    return {"text": f"{state}; {tail}", "state": state, "won": won, "lost": lost, "uninformative": c["uninformative"]}


def spread_of(x: np.ndarray) -> float:
    """Largest std over regions of the last quarter of a (T, N) series (the fit's collapse test)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        return float("nan")
    return float(x[-max(1, x.shape[0] // 4):].std(0).max())
