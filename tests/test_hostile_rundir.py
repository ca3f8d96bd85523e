"""Hostile cases for the run directory (issue 13, parts 1 and 2): dsrecon never deletes or
overwrites what it did not write, a failed or interrupted command leaves the user's files and
any previous run exactly as they were, and an interrupted fit resumes bit-identically.

Every case runs the real CLI in a subprocess (tests/hostile_util.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hostile_util import TINY, assert_clean_failure, dsrecon, leftovers, lorenz_table, popen, snapshot, user_files

#: a fit long enough to be interrupted (about 10 s), checkpointing every epoch
LONG = ["--epochs", "80", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "5", "--checkpoint-every", "1", "--quiet", "--seed", "3"]
DIVERGE = ["--learning-rate", "1e12"]


@pytest.fixture
def work(tmp_path):
    """A working directory as a user has it: a table, its sidecar, and their own files."""
    lorenz_table(tmp_path / "x.tsv")
    user_files(tmp_path)
    return tmp_path


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------------ output refused
def test_diverging_fit_into_a_directory_with_user_files_is_refused_and_keeps_them(work):
    mine = work / "mine"
    user_files(mine)
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "mine", *DIVERGE, *TINY, cwd=work)
    assert_clean_failure(r, names="mine", says="not a dsrecon run", before=before, dirs=[work])


def test_output_dot_over_the_users_inputs_is_refused(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", ".", *TINY, cwd=work)
    line = assert_clean_failure(r, names=["x.tsv", "notes.txt"], says="not a dsrecon run", before=before, dirs=[work])
    assert str(work) in line or " .:" in line or line.startswith("error: .")


def test_output_that_is_a_regular_file_is_refused(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt", *TINY, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not a directory", before=before, dirs=[work])


def test_read_only_output_location_is_refused(work):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")  # pragma: no cover - CI runs as root: see the next test
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        before = snapshot(work)
        r = dsrecon("fit", "x.tsv", "-o", "ro/run", *TINY, cwd=work)
        assert_clean_failure(r, names="ro", says="not writable", before=before, dirs=[work])
    finally:
        ro.chmod(0o755)


def test_output_under_a_regular_file_is_refused(work):
    """(The read-only case as root: a location that cannot hold a directory.)"""
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt/run", *TINY, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not a directory", before=before, dirs=[work])


def test_diverging_fit_into_an_empty_directory_leaves_it_empty_and_no_staging(work):
    (work / "empty").mkdir()
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "empty", *DIVERGE, *TINY, cwd=work)
    assert_clean_failure(r, names="diverged", before=before, dirs=[work])
    assert (work / "empty").is_dir() and not any((work / "empty").iterdir())


def test_diverging_fit_into_a_new_directory_creates_nothing(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "new/deeper/run", *DIVERGE, *TINY, cwd=work)
    assert_clean_failure(r, names="diverged", before=before, dirs=[work])
    assert not (work / "new").exists()


def test_bad_data_fit_leaves_nothing(work):
    (work / "bad.tsv").write_text("a\tb\tc\n1\t2\tx\n3\t4\t5\n")
    before = snapshot(work)
    r = dsrecon("fit", "bad.tsv", "-o", "run", "--tr", "1", *TINY, cwd=work)
    assert_clean_failure(r, names="bad.tsv", before=before, dirs=[work])
    assert not (work / "run").exists()


def test_existing_run_without_force_or_resume_is_refused(work):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work).code == 0
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work)
    assert_clean_failure(r, names="run", says=["already exists", "--force"], before=before, dirs=[work])


# ------------------------------------------------------------------------------ --force
def test_failed_force_fit_leaves_the_previous_run_loadable_and_unchanged(work):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work).code == 0
    r = dsrecon("simulate", "model", "run", "--steps", "300", "--seed", "1", "-o", "g1.tsv", "--quiet", cwd=work)
    assert r.code == 0, r.err
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *DIVERGE, *TINY, cwd=work)
    assert_clean_failure(r, names="diverged", before=before, dirs=[work])
    r = dsrecon("simulate", "model", "run", "--steps", "300", "--seed", "1", "-o", "g2.tsv", "--quiet", cwd=work)
    assert r.code == 0, r.err
    assert (work / "g1.tsv").read_bytes() == (work / "g2.tsv").read_bytes()


def test_force_with_user_files_in_the_run_is_refused_naming_them(work):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work).code == 0
    (work / "run" / "my_plot.png").write_bytes(b"png")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, cwd=work)
    assert_clean_failure(r, names=["run", "my_plot.png"], says="not part of a dsrecon run", before=before, dirs=[work])


def test_force_replaces_the_previous_run_after_success(work):
    assert dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work).code == 0
    cfg0 = json.loads((work / "run" / "config.json").read_text())
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, "--seed", "5", "--json", cwd=work)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["seed"] == 5 and "torch" in out["versions"]
    cfg = json.loads((work / "run" / "config.json").read_text())
    assert cfg0["seed"] == 0 and cfg["seed"] == 5 and cfg["status"] == "complete"
    assert not leftovers(work)


def test_ensemble_force_over_user_files_is_refused(work):
    (work / "ens").mkdir()
    (work / "ens" / "keep.txt").write_text("mine")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", "--force", *TINY, cwd=work)
    assert_clean_failure(r, names=["ens", "keep.txt"], before=before, dirs=[work])


def test_failed_ensemble_force_leaves_the_previous_ensemble(work):
    assert dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", *TINY, cwd=work).code == 0
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", "--force", *DIVERGE, *TINY, cwd=work)
    assert_clean_failure(r, names="diverged", before=before, dirs=[work])


# ------------------------------------------------------------------------------ the lock
def _wait_for(cond, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.returncode} {proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _ckpt_epoch(work: Path, name: str = "run") -> int:
    st = work / f".{name}.staging" / "checkpoint" / "state.json"
    try:
        return int(json.loads(st.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def test_two_concurrent_fits_into_one_directory(work):
    p1 = popen("fit", "x.tsv", "-o", "run", *LONG, "--epochs", "250", "--patience", "0", cwd=work)  # (the last wins)
    try:
        _wait_for(lambda: (work / ".run.lock").exists() and _ckpt_epoch(work) >= 1, proc=p1)
        before = snapshot(work)
        r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, cwd=work)
        assert r.code == 1 and len(r.err_lines) == 1, r.err
        assert "another dsrecon process" in r.err and f"process {p1.pid}" in r.err and "run" in r.err
        assert snapshot(work).keys() >= {k for k in before if "/.run.staging/" not in k}
    finally:
        out, err = p1.communicate(timeout=300)
    assert p1.returncode == 0, err
    assert (work / "run" / "model.safetensors").exists() and not leftovers(work)


def test_a_stale_lock_is_taken_over_with_a_note(work):
    (work / ".run.lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": 0, "command": "dsrecon fit"}))
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY[:-1], cwd=work)
    assert r.code == 0, r.err
    assert "took over the lock" in r.err and "999999" in r.err
    assert not leftovers(work)


def test_a_stale_staging_directory_is_cleared_with_a_note(work):
    st = work / ".run.staging"
    (st / "checkpoint").mkdir(parents=True)
    (st / "config.json").write_text("{}")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY[:-1], cwd=work)
    assert r.code == 0, r.err
    assert "removed the staging directory" in r.err
    assert not st.exists() and (work / "run" / "model.safetensors").exists()


# ------------------------------------------------------------------------------ interrupts
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, cwd=d)
    assert r.code == 0, r.err
    return d / "run"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_fit_resumes_bit_identically(work, uninterrupted, sig):
    p = popen("fit", "x.tsv", "-o", "run", *LONG, cwd=work)
    _wait_for(lambda: _ckpt_epoch(work) >= 8, proc=p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:
        assert p.returncode == (130 if sig == signal.SIGINT else 143), err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        m = re.search(r"at epoch (\d+); checkpoint at epoch (\d+) kept; resume with: (dsrecon fit .*--resume)$", lines[0])
        assert m, lines[0]
        assert int(m.group(1)) >= int(m.group(2)) >= 8
        assert m.group(3).split()[2:] == ["x.tsv", "-o", "run", *LONG, "--resume"]
    assert not (work / "run").exists()  # nothing at the target until the run is complete
    assert (work / ".run.staging" / "checkpoint" / "state.json").exists()
    r = dsrecon("fit", "x.tsv", "-o", "run", *LONG, "--resume", cwd=work)
    assert r.code == 0, r.err
    assert _same_weights(work / "run", uninterrupted)
    a = (work / "run" / "training_log.tsv").read_text().splitlines()
    b = (uninterrupted / "training_log.tsv").read_text().splitlines()
    strip = lambda rows: [r.split("\t")[:4] + r.split("\t")[5:] for r in rows]  # noqa: E731 (seconds differ)
    assert strip(a) == strip(b)
    assert not leftovers(work)


def _long_model(work: Path) -> None:
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work)
    assert r.code == 0, r.err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_simulate_model_leaves_no_temporary_files(work, sig):
    _long_model(work)
    before = snapshot(work)
    p = popen("simulate", "model", "run", "--steps", "2000000", "-o", "g.tsv", "--quiet", cwd=work)
    _wait_for(lambda: any(".tmp" in q.name for q in work.iterdir()), proc=p)  # signal it while it writes
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode in (130, 143), (p.returncode, err)
    assert "Traceback" not in err
    assert snapshot(work) == before and not leftovers(work)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_evaluate_and_report_leave_no_temporary_files(work, sig):
    _long_model(work)
    before = snapshot(work)
    for args in (["evaluate", "run", "--data", "x.tsv", "--lyapunov-steps", "2000000", "-o", "m.json", "--quiet"],
                 ["report", "run", "--data", "x.tsv", "--lyapunov-steps", "2000000", "-o", "r.html", "--quiet"]):
        p = popen(*args, cwd=work)
        time.sleep(4.0)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        assert p.returncode in (130, 143), (args[0], p.returncode, err)
        assert "Traceback" not in err
        assert snapshot(work) == before and not leftovers(work), args[0]


# ------------------------------------------------------------------------------ cohorts and sweeps
COHORT = ["--epochs", "150", "--patience", "0", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8",
          "--sequence-length", "60", "--val-every", "5", "--checkpoint-every", "1", "--lyapunov-steps", "200",
          "--max-parallel", "2", "--quiet"]


def _tmp_files(d: Path) -> list[str]:
    return [str(p) for p in d.rglob("*") if p.name.endswith(".tmp") or ".replaced-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # (SIGINT takes the same path: both are a KeyboardInterrupt)
def test_interrupted_fit_cohort_stops_its_workers_and_resumes(tmp_path, sig):
    """The driver forwards the interrupt to the pool workers: it exits within seconds, leaves no
    temporary file, keeps each running subject's checkpoint, and a rerun completes every subject."""
    (tmp_path / "data").mkdir()
    for i in range(2):
        lorenz_table(tmp_path / "data" / f"sub-{i + 1:02d}_bold.tsv", seed=i)
    before = snapshot(tmp_path / "data")
    out = tmp_path / "out"
    p = popen("fit-cohort", "data", "-o", "out", *COHORT, cwd=tmp_path)
    _wait_for(lambda: out.exists() and any(_ckpt_epoch(out, f"sub-{i:02d}") >= 2 for i in (1, 2)), proc=p)
    t0 = time.time()
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert time.time() - t0 < 30, "the workers were not stopped"
    assert p.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err
    assert not _tmp_files(tmp_path)
    assert not all((out / f"sub-{i:02d}" / "model.safetensors").exists() for i in (1, 2))  # stopped, not finished
    r = dsrecon("fit-cohort", "data", "-o", "out", *COHORT, "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["n_complete"] == 2
    assert snapshot(tmp_path / "data") == before and not _tmp_files(tmp_path) and not leftovers(out)


def test_interrupted_sweep_leaves_no_temporary_files(work):
    p = popen("sweep", "x.tsv", "-o", "sw", "--grid", "hidden_dim=6,8", "--seeds", "2", "--epochs", "400", "--batches-per-epoch", "2",
              "--batch-size", "4", "--sequence-length", "60", "--val-every", "5", "--quiet", cwd=work)
    _wait_for(lambda: (work / "sw").exists() and any((work / "sw").rglob("state.json")), proc=p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and not _tmp_files(work)
