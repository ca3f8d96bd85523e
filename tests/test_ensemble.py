"""Ensembles in one batched computation (`dsrecon fit --ensemble K`).

Checked against independent paths: the numba (E, B) kernels against a batched eager autograd
loop, the vectorised batch gather against `SequenceSampler.sample`, the stacked RAdam against
`torch.optim.RAdam` + `clip_grad_norm_`, and a whole ensemble member against the single fit with
the same seed and α.
"""

import json
import os

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon import ConvSSM, Recording
from dsrecon.models.fused_ensemble import RolloutSpec, eager_ensemble_rollout, ensemble_rollout
from dsrecon.systems import simulate_system
from dsrecon.training.batches import Prepared, SequenceSampler
from dsrecon.training.ensemble import EnsembleBatcher, StackedRAdam, clip_rows_, fit_ensemble

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lorenz_bold():
    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    return Recording(out["observed"], tr=0.5, names=out["names"])


@pytest.mark.parametrize("kind,M,L", [("cshplrnn", 4, 7), ("shplrnn", 4, 7), ("alrnn", 5, 0), ("plrnn", 4, 0)])
def test_batched_kernels_match_eager_autograd(kind, M, L):
    relu = None
    if kind == "alrnn":
        relu = np.array([0, 0, 0, 1, 1], bool)
    elif kind == "plrnn":
        relu = np.ones(M, bool)
    spec = RolloutSpec(kind, M, L, relu)
    E, B, T, N, F = 3, 4, 23, 3, 3
    g = torch.Generator().manual_seed(1)
    dyn = (0.4 * torch.randn(E, spec.P, generator=g, dtype=torch.float64)).requires_grad_()
    z0 = torch.randn(E, B, M, dtype=torch.float64, generator=g).requires_grad_()
    d = torch.randn(E, B, T, N, dtype=torch.float64, generator=g)
    d[1, 2, 3, 1] = float("nan")
    d[0, 0, 5:9, :] = float("nan")
    a = torch.rand(E, T - 1, dtype=torch.float64, generator=g)
    a[:, ::5] = 1.0
    w = torch.randn(E, B, T, M, dtype=torch.float64, generator=g)
    Z = ensemble_rollout(spec, dyn, z0, d.numpy(), a.numpy(), F)
    g1 = torch.autograd.grad((Z * w).sum(), [dyn, z0])
    Z2 = eager_ensemble_rollout(spec, dyn, z0, d, a, F)
    g2 = torch.autograd.grad((Z2 * w).sum(), [dyn, z0])
    torch.testing.assert_close(Z, Z2, atol=1e-12, rtol=1e-12)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-10)


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
    batcher = EnsembleBatcher(sampler, 0.0, torch.device("cpu"))
    rngs = [np.random.default_rng(s) for s in (10, 11, 12)]
    refs = [np.random.default_rng(s) for s in (10, 11, 12)]
    for _ in range(3):
        b = batcher.gather(batcher.indices(rngs, 6))
        for e, r in enumerate(refs):
            ref = sampler.sample(6, r)
            np.testing.assert_array_equal(b["teacher"][e], ref["teacher"])
            np.testing.assert_array_equal(b["x"][e], ref["x"])
            np.testing.assert_array_equal(b["mask"][e], ref["mask"])
            np.testing.assert_array_equal(b["regressors"][e], ref["regressors"])


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
        sr.step(flat, gg, lrs)
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
    member equals the single fused fit, and the single fused fit equals the eager path."""
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
    s2 = fit_ensemble(rec, tmp_path / "ens-eager", 2, seed=3, **opts)  # the device-agnostic eager ensemble path
    assert [m["final_loss"] for m in s2["members"]] == pytest.approx([m["final_loss"] for m in s["members"]], rel=1e-4)


def test_existing_output_and_bad_backend_are_one_line_errors(lorenz_bold, tmp_path):
    from dsrecon.errors import DsreconError

    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "x").write_text("")
    with pytest.raises(DsreconError, match="not a dsrecon run"):
        fit_ensemble(lorenz_bold, tmp_path / "ens", 2, **OPTS)
    assert [p.name for p in (tmp_path / "ens").iterdir()] == ["x"]
    with pytest.raises(DsreconError, match="PLRNN family"):
        fit_ensemble(lorenz_bold, tmp_path / "ens2", 2, backend="lru", epochs=1)
    assert not (tmp_path / "ens2").exists()


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
    assert r.code == 1 and "--resume is not supported with --ensemble" in r.err


def test_collapse_restore_in_a_member_equals_the_single_fit(lorenz_bold, tmp_path, monkeypatch):
    """A validation that reports a collapsed free run restores the best state and resets the RAdam
    moments, in the batched member exactly as in the single fit (validation faked: good at the
    first check, collapsed at the second, so the restore happens mid-run)."""
    import dsrecon.training.ensemble as ens_mod
    import dsrecon.training.trainer as trainer_mod

    def fake_factory():
        n = {"calls": 0}

        def fake(net, data, opts, seed=0):
            n["calls"] += 1
            good = n["calls"] == 1
            return {"D_stsp": 1.0 if good else 9.0, "D_H": 0.1, "D_stsp_method": "binned", "collapsed": not good}
        return fake

    opts = {**OPTS, "epochs": 6, "val_every": 2, "patience": 0, "restore_on_collapse": True}
    monkeypatch.setattr(trainer_mod, "validate", fake_factory())
    single = ConvSSM(seed=2, **opts).fit(lorenz_bold)
    monkeypatch.setattr(ens_mod, "validate", fake_factory())
    s = fit_ensemble(lorenz_bold, tmp_path / "ens", 1, seed=2, **opts)
    assert single.config["training"]["collapse_restores"] == 2  # checks 2 and 3 both collapsed
    assert s["members"][0]["collapse_restores"] == 2
    member = dsrecon.load_run(tmp_path / "ens" / "member-00")
    np.testing.assert_allclose(np.genfromtxt(tmp_path / "ens" / "member-00" / "training_log.tsv", names=True, delimiter="\t")["loss"],
                               [r["loss"] for r in single.history_], rtol=1e-4)
    for name, v in single.net_.state_dict().items():
        torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-4, rtol=1e-4)
