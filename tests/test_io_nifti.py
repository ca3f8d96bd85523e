"""NIfTI + atlas / mask+PCA loading, TR resolution, and bad NIfTI input.

Real data: nitime's fmri1.nii.gz (10×10×18 voxels, 40 volumes, TR 1.35 s in the header),
loaded from the installed wheel. Label images are built on its grid with nibabel.
"""

from __future__ import annotations

import json
from importlib.resources import files

import nibabel as nib
import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.io.load import InputSpec, load_inputs, load_nifti
from dsrecon.io.nifti import header_tr, pca_timecourses, read_atlas_labels, resolve_tr

FMRI1 = str(files("nitime") / "data" / "fmri1.nii.gz")


def quadrant_labels(shape) -> np.ndarray:
    lab = np.zeros(shape[:3], np.int16)
    lab[:5, :, :9] = 1
    lab[5:, :, :9] = 2
    lab[:5, :, 9:] = 3
    lab[5:, :, 9:] = 4
    return lab


@pytest.fixture(scope="module")
def fmri1():
    return nib.load(FMRI1)


@pytest.fixture
def atlas(tmp_path, fmri1):
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(quadrant_labels(fmri1.shape), fmri1.affine), path)
    return path


def test_atlas_signals_are_label_means_of_the_raw_voxels(fmri1, atlas):
    rec = load_nifti(FMRI1, InputSpec(atlas=str(atlas)))
    raw = np.asarray(fmri1.dataobj, dtype=np.float64)  # (x, y, z, t)
    lab = quadrant_labels(fmri1.shape)
    expected = np.stack([raw[lab == v].mean(axis=0) for v in (1, 2, 3, 4)], axis=1)  # (t, regions)
    assert rec.data.shape == (40, 4)
    np.testing.assert_allclose(rec.data, expected, rtol=1e-5)
    assert rec.names == ["label1", "label2", "label3", "label4"]
    assert rec.mask.all() and rec.regressors is None


def test_tr_comes_from_the_header(atlas):
    rec = load_nifti(FMRI1, InputSpec(atlas=str(atlas)))
    assert rec.tr == pytest.approx(1.35)
    assert rec.provenance["tr_source"].startswith("header")
    assert rec.provenance["modality"] == "bold"


def test_atlas_label_table_names_the_regions(tmp_path, atlas):
    tsv = tmp_path / "atlas.tsv"
    tsv.write_text("index\tname\n1\tLeftFront\n2\tRightFront\n3\tLeftBack\n4\tRightBack\n")
    assert read_atlas_labels(tsv) == {1: "LeftFront", 2: "RightFront", 3: "LeftBack", 4: "RightBack"}
    rec = load_nifti(FMRI1, InputSpec(atlas=str(atlas), atlas_labels=str(tsv)))
    assert rec.names == ["LeftFront", "RightFront", "LeftBack", "RightBack"]


def test_label_table_without_name_column_is_an_error(tmp_path):
    tsv = tmp_path / "atlas.tsv"
    tsv.write_text("index\tlabel\n1\tA\n")
    with pytest.raises(DataError, match="'index' and 'name'"):
        read_atlas_labels(tsv)


def test_region_lost_in_resampling_is_reported_and_dropped(tmp_path, fmri1, capsys):
    # Atlas on a 2× finer grid; label 7 is one fine voxel no coarse voxel centre falls on.
    lab = quadrant_labels(fmri1.shape)
    fine = np.kron(lab, np.ones((2, 2, 2), np.int16))
    fine[1, 1, 1] = 7
    aff = fmri1.affine.copy()
    aff[:3, :3] /= 2
    path = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(fine, aff), path)
    rec = load_nifti(FMRI1, InputSpec(atlas=str(path)))
    assert rec.names == ["label1", "label2", "label3", "label4"]
    assert rec.provenance["empty_regions"] == ["label7"]
    err = capsys.readouterr().err
    assert "warning" in err and "label7" in err and "1 region(s)" in err


def test_cleaning_uses_nilearn_semantics(atlas):
    rec = load_nifti(FMRI1, InputSpec(atlas=str(atlas), detrend=True, standardize=True, high_pass=0.01))
    np.testing.assert_allclose(rec.data.mean(axis=0), 0, atol=1e-8)
    np.testing.assert_allclose(rec.data.std(axis=0, ddof=1), 1, rtol=1e-6)
    assert rec.provenance["cleaning"] == {"detrend": True, "standardize": True, "low_pass": None, "high_pass": 0.01}


def test_low_pass_above_nyquist_is_an_error(atlas):
    with pytest.raises(DataError, match="--low-pass 1 Hz"):
        load_nifti(FMRI1, InputSpec(atlas=str(atlas), low_pass=1.0))


def test_mask_pca_matches_an_independent_svd(tmp_path, fmri1):
    from sklearn.decomposition import PCA

    mask = np.zeros(fmri1.shape[:3], np.uint8)
    mask[2:8, 2:8, 4:14] = 1
    mpath = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, fmri1.affine), mpath)
    rec = load_nifti(FMRI1, InputSpec(mask=str(mpath), pca=3))
    vox = np.asarray(fmri1.dataobj, dtype=np.float64)[mask == 1].T  # (time, voxels)
    ref = PCA(n_components=3, svd_solver="full").fit(vox)
    scores = ref.transform(vox)
    assert rec.names == ["pc01", "pc02", "pc03"]
    for k in range(3):  # equal up to sign
        c = np.corrcoef(rec.data[:, k], scores[:, k])[0, 1]
        assert abs(c) == pytest.approx(1, abs=1e-6)
        np.testing.assert_allclose(np.abs(rec.data[:, k]), np.abs(scores[:, k]), rtol=1e-5, atol=1e-6 * np.abs(scores).max())
    np.testing.assert_allclose(rec.provenance["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-6)


def test_pca_sign_is_fixed_by_the_largest_loading():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    a, _ = pca_timecourses(x, 2)
    b, _ = pca_timecourses(-x, 2)
    np.testing.assert_allclose(a, -b, atol=1e-10)  # -x flips loadings; the rule flips back → scores negate


def test_mask_without_pca_and_pca_with_atlas_are_errors(tmp_path, atlas):
    with pytest.raises(DataError, match="--mask needs --pca"):
        load_nifti(FMRI1, InputSpec(mask=str(atlas)))
    with pytest.raises(DataError, match="--pca works with --mask"):
        load_nifti(FMRI1, InputSpec(atlas=str(atlas), pca=2))
    with pytest.raises(DataError, match="needs --atlas"):
        load_nifti(FMRI1, InputSpec())


# --- TR from headers, sidecars and --tr --------------------------------------------------------

def _img4d(tmp_path, zoom_t: float, unit: str | int, name="run.nii.gz", sidecar: dict | None = None):
    data = np.random.default_rng(1).normal(size=(3, 3, 3, 12)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_zooms((1, 1, 1, zoom_t))
    img.header.set_xyzt_units("mm", unit)
    path = tmp_path / name
    nib.save(img, path)
    if sidecar is not None:
        (tmp_path / name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


@pytest.mark.parametrize(
    "zoom, unit, expected",
    [(2.0, "sec", 2.0), (800.0, "msec", 0.8), (1_500_000.0, "usec", 1.5), (0.0, "sec", None),
     (1.0, "unknown", None), (2.5, "unknown", 2.5)],
)
def test_header_tr_honours_time_units(tmp_path, zoom, unit, expected):
    img = nib.load(_img4d(tmp_path, zoom, unit))
    tr, _ = header_tr(img)
    assert tr == (pytest.approx(expected) if expected is not None else None)


def test_sidecar_tr_is_used_when_the_header_has_none(tmp_path):
    path = _img4d(tmp_path, 1.0, "unknown", sidecar={"RepetitionTime": 0.72})
    tr, src = resolve_tr(path, nib.load(path), {"RepetitionTime": 0.72}, None)
    assert tr == pytest.approx(0.72) and src == "sidecar RepetitionTime"


def test_header_and_sidecar_disagreeing_is_an_error_naming_both(tmp_path):
    path = _img4d(tmp_path, 2.0, "sec", sidecar={"RepetitionTime": 1.5})
    lab = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.int16), np.eye(4)), lab)
    with pytest.raises(DataError) as e:
        load_nifti(path, InputSpec(atlas=str(lab)))
    msg = str(e.value)
    assert "run.nii.gz" in msg and "2 s" in msg and "1.5 s" in msg


def test_given_tr_fills_in_and_must_not_contradict(tmp_path):
    path = _img4d(tmp_path, 0.0, "sec")
    img = nib.load(path)
    assert resolve_tr(path, img, {}, 2.0) == (2.0, "--tr")
    with pytest.raises(DataError, match="no TR"):
        resolve_tr(path, img, {}, None)
    path2 = _img4d(tmp_path, 2.0, "sec", name="b.nii.gz")
    with pytest.raises(DataError, match="contradicts"):
        resolve_tr(path2, nib.load(path2), {}, 3.0)


# --- bad input ---------------------------------------------------------------------------------

def test_3d_image_is_an_error(tmp_path, atlas):
    path = tmp_path / "anat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    with pytest.raises(DataError, match=r"anat\.nii\.gz: image has 3 dimensions"):
        load_nifti(path, InputSpec(atlas=str(atlas)))


def test_non_nifti_file_with_nii_name_is_an_error(tmp_path, atlas):
    path = tmp_path / "fake.nii"
    path.write_text("not an image\n")
    with pytest.raises(DataError, match=r"fake\.nii: not a NIfTI file"):
        load_inputs([str(path)], InputSpec(atlas=str(atlas)))


def test_atlas_outside_the_image_is_an_error(tmp_path, fmri1):
    aff = fmri1.affine.copy()
    aff[:3, 3] += 5000.0
    path = tmp_path / "far.nii.gz"
    nib.save(nib.Nifti1Image(quadrant_labels(fmri1.shape), aff), path)
    with pytest.raises(DataError, match=r"far\.nii\.gz: atlas does not overlap"):
        load_nifti(FMRI1, InputSpec(atlas=str(path)))


def test_probabilistic_atlas_is_an_error(tmp_path, fmri1):
    path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(fmri1.shape[:3]).astype(np.float32), fmri1.affine), path)
    with pytest.raises(DataError, match=r"prob\.nii\.gz: atlas is not integer labels"):
        load_nifti(FMRI1, InputSpec(atlas=str(path)))


def test_float_atlas_with_whole_numbers_is_accepted(tmp_path, fmri1):
    path = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(quadrant_labels(fmri1.shape).astype(np.float32), fmri1.affine), path)
    assert load_nifti(FMRI1, InputSpec(atlas=str(path))).n_regions == 4
