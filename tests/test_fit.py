"""The fit loop end to end: CLI, resume, recordings and masks, bad input."""

import json

import numpy as np
import pytest
import torch

from dsrecon import ConvSSM, Recording, load_run
from dsrecon.errors import DataError, DivergenceError, DsreconError
from dsrecon.io.tables import write_table
from dsrecon.systems import simulate_system
from dsrecon.training.batches import Prepared, SequenceSampler
from dsrecon.training.hooks import InjectedKill, inject_faults

TINY = dict(hidden_dim=8, epochs=4, batches_per_epoch=3, batch_size=4, val_every=2, checkpoint_every=2)


def lorenz_rec(n=600, tr=0.5, seed=0, kernel="spm"):
    out = simulate_system("lorenz63", n, 0.01, tr, kernel=kernel, noise=0.01, seed=seed)
    return Recording(out["observed"], tr=tr, names=out["names"], source=f"lorenz{seed}")


def test_cli_fit_simulate_evaluate(cli, tmp_path):
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "800", "--tr", "0.5", "--dt", "0.01", "--noise", "0.01", "-o", x).code == 0
    run = tmp_path / "run"
    r = cli("fit", x, "-o", run, "--epochs", "3", "--batches-per-epoch", "3", "--hidden-dim", "8", "--val-every", "1", "--json", "--quiet")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["epochs_run"] == 3
    for f in ("model.safetensors", "config.json", "training_log.tsv", "dataset_description.json", "teacher/index.json"):
        assert (run / f).exists(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["tr"] == 0.5 and cfg["names"] == ["x", "y", "z"] and cfg["seed"] == 0
    assert cfg["data_hash"] and cfg["versions"]["torch"] and cfg["kernel"]["kind"] == "spm"
    log = np.genfromtxt(run / "training_log.tsv", names=True, delimiter="\t")
    assert log.shape == (3,) and np.all(np.isfinite(log["val_D_stsp"]))

    g = tmp_path / "g.tsv"
    r = cli("simulate", "model", run, "--steps", "1000", "-o", g, "--json")
    assert r.code == 0, r.err
    gen = np.loadtxt(g, skiprows=1)
    lat = np.loadtxt(tmp_path / "g_latent.tsv", skiprows=1)
    assert gen.shape == (1000, 3) and lat.shape == (1000, 3) and np.isfinite(gen).all()

    r = cli("evaluate", run, "--data", x, "--json")
    assert r.code == 0, r.err
    ev = json.loads(r.out)
    assert ev["D_stsp_method"] == "binned" and ev["n_test"] == 800 and ev["n_generated"] == 1000
    assert np.isfinite(ev["PE_n"]) and ev["n_pe"] == 10


def _tensors(model):
    return {k: v.clone() for k, v in model.net_.state_dict().items()}


def test_killed_and_resumed_fit_matches_uninterrupted(tmp_path):
    rec = lorenz_rec()
    full = ConvSSM(**{**TINY, "epochs": 6}).fit(rec, run_dir=tmp_path / "full")
    with pytest.raises(InjectedKill):  # killed after epoch 5; the last checkpoint is from epoch 4
        with inject_faults(stop_after_epoch=5):
            ConvSSM(**{**TINY, "epochs": 6}).fit(rec, run_dir=tmp_path / "killed")
    assert not (tmp_path / "killed").exists()  # nothing at the target until the run is complete
    assert (tmp_path / ".killed.staging" / "checkpoint" / "state.json").exists()  # kept for --resume
    resumed = ConvSSM(**{**TINY, "epochs": 6}).fit(rec, run_dir=tmp_path / "killed", resume=True)
    a, b = _tensors(full), _tensors(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [r["loss"] for r in full.history_] == [r["loss"] for r in resumed.history_]


def test_cli_resume_refuses_changed_options_and_existing_dir(cli, tmp_path):
    x = tmp_path / "x.tsv"
    cli("simulate", "system", "lorenz63", "--length", "600", "--tr", "0.5", "-o", x)
    base = ["fit", x, "-o", tmp_path / "run", "--epochs", "2", "--batches-per-epoch", "2", "--hidden-dim", "8", "--quiet"]
    assert cli(*base).code == 0
    r = cli(*base)
    assert r.code == 1 and "already exists" in r.err and "--resume" in r.err
    r = cli(*base, "--resume")
    assert r.code == 1 and "complete" in r.err and "nothing to resume" in r.err


def test_multiple_recordings_never_mix_and_masks_are_honoured():
    T, N, K, L = 60, 2, 5, 12
    recs = []
    for i in range(2):
        x = np.full((T, N), float(i))
        teacher = np.full((T, N), 10.0 + i)
        teacher[:3] = np.nan
        mask = np.ones(T, bool)
        mask[20:25] = False
        recs.append(Prepared(x.astype(np.float32), mask, teacher.astype(np.float32), None, f"r{i}"))
    s = SequenceSampler(recs, L, K)
    b = s.sample(200, np.random.default_rng(0))
    for d, x in zip(b["teacher"], b["x"]):
        assert np.isfinite(d[0]).all()  # initial state from a reliable teacher frame
        vals = set(np.unique(x)) | set(np.unique(d[np.isfinite(d)]) - 10)
        assert len(vals) == 1  # a sequence comes from one recording only
    # the loss mask follows the censored frames: target index j ↔ frame s+K−1+j
    for (ri, st), m in zip(s.starts[:50], [None] * 50):
        frames = np.arange(st + K - 1, st + L)
        assert np.array_equal(recs[ri].mask[frames], (frames < 20) | (frames >= 25))


def test_forcing_modes_run_and_adaptive_alpha_moves():
    rec = lorenz_rec()
    m = ConvSSM(**{**TINY, "alpha": "adaptive", "adaptive_every": 1}).fit(rec)
    alphas = [r["alpha"] for r in m.history_]
    assert alphas[0] <= 1.0 and all(0 <= a <= 1 for a in alphas)
    m = ConvSSM(**{**TINY, "sparse_tf_interval": 4}).fit(rec)
    assert m.history_[-1]["alpha"] == pytest.approx(0.25)


def test_annealed_alpha_is_followed_and_resumes_bit_identically(tmp_path):
    rec = lorenz_rec()
    kw = {**TINY, "epochs": 6, "alpha": "0.3", "alpha_end": 0.03, "pretrain_epochs": 0}
    full = ConvSSM(**kw).fit(rec, run_dir=tmp_path / "full")
    np.testing.assert_allclose([r["alpha"] for r in full.history_], 0.3 * 0.1 ** (np.arange(6) / 5), rtol=1e-6)
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=5):
            ConvSSM(**kw).fit(rec, run_dir=tmp_path / "killed")
    resumed = ConvSSM(**kw).fit(rec, run_dir=tmp_path / "killed", resume=True)
    a, b = _tensors(full), _tensors(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["train_options"]["alpha_end"] == 0.03


def test_decoders_and_backends_fit():
    rec = lorenz_rec()
    for kw in ({"decoder": "affine", "latent_dim": 2}, {"backend": "shplrnn"}, {"backend": "plrnn", "latent_dim": 4}):
        m = ConvSSM(**{**TINY, **kw}).fit(rec)
        assert np.isfinite(m.simulate(200)["observed"]).all()


def test_regressor_decoder_uses_regressors():
    rec = lorenz_rec()
    rng = np.random.default_rng(0)
    rec.regressors = rng.normal(size=(rec.n_frames, 2))
    rec.regressor_names = ["motion1", "motion2"]
    m = ConvSSM(**{**TINY, "decoder": "regressor"}).fit(rec)
    assert m.net_.decoder.J.shape == (3, 2)


def test_nonfinite_loss_recovers_then_stops(tmp_path):
    rec = lorenz_rec()
    with inject_faults(nan_at_batch=4):  # one poisoned batch: restore, halve lr, go on
        m = ConvSSM(**TINY).fit(rec)
    assert m.config["training"]["divergence_restarts"] == 1
    with pytest.raises(DivergenceError, match="diverged"):
        with inject_faults(nan_at_batch=-1):
            ConvSSM(**TINY).fit(rec, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no broken run directory


def test_bad_inputs_one_line_exit_1(cli, tmp_path):
    x = tmp_path / "x.tsv"
    cli("simulate", "system", "lorenz63", "--length", "600", "--tr", "0.2", "-o", x)
    short = tmp_path / "short.tsv"
    cli("simulate", "system", "lorenz63", "--length", "150", "--tr", "0.2", "-o", short)
    const = tmp_path / "const.tsv"
    arr = np.random.default_rng(0).normal(size=(300, 3))
    arr[:, 1] = 2.0
    write_table(const, arr, ["a", "b", "c"], sidecar={"RepetitionTime": 1.0})
    notr = tmp_path / "notr.tsv"
    write_table(notr, arr, ["a", "b", "c"])
    cases = [
        ([short], "too short"),
        ([const], "constant"),
        ([notr], "no TR"),
        ([x, "--latent-dim", "2"], "smaller than the number of regions"),
        ([x, "--alpha", "2"], "--alpha"),
        ([x, "--alpha", "adaptive", "--alpha-end", "0.05"], "--alpha-end"),
        ([x, "--alpha-end", "1.5"], "--alpha-end"),
        ([tmp_path / "missing.tsv"], "not found"),
    ]
    for args, msg in cases:
        run = tmp_path / "run_bad"
        r = cli("fit", *args, "-o", run, "--epochs", "1", "--quiet")
        assert r.code == 1, (args, r.err)
        assert msg in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
        assert not run.exists()


def test_load_run_round_trip_and_errors(tmp_path):
    rec = lorenz_rec()
    m = ConvSSM(**TINY).fit(rec, run_dir=tmp_path / "run")
    m2 = load_run(tmp_path / "run")
    np.testing.assert_array_equal(m.simulate(50)["observed"], m2.simulate(50)["observed"])
    with pytest.raises(DataError, match="not a dsrecon run"):
        load_run(tmp_path)


def _rotation_net(radius: float, kern):
    """A linear latent map z' = r·R(θ) z in 2-D: a sustained (r = 1) or slowly decaying (r < 1)
    oscillation, built directly, with the identity decoder."""
    from dsrecon.models.backends.linear import LinearAR
    from dsrecon.models.convssm import ConvSSMNet
    from dsrecon.models.decoders import make_decoder

    dyn = LinearAR(2, transition="dense")
    th = 2 * np.pi / 50
    A = radius * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    with torch.no_grad():
        dyn.A.copy_(torch.as_tensor(A, dtype=torch.float32))
        dyn.b.zero_()
    return ConvSSMNet(dyn, make_decoder("identity", 2, 2, 0), torch.as_tensor(kern.taps), 2)


def test_validation_judges_the_end_of_a_long_free_run():
    """A model whose oscillation dies out over ~20 000 steps still oscillates in the first 12 500
    steps after the data; validation must score it as the fixed point it ends on."""
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare
    from dsrecon.options import TrainOptions
    from dsrecon.training.validation import VAL_HORIZON, generate_after, validation_scores

    t = np.arange(1200)
    x = np.stack([np.cos(2 * np.pi * t / 50), np.sin(2 * np.pi * t / 50)], 1)
    kern = make_kernel("none", 1.0)
    data = prepare([Recording(x, tr=1.0, names=["a", "b"])], kern, 0.25)
    opts = TrainOptions()
    sustained, decaying = _rotation_net(1.0, kern), _rotation_net(0.9997, kern)

    # the window is the tail of one long run
    tail = generate_after(decaying, data.train[0], 10_000, total=VAL_HORIZON)
    with torch.no_grad():
        x_all, _ = decaying.free_run(decaying.state_from_last_reliable(data.train[0].teacher), VAL_HORIZON)
    np.testing.assert_allclose(tail, x_all[0, -10_000:].numpy())
    early = generate_after(decaying, data.train[0], 10_000)  # the old window: 1.25·n, first 0.25·n dropped
    assert np.abs(early).max() > 0.05 and np.abs(tail).max() < 1e-3

    v_sus = validation_scores(sustained, data, opts)
    v_dec = validation_scores(decaying, data, opts)
    assert v_sus["D_stsp"] < 1.0, v_sus
    assert v_dec["D_stsp"] > 5 * v_sus["D_stsp"], (v_sus, v_dec)


def test_validation_flags_a_collapsed_free_run():
    """The decaying rotation ends on its fixed point (spread ≈ 0): collapsed; the sustained one is not."""
    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare
    from dsrecon.options import TrainOptions
    from dsrecon.training.validation import validation_scores

    t = np.arange(1200)
    x = np.stack([np.cos(2 * np.pi * t / 50), np.sin(2 * np.pi * t / 50)], 1)
    kern = make_kernel("none", 1.0)
    data = prepare([Recording(x, tr=1.0, names=["a", "b"])], kern, 0.25)
    assert validation_scores(_rotation_net(0.9997, kern), data, TrainOptions())["collapsed"] is True
    assert validation_scores(_rotation_net(1.0, kern), data, TrainOptions())["collapsed"] is False


def test_observation_noise_matches_the_recordings_level_per_channel():
    """with_observation_noise adds N(0, σ̂_j²) with σ̂_j the recording's noise level (wavelet MAD):
    on a smooth signal with known noise 0.1 and 0.3 the added noise has those stds, reproducibly."""
    from dsrecon.training.validation import with_observation_noise

    rng = np.random.default_rng(1)
    t = np.arange(20_000)
    clean = np.stack([np.sin(2 * np.pi * t / 400), np.cos(2 * np.pi * t / 700)], 1)
    rec = clean + rng.standard_normal(clean.shape) * np.array([0.1, 0.3])
    gen = np.zeros((50_000, 2))
    a, b = with_observation_noise(gen, rec, seed=3), with_observation_noise(gen, rec, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.std(0), [0.1, 0.3], rtol=0.03)
    assert not np.array_equal(a, with_observation_noise(gen, rec, seed=4))


def test_match_noise_compares_noisy_data_with_a_noisy_free_run():
    """A noise-free rotation model against a noisy recording of the same rotation (σ 0.2): without
    --match-noise validation counts the noise as a mismatch; with it the divergence drops, and a
    decaying model still scores far worse than the sustained one."""
    from dataclasses import replace

    from dsrecon.signal.kernels import make_kernel
    from dsrecon.training.prepare import prepare
    from dsrecon.options import TrainOptions
    from dsrecon.training.validation import validation_scores

    t = np.arange(4000)
    x = np.stack([np.cos(2 * np.pi * t / 50), np.sin(2 * np.pi * t / 50)], 1)
    x = x + 0.2 * np.random.default_rng(0).standard_normal(x.shape)
    kern = make_kernel("none", 1.0)
    data = prepare([Recording(x, tr=1.0, names=["a", "b"])], kern, 0.25)
    off, on = TrainOptions(), replace(TrainOptions(), match_noise=True)
    sustained, decaying = _rotation_net(1.0, kern), _rotation_net(0.9997, kern)
    plain, matched = validation_scores(sustained, data, off), validation_scores(sustained, data, on)
    assert matched["D_stsp"] < 0.5 * plain["D_stsp"], (plain, matched)
    assert matched["D_H"] == plain["D_H"]  # the spectra are compared without the added noise
    assert validation_scores(decaying, data, on)["D_stsp"] > 5 * matched["D_stsp"]


def test_cli_match_noise_is_recorded(cli, tmp_path):
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "600", "--tr", "0.5", "--dt", "0.01", "--noise", "0.1", "-o", x).code == 0
    for flag, want in ((["--match-noise"], True), ([], False)):
        run = tmp_path / f"run{int(want)}"
        r = cli("fit", x, "-o", run, "--epochs", "2", "--batches-per-epoch", "2", "--hidden-dim", "8", "--val-every", "1", "--quiet", *flag)
        assert r.code == 0, r.err
        assert json.loads((run / "config.json").read_text())["train_options"]["match_noise"] is want


@pytest.mark.parametrize("restore", [True, False])
def test_collapse_restores_the_best_model_with_fresh_optimiser(tmp_path, monkeypatch, restore):
    """A validation that finds the free run collapsed (and worse than the best) puts the best state
    back and clears the optimiser moments; the checkpoint written at that epoch holds the best state."""
    import dsrecon.training.trainer as trainer_mod
    from dsrecon.training import checkpoint as ckpt
    from dsrecon.training.stack import Stack

    calls = []

    def fake_validate(net, data, opts, seed=0):
        calls.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        good = len(calls) == 1
        return {"D_stsp": 1.0 if good else 9.0, "D_H": 0.1, "D_stsp_method": "binned", "collapsed": not good}

    monkeypatch.setattr(trainer_mod, "validation_scores", fake_validate)
    run = tmp_path / "run"
    m = ConvSSM(kernel="spm", seed=0, restore_on_collapse=restore, patience=0,
                **{**TINY, "epochs": 4, "val_every": 2, "checkpoint_every": 2})
    m.fit(lorenz_rec(), run_dir=run)
    assert len(calls) == 2
    best, before_restore = calls[0], calls[1]
    st = json.loads((run / "checkpoint" / "state.json").read_text())
    tensors = ckpt.load_tensors(run / "checkpoint" / st["tensors"])
    net_ckpt = {k: v[0] for k, v in Stack([m.net_]).views(tensors["flat"]).items()}
    same = all(torch.equal(net_ckpt[k], best[k]) for k in net_ckpt)
    moved = any(not torch.equal(before_restore[k], best[k]) for k in net_ckpt)
    assert moved  # training did change the model between the two validations
    assert same is restore
    assert (st["opt_steps"] == [0] and not tensors["opt.m"].any()) is restore  # fresh RAdam moments
    assert m.config["training"]["collapse_restores"] == int(restore)


def test_cli_restore_on_collapse_is_recorded(cli, tmp_path):
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "600", "--tr", "0.5", "--dt", "0.01", "-o", x).code == 0
    for flag, want in ((["--restore-on-collapse"], True), ([], False)):
        run = tmp_path / f"run{int(want)}"
        r = cli("fit", x, "-o", run, "--epochs", "2", "--batches-per-epoch", "2", "--hidden-dim", "8", "--val-every", "1", "--quiet", *flag)
        assert r.code == 0, r.err
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["train_options"]["restore_on_collapse"] is want
        assert cfg["training"]["collapse_restores"] >= 0


def test_resume_accepts_a_run_from_before_a_new_option(tmp_path):
    """A checkpointed run whose config.json predates an option (here restore_on_collapse) resumes
    when that option is at its default, and is refused when it is not."""
    rec = lorenz_rec()
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=5):
            ConvSSM(**{**TINY, "epochs": 6}).fit(rec, run_dir=tmp_path / "old")
    cfg_path = tmp_path / ".old.staging" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["train_options"]["restore_on_collapse"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DsreconError, match="--restore-on-collapse: off in the run, on now"):
        ConvSSM(**{**TINY, "epochs": 6, "restore_on_collapse": True}).fit(rec, run_dir=tmp_path / "old", resume=True)
    resumed = ConvSSM(**{**TINY, "epochs": 6}).fit(rec, run_dir=tmp_path / "old", resume=True)
    assert resumed.config["training"]["epochs_run"] == 6


def test_an_interrupt_swallowed_by_numba_is_raised_again_by_the_loops():
    """The CLI notes SIGINT/SIGTERM before raising; if numba's compiler or a ctypes callback swallows
    the exception, the training batches and the Lyapunov chunks raise it again."""
    import signal

    from dsrecon._util import clear_interrupt, note_interrupt
    from dsrecon.errors import Terminated
    from dsrecon.metrics.lyapunov import lyapunov_spectrum

    rec = lorenz_rec()
    try:
        note_interrupt(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as e:
            ConvSSM(**TINY).fit(rec)
        assert not isinstance(e.value, Terminated)
        note_interrupt(signal.SIGTERM)
        with pytest.raises(Terminated):
            lyapunov_spectrum(lambda x: 0.5 * x, lambda x: np.repeat(0.5 * np.eye(2)[None], len(x), 0), np.ones(2), n_steps=10)
        clear_interrupt()
        r = lyapunov_spectrum(lambda x: 0.5 * x, lambda x: np.repeat(0.5 * np.eye(2)[None], len(x), 0), np.ones(2), n_steps=10)
        np.testing.assert_allclose(r.exponents, np.log(0.5))
    finally:
        clear_interrupt()


def test_an_error_raised_by_an_interrupted_import_reports_the_interrupt(monkeypatch, capsys):
    """Ctrl-C inside a C extension's module initialisation surfaces as "ImportError: initialization
    failed"; with the signal noted, the CLI reports the interrupt (exit 130), not an internal error."""
    import signal

    import dsrecon.cli.main as cli_main
    from dsrecon._util import clear_interrupt, note_interrupt

    def interrupted_import(*a, **k):
        note_interrupt(signal.SIGINT)
        raise ImportError("initialization failed")

    cli_main._register()  # the commands register on the real app first (imports run once)
    monkeypatch.setattr(cli_main, "app", interrupted_import)
    try:
        assert cli_main.main(["evaluate", "run"]) == 130
        assert capsys.readouterr().err.strip() == "interrupted"
    finally:
        clear_interrupt()
    monkeypatch.setattr(cli_main, "app", lambda *a, **k: (_ for _ in ()).throw(ImportError("a real bug")))
    assert cli_main.main(["evaluate", "run"]) == 1
    assert "internal error: ImportError: a real bug" in capsys.readouterr().err


def _rotation_model(radius: float):
    """A fitted linear-backend model whose map is then set to r·R(θ) ⊕ r: a sustained (r = 1),
    decaying (r < 1) or growing (r > 1) oscillation, seen without a kernel."""
    t = np.arange(1200)
    x = np.stack([np.cos(2 * np.pi * t / 50), np.sin(2 * np.pi * t / 50), np.cos(2 * np.pi * t / 25)], 1)
    m = ConvSSM(backend="linear", kernel="none", decoder="identity", latent_dim=3, epochs=1, batches_per_epoch=1, batch_size=4,
                test_fraction=0.0, seed=0).fit(Recording(x, tr=1.0, names=["a", "b", "c"]))
    th = 2 * np.pi / 50
    A = np.zeros((3, 3))
    A[:2, :2] = radius * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A[2, 2] = radius
    with torch.no_grad():
        m.net_.dynamics.A.copy_(torch.as_tensor(A, dtype=torch.float32))
        m.net_.dynamics.b.zero_()
    return m


def test_long_run_tells_an_oscillation_from_a_fixed_point_and_a_divergence():
    sustained = _rotation_model(1.0).long_run()
    assert not sustained["settles"] and not sustained["diverged"] and 0.3 < sustained["spread"] < 3, sustained
    decaying = _rotation_model(0.995).long_run()  # 0.995^7 500 ≈ 5e-17 by the last quarter
    assert decaying["settles"] and not decaying["diverged"] and decaying["spread"] < 1e-6, decaying
    growing = _rotation_model(1.01).long_run()  # 1.01^10 000: leaves the bounded regime
    assert growing["diverged"] and not growing["settles"], growing
    assert sustained["steps"] == decaying["steps"] == 10_000


def test_cli_fit_warns_when_the_free_run_settles(cli, tmp_path, monkeypatch):
    """One warning line (also with --quiet) and the check in --json, when the fitted model's long
    free run settles on a fixed point; nothing when it does not."""
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "500", "--tr", "0.5", "--dt", "0.01", "--noise", "0.01", "-o", x).code == 0
    args = ["--epochs", "1", "--batches-per-epoch", "1", "--hidden-dim", "8", "--json", "--quiet"]
    monkeypatch.setattr(ConvSSM, "long_run", lambda self, n_steps=10_000: {"steps": n_steps, "spread": 0.001, "settles": True,
                                                                             "diverged": False})
    r = cli("fit", x, "-o", tmp_path / "a", *args)
    assert r.code == 0, r.err
    assert r.err.count("\n") == 1 and r.err.startswith("warning: the fitted model's free run settles on a fixed point"), r.err
    assert "--alpha-end 0.02" in r.err and json.loads(r.out)["long_run"]["settles"] is True
    r = cli("fit", x, "-o", tmp_path / "ens", *args, "--ensemble", "2")  # the ensemble's best member
    assert r.code == 0, r.err
    assert r.err.count("\n") == 1 and r.err.startswith("warning: the best member's free run settles on a fixed point"), r.err
    assert json.loads(r.out)["long_run"]["settles"] is True
    monkeypatch.setattr(ConvSSM, "long_run", lambda self, n_steps=10_000: {"steps": n_steps, "spread": 1.0, "settles": False,
                                                                             "diverged": False})
    r = cli("fit", x, "-o", tmp_path / "b", *args)
    assert r.code == 0 and r.err == "", r.err
    assert json.loads(r.out)["long_run"] == {"steps": 10_000, "spread": 1.0, "settles": False, "diverged": False}
