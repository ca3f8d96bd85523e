"""Teacher-space pretraining (`--pretrain-epochs`, issue 15): the latent model is first fitted to
the deconvolved teacher signals with no kernel, then trained through the kernel; deterministic
(resume, ensemble members) and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dsrecon
from dsrecon import ConvSSM, Recording
from dsrecon.ensemble import fit_ensemble
from dsrecon.errors import DsreconError
from dsrecon.systems import simulate_system
from dsrecon.training.hooks import InjectedKill, inject_faults
from dsrecon.training.trainer import Trainer

OPTS = dict(hidden_dim=8, latent_dim=3, epochs=4, batches_per_epoch=3, batch_size=4, val_every=2, checkpoint_every=1,
            pretrain_epochs=3)


def _rec(n=800, seed=0):
    out = simulate_system("lorenz63", n, 0.01, 0.5, kernel="spm", noise=0.01, seed=seed)
    return Recording(out["observed"], tr=0.5, names=out["names"], source=f"lorenz{seed}")


def _teacher_prediction_error(net, teacher: np.ndarray, n: int = 10) -> float:
    """Mean squared error of the n-step prediction in teacher space: the state from teacher frame
    t, n free steps, against teacher frame t + n (first N units); an independent measure of what
    pretraining fits (nothing of the measurement kernel enters)."""
    ok = np.flatnonzero(np.isfinite(teacher).all(1))
    ok = ok[np.isin(ok + n, ok)]
    z = net.init_state(torch.as_tensor(teacher[ok], dtype=torch.float32))
    with torch.no_grad():
        for _ in range(n):
            z = net.dynamics.step(z)
    return float(np.mean((z[:, : teacher.shape[1]].numpy() - teacher[ok + n]) ** 2))


def test_pretraining_fits_the_latent_model_to_the_teacher_signals():
    """Three phase-shifted oscillations through the SPM HRF: 2 000 pretraining steps cut the
    10-step teacher-space prediction error well below the initial model's, and the net keeps its
    kernel for the epochs that follow."""
    from dsrecon.signal.kernels import spm_hrf
    from dsrecon.training.prepare import prepare

    t = np.arange(1400)
    z = np.stack([np.sin(2 * np.pi * t / 40), np.cos(2 * np.pi * t / 40), np.sin(2 * np.pi * t / 40 + 1)], 1)
    h = spm_hrf(0.5)
    x = np.stack([np.convolve(z[:, i], h)[: t.size] for i in range(3)], 1)[200:]
    x += 0.01 * x.std(0) * np.random.default_rng(0).standard_normal(x.shape)
    recs = [Recording(x, tr=0.5, names=["a", "b", "c"], source="oscillator")]
    spec, kern, _ = ConvSSM(**{**OPTS, "pretrain_epochs": 400, "batches_per_epoch": 5, "learning_rate": 3e-3}).plan(recs)
    data = prepare(recs, kern, spec.train_options.test_fraction)
    net = spec._build(3, 0, kern, torch.Generator().manual_seed(0), 0)
    trainer = Trainer([net], data, spec.train_options, [0])
    teacher = data.train[0].teacher
    before = _teacher_prediction_error(trainer.member_net(0), teacher)
    taps = net.taps.clone()
    trainer.pretrain()
    after = _teacher_prediction_error(trainer.member_net(0), teacher)
    assert after < 0.6 * before, (before, after)
    torch.testing.assert_close(net.taps, taps, rtol=0, atol=0)  # the net keeps its kernel
    assert trainer.epoch == 0  # the kernel epochs are still to come


def test_pretraining_is_recorded_and_changes_the_fit(tmp_path):
    rec = _rec()
    logs = []
    a = ConvSSM(**OPTS).fit(rec, run_dir=tmp_path / "a", log=logs.append)
    b = ConvSSM(**{**OPTS, "pretrain_epochs": 0}).fit(rec)
    assert any("teacher-space pretraining: 3 epochs" in m for m in logs)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["train_options"]["pretrain_epochs"] == 3
    assert len(a.history_) == OPTS["epochs"]  # the log holds the kernel epochs
    assert a.history_[0]["loss"] != b.history_[0]["loss"]


def test_killed_fit_with_pretraining_resumes_bit_identically(tmp_path):
    rec = _rec()
    full = ConvSSM(**OPTS).fit(rec, run_dir=tmp_path / "full")
    with pytest.raises(InjectedKill), inject_faults(stop_after_epoch=2):
        ConvSSM(**OPTS).fit(rec, run_dir=tmp_path / "killed")
    resumed = ConvSSM(**OPTS).fit(rec, run_dir=tmp_path / "killed", resume=True)
    for k, v in full.net_.state_dict().items():
        torch.testing.assert_close(resumed.net_.state_dict()[k], v, rtol=0, atol=0)
    assert [r["loss"] for r in full.history_] == [r["loss"] for r in resumed.history_]
    # --resume with another pretraining length is refused (the options differ)
    with pytest.raises(DsreconError, match="--pretrain-epochs: 3 in the run, 5 now"):
        with inject_faults(stop_after_epoch=1):
            try:
                ConvSSM(**OPTS).fit(rec, run_dir=tmp_path / "k2")
            except InjectedKill:
                pass
        ConvSSM(**{**OPTS, "pretrain_epochs": 5}).fit(rec, run_dir=tmp_path / "k2", resume=True)


def test_ensemble_member_with_pretraining_equals_the_single_fit(tmp_path):
    rec = _rec()
    s = fit_ensemble(rec, tmp_path / "ens", 2, seed=3, **OPTS)
    for k in (0, 1):
        single = ConvSSM(seed=3 + k, **OPTS).fit(rec)
        member = dsrecon.load_run(tmp_path / "ens" / f"member-{k:02d}")
        assert member.config["training"]["final_loss"] == pytest.approx(single.config["training"]["final_loss"], rel=1e-4)
        for name, v in single.net_.state_dict().items():
            torch.testing.assert_close(member.net_.state_dict()[name], v, atol=1e-4, rtol=1e-4)
    assert s["members"][0]["seed"] == 3


def test_group_fit_pretrains_only_when_asked(cli, tmp_path):
    """fit-group takes --pretrain-epochs (its default is none) and records the epochs it ran."""
    from dsrecon.io.tables import write_table

    for sub in ("01", "02"):
        out = simulate_system("lorenz63", 400, 0.01, 0.5, kernel="spm", noise=0.01, seed=int(sub))
        write_table(tmp_path / f"sub-{sub}.tsv", out["observed"], out["names"], sidecar={"RepetitionTime": 0.5})
    base = ["fit-group", tmp_path / "sub-01.tsv", tmp_path / "sub-02.tsv", "--subject-from-filename", "--epochs", 2,
            "--batches-per-epoch", 2, "--hidden-dim", 8, "--quiet"]
    assert cli(*base, "--pretrain-epochs", 3, "-o", tmp_path / "g").code == 0
    assert cli(*base, "-o", tmp_path / "g0").code == 0
    pre, plain = dsrecon.load_run(tmp_path / "g"), dsrecon.load_run(tmp_path / "g0")
    assert pre.config["training"]["pretrain_epochs"] == 3 and plain.config["training"]["pretrain_epochs"] == 0
    assert not np.allclose(pre.features_, plain.features_)


def test_default_pretraining_is_half_the_epochs():
    m = ConvSSM(**{**OPTS, "pretrain_epochs": None, "epochs": 4}).fit(_rec())
    assert m.config["training"]["pretrain_epochs"] == 2 and m.config["train_options"]["pretrain_epochs"] is None
    assert ConvSSM(**{**OPTS, "pretrain_epochs": 0}).fit(_rec()).config["training"]["pretrain_epochs"] == 0
