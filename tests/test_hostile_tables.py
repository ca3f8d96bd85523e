"""Hostile tables (issue 13, part 3): tables read as the user meant, or refused.

Each case runs the real CLI in a subprocess in a folder holding the user's files. A refusal is
one line on stderr naming the file, exit 1, nothing changed and nothing left behind; a table
read with a guess (a dropped row index, reordered regions, no header) succeeds with a one-line
note on stderr and the right result.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hostile_util import TINY, assert_clean_failure, dsrecon, lorenz_table, snapshot, user_files

#: TINY without --quiet: the notes are log lines, and --quiet silences them
LOUD = [a for a in TINY if a != "--quiet"]
NAMES = ["x", "y", "z"]


def _frames(src: Path) -> np.ndarray:
    return np.loadtxt(src, skiprows=1, delimiter="\t", ndmin=2)


def _write(path: Path, arr: np.ndarray, header: list[str] | None, delim: str = "\t", index: int | None = None) -> Path:
    lines = [] if header is None else [delim.join(header)]
    for i, row in enumerate(arr):
        cells = ([str(index + i)] if index is not None else []) + [repr(float(v)) for v in row]
        lines.append(delim.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.fixture
def home(tmp_path):
    """The user's folder: their own files and a Lorenz63 table x.tsv (TR 1 s in x.json).

    A folder below tmp_path, not tmp_path itself: the harness also looks for leftovers beside the
    folder, and pytest keeps its own ``.lock`` beside tmp_path."""
    d = tmp_path / "home"
    user_files(d)
    lorenz_table(d / "x.tsv")
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit of x.tsv (regions x, y, z; TR 1 s), shared by the evaluate/simulate/report cases."""
    d = tmp_path_factory.mktemp("fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", "--seed", "0", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d / "run", d / "x.tsv"


def _run_copy(fitted, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(fitted[0], run)
    return run


# ---------------------------------------------------------------- fit: read as meant

def test_pandas_index_column_is_dropped_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "pd.csv", x, ["", *NAMES], ",", index=0)  # df.to_csv(): empty first header cell, 0..T-1 below
    r = dsrecon("fit", "pd.csv", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert "pd.csv: unnamed first column counts 0, 1, 2, …: read as a row index and dropped" in r.err_lines
    cfg = _config(home / "run")
    assert cfg["n_regions"] == 3 and cfg["names"] == NAMES


def test_r_row_names_with_a_short_header_are_dropped_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "r.txt", x, NAMES, " ", index=1)  # R write.table: header one name short, row names 1..T
    r = dsrecon("fit", "r.txt", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert any(ln.startswith("r.txt: the header is one name short") for ln in r.err_lines), r.err
    assert _config(home / "run")["names"] == NAMES


def test_numeric_first_row_is_read_as_data_with_a_note(home):
    x = _frames(home / "x.tsv")
    _write(home / "nohead.tsv", x, None)
    r = dsrecon("fit", "nohead.tsv", "--tr", "1", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert ("nohead.tsv: first row is numeric, read as data (no header); columns named by position "
            "(region000…region002)") in r.err_lines
    cfg = _config(home / "run")
    assert cfg["names"] == ["region000", "region001", "region002"]
    assert cfg["provenance"][0]["columns"] == "position"


def test_gzipped_tsv_with_a_header_is_read(home):
    (home / "sub-01_timeseries.tsv.gz").write_bytes(gzip.compress((home / "x.tsv").read_bytes()))
    (home / "sub-01_timeseries.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    r = dsrecon("fit", "sub-01_timeseries.tsv.gz", "-o", "run", "--seed", "0", *TINY, cwd=home)
    assert r.code == 0, r.err
    cfg = _config(home / "run")
    assert cfg["names"] == NAMES and cfg["tr"] == 1.0


def test_gzipped_headerless_physio_takes_the_sidecar_columns(home):
    x = _frames(home / "x.tsv")
    body = "".join("\t".join(repr(float(v)) for v in row) + "\n" for row in x)
    (home / "sub-01_physio.tsv.gz").write_bytes(gzip.compress(body.encode()))
    (home / "sub-01_physio.json").write_text(json.dumps({"SamplingFrequency": 1.0, "Columns": ["cardiac", "resp", "pulse"]}))
    r = dsrecon("fit", "sub-01_physio.tsv.gz", "-o", "run", "--seed", "0", *LOUD, cwd=home)
    assert r.code == 0, r.err
    assert ("sub-01_physio.tsv.gz: first row is numeric, read as data (no header); columns named by the sidecar's "
            "Columns") in r.err_lines
    assert _config(home / "run")["names"] == ["cardiac", "resp", "pulse"]


def test_tr_equal_to_the_sidecar_within_tolerance_is_fine(home):
    r = dsrecon("fit", "x.tsv", "--tr", "1.0000000001", "-o", "run", "--seed", "0", *TINY, cwd=home)
    assert r.code == 0, r.err
    assert _config(home / "run")["tr"] == 1.0


# ---------------------------------------------------------------- fit: refused

def _fit_refused(home: Path, args: list, names, says=None) -> str:
    before = snapshot(home)
    r = dsrecon("fit", *args, "-o", "run", "--seed", "0", *TINY, cwd=home)
    line = assert_clean_failure(r, names=names, before=before, dirs=[home], says=says)
    assert not (home / "run").exists()
    return line


@pytest.mark.parametrize("extra", [[], ["--drop-column", "x"]], ids=["plain", "drop-column"])
def test_duplicated_region_names_are_refused(home, extra):
    _write(home / "dup.tsv", _frames(home / "x.tsv"), ["x", "y", "x"])
    line = _fit_refused(home, ["dup.tsv", "--tr", "1", *extra], "dup.tsv")
    assert line == ("error: dup.tsv: duplicated column name(s) in the header: 'x' (columns 1, 3); "
                    "region names must be unique")


def test_tr_contradicting_the_sidecar_is_refused(home):
    line = _fit_refused(home, ["x.tsv", "--tr", "2"], ["x.tsv", "x.json"])
    assert line == "error: x.tsv: --tr 2 s contradicts the file's TR (1 s, RepetitionTime in x.json); drop --tr or fix the sidecar"


def test_semicolon_delimited_table_gets_a_hint(home):
    x = _frames(home / "x.tsv")
    (home / "eu.csv").write_text("x;y;z\n" + "".join(";".join(f"{v:.4f}".replace(".", ",") for v in row) + "\n" for row in x))
    _fit_refused(home, ["eu.csv", "--tr", "1"], "eu.csv", says="semicolon-delimited")


def test_unnamed_first_column_that_is_not_an_index_is_refused(home):
    x = _frames(home / "x.tsv")
    t = np.arange(x.shape[0])[:, None] * 0.5  # a time column in seconds under an empty header cell
    _write(home / "t.csv", np.hstack([t, x]), ["", *NAMES], ",")
    _fit_refused(home, ["t.csv", "--tr", "1"], "t.csv", says="first column has no name")


def test_truncated_gzip_is_refused(home):
    full = gzip.compress((home / "x.tsv").read_bytes())
    (home / "cut.tsv.gz").write_bytes(full[: len(full) // 2])
    _fit_refused(home, ["cut.tsv.gz", "--tr", "1"], "cut.tsv.gz", says="not a readable gzip file")


# ---------------------------------------------------------------- evaluate / simulate / report on a fitted run

def _evaluate(run: Path, data: str, cwd: Path):
    return dsrecon("evaluate", run, "--data", data, "--no-analysis", "--json", cwd=cwd)


METRICS = ("D_stsp", "D_H", "PE_n", "n_test")


def test_evaluate_on_permuted_columns_reorders_with_a_note_and_scores_the_same(fitted, home):
    run, _ = fitted
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [2, 0, 1]], ["z", "x", "y"])  # no sidecar: takes the model's TR
    ref = _evaluate(run, "x.tsv", home)
    r = _evaluate(run, "perm.tsv", home)
    assert ref.code == 0 and r.code == 0, r.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in r.err_lines
    a, b = json.loads(ref.out), json.loads(r.out)
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}


def test_evaluate_on_headerless_npy_matches_by_position_with_a_note(fitted, home):
    run, _ = fitted
    np.save(home / "x.npy", _frames(home / "x.tsv"))
    ref, r = _evaluate(run, "x.tsv", home), _evaluate(run, "x.npy", home)
    assert r.code == 0, r.err
    assert "x.npy: no header: columns matched to the model's regions by position (x, y, z)" in r.err_lines
    a, b = json.loads(ref.out), json.loads(r.out)
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}


def test_simulate_from_permuted_columns_equals_simulate_from_the_original(fitted, home):
    run, _ = fitted
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [1, 2, 0]], ["y", "z", "x"])
    a = dsrecon("simulate", "model", run, "--steps", "50", "--from", "x.tsv", "-o", "a.tsv", cwd=home)
    b = dsrecon("simulate", "model", run, "--steps", "50", "--from", "perm.tsv", "-o", "b.tsv", cwd=home)
    assert a.code == 0 and b.code == 0, b.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in b.err_lines
    assert (home / "a.tsv").read_text() == (home / "b.tsv").read_text()


def test_report_on_permuted_columns_reorders_with_a_note(fitted, home):
    run = _run_copy(fitted, home)
    x = _frames(home / "x.tsv")
    _write(home / "perm.tsv", x[:, [2, 1, 0]], ["z", "y", "x"])
    r = dsrecon("report", run, "--data", "perm.tsv", "-o", "r.html", "--lyapunov-steps", "500", "--k-max", "1", "--json", cwd=home)
    assert r.code == 0, r.err
    assert "perm.tsv: columns reordered by name to the model's region order (x, y, z)" in r.err_lines
    ev = json.loads(_evaluate(run, "x.tsv", home).out)
    assert json.loads(r.out)["D_stsp"] == pytest.approx(ev["D_stsp"])


def _command(kind: str, run: Path, data: str) -> list:
    if kind == "evaluate":
        return ["evaluate", run, "--data", data, "--no-analysis"]
    if kind == "simulate":
        return ["simulate", "model", run, "--steps", "20", "--from", data, "-o", "gen.tsv"]
    return ["report", run, "--data", data, "-o", "r.html", "--lyapunov-steps", "200", "--k-max", "1"]


KINDS = ["evaluate", "simulate", "report"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_different_region_set_is_refused_naming_missing_and_extra(fitted, home, kind):
    run = _run_copy(fitted, home)
    _write(home / "other.tsv", _frames(home / "x.tsv"), ["x", "y", "w"])
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "other.tsv"), cwd=home)
    line = assert_clean_failure(r, names="other.tsv", before=before, dirs=[home])
    assert line == ("error: other.tsv: the columns do not match the model's regions: missing z; extra w "
                    "(the file has 3 columns, the model was fitted on 3 regions)")


@pytest.mark.parametrize("kind", KINDS)
def test_data_whose_tr_differs_from_the_models_is_refused(fitted, home, kind):
    run = _run_copy(fitted, home)
    lorenz_table(home / "fast.tsv", tr=2.0)  # its sidecar says 2 s; the model was fitted at 1 s
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "fast.tsv"), cwd=home)
    line = assert_clean_failure(r, names=["fast.tsv", "fast.json"], before=before, dirs=[home], says=["model's TR", "(1 s)", "2 s"])
    assert line == ("error: fast.tsv: the file's TR (2 s, RepetitionTime in fast.json) differs from the model's TR (1 s); "
                    "the data must be sampled like the training data")


@pytest.mark.parametrize("kind", KINDS)
def test_headerless_data_with_the_wrong_column_count_is_refused(fitted, home, kind):
    run = _run_copy(fitted, home)
    np.save(home / "two.npy", _frames(home / "x.tsv")[:, :2])
    before = snapshot(home)
    r = dsrecon(*_command(kind, run, "two.npy"), cwd=home)
    line = assert_clean_failure(r, names="two.npy", before=before, dirs=[home])
    assert line == ("error: two.npy: 2 columns, the model was fitted on 3 regions "
                    "(the file has no header, so columns are matched by position)")
