"""BIDS / fMRIPrep: find runs in a derivatives tree and read their confounds.

Discovery is offline and glob-based (nilearn.interfaces.bids.get_bids_files): a directory with
``sub-*`` folders is searched for ``sub-<label>[_ses-<s>]_task-<t>[...]_desc-preproc_bold.nii.gz``
under ``func/``.

Confounds come from the ``*_desc-confounds_timeseries.tsv`` beside the BOLD file (same entities),
through ``nilearn.interfaces.fmriprep.load_confounds_strategy`` with one of the strategies in
:data:`CONFOUND_STRATEGIES`. nilearn returns (confounds, sample_mask): frames left out of the
sample mask (non-steady-state volumes; motion outliers with ``scrubbing``) become masked frames
of the Recording (mask False) — they stay on the time grid and are never deleted.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError

#: --confounds choices: nilearn's predefined denoising strategies, or none.
CONFOUND_STRATEGIES = ("simple", "scrubbing", "compcor", "none")

_BOLD_RE = re.compile(r"_desc-preproc_bold\.nii(\.gz)?$")


def is_preproc_bold(path: str | os.PathLike) -> bool:
    """True for an fMRIPrep ``*_desc-preproc_bold.nii[.gz]`` file name."""
    return bool(_BOLD_RE.search(Path(path).name))


def looks_like_bids_dir(path: str | os.PathLike) -> bool:
    """A directory with at least one ``sub-*`` folder."""
    p = Path(path)
    return p.is_dir() and any(q.is_dir() and q.name.startswith("sub-") for q in p.iterdir())


def _strip_prefix(label: str, prefix: str) -> str:
    return label[len(prefix):] if label.startswith(prefix) else label


def discover_runs(
    root: str | os.PathLike, participant_label: list[str] | None = None, task: str | None = None,
    session: list[str] | None = None, space: str | None = None,
) -> list[Path]:
    """All ``*_desc-preproc_bold.nii.gz`` runs under ``root`` matching the query, sorted.

    participant_label / session: labels with or without their ``sub-`` / ``ses-`` prefix; empty
    means all. Raises DataError naming the directory and the query when nothing matches, and
    when the matches span several ``space-`` entities and no ``space`` was chosen.
    """
    from nilearn.interfaces.bids import get_bids_files, parse_bids_filename

    root = Path(root)
    subs = [_strip_prefix(s, "sub-") for s in (participant_label or [])] or ["*"]
    sess = [_strip_prefix(s, "ses-") for s in (session or [])] or [None]
    found: set[str] = set()
    for sub in subs:
        for ses in sess:
            filters = [("desc", "preproc")]
            if task:
                filters.append(("task", _strip_prefix(task, "task-")))
            if ses is not None:
                filters.append(("ses", ses))
            if space:
                filters.append(("space", space))
            for ext in ("nii.gz", "nii"):
                found.update(get_bids_files(root, file_tag="bold", file_type=ext, sub_label=sub,
                                            modality_folder="func", filters=filters))
    runs = sorted(Path(f) for f in found if is_preproc_bold(f))
    query = describe_query(participant_label, task, session, space)
    if not runs:
        raise DataError(f"{root}: no *_desc-preproc_bold.nii.gz run matches {query}")
    spaces = sorted({parse_bids_filename(str(r))["entities"].get("space", "") for r in runs})
    if len(spaces) > 1:
        listed = ", ".join(s or "(none)" for s in spaces)
        raise DataError(f"{root}: runs matching {query} come in several spaces ({listed}); choose one with --space")
    return runs


def describe_query(participant_label=None, task=None, session=None, space=None) -> str:
    parts = [
        f"participant {' '.join(participant_label)}" if participant_label else "any participant",
        f"task {task}" if task else "any task",
    ]
    if session:
        parts.append(f"session {' '.join(session)}")
    if space:
        parts.append(f"space {space}")
    return "(" + ", ".join(parts) + ")"


def confounds_file(bold_path: str | os.PathLike) -> Path:
    """The ``*_desc-confounds_timeseries.tsv`` beside an fMRIPrep BOLD run (same entities).

    Entities that fMRIPrep does not repeat in the confounds name (space, res, cohort) are
    dropped; the older ``_desc-confounds_regressors.tsv`` name is accepted too.
    """
    p = Path(bold_path)
    stem = _BOLD_RE.sub("", p.name)
    base = re.sub(r"_(space|res|den|cohort)-[A-Za-z0-9]+", "", stem)
    for suffix in ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv"):
        cand = p.with_name(base + suffix)
        if cand.exists():
            return cand
    raise DataError(f"{p}: no confounds file {base}_desc-confounds_timeseries.tsv beside it (needed by --confounds)")


def load_confounds(
    bold_path: str | os.PathLike, strategy: str, n_volumes: int, *,
    fd_threshold: float | None = None, std_dvars_threshold: float | None = None,
) -> tuple[np.ndarray | None, list[str], np.ndarray, dict[str, Any]]:
    """Apply an fMRIPrep confound strategy to one run.

    Returns (regressors (time, R) or None, regressor names, mask (time,) bool — False for frames
    nilearn leaves out of its sample mask, info for provenance). ``strategy`` "none" reads
    nothing: no regressors, every frame valid. Thresholds (mm, standardised DVARS) only apply to
    ``scrubbing``; None keeps nilearn's defaults.
    """
    p = Path(bold_path)
    if strategy not in CONFOUND_STRATEGIES:
        raise DataError(f"--confounds: unknown strategy '{strategy}' (choose {', '.join(CONFOUND_STRATEGIES)})")
    if strategy == "none":
        return None, [], np.ones(n_volumes, dtype=bool), {"confounds": "none", "n_masked_frames": 0}
    if not is_preproc_bold(p):
        raise DataError(f"{p}: --confounds {strategy} needs an fMRIPrep *_desc-preproc_bold.nii.gz file")
    conf_path = confounds_file(p)
    n_rows = _count_rows(conf_path)
    if n_rows != n_volumes:
        raise DataError(f"{conf_path}: confounds have {n_rows} rows but {p.name} has {n_volumes} volumes")

    from nilearn.interfaces.fmriprep import load_confounds_strategy

    kwargs: dict[str, Any] = {}
    if strategy == "scrubbing":
        if fd_threshold is not None:
            kwargs["fd_threshold"] = float(fd_threshold)
        if std_dvars_threshold is not None:
            kwargs["std_dvars_threshold"] = float(std_dvars_threshold)
    # nilearn finds the confounds by the image name; point it at a name beside conf_path.
    img_name = str(p.parent / p.name) if p.name.endswith(".nii.gz") else str(p) + ".gz"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conf, sample_mask = load_confounds_strategy(img_name, denoise_strategy=strategy, **kwargs)
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"{conf_path}: cannot apply confound strategy '{strategy}': {msg}") from None
    mask = np.ones(n_volumes, dtype=bool)
    if sample_mask is not None:
        mask[:] = False
        mask[np.asarray(sample_mask, dtype=int)] = True
    if not mask.any():
        hint = " (raise --fd-threshold / --std-dvars-threshold)" if strategy == "scrubbing" else ""
        raise DataError(f"{conf_path}: confound strategy '{strategy}' censors all {n_volumes} frames{hint}")
    arr = conf.to_numpy(dtype=np.float64) if conf is not None and conf.size else None
    names = [str(c) for c in conf.columns] if arr is not None else []
    if arr is not None and not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0)  # fMRIPrep derivatives start with NaN; nilearn fills row 0
    info = {
        "confounds": strategy,
        "confounds_file": str(conf_path),
        "confound_columns": names,
        "n_masked_frames": int((~mask).sum()),
        "masked_frames": [int(i) for i in np.flatnonzero(~mask)],
        "confounds_warnings": [" ".join(str(w.message).split()) for w in caught
                               if issubclass(w.category, UserWarning)][:5],
    }
    if kwargs:
        info["scrubbing_thresholds"] = kwargs
    return arr, names, mask, info


def _count_rows(path: Path) -> int:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot read confounds ({e.__class__.__name__})") from None
    return max(len(lines) - 1, 0)


# ----------------------------------------------------------------------------- events of task runs
def _source_roots(deriv_root: Path) -> list[Path]:
    """Raw datasets a derivatives tree names in its dataset_description.json ``SourceDatasets``
    (``URL`` of ``bids::PATH``, ``file://PATH`` or a relative path), then the folders above it
    (fMRIPrep's usual ``RAW/derivatives/fmriprep``)."""
    from dsrecon.io.files import read_json

    out: list[Path] = []
    desc = deriv_root / "dataset_description.json"
    if desc.exists():
        dd = read_json(desc)  # a damaged description is named, not skipped: it says where the raw data are
        for src in (dd.get("SourceDatasets") or []) if isinstance(dd, dict) else []:
            url = src.get("URL", "") if isinstance(src, dict) else str(src)
            for pre in ("bids::", "file://"):
                if url.startswith(pre):
                    url = url[len(pre):]
            if url and "://" not in url:
                q = Path(url)
                out.append(q if q.is_absolute() else (deriv_root / q).resolve())
    out.extend(p for p in (deriv_root.parent, deriv_root.parent.parent) if p != deriv_root)
    return out


def _run_root(source: Path) -> Path | None:
    """The dataset folder holding ``source`` (the parent of its ``sub-*`` folder)."""
    for par in source.parents:
        if par.name.startswith("sub-"):
            return par.parent
    return None


def find_events(rec, bids_dir: str | os.PathLike | None = None) -> Path | None:
    """The ``*_events.tsv`` of a BIDS run (Recording ``rec`` from a ``sub-*`` file): searched in
    ``bids_dir``, else the raw datasets of the derivatives' SourceDatasets, matching subject,
    session, task and run (an events file without a run entity serves every run; a top-level
    ``task-<t>_events.tsv`` is the BIDS inheritance fallback). None when there is none."""
    from dsrecon.io.results import bids_entities

    src = Path(rec.provenance.get("source") or rec.source)
    ent = bids_entities(src)
    if "sub" not in ent or "task" not in ent:
        return None
    root = _run_root(src)
    roots = [Path(bids_dir)] if bids_dir is not None else ([] if root is None else _source_roots(root))
    for r in roots:
        subdir = r / f"sub-{ent['sub']}"
        if not subdir.is_dir():
            continue
        best = None
        for f in sorted(subdir.rglob("*_events.tsv")):
            fe = bids_entities(f)
            if fe.get("sub") != ent["sub"] or fe.get("task") != ent["task"] or fe.get("ses") != ent.get("ses"):
                continue
            if "run" in fe and fe["run"] != ent.get("run"):
                continue
            if best is None or ("run" in fe and "run" not in bids_entities(best)):
                best = f
        if best is not None:
            return best
        top = r / f"task-{ent['task']}_events.tsv"
        if top.exists():
            return top
    return None
