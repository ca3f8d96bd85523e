"""Ensembles: E members trained at once by the one engine (`dsrecon fit --ensemble K`).

Checked against independent paths: the vectorised batch gather against per-sequence slicing, the
stacked RAdam against `torch.optim.RAdam` + `clip_grad_norm_`, and a whole ensemble member against
the plain fit (E = 1) with the same seed and α, for the fused PLRNN family and for the backends
trained through torch.func.vmap. A SIGKILLed ensemble resumes bit-identically.
(The fused kernel against repeated `step`: tests/test_fused.py.)
"""

import json
import os

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon import ConvSSM, Recording
from dsrecon.ensemble import fit_ensemble
from dsrecon.systems import simulate_system
from dsrecon.training.batches import Prepared, SequenceSampler
from dsrecon.training.stack import StackedRAdam, clip_rows_

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lorenz_bold():
    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    return Recording(out["observed"], tr=0.5, names=out["names"])


def test_vectorised_gather_equals_sequence_sampler():
    rng = np.random.default_rng(3)
    recs = []
    for T in (90, 120):  # two recordings with censored frames and NaN teacher edges
        x = rng.standard_normal((T, 2)).astype(np.float32)
        mask = rng.random(T) > 0.1
        teacher = rng.standard_normal((T, 2)).astype(np.float32)
        teacher[:3] = np.nan
        teacher[~mask] = np.nan
        recs.append(Prepared(x, mask, teacher, rng.standard_normal((T, 1)).astype(np.float32), "r"))
    sampler = SequenceSampler(recs, 30, 5)
    T, K = 30, 5
    rngs = [np.random.default_rng(s) for s in (10, 11, 12)]
    refs = [np.random.default_rng(s) for s in (10, 11, 12)]
    for _ in range(3):
        b = sampler.gather(np.stack([r.integers(0, len(sampler), size=6) for r in rngs]))
        for e, r in enumerate(refs):
            for j, (ri, st) in enumerate(sampler.starts[r.integers(0, len(sampler), size=6)]):
                rec = recs[ri]
                np.testing.assert_array_equal(b["teacher"][e, j], rec.teacher[st : st + T])
                np.testing.assert_array_equal(b["x"][e, j], rec.x[st + K - 1 : st + T])
                np.testing.assert_array_equal(b["mask"][e, j], rec.mask[st + K - 1 : st + T])
                np.testing.assert_array_equal(b["regressors"][e, j], rec.regressors[st : st + T])


def test_noise_draws_with_out_equal_sized_draws():
    a = np.random.default_rng(4)
    b = np.random.default_rng(4)
    buf = np.empty((3, 7, 2), np.float32)
    a.standard_normal(out=buf, dtype=np.float32)
    np.testing.assert_array_equal(buf, b.standard_normal((3, 7, 2), dtype=np.float32))


def test_stacked_radam_with_row_clipping_equals_torch_radam():
    g = torch.Generator().manual_seed(0)
    E, P = 3, 11
    init = torch.randn(E, P, generator=g)
    lrs = np.array([1e-2, 3e-3, 5e-2])
    refs = [torch.nn.Parameter(init[e].clone()) for e in range(E)]
    opts = [torch.optim.RAdam([p], lr=float(lr)) for p, lr in zip(refs, lrs)]
    flat = init.clone()
    sr = StackedRAdam(E, P, torch.device("cpu"))
    for step in range(12):
        grad = torch.randn(E, P, generator=g) * (5.0 if step % 3 == 0 else 0.5)
        for e in range(E):
            refs[e].grad = grad[e].clone()
            torch.nn.utils.clip_grad_norm_([refs[e]], 2.0)
            opts[e].step()
        gg = grad.clone()
        clip_rows_(gg, 2.0)
        sr.step(flat, gg, lrs, sr.m, sr.v, sr.step_count)
    for e in range(E):
        torch.testing.assert_close(flat[e], refs[e].detach(), atol=1e-6, rtol=1e-5)


OPTS = dict(hidden_dim=10, latent_dim=4, epochs=3, batches_per_epoch=4, batch_size=4, val_every=2, test_fraction=0.25)


def test_member_equals_single_fit_and_runs_are_ordinary(lorenz_bold, tmp_path):
    out = tmp_path / "ens"
    s = fit_ensemble(lorenz_bold, out, 3, seed=5, alphas=["0.1", "0.2"], **OPTS)
    assert [m["seed"] for m in s["members"]] == [5, 6, 7]
    assert [m["alpha"] for m in s["members"]] == ["0.1", "0.2", "0.1"]
    for k in (0, 1, 2):
        m = s["members"][k]
        single = ConvSSM(seed=m["seed"], alpha=m["alpha"], **OPTS).fit(lorenz_bold)
        member = dsrecon.load_run(out / f"member-{k:02d}")
        assert member.config["seed"] == m["seed"]
        assert member.config["train_options"]["alpha"] == m["alpha"]
        assert member.config["ensemble"]["member"] == k and member.config["ensemble"]["size"] == 3
        assert member.config["training"]["final_loss"] == pytest.approx(single.config["training"]["final_loss"], rel=1e-4)
        log = np.genfromtxt(out / f"member-{k:02d}" / "training_log.tsv", names=True, delimiter="\t")
        np.testing.assert_allclose(log["loss"], [r["loss"] for r in single.history_], rtol=1e-4)
        for name, v in single.net_.state_dict().items():
            torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-4, rtol=1e-4)
        # the member is a complete run: simulate works from it
        assert member.simulate(50)["observed"].shape == (50, 3)
    on_disk = json.loads((out / "ensemble.json").read_text())
    assert on_disk["best_member"] == s["best_member"]
    vals = [(m["best_val_D_stsp"], m["best_val_D_H"]) for m in s["members"]]
    assert vals[s["best_member"]] == min(vals)
    assert os.readlink(out / "best") == s["best_run"]
    assert not list(tmp_path.glob(".ens.partial*"))


def test_alrnn_sparse_tf_member_equals_single_fit_and_eager(tmp_path, monkeypatch):
    """The ALRNN config of the speed benchmark (sparse TF, no kernel), scaled down: the batched
    member equals the plain fused fit, and the fused engine equals the vmap path over repeated `step`."""
    out = simulate_system("lorenz63", 500, 0.01, 0.2, kernel="none", noise=0.01, seed=0)
    rec = Recording(out["observed"], tr=0.2, names=out["names"])
    opts = dict(backend="alrnn", latent_dim=6, backend_options={"pwl_units": 2}, kernel="none", sparse_tf_interval=4,
                epochs=3, batches_per_epoch=4, batch_size=4, sequence_length=40, val_every=100, test_fraction=0.0)
    s = fit_ensemble(rec, tmp_path / "ens", 2, seed=3, **opts)
    single = ConvSSM(seed=4, **opts).fit(rec)
    member = dsrecon.load_run(tmp_path / "ens" / "member-01")
    for name, v in single.net_.state_dict().items():
        torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-4, rtol=1e-4)
    assert "final training loss" in s["selection"]
    monkeypatch.setenv("DSRECON_NO_FUSED", "1")
    plain = ConvSSM(seed=4, **opts).fit(rec)
    assert [r["loss"] for r in single.history_] == pytest.approx([r["loss"] for r in plain.history_], rel=1e-4)
    s2 = fit_ensemble(rec, tmp_path / "ens-vmap", 2, seed=3, **opts)  # the engine without a fused kernel (vmap)
    assert [m["final_loss"] for m in s2["members"]] == pytest.approx([m["final_loss"] for m in s["members"]], rel=1e-4)


def test_existing_output_is_a_one_line_error(lorenz_bold, tmp_path):
    from dsrecon.errors import DsreconError

    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "x").write_text("")
    with pytest.raises(DsreconError, match="not a dsrecon run"):
        fit_ensemble(lorenz_bold, tmp_path / "ens", 2, **OPTS)
    assert [p.name for p in (tmp_path / "ens").iterdir()] == ["x"]


def test_cli_fit_ensemble_writes_member_runs_and_best(cli, tmp_path):
    x = str(tmp_path / "x.tsv")
    assert cli("simulate", "system", "lorenz63", "--length", "800", "--tr", "0.5", "--noise", "0.01", "-o", x).code == 0
    out = tmp_path / "ens"
    args = ["fit", x, "-o", str(out), "--epochs", "2", "--batches-per-epoch", "3", "--hidden-dim", "8", "--val-every", "1",
            "--ensemble", "3", "--ensemble-alpha", "0.1,0.3", "--seed", "2", "--json", "--quiet"]
    r = cli(*args)
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["size"] == 3 and [m["seed"] for m in res["members"]] == [2, 3, 4]
    assert [m["alpha"] for m in res["members"]] == ["0.1", "0.3", "0.1"]
    best = dsrecon.load_run(out / "best")
    assert best.config["seed"] == 2 + res["best_member"]
    r = cli(*args)  # the directory exists now
    assert r.code == 1 and "already exists" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli(*args[:-2], "--resume", "--quiet")
    assert r.code == 1 and "nothing to resume" in r.err


def test_collapse_restore_in_a_member_equals_the_single_fit(lorenz_bold, tmp_path, monkeypatch):
    """A validation that reports a collapsed free run restores the best state and resets the RAdam
    moments, in the batched member exactly as in the single fit (validation faked: good at the
    first check, collapsed at the second, so the restore happens mid-run)."""
    import dsrecon.training.trainer as trainer_mod

    def fake_factory():
        n = {"calls": 0}

        def fake(net, data, opts, seed=0):
            n["calls"] += 1
            good = n["calls"] == 1
            return {"D_stsp": 1.0 if good else 9.0, "D_H": 0.1, "D_stsp_method": "binned", "collapsed": not good}
        return fake

    opts = {**OPTS, "epochs": 6, "val_every": 2, "patience": 0, "restore_on_collapse": True}
    monkeypatch.setattr(trainer_mod, "validation_scores", fake_factory())
    single = ConvSSM(seed=2, **opts).fit(lorenz_bold)
    monkeypatch.setattr(trainer_mod, "validation_scores", fake_factory())
    s = fit_ensemble(lorenz_bold, tmp_path / "ens", 1, seed=2, **opts)
    assert single.config["training"]["collapse_restores"] == 2  # checks 2 and 3 both collapsed
    assert s["members"][0]["collapse_restores"] == 2
    member = dsrecon.load_run(tmp_path / "ens" / "member-00")
    np.testing.assert_allclose(np.genfromtxt(tmp_path / "ens" / "member-00" / "training_log.tsv", names=True, delimiter="\t")["loss"],
                               [r["loss"] for r in single.history_], rtol=1e-4)
    for name, v in single.net_.state_dict().items():
        torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["s4d", "lru", "mamba", "chimera"])
def test_ensemble_of_a_backend_without_fused_kernel_equals_single_fits(backend, lorenz_bold, tmp_path, monkeypatch):
    """--ensemble 4 trains through torch.func.vmap over the members: member k equals the plain fit with seed 7 + k."""
    import dsrecon.models.noise as noise

    # the noise model's free run (20 000 Python steps of a stepped SSM: 80 % of each fit here) is the
    # same code for members and single fits; a short one keeps the comparison and the suite's time
    monkeypatch.setattr(noise, "SIGNAL_STEPS", 500)
    monkeypatch.setattr(noise, "SIGNAL_BURN_IN", 100)
    opts = dict(backend=backend, hidden_dim=8, latent_dim=3, epochs=2, batches_per_epoch=3, batch_size=4, sequence_length=80,
                test_fraction=0.0, alpha="0.3")
    s = fit_ensemble(lorenz_bold, tmp_path / "ens", 4, seed=7, **opts)
    assert [m["seed"] for m in s["members"]] == [7, 8, 9, 10]
    for k in range(4):
        single = ConvSSM(seed=7 + k, **opts).fit(lorenz_bold)
        member = dsrecon.load_run(tmp_path / "ens" / f"member-{k:02d}")
        assert member.config["ensemble"]["engine"].startswith("vmap")
        assert s["members"][k]["final_loss"] == pytest.approx(single.config["training"]["final_loss"], rel=1e-5)
        for name, v in single.net_.state_dict().items():
            torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-5, rtol=1e-5)


#: an ensemble fit long enough to be killed mid-training, checkpointing every epoch
LONG = ["--epochs", "60", "--batches-per-epoch", "2", "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "60",
        "--val-every", "5", "--checkpoint-every", "1", "--quiet", "--seed", "3", "--ensemble", "3", "--ensemble-alpha", "0.1,0.2"]


def test_sigkilled_ensemble_resumes_bit_identically(tmp_path):
    import signal
    import time

    from safetensors.torch import load_file

    from hostile_util import dsrecon as run_cli
    from hostile_util import leftovers, lorenz_table, popen

    lorenz_table(tmp_path / "x.tsv")
    (tmp_path / "full").mkdir()
    lorenz_table(tmp_path / "full" / "x.tsv")
    r = run_cli("fit", "x.tsv", "-o", "ens", *LONG, cwd=tmp_path / "full")
    assert r.code == 0, r.err

    def ckpt_epoch() -> int:
        try:
            return int(json.loads((tmp_path / ".ens.staging" / "checkpoint" / "state.json").read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return -1

    p = popen("fit", "x.tsv", "-o", "ens", *LONG, cwd=tmp_path)
    t0 = time.time()
    while ckpt_epoch() < 8:
        assert p.poll() is None, p.stderr.read()
        assert time.time() - t0 < 120, "timed out"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / "ens").exists() and ckpt_epoch() < 60  # killed mid-training, nothing at the target
    r = run_cli("fit", "x.tsv", "-o", "ens", *LONG, "--resume", cwd=tmp_path)
    assert r.code == 0, r.err
    for k in range(3):
        a = load_file(str(tmp_path / "ens" / f"member-{k:02d}" / "model.safetensors"))
        b = load_file(str(tmp_path / "full" / "ens" / f"member-{k:02d}" / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), f"member {k} differs"
    ea, eb = (json.loads((d / "ensemble.json").read_text()) for d in (tmp_path / "ens", tmp_path / "full" / "ens"))
    assert [m["final_loss"] for m in ea["members"]] == [m["final_loss"] for m in eb["members"]]
    assert ea["best_member"] == eb["best_member"]
    assert not leftovers(tmp_path / "ens")
