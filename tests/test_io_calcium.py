"""suite2p plane folders → ΔF/F Recordings (synthetic suite2p output written with np.save)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.io.calcium import delta_f_over_f, load_suite2p
from dsrecon.io.load import InputSpec, load_inputs

FS = 10.0


def make_plane(folder, n_rois=5, n_frames=400, fs=FS, iscell=(1, 0, 1, 1, 0), ops=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(n_frames) / fs
    F = 500 + 50 * np.sin(2 * np.pi * 0.1 * t)[None, :] * (1 + np.arange(n_rois)[:, None]) + rng.normal(0, 5, (n_rois, n_frames))
    Fneu = 200 + rng.normal(0, 5, (n_rois, n_frames))
    np.save(folder / "F.npy", F.astype(np.float32))
    np.save(folder / "Fneu.npy", Fneu.astype(np.float32))
    np.save(folder / "iscell.npy", np.stack([np.asarray(iscell, float), np.linspace(0.9, 0.1, n_rois)], axis=1))
    if ops:
        np.save(folder / "ops.npy", {"fs": fs, "nplanes": 1, "tau": 1.0}, allow_pickle=True)
    return F.astype(np.float32).astype(np.float64), Fneu.astype(np.float32).astype(np.float64)


def slow_dff(trace: np.ndarray, fs: float, q: float = 8.0, window_s: float = 60.0) -> np.ndarray:
    """Reference ΔF/F of one trace: percentile of a mirrored centred window, frame by frame."""
    T = trace.size
    w = int(min(round(window_s * fs), T))
    left = w // 2
    padded = np.concatenate([trace[::-1], trace, trace[::-1]])  # reflect padding ("abc|cba")
    f0 = np.empty(T)
    for t in range(T):
        lo = T + t - left
        f0[t] = np.percentile(padded[lo:lo + w], q, method="nearest")
    return (trace - f0) / f0


def test_suite2p_plane_gives_dff_of_the_cells(tmp_path):
    plane = tmp_path / "suite2p" / "plane0"
    F, Fneu = make_plane(plane)
    rec = load_suite2p(plane)
    assert rec.names == ["cell0000", "cell0002", "cell0003"]
    assert rec.tr == pytest.approx(1 / FS)
    assert rec.provenance["modality"] == "calcium"
    assert rec.provenance["sampling_frequency_source"] == "ops.npy fs"
    corr = F[[0, 2, 3]] - 0.7 * Fneu[[0, 2, 3]]
    for j in range(3):
        np.testing.assert_allclose(rec.data[:, j], slow_dff(corr[j], FS), rtol=1e-6, atol=1e-9)


def test_dff_of_a_constant_baseline_with_transients():
    f = np.full((600, 1), 100.0)
    f[300:310] = 150.0  # one transient: 50 % above baseline
    dff, f0 = delta_f_over_f(f, fs=10.0)
    np.testing.assert_allclose(f0, 100.0)
    np.testing.assert_allclose(dff[300:310, 0], 0.5)
    np.testing.assert_allclose(np.delete(dff[:, 0], range(300, 310)), 0.0)


def test_neuropil_factor_is_applied(tmp_path):
    plane = tmp_path / "plane0"
    F, Fneu = make_plane(plane)
    rec = load_suite2p(plane, neuropil_factor=0.0)
    np.testing.assert_allclose(rec.data[:, 0], slow_dff(F[0], FS), rtol=1e-6, atol=1e-9)
    assert rec.provenance["neuropil_factor"] == 0.0


def test_suite2p_root_with_one_plane_and_load_inputs(tmp_path):
    make_plane(tmp_path / "suite2p" / "plane0")
    recs = load_inputs([str(tmp_path / "suite2p")], InputSpec(neuropil_factor=0.5))
    assert len(recs) == 1 and recs[0].provenance["neuropil_factor"] == 0.5


def test_rate_from_tr_or_sidecar_never_opens_ops(tmp_path):
    plane = tmp_path / "plane0"
    make_plane(plane, ops=False)
    (plane / "ops.npy").write_bytes(b"not a pickle at all")  # would fail if it were opened
    assert load_suite2p(plane, tr=0.05).tr == pytest.approx(0.05)
    (plane / "F.json").write_text(json.dumps({"SamplingFrequency": 30.0}))
    rec = load_suite2p(plane)
    assert rec.tr == pytest.approx(1 / 30) and rec.provenance["sampling_frequency_source"] == "F.json SamplingFrequency"


def test_cells_with_nonpositive_baseline_are_dropped_and_warned(tmp_path, caplog):
    plane = tmp_path / "plane0"
    make_plane(plane)
    F = np.load(plane / "F.npy")
    F[2] = 100.0  # below 0.7·Fneu ≈ 140: baseline negative
    np.save(plane / "F.npy", F)
    recs = load_inputs([str(plane)], InputSpec())
    assert recs[0].names == ["cell0000", "cell0003"]
    assert recs[0].provenance["dropped_cells"] == [2]
    # a library warning goes through the "dsrecon" logger (the CLI prints it as one stderr line)
    assert any(r.name == "dsrecon.io" and r.levelname == "WARNING" and "dropped 1 cell(s)" in r.getMessage()
               for r in caplog.records)


def test_folder_without_F_is_an_error(tmp_path):
    plane = tmp_path / "plane0"
    make_plane(plane)
    (plane / "F.npy").unlink()
    with pytest.raises(DataError, match=r"plane0: suite2p folder has no F\.npy"):
        load_inputs([str(plane)], InputSpec())


def test_shape_mismatch_and_no_cells_are_errors(tmp_path):
    plane = tmp_path / "plane0"
    make_plane(plane)
    np.save(plane / "iscell.npy", np.zeros((5, 2)))
    with pytest.raises(DataError, match="no ROI is classified as a cell"):
        load_suite2p(plane)
    np.save(plane / "Fneu.npy", np.zeros((4, 400)))
    with pytest.raises(DataError, match=r"Fneu\.npy: shape \(4, 400\) differs"):
        load_suite2p(plane)


def test_several_planes_need_a_choice(tmp_path):
    make_plane(tmp_path / "s2p" / "plane0")
    make_plane(tmp_path / "s2p" / "plane1")
    with pytest.raises(DataError, match="holds 2 planes"):
        load_suite2p(tmp_path / "s2p")
