"""The two-table form's TR, data kind, connectivity metrics and yardsticks
(`dsrecon evaluate --generated G --reference R [--train TRAIN]`; called from cli/evaluate.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError
from dsrecon.metrics.yardsticks import COMPARED, connectivity, kind_of_sidecar, metric_settings, spread_of, verdict, yardsticks

#: the one-line note when no --train is given
NO_TRAIN_NOTE = ("baselines: none (give --train TRAIN.tsv, the table the generated series' model was fitted on, "
                 "for the VAR(1) baseline and the floor beside every metric)")


def _tr_of(path: Path, side: dict) -> float | None:
    from dsrecon.io.tables import sidecar_tr

    return sidecar_tr(path, side)[0]


def table_context(generated: Path, reference: Path, train: Path | None, g: np.ndarray, tr: float | None,
                  gmm_var: float | None = None, smoothing: float | None = None) -> dict[str, Any]:
    """The TR (``--tr``, else the reference's sidecar, else the generated or training table's),
    the data kind (the first sidecar that names one: reference, training, generated) and the
    metric settings it calls for, and the training table (or None). A ``--tr`` or a sidecar TR
    that contradicts another is a DataError naming both."""
    from dsrecon.io.tables import TR_RTOL, read_array, read_sidecar

    paths = [("reference", reference), ("training", train), ("generated", generated)]
    sides = {what: read_sidecar(p) for what, p in paths if p is not None}
    trs = [(p, _tr_of(p, sides[what])) for what, p in paths if p is not None]
    trs = [(p, v) for p, v in trs if v is not None]
    chosen = float(tr) if tr is not None else (trs[0][1] if trs else None)
    for p, v in trs:
        if not math.isclose(v, chosen, rel_tol=TR_RTOL):
            first = "--tr" if tr is not None else str(trs[0][0])
            raise DataError(f"{p}: its sidecar says TR {v:g} s but {first} says {chosen:g} s; the tables must share one sampling grid")
    kind, why = "generic", "no sidecar names the data's kind"
    for what, p in paths:
        if p is not None and sides.get(what):
            k, w = kind_of_sidecar(sides[what])
            if k != "generic":
                kind, why = k, f"{w} of {p.name}"
                break
    tr_arr = None
    if train is not None:
        tr_arr, _ = read_array(train, allow_nan=True)
        if tr_arr.shape[1] != g.shape[1]:
            raise DataError(f"{train} has {tr_arr.shape[1]} columns but {generated} has {g.shape[1]}; they must match")
    return {"tr": chosen, "settings": metric_settings(kind, why, gmm_var, smoothing), "train": tr_arr, "train_path": train}


def table_yardsticks(g: np.ndarray, r: np.ndarray, ctx: dict[str, Any], scores: dict[str, Any], *, stsp: str, bins: int, seed: int,
                     gmm_points: str, fcd_window_s: float) -> dict[str, Any]:
    """FC_corr, FC_rmse, FCD_KS of the generated table, the baselines (null without --train), the
    settings used, the verdict and the notes. ``scores``: the table's D_stsp and D_H."""
    ms = ctx["settings"]
    out: dict[str, Any] = dict(connectivity(g, r, ctx["tr"], fcd_window_s))
    notes = []
    if ctx["tr"] is None and r.shape[1] >= 3:
        notes.append("FCD_KS needs the TR: give --tr SECONDS or a JSON sidecar with RepetitionTime")
    base: dict[str, Any] = {"VAR1": None, "floor": None}
    info = None
    if ctx["train"] is None:
        notes.append(NO_TRAIN_NOTE)
    else:
        try:
            y = yardsticks([ctx["train"]], r, tr=ctx["tr"], n_frames=g.shape[0], seed=seed, zscore=True, stsp=stsp, bins=bins,
                           gmm_var=ms["gmm_var"], smoothing=ms["smoothing"], gmm_points=gmm_points, fcd_window_s=fcd_window_s)
        except DataError as e:
            raise DataError(f"{ctx['train_path']}: {e}") from None
        keys = [k for k in COMPARED if k != "PE_n"] + ["D_stsp_method"]
        base = {"VAR1": {k: y["VAR1"].get(k) for k in keys}, "floor": {k: y["floor"].get(k) for k in keys}}
        info = {**y["info"], "training_data": str(ctx["train_path"])}
    mu, sd = r.mean(0), r.std(0)
    spread = spread_of((g - mu) / np.where(sd > 0, sd, 1.0))
    v = verdict({**scores, **out}, base if base["VAR1"] else None, spread=spread, diverged=not np.isfinite(g).all())
    out.update({"FCD_window_s": float(fcd_window_s), "tr": ctx["tr"], "baselines": base, "baselines_info": info,
                "metric_settings": ms, "verdict": v["text"], "notes": notes})
    return out
