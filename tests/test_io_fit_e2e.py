"""Acceptance: `dsrecon fit` on a NIfTI + atlas, on a fake fMRIPrep tree, and on a suite2p folder.

Real data from installed wheels: nitime's fmri1.nii.gz (TR 1.35 s in the header) and nilearn's
packaged fMRIPrep confounds. Tiny training settings keep each fit to a few seconds.
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from test_io_bids import CONF_JSON, CONF_TSV, SPACE, add_run
from test_io_calcium import make_plane

FMRI1 = str(files("nitime") / "data" / "fmri1.nii.gz")
TINY = ("--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "2", "--hidden-dim", "8", "--val-every", "1",
        "--quiet", "--device", "cpu")


@pytest.fixture
def atlas(tmp_path):
    img = nib.load(FMRI1)
    lab = np.zeros(img.shape[:3], np.int16)
    lab[:5, :, :9], lab[5:, :, :9], lab[:5, :, 9:], lab[5:, :, 9:] = 1, 2, 3, 4
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(lab, img.affine), path)
    return path


def test_fit_nifti_with_atlas_records_header_tr(cli, tmp_path, atlas):
    run = tmp_path / "run"
    r = cli("fit", FMRI1, "--atlas", atlas, "--sequence-length", "24", "--test-fraction", "0.1", *TINY, "-o", run)
    assert r.code == 0, r.err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["tr"] == pytest.approx(1.35)
    assert cfg["provenance"][0]["tr_source"].startswith("header")
    assert cfg["names"] == ["label1", "label2", "label3", "label4"]
    desc = json.loads((run / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"


@pytest.fixture
def calm_tree(tmp_path):
    """Fake fMRIPrep tree; nilearn's motion traces are scaled down so that scrubbing (nilearn's
    default thresholds: FD 0.5 mm, std DVARS 1.5) censors some frames rather than all of them."""
    root = tmp_path / "fmriprep"
    bold = add_run(root, "01", 1)
    conf = bold.parent / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    df = pd.read_csv(CONF_TSV, sep="\t")
    df["framewise_displacement"] *= 0.15
    df["std_dvars"] *= 0.5
    df.to_csv(conf, sep="\t", index=False, na_rep="n/a")
    shutil.copyfile(CONF_JSON, conf.with_suffix(".json"))
    lab = np.zeros((4, 4, 4), np.int16)
    lab[:2], lab[2:] = 1, 2
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "atlas.nii.gz")
    return root, tmp_path / "atlas.nii.gz"


def test_fit_fmriprep_scrubbing_masks_frames_and_records_them(cli, tmp_path, calm_tree):
    root, atlas = calm_tree
    run = tmp_path / "run"
    r = cli("fit", root, "--participant-label", "01", "--task", "rest", "--atlas", atlas, "--confounds", "scrubbing",
            "--sequence-length", "17", "--test-fraction", "0.1", *TINY, "-o", run)
    assert r.code == 0, r.err
    cfg = json.loads((run / "config.json").read_text())
    prov = cfg["provenance"][0]
    assert prov["confounds"] == "scrubbing"
    assert prov["n_volumes"] == 30  # censored frames are kept on the grid
    assert 0 < prov["n_masked_frames"] < 30
    assert cfg["n_masked_frames"] == [prov["n_masked_frames"]]
    assert prov["masked_frames"][:4] == [0, 1, 2, 3]  # non-steady-state volumes and the first outliers


def test_fit_unknown_confound_strategy_is_one_line_exit_1(cli, tmp_path, calm_tree):
    root, atlas = calm_tree
    r = cli("fit", root, "--task", "rest", "--atlas", atlas, "--confounds", "fancy", *TINY, "-o", tmp_path / "run")
    assert r.code == 1
    assert r.err.strip().startswith("error:") and "unknown strategy 'fancy'" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_fit_suite2p_folder_end_to_end(cli, tmp_path):
    plane = tmp_path / "suite2p" / "plane0"
    make_plane(plane, n_frames=300)
    run = tmp_path / "run"
    r = cli("fit", plane, "--tau-decay", "0.5", "--sequence-length", "50", *TINY, "-o", run)
    assert r.code == 0, r.err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kernel_name"] == "calcium"
    assert cfg["tr"] == pytest.approx(0.1)
    assert cfg["provenance"][0]["modality"] == "calcium"
    assert cfg["names"] == ["cell0000", "cell0002", "cell0003"]


@pytest.mark.parametrize("case", ["3d", "not_nifti", "no_F", "empty_query"])
def test_bad_inputs_exit_1_with_one_line(cli, tmp_path, atlas, case):
    if case == "3d":
        path = tmp_path / "anat.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
        args, needle = [path, "--atlas", atlas], "anat.nii.gz: image has 3 dimensions"
    elif case == "not_nifti":
        path = tmp_path / "fake.nii"
        path.write_text("hello")
        args, needle = [path, "--atlas", atlas], "fake.nii: not a NIfTI file"
    elif case == "no_F":
        plane = tmp_path / "plane0"
        make_plane(plane)
        (plane / "F.npy").unlink()
        args, needle = [plane], "plane0: suite2p folder has no F.npy"
    else:
        root = tmp_path / "fp"
        add_run(root, "01", 1)
        args, needle = [root, "--participant-label", "09", "--atlas", atlas], "no *_desc-preproc_bold.nii.gz run matches"
    r = cli("fit", *args, *TINY, "-o", tmp_path / "run")
    assert r.code == 1, r.err
    assert needle in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
