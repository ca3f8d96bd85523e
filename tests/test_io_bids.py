"""fMRIPrep derivatives: run discovery, confound strategies, censored frames kept on the grid.

Real data: nilearn's packaged fMRIPrep confounds (``test-v21_desc-confounds_timeseries.tsv`` and
its JSON, 30 rows), arranged in tmp_path as a fake fMRIPrep tree next to small synthetic 4D
images with 30 volumes.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dsrecon.errors import DataError
from dsrecon.io.bids import CONFOUND_STRATEGIES, confounds_file, discover_runs, load_confounds
from dsrecon.io.load import InputSpec, load_inputs, load_nifti

CONF_DIR = files("nilearn") / "interfaces" / "fmriprep" / "data"
CONF_TSV = CONF_DIR / "test-v21_desc-confounds_timeseries.tsv"
CONF_JSON = CONF_DIR / "test-v21_desc-confounds_timeseries.json"
SPACE = "MNI152NLin2009cAsym"
N_VOL = 30
TR = 2.0


def write_bold(path: Path, n_vol: int = N_VOL, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(n_vol) * TR
    data = 100 + rng.normal(size=(4, 4, 4, n_vol)) + np.sin(2 * np.pi * 0.05 * t)
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_zooms((3.0, 3.0, 3.0, TR))
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def add_run(root: Path, sub: str, run: int, *, ses: str | None = None, space: str = SPACE, n_vol: int = N_VOL) -> Path:
    func = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
    ents = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_task-rest_run-{run}"
    bold = func / f"{ents}_space-{space}_desc-preproc_bold.nii.gz"
    write_bold(bold, n_vol=n_vol, seed=run)
    conf = func / f"{ents}_desc-confounds_timeseries.tsv"
    if not conf.exists():
        shutil.copyfile(CONF_TSV, conf)
        shutil.copyfile(CONF_JSON, conf.with_suffix(".json"))
    return bold


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "derivatives" / "fmriprep"
    add_run(root, "01", 1)
    add_run(root, "01", 2)
    add_run(root, "02", 1)
    (root / "dataset_description.json").write_text('{"Name": "fMRIPrep", "DatasetType": "derivative"}')
    return root


@pytest.fixture
def atlas(tmp_path) -> Path:
    lab = np.zeros((4, 4, 4), np.int16)
    lab[:2] = 1
    lab[2:] = 2
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    return path


def test_discovery_finds_each_subjects_runs(tree):
    runs = discover_runs(tree, ["01"], "rest")
    assert [r.name for r in runs] == [
        f"sub-01_task-rest_run-1_space-{SPACE}_desc-preproc_bold.nii.gz",
        f"sub-01_task-rest_run-2_space-{SPACE}_desc-preproc_bold.nii.gz",
    ]
    assert len(discover_runs(tree, ["sub-01", "02"], "rest")) == 3
    assert len(discover_runs(tree)) == 3


def test_discovery_with_sessions(tmp_path):
    root = tmp_path / "fp"
    add_run(root, "01", 1, ses="a")
    add_run(root, "01", 1, ses="b")
    assert [r.parent.parent.name for r in discover_runs(root, ["01"], "rest", ["b"])] == ["ses-b"]


def test_query_matching_nothing_names_directory_and_query(tree):
    with pytest.raises(DataError) as e:
        discover_runs(tree, ["07"], "rest")
    assert str(tree) in str(e.value) and "participant 07" in str(e.value) and "task rest" in str(e.value)
    with pytest.raises(DataError, match="task motor"):
        load_inputs([str(tree)], InputSpec(task="motor", atlas="unused.nii.gz"))


def test_runs_in_several_spaces_need_a_choice(tree):
    add_run(tree, "01", 1, space="T1w")
    with pytest.raises(DataError, match=r"several spaces \(MNI152NLin2009cAsym, T1w\); choose one with --space"):
        discover_runs(tree, ["01"], "rest")
    assert len(discover_runs(tree, ["01"], "rest", space="T1w")) == 1


def test_several_runs_of_one_subject_give_several_recordings(tree, atlas):
    recs = load_inputs([str(tree)], InputSpec(participant_label=["01"], task="rest", atlas=str(atlas)))
    assert len(recs) == 2
    assert [r.provenance["entities"] for r in recs] == [
        {"sub": "01", "task": "rest", "run": "1"}, {"sub": "01", "task": "rest", "run": "2"}]
    assert all(r.tr == TR and r.n_frames == N_VOL and r.n_regions == 2 for r in recs)


def test_confounds_file_is_found_beside_the_run(tree):
    bold = discover_runs(tree, ["02"])[0]
    assert confounds_file(bold).name == "sub-02_task-rest_run-1_desc-confounds_timeseries.tsv"


def test_simple_strategy_masks_non_steady_state_volumes_and_keeps_them(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    rec = load_nifti(bold, InputSpec(atlas=str(atlas), confounds="simple"))
    raw = pd.read_csv(CONF_TSV, sep="\t")
    nss = raw.filter(like="non_steady_state_outlier").to_numpy().sum(axis=1) > 0
    assert rec.n_frames == N_VOL  # nothing deleted
    np.testing.assert_array_equal(rec.mask, ~nss)
    assert rec.provenance["confounds"] == "simple"
    assert rec.provenance["n_masked_frames"] == int(nss.sum()) == 3
    assert rec.regressors.shape[0] == N_VOL and np.isfinite(rec.regressors).all()
    assert "trans_x" in rec.regressor_names and "csf" in rec.regressor_names


def _scrub_reference(fd_thr: float, dvars_thr: float, min_segment: int) -> np.ndarray:
    """Independent slow path for scrubbing: True where a frame is kept.

    Motion outliers (FD or standardised DVARS above threshold) are censored, then every run of
    kept frames shorter than ``min_segment``; non-steady-state volumes are censored as well.
    """
    raw = pd.read_csv(CONF_TSV, sep="\t")
    bad = (raw["framewise_displacement"].fillna(0).to_numpy() > fd_thr) | (raw["std_dvars"].fillna(0).to_numpy() > dvars_thr)
    keep = ~bad
    t = 0
    while t < len(keep):  # segments of kept frames shorter than min_segment are censored too
        if keep[t]:
            end = t
            while end < len(keep) and keep[end]:
                end += 1
            if end - t < min_segment:
                keep[t:end] = False
            t = end
        else:
            t += 1
    return keep & ~(raw.filter(like="non_steady_state_outlier").to_numpy().sum(axis=1) > 0)


def test_scrubbing_masks_censored_frames_instead_of_dropping_them(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    rec = load_nifti(bold, InputSpec(atlas=str(atlas), confounds="scrubbing", fd_threshold=3.5,
                                          std_dvars_threshold=3.0))
    expected = _scrub_reference(3.5, 3.0, 5)
    assert 0 < (~expected).sum() < N_VOL
    assert rec.n_frames == N_VOL
    np.testing.assert_array_equal(rec.mask, expected)
    assert rec.provenance["n_masked_frames"] == int((~expected).sum())
    assert rec.provenance["masked_frames"] == [int(i) for i in np.flatnonzero(~expected)]


def test_scrubbing_that_censors_everything_is_an_error(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    with pytest.raises(DataError, match=r"censors all 30 frames \(raise --fd-threshold"):
        load_nifti(bold, InputSpec(atlas=str(atlas), confounds="scrubbing"))


def test_compcor_strategy_reads_the_json(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    rec = load_nifti(bold, InputSpec(atlas=str(atlas), confounds="compcor"))
    assert any(n.startswith("a_comp_cor") for n in rec.regressor_names)
    assert rec.provenance["confounds"] == "compcor"


def test_none_strategy_reads_nothing(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    rec = load_nifti(bold, InputSpec(atlas=str(atlas), confounds="none"))
    assert rec.mask.all() and rec.regressors is None


def test_unknown_strategy_lists_the_choices(tree):
    bold = discover_runs(tree, ["01"])[0]
    with pytest.raises(DataError) as e:
        load_confounds(bold, "aroma-ish", N_VOL)
    assert "unknown strategy 'aroma-ish'" in str(e.value)
    assert all(s in str(e.value) for s in CONFOUND_STRATEGIES)


def test_confound_rows_must_match_volumes(tmp_path, atlas):
    root = tmp_path / "fp"
    bold = add_run(root, "03", 1, n_vol=29)
    with pytest.raises(DataError) as e:
        load_nifti(bold, InputSpec(atlas=str(atlas), confounds="simple"))
    msg = str(e.value)
    assert "sub-03_task-rest_run-1_desc-confounds_timeseries.tsv" in msg and "30 rows" in msg and "29 volumes" in msg


def test_missing_confounds_file_is_an_error(tmp_path, atlas):
    bold = tmp_path / "sub-04" / "func" / f"sub-04_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    write_bold(bold)
    with pytest.raises(DataError, match="no confounds file sub-04_task-rest_desc-confounds_timeseries.tsv"):
        load_nifti(bold, InputSpec(atlas=str(atlas), confounds="simple"))


def test_confounds_need_an_fmriprep_file(tmp_path, atlas):
    bold = tmp_path / "plain.nii.gz"
    write_bold(bold)
    with pytest.raises(DataError, match="needs an fMRIPrep"):
        load_nifti(bold, InputSpec(atlas=str(atlas), confounds="simple"))


def test_regressors_are_cleaned_like_the_data(tree, atlas):
    bold = discover_runs(tree, ["01"])[0]
    rec = load_nifti(bold, InputSpec(atlas=str(atlas), confounds="simple", detrend=True))
    t = np.arange(N_VOL)
    for col in rec.regressors.T:  # detrended: no mean, no linear trend left
        assert abs(col.mean()) < 1e-8 * max(1.0, np.abs(col).max())
        assert abs(np.polyfit(t, col, 1)[0]) < 1e-8 * max(1.0, np.abs(col).max())
