"""Tables (TSV/CSV/NPY) through load_inputs, on nitime's resting-state table (250×31, TR 1.89 s)."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.io.load import InputSpec, load_inputs

CSV = files("nitime") / "data" / "fmri_timeseries.csv"


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "sub-01_task-rest_timeseries.csv"
    shutil.copyfile(CSV, path)
    return path


def test_nitime_table_with_tr(table):
    rec = load_inputs([str(table)], InputSpec(tr=1.89))[0]
    assert rec.data.shape == (250, 31)
    assert rec.names[:4] == ["WM", "Vent", "Brain", "LCau"]
    assert rec.tr == 1.89
    assert rec.data[0, 0] == pytest.approx(10125.9)


def test_table_needs_a_tr(table):
    with pytest.raises(DataError, match="no TR"):
        load_inputs([str(table)], InputSpec())


def test_sidecar_gives_the_tr(table):
    table.with_suffix(".json").write_text(json.dumps({"RepetitionTime": 1.89}))
    assert load_inputs([str(table)], InputSpec())[0].tr == 1.89


def test_nuisance_columns_become_regressors_or_are_dropped(table):
    rec = load_inputs([str(table)], InputSpec(tr=1.89, regressor_columns=["WM", "Vent"], drop_columns=["Brain"]))[0]
    assert rec.n_regions == 28 and "WM" not in rec.names and "Brain" not in rec.names
    assert rec.regressor_names == ["WM", "Vent"]
    assert rec.regressors.shape == (250, 2) and rec.regressors[0, 0] == pytest.approx(10125.9)


def test_unknown_column_is_an_error(table):
    with pytest.raises(DataError, match="no column"):
        load_inputs([str(table)], InputSpec(tr=1.89, drop_columns=["Nope"]))


def test_directory_of_tables_gives_one_recording_each(tmp_path, table):
    d = tmp_path / "tables"
    d.mkdir()
    shutil.copyfile(table, d / "run1.csv")
    arr = np.loadtxt(table, delimiter=",", skiprows=1)
    np.savetxt(d / "run2.tsv", arr[:200], delimiter="\t", header="\t".join(load_inputs([str(table)], InputSpec(tr=1.89))[0].names), comments="")
    recs = load_inputs([str(d)], InputSpec(tr=1.89))
    assert [r.n_frames for r in recs] == [250, 200]
    np.testing.assert_allclose(recs[1].data, recs[0].data[:200])


def test_tables_with_different_regions_are_an_error(tmp_path, table):
    d = tmp_path / "tables"
    d.mkdir()
    shutil.copyfile(table, d / "run1.csv")
    np.save(d / "run2.npy", np.zeros((50, 31)))  # generic names region000…
    with pytest.raises(DataError, match="regions differ"):
        load_inputs([str(d)], InputSpec(tr=1.89))


def test_quoted_header_cells_are_unquoted(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('"a","b"\n1,2\n3,4\n')
    assert load_inputs([str(path)], InputSpec(tr=1.0))[0].names == ["a", "b"]


# ---------------------------------------------------------------- issue 13: read as meant, or refused
import gzip  # noqa: E402
import types  # noqa: E402

from dsrecon.io.matching import match_regions  # noqa: E402
from dsrecon.io.recording import Recording  # noqa: E402
from dsrecon.io.tables import is_table_path, read_array, read_table, sidecar_path  # noqa: E402

ROWS = [[0.5, 1.5, 2.5], [0.1, 0.2, 0.3], [3.0, 2.0, 1.0], [4.0, 5.0, 6.0]]


def _write(path, header, rows, delim="\t", index=None):
    lines = [] if header is None else [delim.join(header)]
    for i, r in enumerate(rows):
        cells = ([str(index + i)] if index is not None else []) + [repr(v) for v in r]
        lines.append(delim.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pandas_index_column_is_dropped_with_a_note(tmp_path):
    p = _write(tmp_path / "pd.csv", ["", "a", "b", "c"], ROWS, ",", index=0)
    notes = []
    arr, names = read_array(p, notes=notes)
    assert names == ["a", "b", "c"] and arr.shape == (4, 3)
    np.testing.assert_array_equal(arr, ROWS)
    assert notes == [f"{p}: unnamed first column counts 0, 1, 2, …: read as a row index and dropped"]


def test_r_write_csv_row_names_and_round_tripped_pandas_index_are_dropped(tmp_path):
    r = tmp_path / "r.csv"
    r.write_text('"","a","b","c"\n' + "".join(f'"{i + 1}",' + ",".join(map(repr, row)) + "\n" for i, row in enumerate(ROWS)))
    assert read_array(r)[1] == ["a", "b", "c"]
    u = _write(tmp_path / "u.csv", ["Unnamed: 0", "a", "b", "c"], ROWS, ",", index=0)
    assert read_array(u)[1] == ["a", "b", "c"]


def test_header_one_name_short_with_row_names_is_an_index(tmp_path):
    p = _write(tmp_path / "wt.txt", ["a", "b", "c"], ROWS, " ", index=1)  # R write.table
    notes = []
    arr, names = read_array(p, notes=notes)
    assert names == ["a", "b", "c"] and arr.shape == (4, 3) and "one name short" in notes[0]


def test_unnamed_first_column_that_does_not_count_is_refused(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(",a,b\n0.0,1,2\n0.5,3,4\n1.0,5,6\n")  # a time column in seconds, not an index
    with pytest.raises(DataError, match=r"t\.csv: the first column has no name in the header and is not a row index"):
        read_array(p)


def test_a_named_counting_column_is_kept(tmp_path):
    p = _write(tmp_path / "k.tsv", ["step", "a", "b", "c"], ROWS, index=0)
    assert read_array(p)[1] == ["step", "a", "b", "c"]


def test_empty_name_later_in_the_header_is_an_error(tmp_path):
    p = _write(tmp_path / "e.csv", ["a", "", "c"], ROWS, ",")
    with pytest.raises(DataError, match="column 2 has no name"):
        read_array(p)


def test_duplicated_names_are_an_error_naming_them(tmp_path):
    p = _write(tmp_path / "d.tsv", ["a", "b", "a"], ROWS)
    with pytest.raises(DataError, match=r"d\.tsv: duplicated column name\(s\) in the header: 'a' \(columns 1, 3\)"):
        read_array(p)
    with pytest.raises(DataError, match="duplicated"):
        load_inputs([str(p)], InputSpec(tr=1.0, drop_columns=["a"]))


def test_semicolon_delimited_gets_a_hint(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("a;b;c\n1,5;2,5;3\n4;5;6\n")
    with pytest.raises(DataError, match=r"s\.csv: looks semicolon-delimited"):
        read_array(p)
    q = tmp_path / "s2.csv"
    q.write_text("1;2;3\n4;5;6\n")
    with pytest.raises(DataError, match="semicolon"):
        read_array(q)


def test_numeric_first_row_is_data_with_a_note(tmp_path):
    p = _write(tmp_path / "h.tsv", None, ROWS)
    notes = []
    arr, names = read_array(p, notes=notes)
    assert arr.shape == (4, 3) and names == ["region000", "region001", "region002"]
    assert notes == [f"{p}: first row is numeric, read as data (no header); columns named by position (region000…region002)"]
    rec = read_table(p, tr=2.0)
    assert rec.provenance["columns"] == "position" and rec.provenance["notes"] == notes


def test_a_header_and_a_bom_and_a_trailing_tab(tmp_path):
    p = tmp_path / "b.tsv"
    p.write_bytes("\ufeffa\tb\t\n1\t2\t\n3\t4\t\n".encode())
    arr, names = read_array(p)
    assert names == ["a", "b"] and arr.tolist() == [[1, 2], [3, 4]]


def test_gzipped_tables_with_and_without_header(tmp_path):
    body = "a\tb\tc\n" + "".join("\t".join(map(repr, r)) + "\n" for r in ROWS)
    g = tmp_path / "sub-01_timeseries.tsv.gz"
    g.write_bytes(gzip.compress(body.encode()))
    assert is_table_path(g) and sidecar_path(g).name == "sub-01_timeseries.json"
    arr, names = read_array(g)
    assert names == ["a", "b", "c"] and arr.tolist() == ROWS
    c = tmp_path / "x.csv.gz"
    c.write_bytes(gzip.compress(body.replace("\t", ",").encode()))
    assert read_array(c)[1] == ["a", "b", "c"]
    # BIDS physio: no header, names and rate in the sidecar
    ph = tmp_path / "sub-01_physio.tsv.gz"
    ph.write_bytes(gzip.compress("".join("\t".join(map(repr, r)) + "\n" for r in ROWS).encode()))
    (tmp_path / "sub-01_physio.json").write_text(json.dumps({"SamplingFrequency": 50.0, "Columns": ["cardiac", "resp", "trigger"]}))
    rec = load_inputs([str(ph)], InputSpec())[0]
    assert rec.names == ["cardiac", "resp", "trigger"] and rec.tr == pytest.approx(0.02)
    assert rec.provenance["columns"] == "sidecar Columns" and "sidecar's Columns" in rec.provenance["notes"][0]
    # a directory of gzipped tables is a directory of tables
    d = tmp_path / "runs"
    d.mkdir()
    (d / "run1.tsv.gz").write_bytes(g.read_bytes())
    assert [r.names for r in load_inputs([str(d)], InputSpec(tr=1.0))] == [["a", "b", "c"]]


def test_corrupt_or_fake_gzip_is_one_error(tmp_path):
    t = tmp_path / "t.tsv.gz"
    body = "a\tb\n" + "".join(f"{v:.6f}\t{v * 2:.6f}\n" for v in np.random.default_rng(0).random(500))
    full = gzip.compress(body.encode())
    t.write_bytes(full[: len(full) // 2])  # a download cut short
    with pytest.raises(DataError, match=r"t\.tsv\.gz: not a readable gzip file"):
        read_array(t)
    f = tmp_path / "f.tsv.gz"
    f.write_text("a\tb\n1\t2\n")
    with pytest.raises(DataError, match=r"f\.tsv\.gz: not a gzip file"):
        read_array(f)


def test_tr_contradicting_the_sidecar_is_an_error_naming_both(table):
    table.with_suffix(".json").write_text(json.dumps({"RepetitionTime": 1.89}))
    with pytest.raises(DataError, match=r"--tr 2 s contradicts the file's TR \(1\.89 s, RepetitionTime in .*\.json\)"):
        load_inputs([str(table)], InputSpec(tr=2.0))
    assert load_inputs([str(table)], InputSpec(tr=1.89 * (1 + 1e-8)))[0].tr == 1.89  # within tolerance: the file's
    with pytest.raises(DataError, match=r"differs from the model's TR \(2 s\)"):
        read_table(table, tr=2.0, tr_label="the model's TR")


def test_sidecar_values_are_checked(tmp_path):
    p = _write(tmp_path / "v.tsv", ["a", "b", "c"], ROWS)
    side = tmp_path / "v.json"
    for bad, needle in (({"RepetitionTime": "fast"}, "RepetitionTime must be a positive number"),
                        ({"SamplingFrequency": 0}, "SamplingFrequency must be a positive number"),
                        ({"RepetitionTime": 2.0, "SamplingFrequency": 2.0}, "disagrees with SamplingFrequency"),
                        ([1, 2], "must hold an object")):
        side.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=needle):
            read_table(p)
    side.write_text(json.dumps({"RepetitionTime": 0.5, "SamplingFrequency": 2.0}))
    assert read_table(p).tr == 0.5


def _rec(names, columns="header", n=5):
    data = np.arange(n * len(names), dtype=float).reshape(n, len(names))
    return Recording(data=data, tr=1.0, names=list(names), source="t.tsv", provenance={"columns": columns})


def test_match_regions_same_order_is_untouched():
    r = _rec(["a", "b", "c"])
    out, note = match_regions(r, ["a", "b", "c"])
    assert out is r and note is None


def test_match_regions_reorders_by_name_with_a_note():
    r = _rec(["c", "a", "b"])
    out, note = match_regions(r, ["a", "b", "c"])
    assert out.names == ["a", "b", "c"]
    np.testing.assert_array_equal(out.data, r.data[:, [1, 2, 0]])
    assert note == "t.tsv: columns reordered by name to the model's region order (a, b, c)"


def test_match_regions_names_missing_and_extra():
    with pytest.raises(DataError, match=r"t\.tsv: the columns do not match the model's regions: missing c; extra w, v"):
        match_regions(_rec(["a", "w", "b", "v"]), ["a", "b", "c"])


def test_match_regions_headerless_by_position():
    r = _rec(["region000", "region001", "region002"], columns="position")
    out, note = match_regions(r, ["a", "b", "c"])
    assert out.names == ["a", "b", "c"] and np.array_equal(out.data, r.data)
    assert "no header: columns matched to the model's regions by position" in note
    with pytest.raises(DataError, match=r"2 columns, the model was fitted on 3 regions \(the file has no header"):
        match_regions(_rec(["region000", "region001"], columns="position"), ["a", "b", "c"])


def test_match_regions_unnamed_model_matches_by_position():
    out, note = match_regions(_rec(["x", "y"]), ["region000", "region001"])
    assert out.names == ["region000", "region001"] and "regions have no names" in note


def test_match_regions_moves_fit_regressors_and_drops_fit_drops():
    r = _rec(["WM", "b", "a", "Brain"])
    out, note = match_regions(r, ["a", "b"], regressor_names=["WM"], drop=["Brain"])
    assert out.names == ["a", "b"] and out.regressor_names == ["WM"]
    np.testing.assert_array_equal(out.regressors[:, 0], r.data[:, 0])
    assert "reordered" in note and "WM read as nuisance regressors" in note and "Brain dropped" in note


def test_load_matched_takes_the_models_tr_or_refuses_a_different_one(tmp_path):
    from dsrecon.io.matching import load_matched

    p = _write(tmp_path / "m.tsv", ["b", "a", "c"], ROWS)
    model = types.SimpleNamespace(tr=2.0, names=["a", "b", "c"], config={})
    rec, notes = load_matched(p, model)
    assert rec.tr == 2.0 and rec.names == ["a", "b", "c"] and notes == [f"{p}: columns reordered by name to the model's region order (a, b, c)"]
    (tmp_path / "m.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    with pytest.raises(DataError, match=r"m\.tsv: the file's TR \(1 s, RepetitionTime in .*m\.json\) differs from the model's TR \(2 s\)"):
        load_matched(p, model)
