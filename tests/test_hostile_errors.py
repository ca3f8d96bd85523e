"""Hostile cases of issue 13, parts 4 to 6: no raw internal error ever reaches the user. Each bad
output location, damaged run, bad option, bad kernel, too-short or overflowing table and
too-large problem ends in ONE line on stderr that names the file (or option) and the problem,
with exit 1 and the user's files untouched. Plus the regressions of part 5 (report without --data,
fit-cohort with a failed subject, report and evaluate agreeing on fixed points, the resume refusal).

Every CLI case runs the real CLI in a subprocess (tests/hostile_util.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hostile_util import TINY, assert_clean_failure, dsrecon, lorenz_table, snapshot, user_files

#: evaluate and report settings that keep the analysis short
FAST_EVAL = ["--no-analysis", "--quiet"]
FAST_REPORT = ["--lyapunov-steps", "200", "--k-max", "1", "--quiet"]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """One tiny fit (3 regions, TR 1 s: a 33-tap SPM kernel) for every evaluate/report case."""
    d = tmp_path_factory.mktemp("fitted")
    lorenz_table(d / "x.tsv")
    r = dsrecon("fit", "x.tsv", "-o", "run", *TINY, cwd=d)
    assert r.code == 0, r.err
    return d


@pytest.fixture
def work(tmp_path, fitted) -> Path:
    """A user's working directory: the table, its sidecar, a copy of the fitted run, their own files."""
    for name in ("x.tsv", "x.json"):
        shutil.copy2(fitted / name, tmp_path / name)
    shutil.copytree(fitted / "run", tmp_path / "run")
    user_files(tmp_path)
    return tmp_path


def _immutable(d: Path, on: bool) -> bool:
    r = subprocess.run(["chattr", "+i" if on else "-i", str(d)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def read_only(work) -> Path:
    """work/ro: a directory nobody can write in (chmod 555; for root, which ignores permission bits,
    the immutable attribute). Holds a file of the user's."""
    d = work / "ro"
    d.mkdir()
    (d / "keep.txt").write_text("mine\n")
    root = os.geteuid() == 0
    if root:
        ok = _immutable(d, True)
    else:
        d.chmod(0o555)
        ok = True
    probe = d / "probe"
    try:
        probe.write_text("")
        probe.unlink()
        ok = False
    except OSError:
        pass
    if not ok:  # pragma: no cover - a file system without chattr, as root
        pytest.skip("cannot make a read-only directory on this file system")
    yield d
    if root:
        _immutable(d, False)
    else:
        d.chmod(0o755)


def _edit_config(run: Path, edit) -> None:
    p = run / "config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg))


# ------------------------------------------------------------------------------ -o an existing file
def test_fit_into_an_existing_regular_file(work):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "notes.txt", *TINY, cwd=work)
    assert_clean_failure(r, names="notes.txt", before=before, dirs=[work])


def test_simulate_system_onto_a_users_table(work):
    np.savetxt(work / "mine.tsv", np.ones((3, 2)), delimiter="\t", header="a\tb", comments="")
    before = snapshot(work)
    r = dsrecon("simulate", "system", "lorenz63", "--length", "100", "-o", "mine.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="mine.tsv", says="not written by dsrecon", before=before, dirs=[work])


def test_simulate_system_onto_a_users_latent_file(work):
    (work / "sim_latent.tsv").write_text("z1\n1\n")
    before = snapshot(work)
    r = dsrecon("simulate", "system", "lorenz63", "--length", "100", "-o", "sim.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names=["sim_latent.tsv", "sim.tsv"], says="not written by dsrecon", before=before, dirs=[work])


def test_simulate_rerun_replaces_its_own_outputs(work):
    args = ("simulate", "system", "lorenz63", "--length", "100", "-o", "sim.tsv", "--quiet")
    assert dsrecon(*args, cwd=work).code == 0
    first = (work / "sim.tsv").read_bytes()
    r = dsrecon(*args[:-1], "--seed", "1", "--quiet", cwd=work)
    assert r.code == 0, r.err
    assert (work / "sim.tsv").read_bytes() != first


def test_simulate_model_onto_a_users_file(work):
    (work / "gen.tsv").write_text("my table\n")
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="gen.tsv", says="not written by dsrecon", before=before, dirs=[work])


def test_evaluate_run_metrics_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", "-o", "notes.txt", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not written by dsrecon", before=before, dirs=[work])


def test_evaluate_tables_metrics_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("evaluate", "-g", "x.tsv", "-r", "x.tsv", "-o", "analysis.py", "--quiet", cwd=work)
    assert_clean_failure(r, names="analysis.py", says="not written by dsrecon", before=before, dirs=[work])


def test_report_onto_a_users_file(work):
    before = snapshot(work)
    r = dsrecon("report", "run", "-o", "notes.txt", *FAST_REPORT, cwd=work)
    assert_clean_failure(r, names="notes.txt", says="not written by dsrecon", before=before, dirs=[work])


def test_report_onto_a_directory(work):
    before = snapshot(work)
    r = dsrecon("report", "run", "-o", "run", *FAST_REPORT, cwd=work)
    assert_clean_failure(r, names="run", says="is a directory", before=before, dirs=[work])


# ------------------------------------------------------------------------------ read-only location
def test_fit_into_a_read_only_location(work, read_only):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "ro/run", *TINY, cwd=work)
    assert_clean_failure(r, names="ro", says="write", before=before, dirs=[work])


@pytest.mark.parametrize("args", [
    ("simulate", "system", "lorenz63", "--length", "100", "-o", "ro/sim.tsv", "--quiet"),
    ("simulate", "model", "run", "--steps", "50", "-o", "ro/gen.tsv", "--quiet"),
    ("evaluate", "run", "--data", "x.tsv", "-o", "ro/metrics.json", *FAST_EVAL),
    ("evaluate", "-g", "x.tsv", "-r", "x.tsv", "-o", "ro/metrics.json", "--quiet"),
    ("report", "run", "-o", "ro/report.html", *FAST_REPORT),
], ids=["simulate-system", "simulate-model", "evaluate-run", "evaluate-tables", "report"])
def test_outputs_into_a_read_only_location(work, read_only, args):
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    out = args[args.index("-o") + 1]
    assert_clean_failure(r, names=out, says="cannot write", before=before, dirs=[work])


# ------------------------------------------------------------------------------ a damaged run
def _truncate(run: Path, keep: int | None) -> None:
    p = run / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(b"" if keep is None else data[:keep])


@pytest.mark.parametrize("keep,says", [(None, "empty"), (300, "truncated"), (-40, "truncated")], ids=["empty", "header", "tail"])
def test_evaluate_a_run_with_damaged_weights(work, keep, says):
    if keep is not None and keep < 0:
        keep = (work / "run" / "model.safetensors").stat().st_size + keep
    _truncate(work / "run", keep)
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/model.safetensors", says=says, before=before, dirs=[work])


def test_simulate_and_report_a_run_with_empty_weights(work):
    _truncate(work / "run", None)
    before = snapshot(work)
    for args in (("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet"), ("report", "run", *FAST_REPORT)):
        r = dsrecon(*args, cwd=work)
        assert_clean_failure(r, names="run/model.safetensors", says="empty", before=before, dirs=[work])


@pytest.mark.parametrize("key", ["hidden_dim", "kernel", "normalisation"])
def test_evaluate_a_run_whose_config_lacks_a_key(work, key):
    _edit_config(work / "run", lambda c: c.pop(key))
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/config.json", says=f"'{key}' is missing", before=before, dirs=[work])


def test_evaluate_a_run_whose_config_does_not_match_the_weights(work):
    _edit_config(work / "run", lambda c: c.update(hidden_dim=9))
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    line = assert_clean_failure(r, names=["run/model.safetensors", "run/config.json"], says="shape", before=before, dirs=[work])
    assert "(3, 8)" in line and "(3, 9)" in line  # both shapes


def test_simulate_a_run_whose_config_names_another_region_count(work):
    _edit_config(work / "run", lambda c: c.update(n_regions=4, names=c["names"] + ["w"]))
    before = snapshot(work)
    r = dsrecon("simulate", "model", "run", "--steps", "50", "-o", "gen.tsv", "--quiet", cwd=work)
    assert_clean_failure(r, names="run/config.json", before=before, dirs=[work])


def test_evaluate_a_run_whose_config_is_not_json(work):
    (work / "run" / "config.json").write_text('{"backend": "cshplrnn",')
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "x.tsv", *FAST_EVAL, cwd=work)
    assert_clean_failure(r, names="run/config.json", says="not valid JSON", before=before, dirs=[work])


# ------------------------------------------------------------------------------ sizes and kernels
@pytest.mark.parametrize("opt", ["--hidden-dim", "--latent-dim", "--batch-size", "--sequence-length"])
def test_fit_with_a_size_of_zero(work, opt):
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, opt, "0", cwd=work)
    assert_clean_failure(r, names=opt, before=before, dirs=[work])


def test_hidden_dim_zero_in_the_python_api():
    from dsrecon.api import ConvSSM
    from dsrecon.errors import DsreconError
    from dsrecon.io.recording import Recording

    x = np.random.default_rng(0).standard_normal((200, 3))
    rec = Recording(data=x, tr=1.0, names=["a", "b", "c"], mask=np.ones(200, bool), source="x")
    with pytest.raises(DsreconError, match="--hidden-dim must be a positive integer, got 0"):
        ConvSSM(hidden_dim=0, epochs=1, batches_per_epoch=1, sequence_length=60).fit(rec)


@pytest.mark.parametrize("cmd", ["fit", "simulate"])
def test_kernel_file_not_found(work, cmd):
    before = snapshot(work)
    if cmd == "fit":
        r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, "--kernel", "my_hrf.txt", cwd=work)
    else:
        r = dsrecon("simulate", "system", "lorenz63", "-o", "sim.tsv", "--kernel", "my_hrf.txt", "--quiet", cwd=work)
    line = assert_clean_failure(r, names="my_hrf.txt", says="not found", before=before, dirs=[work])
    assert "unknown kernel" not in line


def test_kernel_file_with_a_non_finite_tap(work):
    (work / "hrf.txt").write_text("0.2\n0.5\ninf\n0.3\n")
    before = snapshot(work)
    r = dsrecon("fit", "x.tsv", "-o", "new", *TINY, "--kernel", "hrf.txt", cwd=work)
    assert_clean_failure(r, names="hrf.txt", says="line 3", before=before, dirs=[work])


def test_all_zero_kernel(work):
    (work / "hrf.txt").write_text("0\n0\n0\n")
    before = snapshot(work)
    for args in (("fit", "x.tsv", "-o", "new", *TINY), ("simulate", "system", "lorenz63", "-o", "sim.tsv", "--quiet")):
        r = dsrecon(*args, "--kernel", "hrf.txt", cwd=work)
        assert_clean_failure(r, names="hrf.txt", says="zero", before=before, dirs=[work])


# ------------------------------------------------------------------------------ data too short / too large
def _short_table(work: Path, frames: int = 11) -> None:
    lines = (work / "x.tsv").read_text().splitlines()
    (work / "short.tsv").write_text("\n".join(lines[: frames + 1]) + "\n")
    shutil.copy2(work / "x.json", work / "short.json")


@pytest.mark.parametrize("args", [
    ("evaluate", "run", "--data", "short.tsv", *FAST_EVAL),
    ("report", "run", "--data", "short.tsv", *FAST_REPORT),
    ("simulate", "model", "run", "--steps", "50", "--from", "short.tsv", "-o", "gen.tsv", "--quiet"),
], ids=["evaluate", "report", "simulate-from"])
def test_test_data_shorter_than_the_kernel(work, args):
    _short_table(work)
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    assert_clean_failure(r, names="short.tsv", says=["11 frames", "at least 33 frames"], before=before, dirs=[work])


def test_evaluate_without_quiet_still_prints_one_line(work):
    _short_table(work)
    before = snapshot(work)
    r = dsrecon("evaluate", "run", "--data", "short.tsv", "--no-analysis", cwd=work)
    assert_clean_failure(r, names="short.tsv", says="at least 33 frames", before=before, dirs=[work])


def _huge_table(work: Path, value: float, row: int = 100, col: int = 1) -> None:
    from dsrecon.io.tables import read_array, write_table

    x, names = read_array(work / "x.tsv")
    x[row, col] = value
    write_table(work / "huge.tsv", x, names, sidecar={"RepetitionTime": 1.0})


def test_fit_on_values_whose_z_score_overflows(work):
    _huge_table(work, 1e308)
    before = snapshot(work)
    r = dsrecon("fit", "huge.tsv", "-o", "new", *TINY, cwd=work)
    assert_clean_failure(r, names="huge.tsv", says=["column 'y'", "row 101", "too large"], before=before, dirs=[work])


@pytest.mark.parametrize("args", [
    ("evaluate", "run", "--data", "huge.tsv", *FAST_EVAL),
    ("report", "run", "--data", "huge.tsv", *FAST_REPORT),
    ("simulate", "model", "run", "--steps", "50", "--from", "huge.tsv", "-o", "gen.tsv", "--quiet"),
], ids=["evaluate", "report", "simulate-from"])
def test_test_data_whose_z_score_overflows(work, args):
    _huge_table(work, 1e300, row=200, col=2)  # finite in float64, far beyond float32 once z-scored
    before = snapshot(work)
    r = dsrecon(*args, cwd=work)
    assert_clean_failure(r, names="huge.tsv", says=["column 'z'", "row 201", "too large"], before=before, dirs=[work])


def test_z_scoring_names_column_and_row_in_the_library():
    from dsrecon.errors import DataError
    from dsrecon.training.prepare import Normalisation

    norm = Normalisation(np.zeros(2), np.ones(2))
    x = np.zeros((5, 2))
    x[3, 1] = 1e39  # finite in float64, not in float32
    with pytest.raises(DataError, match=r"t\.tsv: column 'b', row 4: value 1e\+39"):
        norm.apply(x, "t.tsv", ["a", "b"])
    np.testing.assert_array_equal(norm.apply(np.array([[1.0, np.nan]]))[0, 0], 1.0)  # NaN (censored) stays NaN


# ------------------------------------------------------------------------------ too large for memory
def test_memory_check_refuses_10000_regions_before_any_work():
    """10 000 regions × 50 frames: each validation free run needs ~40 GB (the 32 GB conv1d output is
    most of it); the check says so with the option that avoids it."""
    from dsrecon.errors import DsreconError
    from dsrecon.training.memory import check_memory, estimate_fit_memory

    est = estimate_fit_memory([50], 10_000, 10_000, 17, batch_size=16, sequence_length=200, test_fraction=0.25, hidden_dim=50)
    assert 32e9 < est.validation_bytes < 50e9 and est.validation_steps == 50_000
    with pytest.raises(DsreconError, match=r"big\.tsv: too large for memory: each validation free run \(50000 steps × 10000 regions\) "
                                           r"needs about 4\d\.\d GB, 16\.0 GB are available.*--test-fraction 0"):
        check_memory(est, source="big.tsv", available=16_000_000_000)
    # without a held-out tail there is no validation run, and training batches are small
    small = estimate_fit_memory([50], 10_000, 10_000, 17, batch_size=16, sequence_length=20, test_fraction=0.0, hidden_dim=50)
    assert small.validation_bytes == 0
    check_memory(small, available=16_000_000_000)


def test_fit_too_large_for_memory_is_refused_before_any_work(tmp_path):
    """The CLI end to end: 30 000 regions × 50 frames (each validation free run ~120 GB, more than
    any CI machine has) is refused in seconds, before the model is built, and writes nothing."""
    import time

    from dsrecon.io.tables import write_table

    x = np.random.default_rng(0).standard_normal((50, 30_000)).astype(np.float32)
    write_table(tmp_path / "big.tsv", x, [f"r{i}" for i in range(x.shape[1])], sidecar={"RepetitionTime": 2.0})
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    r = dsrecon("fit", "big.tsv", "-o", "run", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert time.perf_counter() - t0 < 120  # (a generous bound: building the model alone would take hours)
    assert_clean_failure(r, names="big.tsv", says=["too large for memory", "--test-fraction 0"], before=before, dirs=[tmp_path])
    assert not (tmp_path / "run").exists()


def test_memory_check_names_the_batch_options_for_training():
    from dsrecon.errors import DsreconError
    from dsrecon.training.memory import check_memory, estimate_fit_memory

    est = estimate_fit_memory([5000], 2000, 2000, 17, batch_size=4096, sequence_length=500, test_fraction=0.0, hidden_dim=50)
    with pytest.raises(DsreconError, match="--batch-size or --sequence-length"):
        check_memory(est, available=8_000_000_000)


def test_memory_check_passes_a_usual_fit():
    from dsrecon.training.memory import available_memory, check_memory, estimate_fit_memory

    est = estimate_fit_memory([300], 3, 3, 33, batch_size=16, sequence_length=200, test_fraction=0.25, hidden_dim=50)
    assert est.validation_bytes < 50e6
    assert available_memory() > 0
    check_memory(est)


# ------------------------------------------------------------------------------ part 5: bugs
def test_report_without_data_for_a_three_region_model(work):
    """The 3-D attractor panel without data used to crash (Axes3D.text)."""
    r = dsrecon("report", "run", "-o", "report.html", *FAST_REPORT, cwd=work)
    assert r.code == 0, r.err
    assert (work / "report.html").stat().st_size > 10_000


def test_report_and_evaluate_agree_on_fixed_points_and_cycles(work):
    ev = dsrecon("evaluate", "run", "--data", "x.tsv", "--lyapunov-steps", "300", "--json", "--quiet", cwd=work)
    rep = dsrecon("report", "run", "--lyapunov-steps", "300", "--json", "--quiet", cwd=work)
    assert ev.code == 0 and rep.code == 0, ev.err + rep.err
    e, p = json.loads(ev.out), json.loads(rep.out)
    by_period = e["analysis"]["fixed_points"]["n_by_period"]
    assert (p["n_fixed_points"], p["n_cycles"]) == (e["n_fixed_points"], e["n_cycles"])
    assert e["n_fixed_points"] == by_period.get("1", 0)
    assert e["n_cycles"] == sum(v for k, v in by_period.items() if k != "1")


def test_fit_cohort_with_a_failed_subject_exits_1_and_keeps_the_rest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in (1, 2):
        lorenz_table(data / f"sub-{i:02d}_bold.tsv", seed=i)
    user_files(tmp_path)
    before = snapshot(tmp_path)
    r = dsrecon("fit-cohort", "data", "-o", "cohort", *TINY, "--lyapunov-steps", "0", "--max-parallel", "1",
                cwd=tmp_path, env={"DSRECON_TEST_FAIL_SUBJECT": "sub-02"})
    line = assert_clean_failure(r, names="failures.tsv", says="1 of 2 subjects failed", before=before, dirs=[tmp_path])
    assert line == f"error: 1 of 2 subjects failed: see {(tmp_path / 'cohort' / 'failures.tsv').resolve()}"
    assert (tmp_path / "cohort" / "sub-01" / "model.safetensors").exists()  # the rest is kept
    assert "sub-02" in (tmp_path / "cohort" / "failures.tsv").read_text()


def test_resume_refusal_names_the_option_and_both_values(tmp_path):
    from dsrecon.api import ConvSSM
    from dsrecon.io.load import InputSpec, load_inputs
    from dsrecon.training.trainer import Interrupted

    (tmp_path / "data").mkdir()
    (tmp_path / "runs").mkdir()
    x = lorenz_table(tmp_path / "data" / "x.tsv")
    recs = load_inputs([str(x)], InputSpec())
    opts = dict(hidden_dim=8, epochs=3, batches_per_epoch=2, batch_size=4, sequence_length=60, val_every=1, checkpoint_every=1)
    with pytest.raises(Interrupted):  # killed after epoch 2, as the CLI's TINY fit would be
        ConvSSM(**opts, stop_after_epoch=2).fit(recs, run_dir=tmp_path / "runs" / "run", inputs=["data/x.tsv"])
    before = snapshot(tmp_path)
    r = dsrecon("fit", "data/x.tsv", "-o", "runs/run", "--resume", *TINY, "--learning-rate", "0.01", cwd=tmp_path)
    # (the staging directory of the interrupted run is expected beside runs/run: check the data for leftovers)
    line = assert_clean_failure(r, names="runs/run", says="--learning-rate: 0.001 in the run, 0.01 now",
                                before=snapshot(tmp_path / "data"), dirs=[tmp_path / "data"])
    assert "cannot resume" in line
    assert snapshot(tmp_path) == before  # the interrupted run (its staging directory) is kept as it was


def test_resume_refusal_names_a_backend_option_and_the_kernel():
    from dsrecon.api import _check_resumable
    from dsrecon.errors import DsreconError

    old = {"backend": "alrnn", "backend_options": {"pwl_units": 2}, "kernel": {"kind": "spm", "params": {"tr": 1.0}, "taps": [1]},
           "seed": 0}
    new = {**old, "backend_options": {"pwl_units": 3}, "kernel": {"kind": "spm", "params": {"tr": 2.0}, "taps": [1]}}
    with pytest.raises(DsreconError, match=r"run: cannot resume: --pwl-units: 2 in the run, 3 now; TR: 1 in the run, 2 now"):
        _check_resumable(Path("run"), old, new)
