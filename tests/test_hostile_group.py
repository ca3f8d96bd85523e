"""Hostile input for the group model (issue 16): each case runs the real CLI in a subprocess and
gets exit 1, one line naming the subject or file, no traceback, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hostile_util import TINY, assert_clean_failure, dsrecon, lorenz_table, snapshot, user_files


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A group run and a single run, fitted in-process (fast), plus a table directory of two subjects."""
    from dsrecon import ConvSSM, GroupConvSSM, load_inputs

    d = tmp_path_factory.mktemp("group_hostile")
    tables = d / "tables"
    tables.mkdir()
    for i in (1, 2):
        lorenz_table(tables / f"sub-0{i}_bold.tsv", seed=i)
    recs = {f"0{i}": load_inputs([str(tables / f"sub-0{i}_bold.tsv")]) for i in (1, 2)}
    tiny = dict(epochs=2, batches_per_epoch=2, batch_size=4, hidden_dim=8, sequence_length=60, val_every=1)
    GroupConvSSM(features=1, **tiny).fit(recs, run_dir=d / "grp")
    ConvSSM(**tiny).fit(recs["01"], run_dir=d / "single")
    return {"dir": d, "tables": tables, "group": d / "grp", "single": d / "single"}


def _cohort(base: Path, second) -> Path:
    """A table directory: sub-01 fine, sub-02 written by ``second(path)``."""
    d = base / "cohort"
    user_files(base)
    d.mkdir()
    lorenz_table(d / "sub-01_bold.tsv", seed=1)
    second(d / "sub-02_bold.tsv")
    return d


def test_a_subject_without_a_usable_recording(tmp_path):
    from dsrecon.io.tables import write_table

    d = _cohort(tmp_path, lambda p: write_table(p, np.random.default_rng(0).normal(size=(6, 3)), ["x", "y", "z"],
                                                sidecar={"RepetitionTime": 1.0}))
    before = snapshot(tmp_path)
    r = dsrecon("fit-group", d, *TINY, "-o", tmp_path / "grp", cwd=tmp_path)
    line = assert_clean_failure(r, names=["subject 02", "sub-02_bold.tsv"], before=before, dirs=[tmp_path])
    assert not (tmp_path / "grp").exists(), line


def test_subjects_with_different_region_sets(tmp_path):
    from dsrecon.io.tables import write_table

    d = _cohort(tmp_path, lambda p: write_table(p, np.random.default_rng(0).normal(size=(300, 2)), ["x", "y"],
                                                sidecar={"RepetitionTime": 1.0}))
    before = snapshot(tmp_path)
    r = dsrecon("fit-group", d, *TINY, "-o", tmp_path / "grp", cwd=tmp_path)
    assert_clean_failure(r, names=["sub-02_bold.tsv", "subject 01"], before=before, dirs=[tmp_path], says="regions differ")
    assert not (tmp_path / "grp").exists()


def test_a_subject_that_is_not_in_the_group(runs):
    d = runs["dir"]
    before = snapshot(d)
    r = dsrecon("simulate", "model", runs["group"], "--subject", "07", "--steps", "50", "-o", d / "gen.tsv", cwd=d)
    assert_clean_failure(r, names=[str(runs["group"]), "'07'"], before=before, dirs=[d], says="no subject")
    assert not (d / "gen.tsv").exists()


def test_transfer_from_a_run_that_is_not_a_group_run(runs):
    d = runs["dir"]
    before = snapshot(d)
    r = dsrecon("fit-group", runs["tables"], "--from", runs["single"], *TINY, "-o", d / "grp2", cwd=d)
    assert_clean_failure(r, names=str(runs["single"]), before=before, dirs=[d], says="not a group run")
    assert not (d / "grp2").exists()


def test_a_group_too_large_for_memory_is_refused_before_any_work(runs, tmp_path, monkeypatch):
    """The group fit runs the single fit's memory check over every subject's data and one batch per
    subject (here with the machine's memory shrunk to 1 MB): refused before any model is built,
    naming the subjects, with nothing written."""
    from dsrecon import GroupConvSSM, load_inputs
    from dsrecon.errors import DsreconError
    from dsrecon.training import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1_000_000)
    recs = {f"0{i}": load_inputs([str(runs["tables"] / f"sub-0{i}_bold.tsv")]) for i in (1, 2)}
    with pytest.raises(DsreconError, match=r"subjects 01…02: too large for memory"):
        GroupConvSSM(features=1, epochs=1, batches_per_epoch=1, hidden_dim=8).fit(recs, run_dir=tmp_path / "grp")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["-0.1", "nan"])
def test_a_negative_or_nan_feature_decay_is_refused_before_any_data_is_read(runs, value):
    d = runs["dir"]
    before = snapshot(d)
    r = dsrecon("fit-group", runs["tables"], "--feature-decay", value, *TINY, "-o", d / "grp3", cwd=d)
    assert_clean_failure(r, names="--feature-decay", before=before, dirs=[d], says="≥ 0")
    assert not (d / "grp3").exists()
