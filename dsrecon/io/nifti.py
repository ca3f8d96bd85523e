"""4D NIfTI images → region time series (time, regions), with nilearn's maskers.

Two ways to reduce voxels to a few signals:

* an integer **atlas** (``labels_img``): nilearn's ``NiftiLabelsMasker`` averages the voxels of
  each label after resampling the atlas onto the image grid (nearest neighbour). Labels that
  lose all their voxels in that resampling are reported and dropped.
* a **mask** plus ``pca=K``: nilearn's ``NiftiMasker`` gives (time, voxels); the first K
  principal components (time courses, scaled by their singular values) become the signals.

Cleaning uses nilearn's names and meanings: ``detrend``, ``standardize`` (z-score per signal),
``low_pass`` / ``high_pass`` (Hz, Butterworth), with ``t_r`` in seconds.

TR (seconds per volume), in order: the NIfTI header (pixdim[4] in the units of xyzt_units),
the BIDS JSON sidecar's ``RepetitionTime``, the ``tr`` the caller gives. See :func:`header_tr`
for headers whose time unit is unknown.
"""

from __future__ import annotations

import csv
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError
from dsrecon.io.files import check_input_file

#: Relative tolerance when two TR sources are compared (headers store float32).
TR_RTOL = 1e-3

_TIME_UNIT_SCALE = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def load_image(path: str | os.PathLike, *, ndim: int | None = None, what: str = "image"):
    """Load a NIfTI file with nibabel; DataError (naming the file) if it is not one.

    ndim: required number of dimensions (4 for BOLD runs, 3 for atlases and masks; a 4D atlas
    with a single volume is accepted as 3D).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = Path(path)
    check_input_file(p, f"NIfTI {what}")  # before nibabel opens it: a named pipe must not block
    try:
        img = nib.load(str(p))
        shape = img.shape
    except ImageFileError:
        raise DataError(f"{p}: not a NIfTI file (nibabel cannot read it)") from None
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{p}: unreadable NIfTI {what} ({e.__class__.__name__}: {e})") from None
    if ndim == 3 and len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = img.shape
    if ndim is not None and len(shape) != ndim:
        expect = "a 4D (x, y, z, time) image" if ndim == 4 else "a 3D image"
        raise DataError(f"{p}: {what} has {len(shape)} dimensions {tuple(shape)}; expected {expect}")
    if ndim == 4 and shape[3] < 2:
        raise DataError(f"{p}: {what} has only {shape[3]} volume(s)")
    return img


def header_tr(img) -> tuple[float | None, str]:
    """TR in seconds from a 4D NIfTI header, honouring ``xyzt_units``; returns (tr, note).

    * units sec / msec / usec: pixdim[4] converted to seconds (0 means "not set" → None).
    * units unknown: 0 → None; exactly 1.0 → None (1.0 is what many writers put when they know
      nothing, so it is treated as a placeholder, not a TR); any other value is taken as seconds,
      the NIfTI default.
    * units hz/ppm/rads (spectral data): None.
    """
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        return None, "no time axis"
    value = float(zooms[3])
    try:
        _, t_unit = img.header.get_xyzt_units()
    except Exception:  # pragma: no cover - non-NIfTI headers
        t_unit = "unknown"
    if not np.isfinite(value) or value <= 0:
        return None, f"header pixdim[4] is {value:g}"
    if t_unit in _TIME_UNIT_SCALE:
        return value * _TIME_UNIT_SCALE[t_unit], f"header ({value:g} {t_unit})"
    if t_unit == "unknown":
        if value == 1.0:
            return None, "header pixdim[4] = 1 with unknown units (placeholder, ignored)"
        return value, f"header ({value:g}, units unknown, read as seconds)"
    return None, f"header time units are {t_unit}"


def resolve_tr(path: str | os.PathLike, img, sidecar: dict, given: float | None) -> tuple[float, str]:
    """Pick the TR (seconds) of a 4D image: header, else sidecar RepetitionTime, else ``given``.

    Raises DataError when header and sidecar disagree, when ``given`` contradicts the file, or
    when no source has a TR. Returns (tr, source) where source says where it came from.
    """
    p = Path(path)
    h_tr, note = header_tr(img)
    s_tr = sidecar.get("RepetitionTime")
    if s_tr is not None:
        try:
            s_tr = float(s_tr)
        except (TypeError, ValueError):
            raise DataError(f"{p}: sidecar RepetitionTime {s_tr!r} is not a number") from None
        if not s_tr > 0:
            raise DataError(f"{p}: sidecar RepetitionTime must be positive, got {s_tr}")
        _check_tr(f"{p}: sidecar RepetitionTime {s_tr:g}", s_tr)
    if h_tr is not None:
        _check_tr(f"{p}: NIfTI {note}", h_tr)
    if h_tr is not None and s_tr is not None and not np.isclose(h_tr, s_tr, rtol=TR_RTOL, atol=0):
        raise DataError(f"{p}: TR in the NIfTI header ({h_tr:g} s) disagrees with the sidecar RepetitionTime ({s_tr:g} s)")
    if h_tr is not None:
        tr, source = h_tr, note
    elif s_tr is not None:
        tr, source = s_tr, "sidecar RepetitionTime"
    elif given is not None:
        _check_tr(f"{p}: --tr {float(given):g}", given)
        return float(given), "--tr"
    else:
        raise DataError(f"{p}: no TR: {note}, no RepetitionTime in a JSON sidecar, and no --tr given")
    if given is not None and not np.isclose(float(given), tr, rtol=TR_RTOL, atol=0):
        raise DataError(f"{p}: --tr {float(given):g} s contradicts the file's TR ({tr:g} s from {source}); drop --tr")
    return round(float(tr), 6), source


def _check_tr(where: str, tr: float) -> None:
    from dsrecon.options import tr_problem

    msg = tr_problem(tr)
    if msg:
        raise DataError(f"{where}: {msg}")


def load_atlas(path: str | os.PathLike):
    """Load an integer label image (3D). DataError if its voxels are not whole numbers."""
    p = Path(path)
    img = load_image(p, ndim=3, what="atlas")
    data = voxels(img, p, "atlas")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise DataError(f"{p}: atlas is not a label image (dtype {data.dtype})")
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all() or not np.allclose(data, np.round(data), atol=1e-6):
            raise DataError(f"{p}: atlas is not integer labels (it holds fractional values, e.g. a probabilistic map)")
    if (data < 0).any():
        raise DataError(f"{p}: atlas has negative labels")
    labels = np.unique(np.round(data).astype(np.int64))
    labels = labels[labels != 0]
    if labels.size == 0:
        raise DataError(f"{p}: atlas holds no labels (all voxels are 0)")
    return img, [int(v) for v in labels]


def read_atlas_labels(path: str | os.PathLike) -> dict[int, str]:
    """Read a label table (TSV with ``index`` and ``name`` columns, BIDS dseg.tsv style)."""
    p = Path(path)
    check_input_file(p, "atlas label table")
    try:
        rows = list(csv.DictReader(p.read_text().splitlines(), delimiter="\t"))
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text table") from None
    if not rows or "index" not in rows[0] or "name" not in rows[0]:
        raise DataError(f"{p}: atlas label table needs tab-separated 'index' and 'name' columns")
    out: dict[int, str] = {}
    for i, r in enumerate(rows, start=2):
        try:
            idx = int(float(r["index"]))
        except (TypeError, ValueError):
            raise DataError(f"{p}: line {i}: index {r['index']!r} is not an integer") from None
        name = (r["name"] or "").strip()
        if not name:
            raise DataError(f"{p}: line {i}: empty name for index {idx}")
        out[idx] = name
    return out


def _clean_kwargs(cleaning: dict[str, Any], t_r: float) -> dict[str, Any]:
    from dsrecon.io.cleaning import clean_kwargs

    return clean_kwargs(cleaning, t_r)


def _check_filters(path: Path, cleaning: dict[str, Any], t_r: float) -> None:
    from dsrecon.io.cleaning import check_filters

    check_filters(path, cleaning, t_r)


@contextmanager
def reading(path: str | os.PathLike, what: str = "image"):
    """Turn what nibabel / zlib / gzip raise for a damaged file while its voxels are read (a
    truncated ``.nii.gz`` ends in EOFError, which the CLI would otherwise take for Ctrl-D) into a
    DataError naming the file."""
    import zlib

    try:
        yield
    except (EOFError, zlib.error) as e:
        raise DataError(f"{path}: NIfTI {what} is truncated or corrupt ({_reason(e)}); copy or download it again") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the NIfTI {what}'s voxels ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def voxels(img, path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """The image's voxel array (its stored dtype), read once; DataError naming a damaged file."""
    with reading(path, what):
        return np.asarray(img.dataobj)


def extract_atlas_signals(
    img, img_path: str | os.PathLike, atlas_path: str | os.PathLike, t_r: float,
    cleaning: dict[str, Any] | None = None, label_names: dict[int, str] | None = None,
    mask_path: str | os.PathLike | None = None, confounds: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Mean signal per atlas label: returns (data (time, regions), names, info). ``confounds``
    (time, R): regressed out by the masker's cleaning (``--confounds FILE``).

    info: ``labels`` kept, ``empty_regions`` (names of labels with no voxel on the image grid).
    Names come from ``label_names`` (index → name) when given, else ``label<index>``.
    """
    from nilearn.image.resampling import BoundingBoxError
    from nilearn.maskers import NiftiLabelsMasker

    img_path, atlas_path = Path(img_path), Path(atlas_path)
    cleaning = cleaning or {}
    _check_filters(img_path, cleaning, t_r)
    atlas, labels = load_atlas(atlas_path)
    mask = load_image(mask_path, ndim=3, what="mask") if mask_path is not None else None
    names_of = label_names or {}
    masker = NiftiLabelsMasker(labels_img=atlas, mask_img=mask, resampling_target="data", **_clean_kwargs(cleaning, t_r))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped labels are reported below, in our words
            with reading(img_path):
                data = masker.fit_transform(img, confounds=confounds)
    except BoundingBoxError:
        raise DataError(f"{atlas_path}: atlas does not overlap the image {img_path.name}") from None
    except ValueError as e:
        raise DataError(f"{atlas_path}: cannot apply atlas to {img_path.name}: {e}") from None
    kept = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
    if data.ndim != 2 or data.shape[1] == 0 or not kept:
        raise DataError(f"{atlas_path}: atlas does not overlap the image {img_path.name} (no label has a voxel on its grid)")
    if data.shape[1] != len(kept):  # pragma: no cover - nilearn contract
        raise DataError(f"{atlas_path}: nilearn returned {data.shape[1]} signals for {len(kept)} labels")
    empty = [v for v in labels if v not in set(kept)]

    def name(v: int) -> str:
        return names_of.get(v, f"label{v}")

    info = {"labels": kept, "empty_regions": [name(v) for v in empty], "empty_labels": empty}
    return np.asarray(data, dtype=np.float64), [name(v) for v in kept], info


def extract_pca_signals(
    img, img_path: str | os.PathLike, mask_path: str | os.PathLike, n_components: int, t_r: float,
    cleaning: dict[str, Any] | None = None, confounds: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Voxels inside ``mask`` → first K principal components: (data (time, K), names, info).

    The voxel matrix (time, voxels) is centred per voxel, decomposed by SVD, and the component
    time courses U[:, k]·S[k] returned (in the data's units). Each component's sign is fixed so
    that its largest-magnitude voxel loading is positive. info: ``explained_variance_ratio``.
    """
    from nilearn.image.resampling import BoundingBoxError
    from nilearn.maskers import NiftiMasker

    img_path, mask_path = Path(img_path), Path(mask_path)
    cleaning = cleaning or {}
    _check_filters(img_path, cleaning, t_r)
    mask = load_image(mask_path, ndim=3, what="mask")
    if not voxels(mask, mask_path, "mask").any():
        raise DataError(f"{mask_path}: mask is empty (all voxels are 0)")
    masker = NiftiMasker(mask_img=mask, **_clean_kwargs(cleaning, t_r))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with reading(img_path):
                vox = np.asarray(masker.fit_transform(img, confounds=confounds), dtype=np.float64)
    except BoundingBoxError:
        raise DataError(f"{mask_path}: mask does not overlap the image {img_path.name}") from None
    except ValueError as e:
        raise DataError(f"{mask_path}: cannot apply mask to {img_path.name}: {e}") from None
    T, V = vox.shape
    if V == 0:
        raise DataError(f"{mask_path}: mask does not overlap the image {img_path.name}")
    k = int(n_components)
    if not 1 <= k <= min(T - 1, V):
        raise DataError(f"{img_path}: --pca {k}: need 1 ≤ K ≤ {min(T - 1, V)} ({T} volumes, {V} voxels in the mask)")
    comps, ratio = pca_timecourses(vox, k)
    names = [f"pc{i + 1:02d}" for i in range(k)]
    return comps, names, {"n_voxels": V, "explained_variance_ratio": [float(r) for r in ratio]}


def pca_timecourses(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of x (time, features): (time courses (time, k), explained-variance ratio (k,))."""
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    u, s, vt = u[:, :k], s[:k], vt[:k]
    flip = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    flip[flip == 0] = 1.0
    total = float((xc**2).sum())
    ratio = s**2 / total if total > 0 else np.zeros(k)
    return u * s * flip, ratio
