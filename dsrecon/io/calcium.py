"""Calcium imaging: suite2p ``plane*/`` folders → ΔF/F Recordings.

A suite2p plane folder holds ``F.npy`` (cells, frames) raw fluorescence, ``Fneu.npy`` (cells,
frames) neuropil, ``iscell.npy`` (cells, 2) classifier output and ``ops.npy`` (settings, with the
frame rate ``fs`` in Hz). The traces become

    F_corr = F − neuropil_factor · Fneu        (cells with iscell[:, 0] == 1 only)
    F0     = running 8th percentile of F_corr over a 60 s window (scipy.ndimage.percentile_filter)
    ΔF/F   = (F_corr − F0) / F0

Frame rate, in order: the caller's ``tr`` (seconds per frame, ``--tr``); a JSON sidecar
``F.json`` beside F.npy with ``SamplingFrequency`` (Hz); ``fs`` in ``ops.npy``.

About ops.npy: suite2p saves its settings as a pickled dict, so reading it needs
``allow_pickle=True``, which can execute code from a crafted file. dsrecon opens it only when
neither ``--tr`` nor ``F.json`` gives the rate, only for ``ops.npy``, and keeps only the number
``fs``. The folder is the user's own suite2p output; anyone handed a folder by someone else
should pass ``--tr`` (or write ``F.json``) so ops.npy is never unpickled. Every other array is
loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dsrecon.errors import DataError
from dsrecon.io.recording import Recording
from dsrecon.io.tables import read_sidecar

SUITE2P_FILES = ("F.npy", "Fneu.npy", "iscell.npy", "ops.npy", "stat.npy", "spks.npy")

#: Baseline defaults: a low running percentile over a window of this many seconds.
BASELINE_PERCENTILE = 8.0
BASELINE_WINDOW_S = 60.0


def looks_like_suite2p(path: str | os.PathLike) -> bool:
    """A ``plane*`` folder, or any folder holding a suite2p output file."""
    p = Path(path)
    if not p.is_dir():
        return False
    if p.name.startswith("plane") or p.name == "combined" or any((p / f).exists() for f in SUITE2P_FILES):
        return True
    return any(q.is_dir() and q.name.startswith("plane") and (q / "F.npy").exists() for q in p.iterdir())


def suite2p_planes(path: str | os.PathLike) -> list[Path]:
    """A suite2p root (holding plane0/, plane1/…) → its plane folders; a plane folder → itself."""
    p = Path(path)
    planes = sorted(q for q in p.iterdir() if q.is_dir() and q.name.startswith("plane"))
    return planes if planes and not (p / "F.npy").exists() else [p]


def _load_npy(path: Path, folder: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{folder}: suite2p folder has no {path.name}")
    from dsrecon.io.files import check_input_file

    check_input_file(path, "suite2p array")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable numeric .npy array ({e.__class__.__name__})") from None
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise DataError(f"{path}: array is not numeric (dtype {arr.dtype})")
    return arr


def suite2p_rate(folder: Path, tr: float | None) -> tuple[float, str]:
    """Frame rate in Hz and where it came from (see the module docstring for the order)."""
    from dsrecon.options import tr_problem

    if tr is not None:
        problem = tr_problem(tr)
        if problem:
            raise DataError(f"{folder}: --tr {tr}: {problem}")
        return 1.0 / float(tr), "--tr"
    side = read_sidecar(folder / "F.npy")
    if "SamplingFrequency" in side:
        fs = side["SamplingFrequency"]
        src = "F.json SamplingFrequency"
    else:
        ops_path = folder / "ops.npy"
        if not ops_path.exists():
            raise DataError(f"{folder}: no frame rate: no ops.npy, no F.json with SamplingFrequency, and no --tr")
        try:
            # ops.npy is a pickled dict written by suite2p (see module docstring); only fs is kept.
            ops = np.load(ops_path, allow_pickle=True)
            ops = ops.item() if isinstance(ops, np.ndarray) and ops.dtype == object else ops
            fs = ops["fs"]
        except Exception as e:
            raise DataError(f"{ops_path}: cannot read the frame rate 'fs' ({e.__class__.__name__})") from None
        src = "ops.npy fs"
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise DataError(f"{folder}: frame rate {fs!r} ({src}) is not a number") from None
    if not (np.isfinite(fs) and fs > 0):
        raise DataError(f"{folder}: frame rate must be positive, got {fs} ({src})")
    problem = tr_problem(1.0 / fs)
    if problem:
        raise DataError(f"{folder}: frame rate {fs:g} Hz ({src}), one frame every {1.0 / fs:g} s: {problem}")
    return fs, src


def delta_f_over_f(
    f: np.ndarray, fs: float, percentile: float = BASELINE_PERCENTILE, window_s: float = BASELINE_WINDOW_S,
) -> tuple[np.ndarray, np.ndarray]:
    """ΔF/F of traces f (time, cells) sampled at fs Hz: returns (dff (time, cells), F0 (time, cells)).

    F0 is the running ``percentile`` over a centred window of ``window_s`` seconds (at most the
    whole recording; edges mirrored). ΔF/F is dimensionless.
    """
    from scipy.ndimage import percentile_filter

    f = np.asarray(f, dtype=np.float64)
    T = f.shape[0]
    win = int(max(1, min(round(window_s * fs), T)))
    f0 = percentile_filter(f, percentile, size=(win, 1), mode="reflect")
    return (f - f0) / f0, f0


def load_suite2p(path: str | os.PathLike, *, tr: float | None = None, neuropil_factor: float = 0.7) -> Recording:
    """One suite2p plane folder → Recording of ΔF/F (time, cells), provenance modality "calcium".

    Cells whose baseline F0 is not positive somewhere (neuropil over-subtraction) cannot be
    normalised; they are dropped and listed in provenance["dropped_cells"].
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    planes = suite2p_planes(folder)
    if len(planes) > 1:
        raise DataError(f"{folder}: holds {len(planes)} planes ({', '.join(q.name for q in planes)}); give one plane folder")
    folder = planes[0]
    if not (folder / "F.npy").exists():
        raise DataError(f"{folder}: suite2p folder has no F.npy")
    if not 0 <= neuropil_factor <= 1.5:
        raise DataError(f"--neuropil-factor {neuropil_factor:g}: expected a value in [0, 1.5] (suite2p uses 0.7)")
    F = _load_npy(folder / "F.npy", folder)
    Fneu = _load_npy(folder / "Fneu.npy", folder)
    iscell = _load_npy(folder / "iscell.npy", folder)
    if F.ndim != 2:
        raise DataError(f"{folder / 'F.npy'}: expected a 2-D (cells, frames) array, got shape {F.shape}")
    if Fneu.shape != F.shape:
        raise DataError(f"{folder / 'Fneu.npy'}: shape {Fneu.shape} differs from F.npy {F.shape}")
    flags = iscell[:, 0] if iscell.ndim == 2 else iscell
    if flags.shape[0] != F.shape[0]:
        raise DataError(f"{folder / 'iscell.npy'}: {flags.shape[0]} rows for {F.shape[0]} ROIs in F.npy")
    idx = np.flatnonzero(flags == 1)
    if idx.size == 0:
        raise DataError(f"{folder / 'iscell.npy'}: no ROI is classified as a cell (iscell[:, 0] == 1)")
    if F.shape[1] < 2:
        raise DataError(f"{folder / 'F.npy'}: only {F.shape[1]} frame(s)")
    fs, fs_source = suite2p_rate(folder, tr)
    corr = (F[idx].astype(np.float64) - neuropil_factor * Fneu[idx].astype(np.float64)).T  # (time, cells)
    if not np.isfinite(corr).all():
        raise DataError(f"{folder / 'F.npy'}: non-finite fluorescence values")
    dff, f0 = delta_f_over_f(corr, fs)
    ok = (f0 > 0).all(axis=0)
    dropped = [int(i) for i in idx[~ok]]
    if not ok.any():
        raise DataError(
            f"{folder}: every cell's baseline F − {neuropil_factor:g}·Fneu falls to ≤ 0; lower --neuropil-factor"
        )
    names = [f"cell{int(i):04d}" for i in idx[ok]]
    prov: dict[str, Any] = {
        "modality": "calcium",
        "source": str(folder),
        "format": "suite2p",
        "sampling_frequency": fs,
        "sampling_frequency_source": fs_source,
        "neuropil_factor": float(neuropil_factor),
        "baseline": {"method": "running percentile", "percentile": BASELINE_PERCENTILE, "window_s": BASELINE_WINDOW_S},
        "units": "dF/F",
        "n_rois": int(F.shape[0]),
        "n_cells": int(ok.sum()),
        "dropped_cells": dropped,
    }
    return Recording(data=dff[:, ok], tr=1.0 / fs, names=names, provenance=prov, source=str(folder))
