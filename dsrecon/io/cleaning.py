"""Cleaning of region signals, the same for every input: ``--detrend``, ``--standardize``,
``--low-pass``, ``--high-pass`` (nilearn's names and meanings, ``t_r`` the recording's TR) and
``--confounds FILE`` (a table of confound regressors, one row per frame, regressed out).

NIfTI images are cleaned by nilearn's maskers as their voxels are reduced (dsrecon.io.nifti);
tables and suite2p traces by `clean_recording`, with ``nilearn.signal.clean`` on the
(time, regions) array. Either way the recording's provenance records what was applied under the
same keys: ``cleaning`` (detrend, standardize, low_pass, high_pass) and, for a confounds table,
``confounds`` = "file", ``confounds_file``, ``confound_columns``.

A confounds table (``--confounds conf.tsv``): a header row naming the columns (an fMRIPrep
``*_desc-confounds_timeseries.tsv`` is one), tab- or comma-separated, one row per frame of the
recording. Every column is regressed out. ``n/a`` in the first row (fMRIPrep's derivative and
framewise-displacement columns) takes the second row's value, as nilearn's fMRIPrep loader does;
a missing value anywhere else is an error naming the file, the line and the column.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError
from dsrecon.io.bids import CONFOUND_STRATEGIES  # --confounds values that name a strategy, not a file
from dsrecon.io.recording import Recording

_MISSING = ("n/a", "na", "nan", "")


def cleaning_of(spec) -> dict[str, Any]:
    """The cleaning options of an InputSpec, as provenance records them."""
    return {"detrend": bool(spec.detrend), "standardize": bool(spec.standardize),
            "low_pass": spec.low_pass, "high_pass": spec.high_pass}


def cleans(cleaning: dict[str, Any]) -> bool:
    """Whether ``cleaning`` changes the signals at all."""
    return bool(cleaning.get("detrend") or cleaning.get("standardize") or cleaning.get("low_pass") or cleaning.get("high_pass"))


def describe(cleaning: dict[str, Any], confounds: str | None = None) -> str:
    """"detrend, high-pass 0.01 Hz" (for notes)."""
    parts = [k for k in ("detrend", "standardize") if cleaning.get(k)]
    parts += [f"{k.replace('_', '-')} {cleaning[k]:g} Hz" for k in ("high_pass", "low_pass") if cleaning.get(k)]
    if confounds:
        parts.append(f"confounds from {confounds}")
    return ", ".join(parts) or "nothing"


def clean_kwargs(cleaning: dict[str, Any], t_r: float) -> dict[str, Any]:
    """nilearn's keyword arguments (maskers and ``signal.clean``) for ``cleaning``."""
    return {
        "detrend": bool(cleaning.get("detrend", False)),
        "standardize": "zscore_sample" if cleaning.get("standardize") else None,
        "low_pass": cleaning.get("low_pass"),
        "high_pass": cleaning.get("high_pass"),
        "t_r": t_r,
    }


def check_filters(path: str | Path, cleaning: dict[str, Any], t_r: float) -> None:
    """The cut-offs lie inside the Nyquist band of TR ``t_r`` and high-pass is below low-pass."""
    nyq = 0.5 / t_r
    lp, hp = cleaning.get("low_pass"), cleaning.get("high_pass")
    if lp is not None and not 0 < lp < nyq:
        raise DataError(f"{path}: --low-pass {lp:g} Hz must lie in (0, {nyq:g}) Hz, the Nyquist band at TR {t_r:g} s")
    if hp is not None and not 0 < hp < nyq:
        raise DataError(f"{path}: --high-pass {hp:g} Hz must lie in (0, {nyq:g}) Hz at TR {t_r:g} s")
    if lp is not None and hp is not None and hp >= lp:
        raise DataError(f"{path}: --high-pass {hp:g} Hz must be below --low-pass {lp:g} Hz")


def confounds_file(value: str | None) -> Path | None:
    """The confounds table ``--confounds`` names, or None for a strategy name (or none)."""
    if value is None or str(value) in CONFOUND_STRATEGIES:
        return None
    return Path(value)


def confounds_problem(flag: str, value: Any) -> str | None:
    """Option check of ``--confounds``: a strategy name or an existing file."""
    v = str(value)
    if v in CONFOUND_STRATEGIES:
        return None
    if Path(v).exists():
        return None
    return (f"{flag}: unknown strategy '{v}', and no file of that name (choose {', '.join(CONFOUND_STRATEGIES)}, or give a "
            "confounds table: a header row, one row per frame)")


def read_confounds(path: str | Path, n_frames: int, data_source: str) -> tuple[np.ndarray, list[str]]:
    """A confounds table → ((n_frames, R) array, column names); DataError naming ``path`` otherwise."""
    from dsrecon.io.files import check_input_file
    from dsrecon.io.tables import check_column_names, read_table_text, unquote

    p = Path(path)
    check_input_file(p, "confounds table")
    if p.suffix.lower() == ".npy" or not any(p.name.lower().endswith(s) for s in (".tsv", ".csv", ".txt", ".tsv.gz", ".csv.gz", ".txt.gz")):
        raise DataError(f"{p}: --confounds takes a TSV/CSV table with a header row (e.g. fMRIPrep's *_desc-confounds_timeseries.tsv)")
    lines = read_table_text(p).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{p}: empty confounds table")
    delim = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    split = (lambda ln: ln.split(delim)) if delim else (lambda ln: ln.split())
    header = [unquote(c.strip()) for c in split(lines[0])]
    if all(_number(c) is not None for c in header):
        raise DataError(f"{p}: the confounds table has no header row; name its columns in a first row")
    check_column_names(p, header)
    rows = []
    for i, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            raise DataError(f"{p}: line {i} is blank; a confounds table holds one row per frame")
        cells = [unquote(c.strip()) for c in split(ln)]
        if len(cells) != len(header):
            raise DataError(f"{p}: ragged table: line {i} has {len(cells)} columns, the header {len(header)}")
        row = []
        for j, c in enumerate(cells):
            v = _number(c)
            if v is None:
                if c.lower() not in _MISSING:
                    raise DataError(f"{p}: non-numeric cell {c!r} at line {i}, column '{header[j]}'")
                v = np.nan
            row.append(v)
        rows.append(row)
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(header))
    if arr.shape[0] != n_frames:
        raise DataError(f"{p}: {arr.shape[0]} rows of confounds, {data_source} has {n_frames} frames; "
                        "a confounds table holds one row per frame")
    if arr.shape[0] >= 2:  # fMRIPrep: derivatives and framewise displacement have n/a in the first row
        first = ~np.isfinite(arr[0])
        arr[0, first] = arr[1, first]
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{p}: missing or non-finite value at line {r + 2}, column '{header[c]}' "
                        f"({int(bad.sum())} such cells; only the first row may be n/a)")
    if arr.shape[1] >= n_frames - 1:
        raise DataError(f"{p}: {arr.shape[1]} confound columns for {n_frames} frames; regressing them out would leave "
                        "nothing: keep the columns you need")
    return arr, header


def _number(c: str) -> float | None:
    try:
        return float(c)
    except ValueError:
        return None


def clean_signals(x: np.ndarray, cleaning: dict[str, Any], t_r: float, confounds: np.ndarray | None = None,
                  standardize: bool = True) -> np.ndarray:
    """``nilearn.signal.clean`` of a (time, columns) array; ``standardize=False`` leaves the z-scoring
    out (regressors are detrended and filtered like the data, never standardised)."""
    from nilearn.signal import clean

    kw = clean_kwargs(cleaning, t_r)
    if not standardize:
        kw["standardize"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's deprecation notes must not become lines on stderr
        out = clean(np.asarray(x, dtype=np.float64), confounds=confounds, **kw)
    return np.asarray(out, dtype=np.float64)


def clean_recording(rec: Recording, cleaning: dict[str, Any], confounds: str | Path | None = None) -> Recording:
    """``rec`` cleaned as ``cleaning`` says, confound columns from the table ``confounds`` regressed
    out, and its provenance recording both (`cleaning`, `confounds`, …). Nothing to do: ``rec``
    itself, with ``cleaning`` recorded."""
    prov = {**rec.provenance, "cleaning": dict(cleaning)}
    if not cleans(cleaning) and confounds is None:
        rec.provenance = prov
        return rec
    check_filters(rec.source, cleaning, rec.tr)
    conf = names = None
    if confounds is not None:
        conf, names = read_confounds(confounds, rec.n_frames, rec.source)
        prov.update(confounds="file", confounds_file=str(confounds), confound_columns=names, confounds_regressed=True)
    data = clean_signals(rec.data, cleaning, rec.tr, conf)
    if not np.isfinite(data).all():  # pragma: no cover - nilearn keeps finite data finite
        raise DataError(f"{rec.source}: cleaning ({describe(cleaning)}) gave non-finite values")
    regs = rec.regressors
    if regs is not None and cleans(cleaning):
        regs = clean_signals(regs, cleaning, rec.tr, standardize=False)
    return Recording(data=data, tr=rec.tr, names=list(rec.names), mask=rec.mask, regressors=regs,
                     regressor_names=list(rec.regressor_names), inputs=rec.inputs, input_names=list(rec.input_names),
                     provenance=prov, source=rec.source)
