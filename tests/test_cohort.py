"""fit-cohort and sweep without a Ray cluster: grid parsing, subject discovery, the validation
signal for ASHA, and both commands on the local process pool (Ray disabled with DSRECON_NO_RAY)."""

import json
import math

import numpy as np
import pytest

from dsrecon.distributed.settings import FitSettings, parse_grid
from dsrecon.distributed.subjects import ABSENT, COMPLETE, PARTIAL, STALE, discover_subjects, run_state
from dsrecon.distributed.sweep import best_validation, n_validations
from dsrecon.errors import DataError, DsreconError
from dsrecon.io.tables import write_table
from dsrecon.systems import simulate_system

TINY = ["--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "1", "--checkpoint-every", "1", "--lyapunov-steps", "300", "--max-parallel", "2"]


def write_subject(path, seed, n=300, tr=1.0):
    out = simulate_system("lorenz63", n, 0.02, tr, noise=0.01, seed=seed)
    write_table(path, out["observed"], out["names"], sidecar={"RepetitionTime": tr})


def read_tsv(path):
    lines = path.read_text().splitlines()
    cols = lines[0].split("\t")
    return [dict(zip(cols, ln.split("\t"))) for ln in lines[1:]]


def test_parse_grid_casts_and_rejects():
    g = parse_grid(["latent_dim=3,5,8", "alpha=0.1,0.15,adaptive", "learning-rate=1e-3,3e-3", "backend=plrnn"])
    assert g == {"latent_dim": [3, 5, 8], "alpha": ["0.1", "0.15", "adaptive"], "learning_rate": [1e-3, 3e-3], "backend": ["plrnn"]}
    for bad, msg in [("latent_dim", "NAME=V1"), ("latent_dim=3,x", "'x'"), ("colour=1", "not a sweepable"), ("seed=1,2", "--seeds"),
                     ("alpha=0.1,foo", "'foo'"), ("hidden_dim=", "no values"), ("hidden_dim=4,4", "repeated")]:
        with pytest.raises(DsreconError, match=msg):
            parse_grid([bad])
    with pytest.raises(DsreconError, match="given twice"):
        parse_grid(["hidden_dim=4", "hidden-dim=5"])
    with pytest.raises(DsreconError, match="`alpha` must be in"):
        FitSettings(alpha="1.5").validate()


def test_validation_signal_matches_the_training_log():
    """What a sweep reports to ASHA (parsed from the progress status) is the running best of the
    validation D_stsp column the trainer logs; n_validations counts the logged validations."""
    from dsrecon import ConvSSM, Recording

    out = simulate_system("lorenz63", 300, 0.02, 1.0, noise=0.01, seed=3)
    rec = Recording(out["observed"], tr=1.0, names=out["names"])
    seen = []
    m = ConvSSM(hidden_dim=8, epochs=5, batches_per_epoch=2, batch_size=4, sequence_length=60, val_every=2, patience=0)
    m.fit(rec, progress=lambda e, t, s: seen.append((e, best_validation(s))))
    vals = [r["val_D_stsp"] for r in m.history_]
    assert sum(math.isfinite(v) for v in vals) == n_validations(5, 2) == 3
    # teacher-space pretraining (half the epochs by default) reports epoch 0, with no validation yet
    assert [e for e, _ in seen] == [0, 0, 1, 2, 3, 4, 5] and all(v is None for e, v in seen if e == 0)
    for epoch, parsed in seen:
        logged = [v for v in vals[:epoch] if math.isfinite(v)]
        if not logged:
            assert parsed is None
        else:
            assert parsed == pytest.approx(min(logged), rel=5e-3)  # printed with 3 significant digits
    assert best_validation("loss 0.1 α 0.15") is None and best_validation("loss 1 α 0.2 best D_stsp 0.427@50") == 0.427
    assert n_validations(100, 25) == 4 and n_validations(101, 25) == 5


def test_discover_subjects_tables_runs_and_folders(tmp_path):
    d = tmp_path / "tables"
    d.mkdir()
    for name in ("sub-01_run-1_bold.tsv", "sub-01_run-2_bold.tsv", "sub-02_bold.tsv", "monkey A.csv"):
        (d / name).write_text("x\n1\n2\n")
    (d / "sub-02_bold.json").write_text("{}")
    (d / "notes.md").write_text("not data")
    (d / "sessionB").mkdir()
    (d / "sessionB" / "x.tsv").write_text("x\n1\n2\n")
    (d / "empty").mkdir()
    subs = discover_subjects(d)
    assert [s.name for s in subs] == ["monkey_A", "sessionB", "sub-01", "sub-02"]
    by = {s.name: s for s in subs}
    assert [p.rsplit("/", 1)[1] for p in by["sub-01"].paths] == ["sub-01_run-1_bold.tsv", "sub-01_run-2_bold.tsv"]
    assert by["sessionB"].paths == [str(d / "sessionB")]
    assert [s.name for s in discover_subjects(d, participant_label=["01", "sub-02"])] == ["sub-01", "sub-02"]
    with pytest.raises(DataError, match="no subjects matching"):
        discover_subjects(d, participant_label=["07"])
    with pytest.raises(DataError, match="not found"):
        discover_subjects(tmp_path / "nope")
    with pytest.raises(DataError, match="no subjects"):
        discover_subjects(d / "empty")


def test_run_state(tmp_path):
    run = tmp_path / "r"
    assert run_state(run) == ABSENT
    st = tmp_path / ".r.staging"  # where an interrupted fit keeps its checkpoint
    st.mkdir()
    (st / "config.json").write_text(json.dumps({"status": "training"}))
    assert run_state(run) == ABSENT
    (st / "checkpoint").mkdir()
    (st / "checkpoint" / "state.json").write_text("{}")
    # without its teacher cache the directory was cut short (a worker killed while removing it):
    # nothing to resume, so the next fit starts over
    assert run_state(run) == ABSENT
    (st / "teacher").mkdir()
    (st / "teacher" / "index.json").write_text(json.dumps({"files": []}))
    assert run_state(run) == PARTIAL
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"status": "training"}))
    (run / "model.safetensors").write_bytes(b"")
    assert run_state(run) == PARTIAL  # the staging directory is what a resume continues
    (run / "config.json").write_text(json.dumps({"status": "complete"}))
    assert run_state(run) == COMPLETE
    import shutil

    shutil.rmtree(st)
    (run / "config.json").write_text(json.dumps({"status": "training"}))
    assert run_state(run) == STALE


def test_cohort_starts_over_a_subject_whose_staging_directory_was_cut_short(cli, tmp_path, monkeypatch):
    """A worker killed while it removed a failed fit's staging directory leaves the checkpoint and
    the run record but not the teacher cache: the rerun must fit that subject from the start
    (removing the remains), not fail trying to resume it."""
    from dsrecon.io.load import InputSpec, load_inputs
    from dsrecon.io.runs import staging_path
    from dsrecon.training.hooks import InjectedKill, inject_faults

    monkeypatch.setenv("DSRECON_NO_RAY", "1")
    data = tmp_path / "data"
    data.mkdir()
    write_subject(data / "sub-01_task-rest_bold.tsv", seed=0)
    out = tmp_path / "cohort"
    s = FitSettings(epochs=2, batches_per_epoch=2, batch_size=4, hidden_dim=8, sequence_length=60, val_every=1, checkpoint_every=1)
    with pytest.raises(InjectedKill), inject_faults(stop_after_epoch=1):
        s.model().fit(load_inputs([str(data / "sub-01_task-rest_bold.tsv")], InputSpec()), out / "sub-01")
    st = staging_path(out / "sub-01")
    assert run_state(out / "sub-01") == PARTIAL
    (st / "teacher" / "index.json").unlink()  # what the killed clean-up left
    assert run_state(out / "sub-01") == ABSENT
    r = cli("fit-cohort", data, "-o", out, *TINY, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["n_complete"] == 1
    assert run_state(out / "sub-01") == COMPLETE and not st.exists()


def test_cohort_and_sweep_on_the_process_pool(cli, tmp_path, monkeypatch):
    """Ray disabled: 3 subjects on 2 pool workers, one failing (recorded, the others finish), one
    killed mid-fit (resumed from its checkpoint); metrics checked against an independent
    evaluation; a rerun skips the finished subjects and completes the failed one."""
    from dsrecon.api import load_run
    from dsrecon.io.load import InputSpec, load_inputs
    from dsrecon.training.hooks import InjectedKill, inject_faults

    monkeypatch.setenv("DSRECON_NO_RAY", "1")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_subject(data / f"sub-{i + 1:02d}_task-rest_bold.tsv", seed=i)
    out = tmp_path / "cohort"
    # sub-03 was killed at epoch 1 of 2 (a checkpoint at every epoch)
    s = FitSettings(epochs=2, batches_per_epoch=2, batch_size=4, hidden_dim=8, sequence_length=60, val_every=1, checkpoint_every=1)
    recs = load_inputs([str(data / "sub-03_task-rest_bold.tsv")], InputSpec())
    with pytest.raises(InjectedKill), inject_faults(stop_after_epoch=1):
        s.model().fit(recs, out / "sub-03")
    assert run_state(out / "sub-03") == PARTIAL

    monkeypatch.setenv("DSRECON_TEST_FAIL_SUBJECT", "sub-02")
    r = cli("fit-cohort", data, "-o", out, *TINY, "--json")
    assert r.code == 1, r.err  # a failed subject fails the command; the others are kept
    assert r.err.strip().splitlines()[-1] == f"error: 1 of 3 subjects failed: see {out.resolve() / 'failures.tsv'}"
    assert "Ray is not available" in r.err and "process pool" in r.err
    res = json.loads(r.out)
    assert res["executor"] == "process-pool" and (res["n_complete"], res["n_failed"]) == (2, 1)
    fails = read_tsv(out / "failures.tsv")
    assert [f["subject"] for f in fails] == ["sub-02"] and "DSRECON_TEST_FAIL_SUBJECT" in fails[0]["error"]
    rows = {row["subject"]: row for row in read_tsv(out / "summary.tsv")}
    assert list(rows) == ["sub-01", "sub-02", "sub-03"] and rows["sub-02"]["status"] == "failed"
    m3 = json.loads((out / "sub-03" / "cohort_metrics.json").read_text())
    assert m3["resumed"] and m3["epochs_run"] == 2 and m3["versions"]["torch"]
    side = json.loads((out / "summary.json").read_text())
    assert side["seed"] == 0 and side["versions"]["dsrecon"] and "lambda_max" in side["Columns"]
    assert (out / "summary.png").stat().st_size > 1000

    # the summary metrics are those of the fitted model on its held-out tail
    model = load_run(out / "sub-01")
    rec = load_inputs([str(data / "sub-01_task-rest_bold.tsv")], InputSpec())[0]
    sc = model.score(rec.split(0.25)[1], seed=0)
    m1 = json.loads((out / "sub-01" / "cohort_metrics.json").read_text())
    assert float(rows["sub-01"]["D_stsp"]) == pytest.approx(sc["D_stsp"], rel=1e-5)
    assert float(rows["sub-01"]["PE"]) == pytest.approx(sc["PE_n"], rel=1e-5)
    # λ_max: an independent QR (Benettin) estimate with the model's own step/Jacobian from the same start
    assert math.isfinite(m1["lambda_max"])
    lam = _slow_lambda_max(model, steps=300, seed=0)
    assert m1["lambda_max"] == pytest.approx(lam, abs=1e-3)

    before = {n: (out / n / "model.safetensors").stat().st_mtime_ns for n in ("sub-01", "sub-03")}
    monkeypatch.delenv("DSRECON_TEST_FAIL_SUBJECT")
    r = cli("fit-cohort", data, "-o", out, *TINY, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert (res["n_skipped"], res["n_fitted_now"], res["n_failed"]) == (2, 1, 0)
    assert {n: (out / n / "model.safetensors").stat().st_mtime_ns for n in before} == before
    assert read_tsv(out / "failures.tsv") == []
    assert all(row["status"] == "complete" for row in read_tsv(out / "summary.tsv"))

    # a rerun after sub-03's data changed refits sub-03 (the data hash of --resume's check); sub-01's
    # file only touched (same content) is re-checked and reused, sub-02 is skipped
    write_subject(data / "sub-03_task-rest_bold.tsv", seed=7)
    p1 = data / "sub-01_task-rest_bold.tsv"
    p1.write_bytes(p1.read_bytes())
    r = cli("fit-cohort", data, "-o", out, *TINY, "--json")
    assert r.code == 0, r.err
    assert "sub-03: refitted (the input data differ (data hash" in r.err and "sub-01: evaluated" in r.err, r.err
    assert (out / "sub-03" / "model.safetensors").stat().st_mtime_ns != before["sub-03"]
    assert (out / "sub-01" / "model.safetensors").stat().st_mtime_ns == before["sub-01"]
    new_hash = json.loads((out / "sub-03" / "config.json").read_text())["data_hash"]
    recs3 = load_inputs([str(data / "sub-03_task-rest_bold.tsv")], InputSpec())
    from dsrecon._util import array_hash
    assert new_hash == array_hash(*[q.data for q in recs3], *[q.mask for q in recs3])

    # the sweep on the pool: 2 grid points × 1 seed; --asha is refused politely (needs Ray)
    sw = tmp_path / "sweep"
    r = cli("sweep", data / "sub-01_task-rest_bold.tsv", "-o", sw, "--grid", "latent_dim=3,4", "--asha", *TINY[:12], "--json")
    assert r.code == 0, r.err
    assert "--asha needs Ray Tune" in r.err
    res = json.loads(r.out)
    rows = read_tsv(sw / "results.tsv")
    assert [row["trial"] for row in rows] == ["latent_dim-3_seed-0", "latent_dim-4_seed-0"]
    assert all(row["status"] == "complete" for row in rows)
    best = json.loads((sw / "best_config.json").read_text())
    score = {int(row["latent_dim"]): (float(row["D_stsp"]), float(row["D_H"])) for row in rows}
    won = score[best["params"]["latent_dim"]]
    for d_stsp, d_h in score.values():  # lowest D_stsp; ties (to the printed precision) go to the lower D_H
        assert won[0] < d_stsp * (1 - 1e-5) or (won[0] <= d_stsp * (1 + 1e-5) and won[1] <= d_h)
    assert best["versions"]["torch"] and best["seeds"] == [0] and rows[0]["error"] == ""
    assert res["best"]["params"] == best["params"]


def _slow_lambda_max(model, steps, seed):
    """Largest Lyapunov exponent per second by re-orthonormalising after every step (numpy QR),
    from the state analyze_model starts at (the end of a 5000-step free run), 1000 transient steps."""
    import torch

    lat = model.simulate(5000, seed=seed)["latent"]
    dyn = model.dynamics.double()
    S = int(getattr(dyn, "state_dim", lat.shape[1]))
    x = np.zeros(S)
    x[: lat.shape[1]] = lat[-1]
    x = torch.as_tensor(x[None])
    transient = min(1000, steps)
    with torch.no_grad():
        for _ in range(transient):
            x = dyn.step(x)
        Q = np.eye(S)
        acc = 0.0
        for _ in range(steps):
            J = dyn.jacobian(x)[0].numpy()
            Q, R = np.linalg.qr(J @ Q)
            acc += math.log(abs(R[0, 0]))
            x = dyn.step(x)
    return acc / steps / model.tr


def test_cli_bad_inputs_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DSRECON_NO_RAY", "1")
    r = cli("fit-cohort", tmp_path / "missing", "-o", tmp_path / "o")
    assert r.code == 1 and r.err.strip().count("\n") == 0 and "not found" in r.err
    d = tmp_path / "d"
    d.mkdir()
    write_subject(d / "a.tsv", 0, n=120)
    r = cli("fit-cohort", d, "-o", tmp_path / "o", "--address", "auto")
    assert r.code == 1 and "Ray is not available" in r.err
    r = cli("fit-cohort", d, "-o", tmp_path / "o", "--epochs", "0")
    assert r.code == 1 and "--epochs must be at least 1" in r.err
    r = cli("sweep", d / "a.tsv", "-o", tmp_path / "s", "--grid", "latent_dim=3,x")
    assert r.code == 1 and "--grid latent_dim: 'x'" in r.err
    r = cli("sweep", d / "a.tsv", "-o", tmp_path / "s", "--test-fraction", "0")
    assert r.code == 1 and "--test-fraction must be > 0" in r.err
    assert not (tmp_path / "s" / "results.tsv").exists()
