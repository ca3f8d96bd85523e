"""Hostile cases of issue 38 about run directories (part C): every case runs the real CLI in a
subprocess (tests/hostile_util.py) and checks the exit code, the one line on stderr (naming the
file and the key), that the user's files and any previous run are byte-identical, and that nothing
temporary is left. Sections:

1. No command overwrites its own inputs (a run's training data, a table's sidecar, a run's files).
2. ``--force`` checks the old run's whole tree against its manifest (or, for a run from before
   manifests, against the names dsrecon writes).
3. Commits that survive anything: a file appearing during the fit, ``-o nothere/..``, a kill at
   every step of a ``--force`` commit, a parent made immutable during the fit.
4. Run directories behind symbolic links.
5. A damaged run is named, not trusted; a full disk names the file.

Faults inside one command (a kill between two renames, a full disk) are injected with the test-only
hooks `dsrecon.io.runs.inject_commit_faults`, `dsrecon._util.inject_write_faults` and
`dsrecon.training.hooks.inject_faults`, in a subprocess that runs the CLI's ``main`` (`hooked`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hostile_util import ENV, TINY, Proc, dsrecon, leftovers, lorenz_table, popen, snapshot, user_files

FAST_EVAL = ["--no-analysis", "--quiet"]
FAST_REPORT = ["--lyapunov-steps", "200", "--k-max", "1", "--quiet"]
#: a fit long enough to hold its lock while a second command tries (checkpoints every epoch)
LONG = ["--epochs", "400", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "50", "--checkpoint-every", "1", "--quiet"]

#: runs the CLI's main with test-only fault hooks (argv[1]: a JSON object naming them)
_HOOKED = r"""
import contextlib, errno, json, subprocess, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
from dsrecon.cli.main import main
stack = contextlib.ExitStack()
if "commit" in spec:
    from dsrecon.io.runs import inject_commit_faults
    action = None
    if "touch" in spec:
        def action():
            p = Path(spec["touch"]); p.parent.mkdir(parents=True, exist_ok=True); p.write_text("mine\n")
    if "chattr" in spec:
        def action():
            subprocess.run(["chattr", "+i", spec["chattr"]], check=True)
    stack.enter_context(inject_commit_faults(spec["commit"], action))
training = {k: spec[k] for k in ("stop_after_epoch", "stop_after_pretrain_epoch") if k in spec}
if training:
    from dsrecon.training.hooks import inject_faults
    stack.enter_context(inject_faults(**training))
if "enospc" in spec:
    from dsrecon._util import inject_write_faults
    stack.enter_context(inject_write_faults(**{spec["enospc"]: errno.ENOSPC}))
with stack:
    code = main(sys.argv[2:])
sys.exit(code)
"""


def hooked(spec: dict, *args, cwd: Path) -> Proc:
    """`dsrecon ARGS` with the fault hooks of ``spec`` in place."""
    e = {**os.environ, **ENV}
    e.pop("DSRECON_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", _HOOKED, json.dumps(spec), *[str(a) for a in args]], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return Proc(p.returncode, p.stdout, p.stderr)


def _contract(r: Proc, *, names, before, dirs, says=None, tolerate=frozenset()) -> str:
    assert r.code == 1, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    lines = r.err_lines
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.err}"
    for n in [names] if isinstance(names, str) else names:
        assert n in lines[0], f"the message does not name {n!r}: {lines[0]}"
    for s in [] if says is None else [says] if isinstance(says, str) else says:
        assert s.lower() in lines[0].lower(), f"the message does not say {s!r}: {lines[0]}"
    after = snapshot(*dirs)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"user files changed or removed: {changed}"
    left = [p for p in leftovers(*dirs) if not any(k == p or k.startswith(p + os.sep) for k in tolerate)]
    assert not left, f"temporary files left behind: {left}"
    return lines[0]


def _seed_of(run: Path) -> int:
    return json.loads((run / "config.json").read_text())["seed"]


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """One tiny fit (x.tsv → run, seed 0) that each test copies."""
    d = tmp_path_factory.mktemp("runs_fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d


@pytest.fixture
def work(tmp_path, fitted) -> Path:
    """A user's directory: the table and its sidecar, the fitted run (fitted from work/x.tsv, so that
    its config.json records this x.tsv), their own files."""
    for name in ("x.tsv", "x.json"):
        shutil.copy2(fitted / name, tmp_path / name)
    shutil.copytree(fitted / "run", tmp_path / "run", symlinks=True)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["input_paths"] = [os.path.realpath(tmp_path / "x.tsv")]
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg, indent=2))
    from dsrecon.io.runs import write_manifest

    write_manifest(tmp_path / "run")  # (the edit above is the test's, not the user's)
    user_files(tmp_path)
    return tmp_path


def _copy_table(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)
    shutil.copy2(src.with_suffix(".json"), dst.with_suffix(".json"))


# ================================================================================================
# 1. No command overwrites its own inputs
# ================================================================================================
def test_simulate_model_onto_the_runs_own_training_data(work):
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "x.tsv", "--quiet", cwd=work)
    line = _contract(r, names=["x.tsv", "run"], before=before, dirs=[work], says="training data")
    assert "never overwrites its inputs" in line


def test_simulate_model_onto_its_from_recording(work):
    _copy_table(work / "x.tsv", work / "y.tsv")
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "20", "--from", "y.tsv", "-o", "y.tsv", "--quiet", cwd=work)
    _contract(r, names="y.tsv", before=before, dirs=[work], says="--from")


def test_evaluate_metrics_onto_the_test_datas_sidecar(work):
    _copy_table(work / "x.tsv", work / "test.tsv")
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "test.tsv", "-o", "test.json", *FAST_EVAL, cwd=work)
    _contract(r, names=["test.json", "test.tsv"], before=before, dirs=[work], says="sidecar")


def test_evaluate_metrics_onto_the_training_datas_sidecar(work):
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "-o", "x.json", *FAST_EVAL, cwd=work)
    _contract(r, names=["x.json", "x.tsv"], before=before, dirs=[work], says="sidecar")


def test_evaluate_tables_metrics_onto_the_references_sidecar(work):
    _copy_table(work / "x.tsv", work / "ref.tsv")
    before = snapshot(work)
    r = dsrecon("evaluate", "-g", "x.tsv", "-r", "ref.tsv", "-o", "ref.json", "--quiet", cwd=work)
    _contract(r, names=["ref.json", "ref.tsv"], before=before, dirs=[work], says="--reference")


def test_simulate_model_onto_a_file_of_the_run(work):
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "run/training_log.tsv", "--quiet", cwd=work)
    _contract(r, names=["run/training_log.tsv", "run"], before=before, dirs=[work], says="a file of the run")


def test_report_onto_a_file_of_the_run(work):
    before = snapshot(work)
    r = dsrecon("report", "run", "-o", "run/config.json", *FAST_REPORT, cwd=work)
    _contract(r, names=["run/config.json"], before=before, dirs=[work], says="a file of the run")


def test_simulate_system_onto_its_events_file(work):
    (work / "ev.tsv").write_text("onset\tduration\ttrial_type\n10\t5\ttask\n")
    before = snapshot(work)
    r = dsrecon("simulate", "system", "van_der_pol", "--length", "100", "--events", "ev.tsv", "-o", "ev.tsv", "--quiet", cwd=work)
    _contract(r, names="ev.tsv", before=before, dirs=[work], says="--events")


def test_fit_force_whose_input_lies_in_the_run_it_replaces(work):
    before = snapshot(work)
    teacher = next((work / "run" / "teacher").glob("*_desc-teacher_timeseries.tsv")).relative_to(work)
    r = dsrecon("fit", str(teacher), "--tr", "1", "-o", "run", "--force", *TINY, cwd=work)
    _contract(r, names=[str(teacher), "run"], before=before, dirs=[work], says="inside")


def test_fit_group_onto_a_directory_holding_its_input(work):
    before = snapshot(work)
    teacher = next((work / "run" / "teacher").glob("*_desc-teacher_timeseries.tsv")).relative_to(work)
    r = dsrecon("fit-group", "x.tsv", str(teacher), "--subject-from-filename", "-o", "run", "--force", *TINY, cwd=work)
    _contract(r, names=[str(teacher), "run"], before=before, dirs=[work], says="inside")


def test_fit_cohort_output_inside_its_cohort_directory(work):
    (work / "cohort").mkdir()
    _copy_table(work / "x.tsv", work / "cohort" / "sub-01_bold.tsv")
    before = snapshot(work)
    r = dsrecon("fit-cohort", "cohort", "-o", "cohort/out", *TINY, cwd=work)
    _contract(r, names=["cohort/out", "cohort"], before=before, dirs=[work], says="inside")


def test_fit_cohort_over_a_users_summary_table(work):
    (work / "cohort").mkdir()
    _copy_table(work / "x.tsv", work / "cohort" / "sub-01_bold.tsv")
    (work / "out").mkdir()
    (work / "out" / "summary.tsv").write_text("my\tsummary\n")
    before = snapshot(work)
    r = dsrecon("fit-cohort", "cohort", "-o", "out", *TINY, cwd=work)
    _contract(r, names="out/summary.tsv", before=before, dirs=[work], says="not written by dsrecon")


def test_sweep_whose_results_table_is_its_data(work):
    _copy_table(work / "x.tsv", work / "results.tsv")
    before = snapshot(work)
    r = dsrecon("sweep", "results.tsv", "-o", ".", *TINY, cwd=work)
    _contract(r, names="results.tsv", before=before, dirs=[work], says="the data of the sweep")


def test_demo_over_a_users_metrics_file(work):
    (work / "demo").mkdir()
    (work / "demo" / "metrics.json").write_text('{"mine": 1}\n')
    before = snapshot(work)
    r = dsrecon("demo", "-o", "demo", "--epochs", "2", "--quiet", cwd=work)
    _contract(r, names="demo/metrics.json", before=before, dirs=[work], says="not written by dsrecon")


def test_report_rerun_replaces_its_own_report_in_the_run(work):
    """RUN/report.html, report's default output, is the one file of the run it may replace."""
    earlier = '<html><head><meta name="generator" content="dsrecon 0.1.0"></head></html>\n'
    (work / "run" / "report.html").write_text(earlier)
    r = dsrecon("report", "run", *FAST_REPORT, cwd=work)
    assert r.code == 0, r.err
    assert (work / "run" / "report.html").read_text() != earlier


# ================================================================================================
# 2. --force checks the whole tree
# ================================================================================================
@pytest.mark.parametrize("mine", ["figures/my_figure.png", "teacher/my_notes.txt", "checkpoint/keep.bin", "figures"],
                         ids=["figures", "teacher", "checkpoint", "empty-dir"])
def test_force_refuses_a_users_file_in_a_subfolder_of_the_run(work, mine):
    p = work / "run" / mine
    if mine == "figures":
        p.mkdir()
    else:
        p.parent.mkdir(exist_ok=True)
        p.write_text("mine\n")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, cwd=work)
    _contract(r, names=f"run/{mine}", before=before, dirs=[work], says="not part of a dsrecon run")
    assert p.exists()


def test_force_refuses_a_run_file_the_user_changed(work):
    with open(work / "run" / "training_log.tsv", "a") as f:
        f.write("# my comment\n")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, cwd=work)
    _contract(r, names="run/training_log.tsv", before=before, dirs=[work], says="changed since dsrecon wrote it")


def test_force_on_a_run_from_before_manifests_checks_the_names_recursively(work):
    (work / "run" / "manifest.json").unlink()
    (work / "run" / "teacher" / "mine.txt").write_text("mine\n")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", *TINY, cwd=work)
    _contract(r, names="run/teacher/mine.txt", before=before, dirs=[work], says="not part of a dsrecon run")


def test_force_replaces_a_run_from_before_manifests(work):
    (work / "run" / "manifest.json").unlink()
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", "--seed", "5", *TINY, cwd=work)
    assert r.code == 0, r.err
    assert _seed_of(work / "run") == 5 and (work / "run" / "manifest.json").is_file()
    assert not leftovers(work)


def test_the_names_of_runs_from_before_manifests_cover_what_a_fit_writes(fitted, ensemble):
    """The fallback check (no manifest) knows every file a fit and an ensemble write now: a new
    file in a run must be added to io/run_dir.py's names, or --force refuses old runs holding it."""
    from dsrecon.io.run_dir import MANIFEST_FILE, _walk, foreign_files

    for run in (fitted / "run", ensemble / "ens"):
        assert (run / MANIFEST_FILE).is_file()
        copy = run.parent / f"{run.name}-nomanifest"
        shutil.copytree(run, copy, symlinks=True)
        (copy / MANIFEST_FILE).unlink()
        assert foreign_files(copy) == [], [rel for rel, _ in _walk(copy)]
        shutil.rmtree(copy)


def test_force_accepts_the_report_written_into_the_run(work):
    (work / "run" / "report.html").write_text('<html><head><meta name="generator" content="dsrecon 0.1.0"></head></html>\n')
    r = dsrecon("fit", "x.tsv", "-o", "run", "--force", "--seed", "5", *TINY, cwd=work)
    assert r.code == 0, r.err
    assert _seed_of(work / "run") == 5 and not (work / "run" / "report.html").exists()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runs_ensemble")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d


@pytest.fixture
def ens_work(tmp_path, ensemble) -> Path:
    for name in ("x.tsv", "x.json"):
        shutil.copy2(ensemble / name, tmp_path / name)
    shutil.copytree(ensemble / "ens", tmp_path / "ens", symlinks=True)
    user_files(tmp_path)
    return tmp_path


def test_ensemble_force_refuses_a_users_file_in_a_member(ens_work):
    (ens_work / "ens" / "member-01" / "my_plot.png").write_text("mine\n")
    before = snapshot(ens_work)
    r = dsrecon("fit", "x.tsv", "-o", "ens", "--ensemble", "2", "--force", *TINY, cwd=ens_work)
    _contract(r, names="ens/member-01/my_plot.png", before=before, dirs=[ens_work], says="not part of a dsrecon run")


def test_simulating_an_ensemble_member_with_nan_weights_is_refused(ens_work):
    _edit_weights(ens_work / "ens" / "member-01", lambda w: w["dynamics.W1"].fill_(float("nan")))
    before = snapshot(ens_work)
    r = dsrecon("simulate", "model", "ens/member-01", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=ens_work)
    _contract(r, names=["ens/member-01/model.safetensors", "dynamics.W1"], before=before, dirs=[ens_work], says="NaN")


# ================================================================================================
# 3. Commits that survive anything
# ================================================================================================
def test_a_file_appearing_during_the_fit_keeps_the_new_run_where_the_message_says(work):
    before = snapshot(work)
    r = hooked({"commit": "before_commit", "touch": str(work / "run" / "figures" / "late.png")},
               "fit", "x.tsv", "-o", "run", "--force", "--seed", "7", *TINY, cwd=work)
    assert r.code == 1 and len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    staged = work / ".run.staging"
    assert "run/figures/late.png" in line and str(staged) in line and "--resume" in line, line
    assert staged.is_dir() and (staged / "model.safetensors").is_file() and _seed_of(staged) == 7
    late = work / "run" / "figures" / "late.png"
    assert {k: v for k, v in snapshot(work).items() if k in before} == before  # the previous run as it was
    # the user moves their file away; --resume puts the finished run in place without training again
    shutil.move(str(late), str(work / "late.png"))
    (work / "run" / "figures").rmdir()
    kept = work / "kept"
    shutil.copytree(staged, kept)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", "--seed", "7", *TINY, cwd=work)
    assert r.code == 0, r.err
    assert _seed_of(work / "run") == 7 and _same_weights(work / "run", kept)
    assert not leftovers(work)


def test_output_that_resolves_to_the_users_directory_is_refused_before_training(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "nothere/..", *TINY, cwd=work)
    _contract(r, names="nothere/..", before=before, dirs=[work], says="not empty and not a dsrecon run")
    assert not (work / "nothere").exists()


@pytest.mark.parametrize("step", ["journal_written", "old_moved", "new_in_place", "old_removed"])
def test_a_kill_during_a_force_commit_leaves_a_complete_run(work, step):
    user = {k: v for k, v in snapshot(work).items() if "/run/" not in k and not k.endswith("/run")}
    r = hooked({"commit": step}, "fit", "x.tsv", "-o", "run", "--force", "--seed", "9", *TINY, cwd=work)
    assert r.code == -signal.SIGKILL, (r.code, r.err)
    # the next command on the target finds the new run, completing the commit with one note
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=work)
    assert r.code == 0, r.err
    notes = [ln for ln in r.err_lines if ln.startswith("note:")]
    assert len(notes) == 1 and "run" in notes[0], r.err
    assert _seed_of(work / "run") == 9
    assert not leftovers(work), leftovers(work)
    after = snapshot(work)
    assert all(after.get(k) == v for k, v in user.items())


def test_a_kill_before_the_commit_keeps_the_previous_run_and_resume_puts_the_new_one_in_place(work):
    old = snapshot(work / "run")
    r = hooked({"commit": "before_commit"}, "fit", "x.tsv", "-o", "run", "--force", "--seed", "9", *TINY, cwd=work)
    assert r.code == -signal.SIGKILL, (r.code, r.err)
    assert snapshot(work / "run") == old  # the previous run, complete and untouched
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=work)
    assert r.code == 0, r.err
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", "--seed", "9", *TINY, cwd=work)
    assert r.code == 0, r.err
    assert _seed_of(work / "run") == 9 and not leftovers(work)


def test_a_fit_after_a_kill_during_a_commit_completes_it_first(work):
    r = hooked({"commit": "old_moved"}, "fit", "x.tsv", "-o", "run", "--force", "--seed", "9", *TINY, cwd=work)
    assert r.code == -signal.SIGKILL
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=work)  # no --force: the (new) run is there
    assert r.code == 1 and r.err_lines == ["error: run: run directory already exists; use --resume to continue it or --force "
                                           "to replace it"], r.err
    assert _seed_of(work / "run") == 9 and not leftovers(work)


def test_a_run_moved_aside_by_an_older_version_is_restored(work):
    """Before the journal, a kill between the renames left PARENT/.NAME.replaced-PID and no run."""
    os.replace(work / "run", work / ".run.replaced-4242")
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=work)
    assert r.code == 0, r.err
    assert any("restored the previous run" in ln for ln in r.err_lines), r.err
    assert (work / "run" / "model.safetensors").is_file() and not leftovers(work)


def _chattr(d: Path, on: bool) -> bool:
    try:
        return subprocess.run(["chattr", "+i" if on else "-i", str(d)], capture_output=True).returncode == 0
    except FileNotFoundError:  # pragma: no cover - no chattr
        return False


def test_a_parent_made_immutable_during_the_fit_keeps_the_new_run_for_resume(tmp_path, fitted):
    if os.geteuid() != 0:  # pragma: no cover - only root can set the immutable attribute
        pytest.skip("making a directory immutable (chattr +i) needs root")
    work = tmp_path / "work"
    work.mkdir()
    _copy_table(fitted / "x.tsv", work / "x.tsv")
    user_files(work)
    if not _chattr(work, True):  # pragma: no cover - a file system without the attribute
        pytest.skip("this file system has no immutable attribute")
    _chattr(work, False)
    before = snapshot(work)
    try:
        r = hooked({"commit": "before_commit", "chattr": str(work)}, "fit", "x.tsv", "-o", "run", *TINY, cwd=work)
    finally:
        _chattr(work, False)
    assert r.code == 1 and len(r.err_lines) == 1 and "Traceback" not in r.err, r.err
    line = r.err_lines[0]
    assert "run" in line and "Operation not permitted" in line and ".run.staging" in line and "--resume" in line, line
    assert snapshot(work) == {**before, **{k: v for k, v in snapshot(work).items() if "/.run." in k}}
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", *TINY, cwd=work)
    assert r.code == 0, r.err
    assert (work / "run" / "model.safetensors").is_file() and not leftovers(work)
    assert all(snapshot(work).get(k) == v for k, v in before.items())


# ================================================================================================
# 4. Run directories behind symbolic links
# ================================================================================================
@pytest.mark.parametrize("kind", ["empty", "dangling"])
def test_fit_into_a_link_to_scratch(tmp_path, fitted, kind):
    _copy_table(fitted / "x.tsv", tmp_path / "x.tsv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if kind == "empty":
        (scratch / "run").mkdir()
    (tmp_path / "run").symlink_to(scratch / "run")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=tmp_path)
    assert r.code == 0, r.err
    assert (tmp_path / "run").is_symlink() and (scratch / "run" / "model.safetensors").is_file()
    if kind == "empty":  # --force through the link replaces the run at its target
        r = dsrecon("fit", "x.tsv", "-o", "run", "--force", "--seed", "4", *TINY, cwd=tmp_path)
        assert r.code == 0, r.err
        assert (tmp_path / "run").is_symlink() and _seed_of(scratch / "run") == 4
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=tmp_path)
    assert r.code == 0, r.err
    assert not leftovers(tmp_path) and not leftovers(scratch / "run")


def test_an_interrupted_fit_behind_a_link_resumes(tmp_path, fitted):
    _copy_table(fitted / "x.tsv", tmp_path / "x.tsv")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "scratch" / "run")
    r = hooked({"stop_after_epoch": 2}, "fit", "x.tsv", "-o", "run", *TINY, cwd=tmp_path)
    assert r.code == 130, r.err
    assert (tmp_path / "scratch" / ".run.staging" / "checkpoint" / "state.json").is_file()
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", *TINY, cwd=tmp_path)
    assert r.code == 0, r.err
    assert (tmp_path / "run").is_symlink() and (tmp_path / "scratch" / "run" / "model.safetensors").is_file()
    assert not leftovers(tmp_path / "scratch" / "run")


def test_two_paths_to_one_run_share_its_lock(tmp_path, fitted):
    _copy_table(fitted / "x.tsv", tmp_path / "x.tsv")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "scratch" / "run")
    first = popen("fit", "x.tsv", "-o", "run", *LONG, cwd=tmp_path)
    try:
        lock = tmp_path / "scratch" / ".run.lock"
        for _ in range(600):
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.1)
        assert lock.exists(), "the first fit never took its lock"
        r = dsrecon("fit", "x.tsv", "-o", "scratch/run", *TINY, cwd=tmp_path)
        assert r.code == 1 and len(r.err_lines) == 1, r.err
        assert "scratch/run" in r.err_lines[0] and f"process {first.pid}" in r.err_lines[0], r.err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143


def test_a_link_loop_as_output_is_refused(work):
    (work / "loop").symlink_to("loop")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "loop", *TINY, cwd=work)
    _contract(r, names="loop", before=before, dirs=[work], says="symbolic link")


# ================================================================================================
# 5. A damaged run is named, not trusted; a full disk names the file
# ================================================================================================
def _edit_config(run: Path, edit) -> None:
    p = run / "config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg))  # (NaN written as the JSON extension NaN, as a careless editor would)


def _edit_weights(run: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    w = load_file(str(run / "model.safetensors"))
    edit(w)
    save_file(w, str(run / "model.safetensors"))


def _set_norm(part, value):
    def edit(c):
        c["normalisation"][part][0] = value
    return edit


DAMAGE = {
    # name: (edit of the run, file named, key named)
    "int64-weights": (lambda run: _edit_weights(run, lambda w: w.__setitem__("dynamics.W1", w["dynamics.W1"].long())),
                      "model.safetensors", "dynamics.W1"),
    "nan-weights": (lambda run: _edit_weights(run, lambda w: w["dynamics.A"].fill_(float("nan"))), "model.safetensors", "dynamics.A"),
    "huge-latent-dim": (lambda run: _edit_config(run, lambda c: c.update(latent_dim=10**6)), "config.json", "latent_dim"),
    "string-mean": (lambda run: _edit_config(run, _set_norm("mean", "0.5")), "config.json", "normalisation.mean"),
    "tr-zero": (lambda run: _edit_config(run, lambda c: c.update(tr=0)), "config.json", "'tr'"),
    "std-zero": (lambda run: _edit_config(run, _set_norm("std", 0.0)), "config.json", "normalisation.std"),
    "std-nan": (lambda run: _edit_config(run, _set_norm("std", float("nan"))), "config.json", "normalisation.std"),
    "duplicated-names": (lambda run: _edit_config(run, lambda c: c.update(names=[c["names"][0]] * len(c["names"]))), "config.json",
                         "names"),
    "status-training": (lambda run: _edit_config(run, lambda c: c.update(status="training")), "config.json", "status"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_simulating_a_damaged_run_is_refused(work, case):
    edit, name, key = DAMAGE[case]
    edit(work / "run")
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=work)
    _contract(r, names=[f"run/{name}", key], before=before, dirs=[work])


@pytest.mark.parametrize("case", ["nan-weights", "std-zero", "status-training", "duplicated-names", "tr-zero"])
def test_evaluating_a_damaged_run_is_refused(work, case):
    edit, name, key = DAMAGE[case]
    edit(work / "run")
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    _contract(r, names=[f"run/{name}", key], before=before, dirs=[work])


def test_reporting_a_run_whose_fit_did_not_finish_is_refused(work):
    _edit_config(work / "run", lambda c: c.update(status="training"))
    before = snapshot(work)
    r = dsrecon("report", "run", *FAST_REPORT, cwd=work)
    _contract(r, names=["run/config.json", "status"], before=before, dirs=[work])


@pytest.fixture
def interrupted(tmp_path, fitted) -> Path:
    """A fit stopped after epoch 2 (as if killed): .run.staging holds its checkpoint."""
    _copy_table(fitted / "x.tsv", tmp_path / "x.tsv")
    user_files(tmp_path)
    r = hooked({"stop_after_epoch": 2}, "fit", "x.tsv", "-o", "run", *TINY, cwd=tmp_path)
    assert r.code == 130, r.err
    assert (tmp_path / ".run.staging" / "checkpoint" / "state.json").is_file()
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "deleted", "hidden_dim"])
def test_resume_after_the_staged_config_was_damaged(interrupted, damage):
    cfg = interrupted / ".run.staging" / "config.json"
    args = list(TINY)
    if damage == "truncated":
        cfg.write_text(cfg.read_text()[:100])
        names, says = [".run.staging/config.json"], "damaged"
    elif damage == "deleted":
        cfg.unlink()
        names, says = [".run.staging/config.json"], "missing"
    else:  # edited to agree with the new options, not with the checkpoint
        c = json.loads(cfg.read_text())
        c["hidden_dim"] = 9
        cfg.write_text(json.dumps(c))
        args[args.index("--hidden-dim") + 1] = "9"
        names, says = [".run.staging/checkpoint", "flat"], "shape"
    before = snapshot(interrupted)
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", *args, cwd=interrupted)
    _contract(r, names=names, before=before, dirs=[interrupted], says=says, tolerate=set(before))


def test_a_full_disk_during_a_fit_names_the_file(work):
    shutil.rmtree(work / "run")
    before = snapshot(work)
    r = hooked({"enospc": "model.safetensors"}, "fit", "x.tsv", "-o", "run", *TINY, cwd=work)
    _contract(r, names="model.safetensors", before=before, dirs=[work], says="No space left on device")
    assert not (work / "run").exists()


def test_a_full_disk_during_a_simulation_names_the_file(work):
    before = snapshot(work)
    r = hooked({"enospc": "gen_latent.tsv"}, "simulate", "model", "run", "--steps", "20", "-o", "gen.tsv", "--quiet", cwd=work)
    _contract(r, names="gen_latent.tsv", before=before, dirs=[work], says="No space left on device")
    assert not (work / "gen.tsv").exists()


# ================================================================================================
# 6. Pretraining checkpoints like the rest of the fit
# ================================================================================================
PRETRAINED = [*TINY, "--pretrain-epochs", "4"]


def test_a_fit_interrupted_while_pretraining_resumes_bit_identically(tmp_path, fitted):
    _copy_table(fitted / "x.tsv", tmp_path / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "full", *PRETRAINED, cwd=tmp_path)
    assert r.code == 0, r.err
    r = hooked({"stop_after_pretrain_epoch": 2}, "fit", "x.tsv", "-o", "run", *PRETRAINED, cwd=tmp_path)
    assert r.code == 130, r.err
    st = tmp_path / ".run.staging" / "checkpoint"
    assert json.loads((st / "state.json").read_text())["pretrained"] is False
    assert json.loads((st / "pretrain" / "checkpoint" / "state.json").read_text())["epoch"] == 2
    r = dsrecon("fit", "x.tsv", "-o", "run", "--resume", *PRETRAINED, cwd=tmp_path)
    assert r.code == 0, r.err
    assert _same_weights(tmp_path / "run", tmp_path / "full")
    logs = [pd.read_csv(tmp_path / d / "training_log.tsv", sep="\t").drop(columns="seconds") for d in ("run", "full")]
    pd.testing.assert_frame_equal(*logs)  # every epoch's loss, α, lr and validation (not its wall time)
    assert not (tmp_path / "run" / "checkpoint" / "pretrain").exists() and not leftovers(tmp_path)


def test_a_staging_directory_is_removed_by_renaming_it_first(tmp_path, monkeypatch):
    """A fit killed while its staging directory was being deleted left a directory that still looked
    resumable (checkpoint and teacher index present, a teacher table gone): a cohort rerun resumed
    it and failed on the missing file. Removal now renames first, so a reader sees all or nothing,
    and the next fit of the target deletes what a cut-short removal left."""
    import shutil as _shutil

    from dsrecon.io import run_staging
    from dsrecon.io.run_staging import StagedRun, remove_staging

    st = tmp_path / ".run.staging"
    (st / "teacher").mkdir(parents=True)
    (st / "teacher" / "index.json").write_text("{}")
    (st / "state.json").write_text("{}")
    seen = []
    real_rmtree = _shutil.rmtree

    def cut_short(path, *a, **k):  # the kill: the deletion never happens
        seen.append(Path(path).name)

    monkeypatch.setattr(run_staging.shutil, "rmtree", cut_short)
    remove_staging(st)
    assert not st.exists() and (tmp_path / ".run.staging.removing" / "state.json").exists() and seen == [".run.staging.removing"]
    monkeypatch.setattr(run_staging.shutil, "rmtree", real_rmtree)
    with StagedRun(tmp_path / "run") as s:  # the next fit of the target clears it under its lock
        assert s.fresh and not (tmp_path / ".run.staging.removing").exists()
