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
