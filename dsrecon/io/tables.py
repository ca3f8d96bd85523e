"""Time-series tables: TSV/CSV/NPY readers and an atomic TSV writer.

Tables are (time, regions): a header row of region names, one row per frame. A BIDS-style JSON
sidecar (same stem, ``.json``) may carry ``RepetitionTime`` (or ``SamplingFrequency``) and, for a
table without a header (BIDS physio), ``Columns``. ``.tsv.gz`` / ``.csv.gz`` / ``.txt.gz`` are read
through gzip.

How a table is read (docs/input.md, "Tables"):

* the first row is the header unless every cell of it is a number; a numeric first row is data,
  the columns are then named by position (``region000`` …) and a note says so;
* an unnamed first column (empty first header cell, pandas ``to_csv``; or a header one cell short,
  R ``write.table``) that counts 0, 1, 2, … (or 1, 2, 3, …) is a row index: dropped, with a note;
* an empty or duplicated column name is an error naming it; a semicolon-delimited file is an error
  that says so.

Notes are returned (``notes=`` list, ``Recording.provenance["notes"]``), never printed here.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from dsrecon._util import atomic_path, write_json_atomic
from dsrecon.errors import DataError
from dsrecon.io.files import check_input_file, read_json
from dsrecon.io.recording import Recording
from dsrecon.options import tr_problem

TABLE_SUFFIXES = (".tsv.gz", ".csv.gz", ".txt.gz", ".tsv", ".csv", ".txt", ".npy")

#: Relative tolerance when a given TR (``--tr``, the model's) is compared with a table's sidecar.
TR_RTOL = 1e-6

#: First header cells that name a row index (pandas writes "" and, after a round trip, "Unnamed: 0").
_INDEX_HEADERS = ("", "Unnamed: 0")

_GZIP_MAGIC = b"\x1f\x8b"


def is_table_path(path: str | os.PathLike) -> bool:
    """True for the file names read as tables: ``.tsv``/``.csv``/``.txt`` (optionally ``.gz``) and ``.npy``."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in TABLE_SUFFIXES)


def sidecar_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    name = p.name
    for suf in (".tsv.gz", ".csv.gz", ".txt.gz", ".tsv", ".csv", ".txt", ".npy", ".nii.gz", ".nii"):
        if name.endswith(suf):
            return p.with_name(name[: -len(suf)] + ".json")
    return p.with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    sc = sidecar_path(path)
    if not os.path.lexists(sc):
        return {}
    side = read_json(sc)  # a regular file, valid JSON, no key given twice
    if not isinstance(side, dict):
        raise DataError(f"{sc}: a JSON sidecar must hold an object ({{\"RepetitionTime\": …}}), got a {type(side).__name__}")
    return side


def read_array(path: str | os.PathLike, *, allow_nan: bool = False, min_rows: int = 2,
               notes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a numeric (time, columns) table; return (array, column names).

    Raises DataError (naming the file) for a missing or unreadable file, a ragged table, a
    non-numeric cell, an empty or duplicated column name, a semicolon-delimited file, NaN/Inf
    (unless allow_nan) or fewer than ``min_rows`` rows. What was guessed (a dropped row index, a
    numeric first row read as data) is appended to ``notes`` as one line each.
    """
    arr, names, _ = _read(Path(path), allow_nan=allow_nan, min_rows=min_rows, notes=notes)
    return arr, names


def read_named_array(path: str | os.PathLike, *, notes: list[str] | None = None) -> tuple[np.ndarray, list[str], bool]:
    """`read_array`, plus whether the columns have names of their own (a header row, or for a table
    without one its sidecar's ``Columns``): (array, names, named)."""
    p = Path(path)
    arr, names, named = _read(p, allow_nan=False, min_rows=2, notes=notes)
    if not named:
        cols = read_sidecar(p).get("Columns")
        if isinstance(cols, list) and len(cols) == arr.shape[1] and all(isinstance(c, str) and c for c in cols):
            check_column_names(sidecar_path(p), list(cols))
            names, named = list(cols), True
    return arr, names, named


def _read(p: Path, *, allow_nan: bool, min_rows: int, notes: list[str] | None) -> tuple[np.ndarray, list[str], bool]:
    """(array, names, has_header)."""
    notes = [] if notes is None else notes
    check_input_file(p, "table file")  # before any open: a named pipe must not block the reader
    if p.suffix.lower() == ".npy":
        shape, dtype = npy_header(p)
        check_npy(p, shape, dtype)
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:  # numpy raises several types for corrupt files
            raise DataError(f"{p}: not a readable .npy array ({e.__class__.__name__})") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        names = _positional_names(arr.shape[1])
        arr = arr.astype(np.float64)
        has_header = False
    else:
        arr, names, has_header = _read_delimited(p, notes)
    if arr.shape[0] < min_rows:
        raise DataError(f"{p}: only {arr.shape[0]} row(s) of data; need at least {min_rows}")
    if not allow_nan:
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(arr[r, c]) else "Inf"
            raise DataError(f"{p}: {kind} value at row {r + 1}, column '{names[c]}' ({int(bad.sum())} non-finite cells)")
    return arr, names, has_header


def npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy file's header, without reading its data."""
    from numpy.lib import format as npf

    try:
        with open(p, "rb") as f:
            version = npf.read_magic(f)
            read = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
            shape, _, dtype = read(f)
    except Exception as e:  # numpy raises ValueError, OSError, SyntaxError … for a damaged header
        raise DataError(f"{p}: not a readable .npy array ({e.__class__.__name__})") from None
    return tuple(int(n) for n in shape), np.dtype(dtype)


#: what a .npy array of a refused dtype kind holds, and what to do
_DTYPE_KINDS = {
    "c": ("complex numbers", "dsrecon does not drop the imaginary part: save the real part (np.real) or the magnitude "
                             "(np.abs), whichever is the signal"),
    "b": ("true/false values", "save the signal as numbers"),
    "m": ("time differences (timedelta64)", "save the signal as plain numbers (float)"),
    "M": ("dates and times (datetime64)", "save the signal as plain numbers (float)"),
    "O": ("Python objects", "dsrecon never unpickles data: save a numeric array"),
    "U": ("text", "save a numeric array"),
    "S": ("bytes", "save a numeric array"),
    "V": ("records or raw bytes (a structured dtype)", "save a plain numeric (time, regions) array"),
}


def check_npy(p: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A .npy table is a real-valued 1-D or 2-D array with at least one value (DataError otherwise)."""
    if dtype.kind not in "iuf":
        what, todo = _DTYPE_KINDS.get(dtype.kind, ("no real numbers", "save a numeric array"))
        raise DataError(f"{p}: the array holds {what} (dtype {dtype}), not real numbers; {todo}")
    if len(shape) not in (1, 2):
        raise DataError(f"{p}: expected a 2-D (time, regions) array, got shape {shape}")
    if 0 in shape:
        what = "no frames" if shape[0] == 0 else "no columns"
        raise DataError(f"{p}: the array is empty (shape {shape}: {what}); a table needs at least one region column "
                        "and two frames")


def _positional_names(n: int) -> list[str]:
    return [f"region{i:03d}" for i in range(n)]


def read_table_text(p: Path) -> str:
    """A text table's contents; DataError naming ``p`` when it cannot be read as text."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise DataError(f"{p}: not a readable gzip file (truncated or corrupt)") from None
    elif p.name.lower().endswith(".gz"):
        raise DataError(f"{p}: not a gzip file (the name ends in .gz); rename it or compress it with gzip")
    try:
        return raw.decode("utf-8-sig")  # -sig: spreadsheet exports start with a byte-order mark
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text table (cannot decode as UTF-8)") from None


def _read_delimited(p: Path, notes: list[str]) -> tuple[np.ndarray, list[str], bool]:
    text = read_table_text(p)
    all_lines = text.splitlines()
    content = [i for i, ln in enumerate(all_lines) if ln.strip() and not ln.startswith("#")]
    if not content:
        raise DataError(f"{p}: empty table")
    for i in range(content[0], content[-1]):
        if not all_lines[i].strip():  # between rows: often a dropped frame; never skipped silently
            raise DataError(f"{p}: line {i + 1} is blank, between rows of the table (a missing frame?); remove the "
                            "blank line if no frame is missing, or write the frame's values")
    lines = [all_lines[i] for i in content]
    first = lines[0]
    delim = "\t" if "\t" in first else ("," if "," in first else None)
    n_delim = first.count(delim) if delim else len(first.split()) - 1
    if ";" in first and first.count(";") >= n_delim:
        raise DataError(f"{p}: looks semicolon-delimited (';' between the fields of its first line); "
                        "dsrecon reads tab-, comma- or whitespace-separated tables: save it with tabs or commas")
    if delim:
        rows = [ln.split(delim) for ln in lines]
        if delim == "\t":  # a trailing tab, as some writers leave, is not an extra empty column
            rows = [r[:-1] if len(r) > 1 and not r[-1].strip() else r for r in rows]
    else:
        rows = [ln.split() for ln in lines]
    rows = [[unquote(c.strip()) for c in r] for r in rows]
    header: list[str] | None = None
    if not _is_numeric_row(rows[0]):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise DataError(f"{p}: header only, no data rows")
    off = 1 if header is not None else 0
    lineno = [i + 1 for i in content[off:]]  # the file's line number of each data row
    short_header = header is not None and all(len(r) == len(header) + 1 for r in rows)  # R write.table
    ncol = len(rows[0]) if short_header else (len(header) if header is not None else len(rows[0]))
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise DataError(f"{p}: ragged table: line {lineno[i]} has {len(r)} columns, expected {ncol}")
    arr = np.empty((len(rows), ncol), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            try:
                arr[i, j] = float(c)
            except ValueError:
                raise DataError(f"{p}: non-numeric cell {c!r} at line {lineno[i]}, column {j + 1}") from None
    if header is None:
        notes.append(f"{p}: first row is numeric, read as data (no header); columns named by position "
                     f"({_span(_positional_names(ncol))})")
        return arr, _positional_names(ncol), False
    if short_header:
        if not _counts(arr[:, 0]):
            raise DataError(f"{p}: the header names {len(header)} columns but the rows have {ncol}, and the first "
                            "column is not a row index 0, 1, 2, …: fix the header")
        notes.append(f"{p}: the header is one name short and the first column counts {_count_text(arr[:, 0])}: "
                     "read as a row index and dropped")
        arr = arr[:, 1:]
    elif header[0] in _INDEX_HEADERS and ncol > 1 and _counts(arr[:, 0]):
        notes.append(f"{p}: unnamed first column counts {_count_text(arr[:, 0])}: read as a row index and dropped")
        header, arr = header[1:], arr[:, 1:]
    check_column_names(p, header)
    return np.ascontiguousarray(arr), header, True


def _counts(col: np.ndarray) -> bool:
    """True if the column is 0, 1, 2, … or 1, 2, 3, … (a row index)."""
    n = col.shape[0]
    return n >= 2 and (np.array_equal(col, np.arange(n)) or np.array_equal(col, np.arange(1, n + 1)))


def _count_text(col: np.ndarray) -> str:
    s = int(col[0])
    return f"{s}, {s + 1}, {s + 2}, …" if col.shape[0] > 2 else f"{s}, {s + 1}"


def _span(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]}…{names[-1]}"


def check_column_names(p: Path, names: list[str]) -> None:
    """DataError naming ``p`` for an empty or repeated column name."""
    for j, n in enumerate(names):
        if not n:
            what = "the first column" if j == 0 else f"column {j + 1}"
            hint = " and is not a row index 0, 1, 2, …" if j == 0 else ""
            raise DataError(f"{p}: {what} has no name in the header{hint}: name it, or remove it")
    seen: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        seen.setdefault(n, []).append(j + 1)
    dup = {n: cols for n, cols in seen.items() if len(cols) > 1}
    if dup:
        items = [f"{n!r} (columns {', '.join(map(str, cols))})" for n, cols in list(dup.items())[:5]]
        more = f", … ({len(dup)} names in all)" if len(dup) > 5 else ""
        raise DataError(f"{p}: duplicated column name(s) in the header: {', '.join(items)}{more}; region names must be unique")


def unquote(cell: str) -> str:
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


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def sidecar_tr(path: str | os.PathLike, side: dict) -> tuple[float | None, str]:
    """TR (seconds) from a table's sidecar: RepetitionTime, else 1/SamplingFrequency; (None, "") if absent.

    Raises DataError naming the sidecar for a value that is not a positive number, or for both
    keys given and disagreeing."""
    sc = sidecar_path(path)
    vals: dict[str, float] = {}
    for key in ("RepetitionTime", "SamplingFrequency"):
        if side.get(key) is None:
            continue
        v = side[key]
        try:
            f = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and f > 0):
            raise DataError(f"{sc}: {key} must be a positive number, got {v!r}")
        problem = tr_problem(f if key == "RepetitionTime" else 1.0 / f)
        if problem:
            given = f"{key} {_fmt(f)}" + (" Hz (one frame every " + _fmt(1.0 / f) + " s)" if key == "SamplingFrequency" else "")
            raise DataError(f"{sc}: {given}: {problem}")
        vals[key] = f
    rt, fs = vals.get("RepetitionTime"), vals.get("SamplingFrequency")
    if rt is not None and fs is not None and not math.isclose(rt, 1.0 / fs, rel_tol=TR_RTOL):
        raise DataError(f"{sc}: RepetitionTime {_fmt(rt)} s disagrees with SamplingFrequency {_fmt(fs)} Hz "
                        f"(1/{_fmt(fs)} = {_fmt(1.0 / fs)} s)")
    if rt is not None:
        return rt, f"RepetitionTime in {sc}"
    if fs is not None:
        return 1.0 / fs, f"SamplingFrequency in {sc}"
    return None, ""


def read_table(path: str | os.PathLike, tr: float | None = None, *, allow_nan: bool = False,
               tr_label: str = "--tr") -> Recording:
    """Read a region time-series table as a Recording.

    TR: the sidecar's (RepetitionTime or SamplingFrequency), else ``tr``. A ``tr`` that
    contradicts the sidecar (relative difference over TR_RTOL) is an error naming both;
    ``tr_label`` says in that message where ``tr`` came from ("--tr", "the model's TR").
    ``provenance["notes"]``: one line per guess made while reading; ``provenance["columns"]``:
    "header", "sidecar Columns" or "position" (how the columns got their names).
    """
    p = Path(path)
    notes: list[str] = []
    arr, names, has_header = _read(p, allow_nan=allow_nan, min_rows=2, notes=notes)
    side = read_sidecar(p)
    columns = "header" if has_header else "position"
    cols = side.get("Columns")
    if not has_header and isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols):
        if len(cols) != arr.shape[1]:
            raise DataError(f"{sidecar_path(p)}: Columns lists {len(cols)} names, {p} has {arr.shape[1]} columns")
        check_column_names(sidecar_path(p), list(cols))
        names, columns = list(cols), "sidecar Columns"
        if notes and notes[-1].startswith(f"{p}: first row is numeric"):
            notes[-1] = f"{p}: first row is numeric, read as data (no header); columns named by the sidecar's Columns"
    s_tr, s_src = sidecar_tr(p, side)
    if tr is not None:
        try:
            tr = float(tr)
        except (TypeError, ValueError):
            raise DataError(f"{p}: {tr_label} must be a number, got {tr!r}") from None
        if not (math.isfinite(tr) and tr > 0):
            raise DataError(f"{p}: {tr_label} must be positive, got {tr}")
        problem = tr_problem(tr)
        if problem:
            raise DataError(f"{p}: {tr_label} {_fmt(tr)}: {problem}")
    if s_tr is not None and tr is not None and not math.isclose(tr, s_tr, rel_tol=TR_RTOL):
        if tr_label == "--tr":
            raise DataError(f"{p}: --tr {_fmt(tr)} s contradicts the file's TR ({_fmt(s_tr)} s, {s_src}); drop --tr or fix the sidecar")
        raise DataError(f"{p}: the file's TR ({_fmt(s_tr)} s, {s_src}) differs from {tr_label} ({_fmt(tr)} s); "
                        "the data must be sampled like the training data")
    if s_tr is not None:
        tr, tr_source = s_tr, s_src
    elif tr is not None:
        tr_source = tr_label
    else:
        raise DataError(f"{p}: no TR: no RepetitionTime in a JSON sidecar and no --tr given")
    prov = {"source": str(p), "sidecar": side, "tr_source": tr_source, "columns": columns}
    if notes:
        prov["notes"] = notes
    return Recording(data=arr, tr=float(tr), names=list(names), source=str(p), provenance=prov)


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
