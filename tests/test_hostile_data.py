"""Hostile input data (issue 38, part B), run through the real CLI (tests/hostile_util.py):

1. Input options apply or are refused: the cleaning options (--detrend, --high-pass, --low-pass,
   --standardize, --confounds TABLE) clean tables as nilearn cleans NIfTI signals and config.json
   records it; an option an input does not use is one line, never accepted and ignored.
2. Malformed inputs end in one line naming the file (exit 1), the user's files byte-identical and
   nothing left behind: empty, complex and non-numeric arrays, impossible TRs, duplicated JSON
   keys, blank lines between rows, named pipes, truncated images, sizes that cannot fit in memory.
3. Tables meet by column name: evaluate --generated/--reference, and several tables of one fit.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hostile_util import TINY, Proc, assert_clean_failure, dsrecon, lorenz_table, snapshot, user_files


def _main(*args, cwd: Path) -> Proc:
    """`dsrecon ARGS` in ``cwd``, in this interpreter (`dsrecon.cli.main.main`, the console script's
    body): these cases fail before any work, and a fresh interpreter per case would spend most of
    the suite's time importing torch. The cases where only a fresh process shows the behaviour (a
    named pipe that could block the reader) use `dsrecon` (a subprocess)."""
    from dsrecon.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(old)
    return Proc(code, out.getvalue(), err.getvalue())


@pytest.fixture
def home(tmp_path):
    """The user's folder (below tmp_path, see tests/test_hostile.py): their own files and a Lorenz63
    table x.tsv (regions x, y, z; TR 1 s in x.json)."""
    d = tmp_path / "home"
    user_files(d)
    lorenz_table(d / "x.tsv")
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit of x.tsv, for the cases that need a run."""
    d = tmp_path_factory.mktemp("fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d / "run"


def _table(path: Path) -> tuple[np.ndarray, list[str]]:
    from dsrecon.io.tables import read_array

    return read_array(path)


def _refused(home: Path, args: list, names, code: int = 1, says=None, cmd: tuple = ("fit",), fresh: bool = False) -> str:
    """Run ``dsrecon CMD ARGS`` (fit: with ``-o run`` and the tiny settings) and check the hostile
    contract; ``fresh``: in a subprocess of its own."""
    before = snapshot(home)
    out = ["-o", "run", *TINY] if cmd == ("fit",) else []
    r = dsrecon(*cmd, *args, *out, cwd=home, timeout=120) if fresh else _main(*cmd, *args, *out, cwd=home)
    line = assert_clean_failure(r, names=names, before=before, dirs=[home], code=code, says=says)
    assert not (home / "run").exists()
    return line


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# ================================================================================================
# 1. Options apply or refuse
# ================================================================================================
def _training_split(x: np.ndarray, test_fraction: float = 0.25) -> np.ndarray:
    return x[: x.shape[0] - int(round(x.shape[0] * test_fraction))]


@pytest.mark.parametrize("opts,kw", [
    (["--detrend", "--high-pass", "0.01"], dict(detrend=True, high_pass=0.01)),
    (["--low-pass", "0.2", "--standardize"], dict(low_pass=0.2, standardize="zscore_sample")),
], ids=["detrend-high-pass", "low-pass-standardize"])
def test_cleaning_options_filter_a_table_as_nilearn_does_and_config_records_them(home, opts, kw):
    from nilearn.signal import clean

    r = _main("fit", "x.tsv", *opts, "-o", "run", *TINY, cwd=home)
    assert r.code == 0, r.err
    x, _ = _table(home / "x.tsv")
    expected = _training_split(clean(x, t_r=1.0, **{"detrend": False, "standardize": None, **kw}))
    cfg = _config(home / "run")
    # the data the fit used, read back: its training split's normalisation is that of nilearn's cleaned array
    np.testing.assert_allclose(cfg["normalisation"]["mean"], expected.mean(0), atol=1e-9)
    np.testing.assert_allclose(cfg["normalisation"]["std"], expected.std(0), rtol=1e-9)
    assert not np.allclose(cfg["normalisation"]["std"], _training_split(x).std(0), rtol=1e-3)  # not the raw data's
    cleaning = cfg["provenance"][0]["cleaning"]
    assert cleaning == {"detrend": "--detrend" in opts, "standardize": "--standardize" in opts,
                        "low_pass": kw.get("low_pass"), "high_pass": kw.get("high_pass")}


def test_a_table_fitted_without_cleaning_options_is_used_as_read(home):
    r = _main("fit", "x.tsv", "-o", "run", *TINY, cwd=home)
    assert r.code == 0, r.err
    x, _ = _table(home / "x.tsv")
    cfg = _config(home / "run")
    np.testing.assert_allclose(cfg["normalisation"]["mean"], _training_split(x).mean(0), rtol=1e-12)
    assert cfg["provenance"][0]["cleaning"] == {"detrend": False, "standardize": False, "low_pass": None, "high_pass": None}


def _confounds(home: Path, n: int, first_row_na: bool = True) -> Path:
    rng = np.random.default_rng(1)
    conf = rng.normal(size=(n, 2))
    lines = ["trans_x\tframewise_displacement"]
    for i, row in enumerate(conf):
        fd = "n/a" if (i == 0 and first_row_na) else repr(float(row[1]))
        lines.append(f"{float(row[0])!r}\t{fd}")
    (home / "conf.tsv").write_text("\n".join(lines) + "\n")
    conf[0, 1] = conf[1, 1]  # fMRIPrep's n/a in the first row: the second row's value, as nilearn's loader does
    return conf


def test_a_confounds_table_is_regressed_out_of_a_table_and_recorded(home):
    from nilearn.signal import clean

    x, _ = _table(home / "x.tsv")
    conf = _confounds(home, x.shape[0])
    r = _main("fit", "x.tsv", "--confounds", "conf.tsv", "-o", "run", *TINY, cwd=home)
    assert r.code == 0, r.err
    expected = _training_split(clean(x, t_r=1.0, detrend=False, standardize=None, confounds=conf))
    cfg = _config(home / "run")
    np.testing.assert_allclose(cfg["normalisation"]["mean"], expected.mean(0), atol=1e-9)
    np.testing.assert_allclose(cfg["normalisation"]["std"], expected.std(0), rtol=1e-9)
    prov = cfg["provenance"][0]
    assert prov["confounds"] == "file" and prov["confounds_file"] == "conf.tsv"
    assert prov["confound_columns"] == ["trans_x", "framewise_displacement"]


def test_a_confounds_table_with_another_row_count_is_refused(home):
    _confounds(home, 299)
    _refused(home, ["x.tsv", "--confounds", "conf.tsv"], ["conf.tsv", "299 rows", "300 frames"])


def test_a_confounds_table_with_a_missing_value_after_the_first_row_is_refused(home):
    _confounds(home, 300)
    lines = (home / "conf.tsv").read_text().splitlines()
    lines[40] = lines[40].split("\t")[0] + "\tn/a"  # line 41 of the file
    (home / "conf.tsv").write_text("\n".join(lines) + "\n")
    _refused(home, ["x.tsv", "--confounds", "conf.tsv"], ["conf.tsv", "line 41", "framewise_displacement"])


def test_a_confounds_table_is_regressed_out_of_a_nifti_image_by_the_masker(home):
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    from dsrecon.io.load import InputSpec, load_inputs

    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.normal(size=(6, 6, 6, 80)).astype(np.float32) + 100, np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, home / "bold.nii.gz")
    atlas = np.zeros((6, 6, 6), np.int16)
    atlas[:3], atlas[3:] = 1, 2
    nib.save(nib.Nifti1Image(atlas, np.eye(4)), home / "atlas.nii.gz")
    conf = _confounds(home, 80)
    rec, = load_inputs([str(home / "bold.nii.gz")], InputSpec(atlas=str(home / "atlas.nii.gz"), detrend=True,
                                                             confounds=str(home / "conf.tsv"), quiet=True))
    masker = NiftiLabelsMasker(labels_img=str(home / "atlas.nii.gz"), detrend=True, standardize=None, t_r=2.0)
    np.testing.assert_allclose(rec.data, masker.fit_transform(str(home / "bold.nii.gz"), confounds=conf), rtol=1e-5, atol=1e-6)
    assert rec.regressors is None and rec.provenance["confounds"] == "file"
    assert rec.provenance["cleaning"]["detrend"] is True


@pytest.mark.parametrize("cmd", ["fit-cohort", "fit-group"])
def test_one_confounds_table_for_several_subjects_is_refused(home, cmd):
    (home / "subjects").mkdir()
    for sub in ("a", "b"):
        shutil.copy(home / "x.tsv", home / "subjects" / f"{sub}.tsv")
        shutil.copy(home / "x.json", home / "subjects" / f"{sub}.json")
    _confounds(home, 300)
    _refused(home, ["subjects", "--confounds", "conf.tsv", "-o", "out", *TINY], ["conf.tsv", "2 subjects"], cmd=(cmd,))
    assert not (home / "out").exists()


def test_a_confounds_file_that_does_not_exist_is_refused(home):
    _refused(home, ["x.tsv", "--confounds", "conf.tsv"], ["--confounds", "conf.tsv"], says="unknown strategy")


@pytest.mark.parametrize("strategy", ["scrubbing", "simple"])
def test_a_confound_strategy_on_a_table_is_refused(home, strategy):
    _refused(home, ["x.tsv", "--confounds", strategy], ["x.tsv", f"--confounds {strategy}"], says="fMRIPrep confounds file")


@pytest.mark.parametrize("opt", [["--atlas", "atlas.nii.gz"], ["--mask", "mask.nii.gz"], ["--pca", "3"],
                                 ["--atlas-labels", "labels.tsv"], ["--neuropil-factor", "0.5"]],
                         ids=lambda o: o[0])
def test_an_option_for_other_inputs_given_with_a_table_is_refused(home, opt):
    _refused(home, ["x.tsv", *opt], ["x.tsv", opt[0]], says="applies to")


def test_a_scrubbing_threshold_without_scrubbing_is_refused(home):
    _refused(home, ["x.tsv", "--fd-threshold", "0.3"], "--fd-threshold", says="--confounds scrubbing")


@pytest.mark.parametrize("opt", [["--task", "rest"], ["--participant-label", "01"], ["--session", "1"], ["--space", "MNI"]],
                         ids=lambda o: o[0])
def test_a_bids_query_with_files_only_is_refused(home, opt):
    _refused(home, ["x.tsv", *opt], ["x.tsv", opt[0]], says="BIDS/fMRIPrep directory")


@pytest.mark.parametrize("cmd", ["fit-cohort", "fit-group"])
def test_a_bids_query_on_a_folder_of_tables_is_refused(home, cmd):
    (home / "subjects").mkdir()
    for sub in ("a", "b"):
        shutil.copy(home / "x.tsv", home / "subjects" / f"{sub}.tsv")
        shutil.copy(home / "x.json", home / "subjects" / f"{sub}.json")
    _refused(home, ["subjects", "--task", "rest", "-o", "out", *TINY], ["subjects", "--task"], says="BIDS/fMRIPrep directory",
             cmd=(cmd,))
    assert not (home / "out").exists()


def test_bids_dir_with_a_table_is_refused(home):
    (home / "raw").mkdir()
    _refused(home, ["x.tsv", "--bids-dir", "raw"], ["raw", "--bids-dir", "x.tsv"])


def test_table_column_options_with_a_nifti_image_are_refused(home):
    import nibabel as nib

    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=(4, 4, 4, 30)).astype(np.float32), np.eye(4))
    nib.save(img, home / "bold.nii.gz")
    _refused(home, ["bold.nii.gz", "--atlas", "atlas.nii.gz", "--drop-column", "x"], ["bold.nii.gz", "--drop-column"],
             says="applies to tables")


def test_fit_help_says_which_inputs_each_input_option_applies_to(home):
    r = dsrecon("fit", "--help", cwd=home, env={"COLUMNS": "250"})  # the width of the help: a fresh process
    assert r.code == 0
    lines = {ln.split()[1]: ln for ln in r.out.splitlines() if ln.strip().startswith("│ --")}
    assert "every input" in lines["--standardize"] and "tables" in lines["--detrend"]
    assert "NIfTI inputs" in lines["--atlas"] and "NIfTI inputs" in lines["--mask"]
    assert "TABLE" in lines["--confounds"] and "fMRIPrep" in lines["--confounds"]
    assert "Tables" in lines["--drop-column"] and "suite2p" in lines["--neuropil-factor"]


def test_a_cohort_rerun_with_a_cleaning_option_refits_its_finished_subjects(home):
    (home / "subjects").mkdir()
    shutil.copy(home / "x.tsv", home / "subjects" / "a.tsv")
    shutil.copy(home / "x.json", home / "subjects" / "a.json")
    first = dsrecon("fit-cohort", "subjects", "-o", "out", "--lyapunov-steps", "0", *TINY, cwd=home)
    assert first.code == 0, first.err
    again = dsrecon("fit-cohort", "subjects", "-o", "out", "--lyapunov-steps", "0", "--detrend", *TINY, cwd=home)
    assert again.code == 0, again.err
    rec = json.loads((home / "out" / "a" / "cohort_metrics.json").read_text())
    assert rec["refit"] and rec["refit_reason"].startswith("the input data differ")
    assert _config(home / "out" / "a")["provenance"][0]["cleaning"]["detrend"] is True


def test_evaluate_cleans_the_test_data_as_the_fit_cleaned_its_data(home):
    r = _main("fit", "x.tsv", "--detrend", "--high-pass", "0.01", "-o", "run", *TINY, cwd=home)
    assert r.code == 0, r.err
    e = _main("evaluate", "run", "--data", "x.tsv", "--no-analysis", "--json", cwd=home)
    assert e.code == 0, e.err
    assert "x.tsv: cleaned as the model's data were (detrend, high-pass 0.01 Hz)" in e.err_lines


# ================================================================================================
# 2. Malformed inputs: one line naming the file
# ================================================================================================
@pytest.mark.parametrize("shape", [(1500, 0), (0, 3), (0,)], ids=str)
def test_an_empty_npy_array_is_refused(home, shape):
    np.save(home / "e.npy", np.zeros(shape))
    _refused(home, ["e.npy", "--tr", "1"], ["e.npy", str(shape)], says="empty")


def test_a_complex_npy_array_is_refused_not_truncated_to_its_real_part(home):
    np.save(home / "c.npy", np.ones((300, 3)) + 1j)
    _refused(home, ["c.npy", "--tr", "1"], ["c.npy", "complex128"], says="imaginary part")


@pytest.mark.parametrize("arr", [
    np.arange(900).reshape(300, 3).astype("timedelta64[s]"),
    np.arange(900).reshape(300, 3).astype("datetime64[s]"),
    np.ones((300, 3), dtype=bool),
    np.array([[1.0, "a", None]] * 300, dtype=object),
    np.array([["1.5", "2", "3"]] * 300),
], ids=["timedelta64", "datetime64", "bool", "object", "text"])
def test_a_npy_array_of_anything_but_real_numbers_is_refused(home, arr):
    np.save(home / "t.npy", arr, allow_pickle=True)
    _refused(home, ["t.npy", "--tr", "1"], ["t.npy", str(arr.dtype)], says="not real numbers")


@pytest.mark.parametrize("tr", ["1e-09", "0.0001", "5000"])
def test_a_sidecar_tr_outside_the_sane_range_is_refused_with_its_unit(home, tr):
    (home / "x.json").write_text(f'{{"RepetitionTime": {tr}}}')
    _refused(home, ["x.tsv"], ["x.json", "RepetitionTime"], says=["seconds", "0.001 s to 100 s"])


def test_a_tr_of_a_nanosecond_from_the_command_line_is_refused(home):
    (home / "x.json").unlink()
    _refused(home, ["x.tsv", "--tr", "1e-9"], "--tr", says=["below 1 ms", "seconds"])


def test_a_tr_in_milliseconds_is_refused_saying_so(home):
    (home / "x.json").unlink()
    line = _refused(home, ["x.tsv", "--tr", "720"], "--tr 720")
    assert "TR is in seconds; 720 s looks like milliseconds" in line


def test_a_sidecar_tr_in_milliseconds_is_refused_saying_so(home):
    (home / "x.json").write_text('{"RepetitionTime": 720}')
    _refused(home, ["x.tsv"], "x.json", says="TR is in seconds; 720 s looks like milliseconds")


def test_a_sidecar_with_repetition_time_twice_is_refused(home):
    (home / "x.json").write_text('{"RepetitionTime": 1.0, "RepetitionTime": 2.0}')
    _refused(home, ["x.tsv"], ["x.json", "'RepetitionTime'"], says="more than once")


def test_a_dataset_description_with_a_duplicated_key_is_refused():
    from dsrecon.errors import DataError
    from dsrecon.io.files import loads_json

    with pytest.raises(DataError, match=r"d\.json: key 'SourceDatasets' appears more than once"):
        loads_json('{"Name": "x", "SourceDatasets": [], "SourceDatasets": ["../raw"]}', "d.json")


def test_blank_lines_between_rows_are_refused_with_the_line_number(home):
    x, names = _table(home / "x.tsv")
    rows = ["\t".join(names)] + ["\t".join(repr(float(v)) for v in row) for row in x]
    rows.insert(101, "")  # a dropped frame: line 102 of the file is blank
    (home / "gaps.tsv").write_text("\n".join(rows) + "\n\n")
    _refused(home, ["gaps.tsv", "--tr", "1"], ["gaps.tsv", "line 102"], says="blank")


def test_a_trailing_blank_line_is_not_a_gap(home):
    text = (home / "x.tsv").read_text()
    (home / "x.tsv").write_text(text + "\n\n")
    r = _main("fit", "x.tsv", "-o", "run", *TINY, cwd=home)
    assert r.code == 0, r.err


@pytest.mark.parametrize("name", ["pipe.tsv", "pipe.nii.gz", "pipe.dat"])
def test_a_named_pipe_as_the_data_file_is_refused_at_once(home, name):
    os.mkfifo(home / name)
    args = [name, "--tr", "1"] + (["--atlas", "a.nii.gz"] if name.endswith(".nii.gz") else [])
    _refused(home, args, name, says="named pipe", fresh=True)  # a blocked reader ends in the harness's timeout


def test_a_named_pipe_as_the_sidecar_is_refused_at_once(home):
    (home / "x.json").unlink()
    os.mkfifo(home / "x.json")
    _refused(home, ["x.tsv"], "x.json", says="named pipe", fresh=True)


def test_dropping_every_column_is_refused(home):
    _refused(home, ["x.tsv", "--drop-column", "x", "--drop-column", "y", "--regressor-column", "z"], "x.tsv",
             says="no region column")


@pytest.mark.parametrize("cmd", [("fit",), ("evaluate", "--generated", "x.tsv", "--reference", "x.tsv"),
                                 ("simulate", "system", "lorenz63", "-o", "s.tsv")], ids=lambda c: c[0])
def test_a_negative_seed_is_refused_with_the_range(home, cmd):
    args = ["x.tsv", "--seed", "-1"] if cmd == ("fit",) else ["--seed", "-1"]
    _refused(home, args, "--seed", says="0 to 4294967295", cmd=cmd)


def test_a_calcium_decay_constant_of_thirty_years_is_refused_with_the_range(home):
    _refused(home, ["x.tsv", "--kernel", "calcium", "--tau-decay", "1e9"], "--tau-decay", says="(0, 60] seconds")


def test_simulate_system_refuses_a_kernel_that_long(home):
    _refused(home, ["lorenz63", "--kernel", "calcium", "--tau-decay", "1e9", "-o", "s.tsv"], "--tau-decay",
             says="(0, 60] seconds", cmd=("simulate", "system"))


@pytest.mark.parametrize("steps", ["9223372036854775809", "1000000000000"])
def test_simulate_model_refuses_a_run_too_large_for_memory_before_allocating(fitted, home, steps):
    shutil.copytree(fitted, home / "fitted")
    _refused(home, ["fitted", "--steps", steps, "-o", "gen.tsv"], f"--steps {steps}", says=["memory", "at most"],
             cmd=("simulate", "model"))
    assert not (home / "gen.tsv").exists()


def test_simulate_system_refuses_a_length_too_large_for_memory(home):
    _refused(home, ["lorenz63", "--length", "1000000000000", "-o", "s.tsv"], "--length 1000000000000",
             says=["memory", "at most"], cmd=("simulate", "system"))


def test_a_truncated_nifti_image_names_the_file(home):
    import nibabel as nib

    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(6, 6, 6, 120)).astype(np.float32), np.eye(4)), home / "full.nii.gz")
    atlas = np.zeros((6, 6, 6), np.int16)
    atlas[:3], atlas[3:] = 1, 2
    nib.save(nib.Nifti1Image(atlas, np.eye(4)), home / "atlas.nii.gz")
    raw = (home / "full.nii.gz").read_bytes()
    (home / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    (home / "full.nii.gz").unlink()
    _refused(home, ["cut.nii.gz", "--atlas", "atlas.nii.gz", "--tr", "1"], "cut.nii.gz", says="truncated or corrupt")


def test_a_truncated_gzip_table_still_names_the_file(home):
    raw = gzip.compress((home / "x.tsv").read_bytes())
    (home / "cut.tsv.gz").write_bytes(raw[: len(raw) // 2])
    _refused(home, ["cut.tsv.gz", "--tr", "1"], "cut.tsv.gz", says="truncated or corrupt")


# ================================================================================================
# 3. Tables are matched by name
# ================================================================================================
def _write(path: Path, x: np.ndarray, names: list[str]) -> None:
    from dsrecon.io.tables import write_table

    write_table(path, x, names)


def test_evaluate_two_tables_with_reordered_columns_scores_zero_with_a_note(home):
    x, _ = _table(home / "x.tsv")
    _write(home / "zxy.tsv", x[:, [2, 0, 1]], ["z", "x", "y"])
    _write(home / "xyz.tsv", x, ["x", "y", "z"])  # written alike, so that only the order differs
    r = _main("evaluate", "--generated", "zxy.tsv", "--reference", "xyz.tsv", "--json", cwd=home)
    assert r.code == 0, r.err
    assert json.loads(r.out)["D_stsp"] == 0.0
    assert r.err_lines[0] == "zxy.tsv: columns reordered by name to the order of xyz.tsv (x, y, z)"
    assert all("reordered" not in ln for ln in r.err_lines[1:])  # (the other notes: no TR for FCD, no --train for yardsticks)


def test_evaluate_two_tables_with_different_columns_names_the_differences(home):
    x, _ = _table(home / "x.tsv")
    _write(home / "xyw.tsv", x, ["x", "y", "w"])
    _refused(home, ["--generated", "xyw.tsv", "--reference", "x.tsv"], ["xyw.tsv", "x.tsv", "z only in x.tsv",
                                                                        "w only in xyw.tsv"], cmd=("evaluate",))


def test_fit_of_two_tables_matches_their_columns_by_name(home):
    from dsrecon.io.load import InputSpec, load_inputs

    x, _ = _table(home / "x.tsv")
    _write(home / "b.tsv", x[:, [1, 2, 0]], ["y", "z", "x"])
    (home / "b.json").write_text('{"RepetitionTime": 1.0}')
    a, b = load_inputs([str(home / "x.tsv"), str(home / "b.tsv")], InputSpec(quiet=True))
    assert b.names == ["x", "y", "z"]
    np.testing.assert_allclose(b.data, a.data, rtol=1e-8)
    r = _main("fit", "x.tsv", "b.tsv", "-o", "run", *TINY[:-1], cwd=home)  # without --quiet: the note is printed
    assert r.code == 0, r.err
    assert "b.tsv: columns reordered by name to the order of x.tsv (x, y, z)" in r.err
    assert _config(home / "run")["names"] == ["x", "y", "z"]


def test_fit_of_two_tables_with_different_columns_names_the_differences(home):
    x, _ = _table(home / "x.tsv")
    _write(home / "b.tsv", x, ["x", "y", "w"])
    (home / "b.json").write_text('{"RepetitionTime": 1.0}')
    _refused(home, ["x.tsv", "b.tsv"], ["b.tsv", "x.tsv", "missing z", "extra w"])
