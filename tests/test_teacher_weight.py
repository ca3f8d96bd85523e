"""The teacher-space loss term (`--teacher-weight λ`, issue 15): λ·MSE(pre-forcing latent, teacher)
beside the observation loss, checked against the net's own teacher-forced rollout (the slow path)
on a fused backend and on a vmapped one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dsrecon import ConvSSM, Recording
from dsrecon.options import TEACHER_WEIGHT_LONG, TEACHER_WEIGHT_MIN_SAMPLES, TrainOptions
from dsrecon.systems import simulate_system
from dsrecon.training.prepare import prepare
from dsrecon.training.trainer import Trainer

OPTS = dict(hidden_dim=8, latent_dim=4, epochs=2, batches_per_epoch=2, batch_size=3, pretrain_epochs=0)


@pytest.mark.parametrize("backend", ["cshplrnn", "lru"])
def test_teacher_term_is_lambda_times_latent_mse(backend):
    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    recs = [Recording(out["observed"], tr=0.5, names=out["names"], source="lorenz")]
    spec, kern, _ = ConvSSM(**OPTS, backend=backend).plan(recs)
    data = prepare(recs, kern, spec.train_options.test_fraction)
    nets = [spec._build(3, 0, kern, torch.Generator().manual_seed(s), s) for s in (0, 1)]
    tr = Trainer(nets, data, spec.train_options, [0, 1])
    idx = np.arange(2)
    flat = tr.stack.flat.clone()
    batch = tr._draw(idx, flat)
    T = batch["teacher_t"].shape[2]
    alpha = torch.full((2, T - 1), 0.3)
    base = tr.stack.losses(flat, batch, alpha, 0.0)
    with_t = tr.stack.losses(flat, batch, alpha, 0.0, teacher_weight=2.5)
    for e in idx:  # the slow path: member e's net, its own teacher-forced rollout, by hand
        net = tr.member_net(int(e), flat[e])
        d = batch["teacher_t"][e]
        with torch.no_grad():
            _, Z = net.teacher_forced(d, alpha[e])
        want = float(((Z[..., : net.F] - d[..., : net.F]) ** 2).mean())
        assert want > 1e-4  # the rollout is not the teacher itself
        assert float(with_t[e] - base[e]) == pytest.approx(2.5 * want, rel=1e-4)


def test_teacher_weight_is_recorded_and_pretraining_ignores_it(tmp_path):
    out = simulate_system("lorenz63", 600, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    rec = Recording(out["observed"], tr=0.5, names=out["names"], source="lorenz")
    ConvSSM(**{**OPTS, "pretrain_epochs": 1, "teacher_weight": 0.5}).fit(rec, run_dir=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train_options"]["teacher_weight"] == 0.5
    assert cfg["training"]["teacher_weight"] == 0.5
    assert cfg["training"]["pretrain_epochs"] == 1  # pretraining ran (its sub-fit has no teacher term: it fits the teacher itself)


def test_teacher_weight_flag_on_the_cli(cli, tmp_path):
    assert "--teacher-weight" in cli("fit", "--help").out
    x = tmp_path / "x.tsv"
    x.write_text("a\tb\n" + "".join(f"{i % 7}\t{i % 5}\n" for i in range(300)))
    res = cli("fit", x, "--teacher-weight", "-1", "-o", tmp_path / "out")
    assert res.code == 1 and "--teacher-weight" in res.err and len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_default_weight_follows_the_training_length():
    """The default (None) is λ TEACHER_WEIGHT_LONG from TEACHER_WEIGHT_MIN_SAMPLES training samples
    on and 0 below; an explicit value, 0 included, always wins."""
    o = TrainOptions()
    assert o.teacher_weight is None
    assert o.teacher_weighting(TEACHER_WEIGHT_MIN_SAMPLES - 1) == 0.0
    assert o.teacher_weighting(TEACHER_WEIGHT_MIN_SAMPLES) == TEACHER_WEIGHT_LONG > 0
    assert TrainOptions(teacher_weight=0.0).teacher_weighting(10**6) == 0.0
    assert TrainOptions(teacher_weight=0.3).teacher_weighting(10) == 0.3


@pytest.mark.parametrize("n_frames", [600, 21_000])
def test_trainer_resolves_the_default_on_its_training_split(n_frames, tmp_path):
    """The preset is chosen on the training split (75 % of the frames here), not the whole
    recording, both by a fit (`ConvSSM.resolved`) and by a Trainer handed unresolved options; a
    fit records the preset and the λ it used in config.json."""
    out = simulate_system("lorenz63", n_frames, 0.01, 0.5, kernel="spm", noise=0.01, seed=0)
    recs = [Recording(out["observed"], tr=0.5, names=out["names"], source="lorenz")]
    spec, kern, config = ConvSSM(**OPTS).plan(recs)
    data = prepare(recs, kern, spec.train_options.test_fraction)
    net = spec._build(3, 0, kern, torch.Generator().manual_seed(0), 0)
    n_train = sum(p.x.shape[0] for p in data.train)
    want = TEACHER_WEIGHT_LONG if n_train >= TEACHER_WEIGHT_MIN_SAMPLES else 0.0
    assert (n_frames > 20_000) == (want > 0)
    assert spec.teacher_weight == want and config["preset"] == ("long" if want else "short")
    unset = dataclasses.replace(spec.train_options, teacher_weight=None, alpha=None, l2=None)
    for opts in (spec.train_options, unset):  # resolved, and left to the Trainer
        assert Trainer([net], data, opts, [0]).teacher_weight == want
    if n_frames < 1000:
        ConvSSM(**OPTS).fit(recs[0], run_dir=tmp_path / "run")
        cfg = json.loads((tmp_path / "run" / "config.json").read_text())
        assert cfg["train_options"]["teacher_weight"] == 0.0 and cfg["training"]["teacher_weight"] == 0.0
        assert cfg["preset"] == "short"
