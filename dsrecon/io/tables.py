"""Time-series tables: TSV/CSV/NPY readers and an atomic TSV writer.

Tables are (time, regions): a header row of region names, one row per frame. A BIDS-style JSON
sidecar (same stem, ``.json``) may carry ``RepetitionTime``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from dsrecon._util import atomic_path, write_json_atomic
from dsrecon.errors import DataError
from dsrecon.io.recording import Recording

TABLE_SUFFIXES = (".tsv", ".csv", ".txt", ".npy")


def sidecar_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    name = p.name
    for suf in (".tsv.gz", ".tsv", ".csv", ".txt", ".npy", ".nii.gz", ".nii"):
        if name.endswith(suf):
            return p.with_name(name[: -len(suf)] + ".json")
    return p.with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    sc = sidecar_path(path)
    if not sc.exists():
        return {}
    try:
        return json.loads(sc.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{sc}: not valid JSON ({e})") from None


def read_array(path: str | os.PathLike, *, allow_nan: bool = False, min_rows: int = 2) -> tuple[np.ndarray, list[str]]:
    """Read a numeric (time, columns) table; return (array, column names).

    Raises DataError (naming the file) for a missing or unreadable file, a ragged table, a
    non-numeric cell, NaN/Inf (unless allow_nan) or fewer than ``min_rows`` rows.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a table file")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:  # numpy raises several types for corrupt files
            raise DataError(f"{p}: not a readable .npy array ({e.__class__.__name__})") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"{p}: expected a 2-D (time, regions) array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{p}: array is not numeric (dtype {arr.dtype})")
        names = [f"region{i:03d}" for i in range(arr.shape[1])]
        arr = arr.astype(np.float64)
    else:
        arr, names = _read_delimited(p)
    if arr.shape[0] < min_rows:
        raise DataError(f"{p}: only {arr.shape[0]} row(s) of data; need at least {min_rows}")
    if not allow_nan:
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(arr[r, c]) else "Inf"
            raise DataError(f"{p}: {kind} value at row {r + 1}, column '{names[c]}' ({int(bad.sum())} non-finite cells)")
    return arr, names


def _read_delimited(p: Path) -> tuple[np.ndarray, list[str]]:
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text table (cannot decode as UTF-8)") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{p}: empty table")
    delim = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    rows = [ln.split(delim) if delim else ln.split() for ln in lines]
    rows = [[_unquote(c.strip()) for c in r] for r in rows]
    header: list[str] | None = None
    if not _is_numeric_row(rows[0]):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise DataError(f"{p}: header only, no data rows")
    ncol = len(header) if header is not None else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != ncol:
            line_no = i + (2 if header is not None else 1)
            raise DataError(f"{p}: ragged table: line {line_no} has {len(r)} columns, expected {ncol}")
    arr = np.empty((len(rows), ncol), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            try:
                arr[i, j] = float(c)
            except ValueError:
                line_no = i + (2 if header is not None else 1)
                raise DataError(f"{p}: non-numeric cell {c!r} at line {line_no}, column {j + 1}") from None
    names = header if header is not None else [f"region{i:03d}" for i in range(ncol)]
    return arr, names


def _unquote(cell: str) -> str:
    """Drop one pair of surrounding quotes ("WM" → WM), as spreadsheet/R CSV exports write them."""
    if len(cell) >= 2 and cell[0] == cell[-1] and cell[0] in "\"'":
        return cell[1:-1].strip()
    return cell


def _is_numeric_row(row: list[str]) -> bool:
    try:
        for c in row:
            float(c)
    except ValueError:
        return False
    return True


def read_table(path: str | os.PathLike, tr: float | None = None, *, allow_nan: bool = False) -> Recording:
    """Read a region time-series table as a Recording. TR: sidecar RepetitionTime, else ``tr``."""
    p = Path(path)
    arr, names = read_array(p, allow_nan=allow_nan)
    side = read_sidecar(p)
    side_tr = side.get("RepetitionTime")
    if side_tr is None and "SamplingFrequency" in side:
        side_tr = 1.0 / float(side["SamplingFrequency"])
    if tr is None:
        tr = side_tr
    if tr is None:
        raise DataError(f"{p}: no TR: no RepetitionTime in a JSON sidecar and no --tr given")
    tr = float(tr)
    if not tr > 0:
        raise DataError(f"{p}: TR must be positive, got {tr}")
    return Recording(data=arr, tr=tr, names=list(names), source=str(p), provenance={"source": str(p), "sidecar": side})


def format_table(arr: np.ndarray, names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(names)
    for row in np.asarray(arr):
        w.writerow([repr(float(v)) for v in row])
    return buf.getvalue()


def write_table(path: str | os.PathLike, arr: np.ndarray, names: list[str] | None = None, sidecar: dict | None = None) -> None:
    """Atomically write a (time, columns) TSV with a header, and its JSON sidecar if given."""
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    if names is None:
        names = [f"region{i:03d}" for i in range(arr.shape[1])]
    with atomic_path(path) as tmp:
        np.savetxt(tmp, arr, delimiter="\t", header="\t".join(names), comments="", fmt="%.9g")
    if sidecar is not None:
        write_json_atomic(sidecar_path(path), sidecar)
