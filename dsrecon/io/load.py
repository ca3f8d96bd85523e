"""One door for every input `dsrecon fit` accepts: files, directories, BIDS/fMRIPrep trees.

`load_inputs(paths, spec)` returns a list of Recordings (one per run); nothing is concatenated
across recordings. What each path becomes:

* ``*.nii`` / ``*.nii.gz`` (4D): region signals through ``spec.atlas`` (or ``spec.mask`` +
  ``spec.pca``), see :mod:`dsrecon.io.nifti`; fMRIPrep confounds with ``spec.confounds``, see
  :mod:`dsrecon.io.bids`.
* a directory with ``sub-*`` folders, or any directory when participant_label / task / session
  is given: fMRIPrep runs discovered with nilearn's BIDS helpers, one Recording per run.
* a suite2p folder (``plane*/`` with F.npy …, or a suite2p root with one plane): ΔF/F, see
  :mod:`dsrecon.io.calcium`.
* ``*.tsv`` / ``*.csv`` / ``*.txt`` (optionally ``.gz``) / ``*.npy`` tables, or a directory of them;
  what the table reader guessed (a dropped row index, no header) is one line on stderr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError
from dsrecon.io.bids import CONFOUND_STRATEGIES
from dsrecon.io.cleaning import clean_recording, cleaning_of, confounds_file, confounds_problem, read_confounds
from dsrecon.io.files import check_input_file
from dsrecon.io.recording import Recording
from dsrecon.io.tables import is_table_path, read_sidecar, read_table
from dsrecon.options import INPUT_PANEL, cutoff_hz, option, positive, positive_integer, tr_seconds

_log = logging.getLogger("dsrecon.io")

#: suite2p's neuropil coefficient, the default of --neuropil-factor
NEUROPIL_DEFAULT = 0.7


@dataclass
class InputSpec:
    """Everything the loaders need besides the paths (the input options of `dsrecon fit`).

    Each option applies to the inputs its help names; given with an input it does not apply to, it
    is refused with one line (`load_inputs`), never accepted and ignored."""

    tr: float | None = option(None, help="Seconds per frame (when no sidecar/header gives it; 0.001 to 100 s).", check=tr_seconds,
                              panel=INPUT_PANEL)
    # where ``tr`` came from, for the error when it contradicts a table's sidecar ("the model's TR")
    tr_label: str = option("--tr", cli=False)
    # NIfTI + atlas
    atlas: str | None = option(None, help="NIfTI inputs: integer label image (NIfTI) for region signals.", panel=INPUT_PANEL)
    atlas_labels: str | None = option(None, help="NIfTI inputs, with --atlas: TSV naming the atlas labels (index, name).",
                                      panel=INPUT_PANEL)
    mask: str | None = option(None, help="NIfTI inputs: brain mask for voxel-level signals (with --pca; with --atlas it "
                              "restricts the labels).", panel=INPUT_PANEL)
    pca: int | None = option(None, help="NIfTI inputs, with --mask: number of PCA components of the masked voxel signals.",
                             check=positive_integer, panel=INPUT_PANEL)
    detrend: bool = option(False, help="Detrend every signal (nilearn; NIfTI, tables and suite2p alike; recorded in config.json).",
                           panel=INPUT_PANEL)
    standardize: bool = option(False, help="Z-score every signal (nilearn; every input).", panel=INPUT_PANEL)
    low_pass: float | None = option(None, help="Low-pass cutoff in Hz (nilearn's Butterworth filter, t_r the TR; every input).",
                                    check=cutoff_hz, panel=INPUT_PANEL)
    high_pass: float | None = option(None, help="High-pass cutoff in Hz (nilearn's Butterworth filter; every input).",
                                     check=cutoff_hz, panel=INPUT_PANEL)
    # fMRIPrep / BIDS
    confounds: str = option("none", help="simple|scrubbing|compcor: an fMRIPrep strategy (fMRIPrep *_desc-preproc_bold runs "
                            "only; regressors + censored frames); or a confounds TABLE (header row, one row per frame) whose "
                            "columns are regressed out of one recording (any input); or none.", check=confounds_problem,
                            panel=INPUT_PANEL)
    participant_label: list[str] = option(factory=list, help="BIDS participant(s) to fit (repeatable; a BIDS/fMRIPrep directory).",
                                          panel=INPUT_PANEL)
    task: str | None = option(None, help="BIDS task (a BIDS/fMRIPrep directory).", panel=INPUT_PANEL)
    session: list[str] = option(factory=list, help="BIDS session(s) (repeatable; a BIDS/fMRIPrep directory).", panel=INPUT_PANEL)
    space: str | None = option(None, help="fMRIPrep output space (space-<label>) when runs exist in several.", panel=INPUT_PANEL)
    fd_threshold: float | None = option(None, help="With --confounds scrubbing: framewise-displacement threshold in mm (nilearn "
                                        "default 0.5).", check=positive, panel=INPUT_PANEL)
    std_dvars_threshold: float | None = option(None, help="With --confounds scrubbing: standardised DVARS threshold (nilearn "
                                               "default 1.5).", check=positive, panel=INPUT_PANEL)
    # calcium
    neuropil_factor: float = option(NEUROPIL_DEFAULT, help="suite2p inputs: F − factor·Fneu.", panel=INPUT_PANEL)
    # tables: columns to treat as nuisance regressors rather than regions
    regressor_columns: list[str] = option(factory=list, flag="--regressor-column",
                                          help="Tables: a column to use as a nuisance regressor (repeatable).", panel=INPUT_PANEL)
    drop_columns: list[str] = option(factory=list, flag="--drop-column", help="Tables: a column to ignore (repeatable).",
                                     panel=INPUT_PANEL)
    # external inputs that drive the latent dynamics (task fMRI, dsrecon.io.events)
    events: list[str] = option(factory=list, help="BIDS events file (onset, duration, trial_type, modulation): one input channel per "
                               "condition; repeat once per recording, in order (BIDS runs: found in the raw dataset).", panel=INPUT_PANEL)
    input_tables: list[str] = option(factory=list, flag="--inputs", help="Input time series (T × K table with named columns, one row "
                                     "per frame); repeat once per recording, in order.", panel=INPUT_PANEL)
    bids_dir: str | None = option(None, help="BIDS runs: the raw BIDS dataset holding the runs' *_events.tsv (default: the "
                                  "derivatives' SourceDatasets).", panel=INPUT_PANEL)
    # no warning lines on stderr (--quiet)
    quiet: bool = option(False, cli=False)


def load_inputs(paths: list[str], spec: InputSpec | None = None) -> list[Recording]:
    """Load every path into Recordings. Raises DataError naming the file on bad input, and for an
    option given with an input it does not apply to (`InputSpec`'s help says which applies to what).

    Several recordings must have the same regions: columns named alike in another order are
    reordered to the first recording's order (a note says so); another set of names is an error
    naming the differences."""
    spec = spec or InputSpec()
    _check_option_combinations(spec)
    recs: list[Recording] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"{p}: file not found")
        recs.extend(_load_path(p, spec))
    if not recs:
        raise DataError("no input recordings")
    conf = confounds_file(spec.confounds)
    if conf is not None and len(recs) > 1:
        raise DataError(f"{conf}: --confounds takes one confounds table, for one recording; the inputs hold {len(recs)} "
                        f"({_short([r.source for r in recs], 3)}): fit them one by one")
    recs = [recs[0]] + [_same_regions(r, recs[0], spec) for r in recs[1:]]
    return _with_inputs(recs, spec)


def _check_option_combinations(spec: InputSpec) -> None:
    """Options that only mean something together with another one."""
    for flag, value in (("--fd-threshold", spec.fd_threshold), ("--std-dvars-threshold", spec.std_dvars_threshold)):
        if value is not None and spec.confounds != "scrubbing":
            raise DataError(f"{flag} sets a threshold of --confounds scrubbing; it does nothing with --confounds {spec.confounds}: "
                            "drop it, or use --confounds scrubbing")


def _same_regions(rec: Recording, first: Recording, spec: InputSpec) -> Recording:
    """``rec`` with its columns in ``first``'s order, matched by name; or DataError naming both files
    and the names that differ. Columns without names (.npy, no header) only match columns without
    names, by position: a named file and an unnamed one are refused rather than paired by guess."""
    if rec.names == first.names:
        return rec
    unnamed = [r for r in (first, rec) if r.provenance.get("columns") == "position"]
    if unnamed:
        named = first if unnamed[0] is rec else rec
        why = (f"{rec.n_regions} columns, {first.n_regions} there" if rec.n_regions != first.n_regions else
               f"{unnamed[0].source} has no column names, {named.source} has (name them: a header row, or a sidecar's Columns)")
        raise DataError(f"{rec.source}: regions differ from {first.source}: {why}")
    missing = [n for n in first.names if n not in rec.names]
    extra = [n for n in rec.names if n not in first.names]
    if missing or extra:
        parts = ([f"missing {_short(missing, 6)} (in {first.source})"] if missing else []) + \
                ([f"extra {_short(extra, 6)} (not in {first.source})"] if extra else [])
        raise DataError(f"{rec.source}: regions differ from {first.source}: {'; '.join(parts)}; every recording of one "
                        "model needs the same regions")
    _warn(f"{rec.source}: columns reordered by name to the order of {first.source} ({_short(first.names, 6)})", spec)
    return _reordered(rec, [rec.names.index(n) for n in first.names], first.names)


def _reordered(rec: Recording, idx: list[int], names: list[str]) -> Recording:
    return Recording(data=rec.data[:, idx], tr=rec.tr, names=list(names), mask=rec.mask, regressors=rec.regressors,
                     regressor_names=list(rec.regressor_names), inputs=rec.inputs, input_names=list(rec.input_names),
                     provenance=dict(rec.provenance), source=rec.source)


def refuse_unused_queries(paths: list[str], spec: InputSpec) -> None:
    """The BIDS query options (--participant-label, --task, --session, --space) select runs in a
    directory; given with files only, they would select nothing: refused, naming the first file.
    (Cohorts and group fits select subjects with them before their files are loaded; they do not
    call this.)"""
    given = [flag for flag, v in (("--participant-label", spec.participant_label), ("--task", spec.task),
                                  ("--session", spec.session), ("--space", spec.space)) if v]
    if given and paths and not any(Path(p).is_dir() for p in paths):
        raise DataError(f"{paths[0]}: {', '.join(given)} select(s) runs in a BIDS/fMRIPrep directory; the inputs are files: "
                        "drop the option, or give the directory")


def refuse_shared_confounds(n_subjects: int, spec: InputSpec) -> None:
    """A confounds table (``--confounds FILE``) holds one recording's frames: given to a cohort or a
    group fit of several subjects it would be regressed out of every subject's data. Refused."""
    conf = confounds_file(spec.confounds)
    if conf is not None and n_subjects > 1:
        raise DataError(f"{conf}: --confounds takes the confounds table of one recording; these inputs hold {n_subjects} "
                        "subjects: regress each subject's confounds out first, or fit the subjects one by one")


def _not_for(p: Path, kind: str, spec: InputSpec) -> None:
    """Refuse the options that do not apply to an input of ``kind`` (table, nifti, suite2p)."""
    what = {"table": "a table (its columns are the regions)", "nifti": "a NIfTI image",
            "suite2p": "a suite2p folder (its cells are the regions)"}[kind]
    opts: list[tuple[str, Any, str]] = []
    if kind != "nifti":
        opts += [("--atlas", spec.atlas, "NIfTI images"), ("--atlas-labels", spec.atlas_labels, "NIfTI images with --atlas"),
                 ("--mask", spec.mask, "NIfTI images"), ("--pca", spec.pca, "NIfTI images with --mask")]
        if spec.confounds in CONFOUND_STRATEGIES and spec.confounds != "none":
            raise DataError(f"{p}: --confounds {spec.confounds} takes its regressors from the fMRIPrep confounds file of a "
                            f"*_desc-preproc_bold.nii.gz run; {p.name} is {what}, with no such file: give a confounds table "
                            "(--confounds conf.tsv, one row per frame) or leave --confounds out")
    if kind != "table":
        opts += [("--regressor-column", spec.regressor_columns, "tables"), ("--drop-column", spec.drop_columns, "tables")]
    if kind != "suite2p":
        opts += [("--neuropil-factor", None if spec.neuropil_factor == NEUROPIL_DEFAULT else spec.neuropil_factor, "suite2p folders")]
    for flag, value, applies in opts:
        if value not in (None, [], ()):
            raise DataError(f"{p}: {flag} applies to {applies}; {p.name} is {what}: drop {flag}")
    if kind == "nifti" and spec.atlas_labels is not None and spec.atlas is None:
        raise DataError(f"{spec.atlas_labels}: --atlas-labels names the labels of --atlas; with --mask --pca there are none: drop it")


def _with_inputs(recs: list[Recording], spec: InputSpec) -> list[Recording]:
    """Attach --events / --inputs (one file per recording, in order) or, for BIDS runs, each run's
    events file found in the raw dataset; every recording then has the same input channels (the
    union of the conditions, sorted)."""
    from dsrecon.io.events import attach_inputs, read_events

    ev, tab = list(spec.events), list(spec.input_tables)
    if ev and tab:
        raise DataError(f"{ev[0]}: give --events or --inputs, not both")
    given = ev or tab
    if spec.bids_dir is not None and (given or not any(r.provenance.get("bids_events") for r in recs)):
        why = f"{(ev or tab)[0]} is given with --events/--inputs" if given else f"{recs[0].source} is not a run of a BIDS/fMRIPrep directory"
        raise DataError(f"{spec.bids_dir}: --bids-dir is where the events files of BIDS runs are looked up; {why}: drop --bids-dir")
    if given and len(given) != len(recs):
        flag = "--events" if ev else "--inputs"
        raise DataError(f"{given[0]}: {len(given)} {flag} file(s) for {len(recs)} recording(s); give one per recording, in order")
    if not given and spec.bids_dir is None and not any(r.provenance.get("bids_events") for r in recs):
        return recs
    if not given:  # BIDS runs: the events files discovery found
        from dsrecon.io.bids import find_events

        ev = [find_events(r, spec.bids_dir) for r in recs]
        if all(e is None for e in ev):
            return recs
        missing = [r.source for r, e in zip(recs, ev) if e is None]
        if missing:
            raise DataError(f"{missing[0]}: no *_events.tsv for this run in the raw BIDS dataset (other runs have one)")
    names = None
    if ev:
        names = sorted({c for e in ev for _, _, c, _ in read_events(e)})
    warn = lambda m: _warn(m, spec)  # noqa: E731
    out = [attach_inputs(r, events=e, names=names, warn=warn) for r, e in zip(recs, ev)] if ev else \
          [attach_inputs(r, table=t, warn=warn) for r, t in zip(recs, tab)]
    for r in out[1:]:
        if r.input_names != out[0].input_names:
            raise DataError(f"{r.source}: input columns differ from {out[0].source} ({', '.join(r.input_names)} vs {', '.join(out[0].input_names)})")
    return out


def _wants_bids(p: Path, spec: InputSpec) -> bool:
    from dsrecon.io.bids import looks_like_bids_dir

    return bool(spec.participant_label or spec.task or spec.session) or looks_like_bids_dir(p)


def _load_path(p: Path, spec: InputSpec) -> list[Recording]:
    from dsrecon.io.bids import discover_runs
    from dsrecon.io.calcium import load_suite2p, looks_like_suite2p
    from dsrecon.io.nifti import is_nifti_path

    if p.is_dir():
        if looks_like_suite2p(p):
            _not_for(p, "suite2p", spec)
            rec = load_suite2p(p, tr=spec.tr, neuropil_factor=spec.neuropil_factor)
            rec = clean_recording(rec, cleaning_of(spec), confounds_file(spec.confounds))
            if rec.provenance.get("dropped_cells"):
                _warn(f"warning: {p}: dropped {len(rec.provenance['dropped_cells'])} cell(s) whose baseline "
                      f"F − {spec.neuropil_factor:g}·Fneu is not positive: {_short(rec.provenance['dropped_cells'])}", spec)
            return [rec]
        if _wants_bids(p, spec):
            runs = discover_runs(p, spec.participant_label, spec.task, spec.session, spec.space)
            recs = [load_nifti(r, spec) for r in runs]
            for r in recs:  # BIDS runs: their events files are looked up in the raw dataset
                r.provenance["bids_events"] = True
            return recs
        tables = sorted(q for q in p.iterdir() if q.is_file() and is_table_path(q) and not q.name.endswith("_latent.tsv"))
        if not tables:
            raise DataError(f"{p}: directory holds no TSV/CSV/NPY tables, no sub-* runs and no suite2p output")
        return [_load_table(q, spec) for q in tables]
    if is_nifti_path(p):
        return [load_nifti(p, spec)]
    if is_table_path(p):
        return [_load_table(p, spec)]
    check_input_file(p, "data file")  # a named pipe or a device: refused at once, never opened
    raise DataError(f"{p}: unsupported input type (expected a NIfTI image, a TSV/CSV/NPY table, "
                    "a suite2p folder or a directory of them)")


def _warn(msg: str, spec: InputSpec) -> None:
    """One warning line through the ``dsrecon`` logger (the CLI prints it on stderr; a library user
    sees it through Python's logging, or silences it with the logger's level)."""
    if not spec.quiet:
        _log.warning(msg)


def _short(items: list, n: int = 8) -> str:
    head = ", ".join(str(i) for i in items[:n])
    return head + (f", … ({len(items)} in all)" if len(items) > n else "")


def load_nifti(path: str | Path, spec: InputSpec | None = None) -> Recording:
    """A 4D NIfTI run → Recording (time, regions) through the atlas or mask+PCA in ``spec``.

    With ``spec.confounds`` other than "none" the run must be an fMRIPrep
    ``*_desc-preproc_bold.nii.gz``; its confounds become ``Recording.regressors`` (cleaned like
    the data: same detrend / filters) and frames nilearn censors become ``mask == False``.
    """
    from dsrecon.io.bids import load_confounds
    from dsrecon.io.nifti import (
        extract_atlas_signals, extract_pca_signals, load_image, read_atlas_labels, resolve_tr,
    )
    from dsrecon.io.results import bids_entities

    spec = spec or InputSpec()
    p = Path(path)
    _not_for(p, "nifti", spec)
    if spec.atlas is None and spec.mask is None:
        raise DataError(f"{p}: a NIfTI image needs --atlas LABELS.nii.gz (or --mask MASK.nii.gz --pca K)")
    if spec.atlas is not None and spec.pca is not None:
        raise DataError("--pca works with --mask (voxel-level PCA), not with --atlas")
    if spec.atlas is None and spec.pca is None:
        raise DataError(f"{spec.mask}: --mask needs --pca K (voxel signals are reduced to K components)")
    img = load_image(p, ndim=4, what="image")
    n_vol = int(img.shape[3])
    tr, tr_source = resolve_tr(p, img, read_sidecar(p), spec.tr)
    conf_table = confounds_file(spec.confounds)
    conf_arr = None
    if conf_table is not None:  # a confounds table: regressed out by the masker, like nilearn's confounds=
        conf_arr, conf_cols = read_confounds(conf_table, n_vol, str(p))
        regs, reg_names, mask = None, [], np.ones(n_vol, dtype=bool)
        conf_info = {"confounds": "file", "confounds_file": str(conf_table), "confound_columns": conf_cols,
                     "confounds_regressed": True, "n_masked_frames": 0}
    else:
        regs, reg_names, mask, conf_info = load_confounds(
            p, spec.confounds, n_vol, fd_threshold=spec.fd_threshold, std_dvars_threshold=spec.std_dvars_threshold)
    cleaning = cleaning_of(spec)
    prov: dict[str, Any] = {
        "modality": "bold", "source": str(p), "tr": tr, "tr_source": tr_source, "n_volumes": n_vol,
        "cleaning": cleaning, "entities": bids_entities(p), **conf_info,
    }
    if spec.atlas is not None:
        label_names = read_atlas_labels(spec.atlas_labels) if spec.atlas_labels else None
        data, names, info = extract_atlas_signals(img, p, spec.atlas, tr, cleaning, label_names, spec.mask, confounds=conf_arr)
        prov.update(atlas=str(spec.atlas), atlas_labels=spec.atlas_labels, mask=spec.mask,
                    labels=info["labels"], empty_regions=info["empty_regions"])
        if info["empty_regions"]:
            _warn(f"warning: {spec.atlas}: {len(info['empty_regions'])} region(s) have no voxel on the grid of "
                  f"{p.name} and were dropped: {_short(info['empty_regions'])}", spec)
    else:
        data, names, info = extract_pca_signals(img, p, spec.mask, spec.pca, tr, cleaning, confounds=conf_arr)
        prov.update(mask=str(spec.mask), pca=int(spec.pca), **info)
    if regs is not None and (spec.detrend or spec.low_pass or spec.high_pass):
        from nilearn.signal import clean

        regs = clean(regs, detrend=spec.detrend, standardize=None, low_pass=spec.low_pass,
                     high_pass=spec.high_pass, t_r=tr)
    if conf_info.get("n_masked_frames"):
        _warn(f"{p.name}: {conf_info['n_masked_frames']} of {n_vol} frames masked by --confounds {spec.confounds} "
              "(kept on the time grid, left out of the loss)", spec)
    return Recording(data=data, tr=tr, names=names, mask=mask, regressors=regs, regressor_names=reg_names,
                     provenance=prov, source=str(p))


def _load_table(p: Path, spec: InputSpec) -> Recording:
    """A table (`read_table`) with --drop-column / --regressor-column applied, then cleaned as the
    cleaning options say (`dsrecon.io.cleaning.clean_recording`, recorded in its provenance)."""
    _not_for(p, "table", spec)
    rec = read_table(p, tr=spec.tr, tr_label=spec.tr_label)
    for note in rec.provenance.get("notes", []):
        _warn(note, spec)
    drop = set(spec.drop_columns)
    regs = [c for c in spec.regressor_columns if c in rec.names]
    missing = [c for c in list(spec.regressor_columns) + list(spec.drop_columns) if c not in rec.names]
    if missing:
        raise DataError(f"{p}: no column(s) named {', '.join(missing)}")
    if drop or regs:
        keep = [i for i, n in enumerate(rec.names) if n not in drop and n not in regs]
        if not keep:
            raise DataError(f"{p}: --drop-column / --regressor-column leave no region column (the table has "
                            f"{_short(rec.names, 6)}); keep at least one column as a region")
        reg_idx = [rec.names.index(c) for c in regs]
        rec = Recording(
            data=rec.data[:, keep],
            tr=rec.tr,
            names=[rec.names[i] for i in keep],
            regressors=rec.data[:, reg_idx] if reg_idx else None,
            regressor_names=regs,
            provenance={**rec.provenance, "dropped_columns": sorted(drop), "regressor_columns": regs},
            source=rec.source,
        )
    return clean_recording(rec, cleaning_of(spec), confounds_file(spec.confounds))
