"""The hierarchical group model: generation schemes (hand-computed), F = 0 is a single fit, subject
selection, transfer, resume, and `dsrecon fit-group` end to end on a BIDS tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsrecon import ConvSSM, GroupConvSSM, Recording, load_run
from dsrecon.errors import DsreconError
import dsrecon.models.group as MG
from dsrecon.models.group import GroupLayout, init_features
from dsrecon.systems import simulate_system
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.hooks import InjectedKill, inject_faults
from dsrecon.training.stack import Stack

TINY = dict(hidden_dim=8, epochs=4, batches_per_epoch=3, batch_size=4, val_every=2, checkpoint_every=2, sequence_length=60)


def rec(rho=28.0, n=400, tr=1.0, seed=0, name="r"):
    out = simulate_system("lorenz63", n, 0.01, tr, kernel="spm", noise=0.01, seed=seed, params={"rho": rho})
    return Recording(out["observed"], tr=tr, names=out["names"], source=f"{name}.tsv")


def tensors(path):
    return ckpt.load_tensors(path / "model.safetensors")


# ----------------------------------------------------------------------------- generation
def test_linear_scheme_by_hand():
    layout = {"a": (0, (2,)), "W": (2, (2, 2))}  # P = 6
    L = GroupLayout(layout, 6, 2, "linear")
    assert L.G == 6 + 6 * 2
    b = torch.arange(6.0)
    Pm = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, -1.0]])
    g = torch.cat([b, Pm.reshape(-1)])
    feats = torch.tensor([[1.0, 2.0], [0.5, 0.0]])
    rows = L.generate(g, feats)
    # θ_j = b + P l_j, written out for subject 0 (l = (1, 2)) and subject 1 (l = (0.5, 0))
    want0 = [0 + 1, 1 + 2, 2 + 3, 3 + 2, 4 + 6, 5 + (1 - 2)]
    want1 = [0.5, 1, 2 + 0.5, 3 + 1, 4, 5 + 0.5]
    assert rows.tolist() == [want0, want1]
    assert torch.equal(L.view(g, "W", "P"), Pm[2:])


def test_outer_scheme_by_hand():
    layout = {"a": (0, (2,)), "W": (2, (2, 3))}  # P = 8
    L = GroupLayout(layout, 8, 2, "outer")
    assert L.G == 8 + 2 * 2 + (2 + 3) * 2
    g = torch.zeros(L.G)
    g[:8] = torch.arange(8.0)
    Pa = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    U = torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # u_1 = (1, 2), u_2 = (0, 1)
    V = torch.tensor([[1.0, 1.0], [0.0, 0.0], [3.0, -1.0]])  # v_1 = (1, 0, 3), v_2 = (1, 0, −1)
    L.view(g, "a", "P").copy_(Pa)
    L.view(g, "W", "U").copy_(U)
    L.view(g, "W", "V").copy_(V)
    l = torch.tensor([[2.0, 1.0]])
    row = L.generate(g, l)[0]
    assert row[:2].tolist() == [0 + 2, 1 + 2]  # a = b_a + P_a l
    # W = b_W + 2·u_1 v_1ᵀ + 1·u_2 v_2ᵀ
    W = torch.arange(2.0, 8.0).reshape(2, 3) + 2 * torch.outer(U[:, 0], V[:, 0]) + torch.outer(U[:, 1], V[:, 1])
    assert W.tolist() == [[4.0, 3.0, 10.0], [10.0, 6.0, 18.0]]
    assert torch.equal(row[2:].reshape(2, 3), W)


@pytest.mark.parametrize("scheme", ["linear", "outer"])
def test_zero_features_give_the_base_parameters(scheme):
    layout = {"a": (0, (2,)), "W": (2, (2, 2))}
    L = GroupLayout(layout, 6, 0, scheme)
    assert L.G == 6
    g = torch.randn(6)
    assert torch.equal(L.generate(g, torch.zeros(3, 0)), g[None].expand(3, 6))


def test_initial_features_have_the_configured_std(monkeypatch):
    unit = init_features(4, 3, torch.Generator().manual_seed(5), std=1.0)
    assert unit.shape == (4, 3)
    assert torch.allclose(init_features(4, 3, torch.Generator().manual_seed(5), std=0.1), 0.1 * unit)
    monkeypatch.setattr(MG, "FEATURE_INIT_STD", 0.25)  # the default is read at call time
    assert torch.allclose(init_features(4, 3, torch.Generator().manual_seed(5)), 0.25 * unit)
    assert init_features(4, 0, torch.Generator()).shape == (4, 0)


# ----------------------------------------------------------------------------- against a single fit
@pytest.mark.parametrize("pretrain", ["0", "3"])
def test_one_subject_zero_features_equals_a_single_fit(cli, tmp_path, pretrain):
    """A group of one subject with F = 0 is `dsrecon fit` with the same seed, bit for bit, with and
    without teacher-space pretraining (a group fit has none by default, so both are given
    --pretrain-epochs explicitly)."""
    from dsrecon.io.tables import write_table

    x = tmp_path / "sub-01_bold.tsv"
    r = rec(seed=3)
    write_table(x, r.data, r.names, sidecar={"RepetitionTime": 1.0})
    opts = ["--hidden-dim", "8", "--epochs", "4", "--batches-per-epoch", "3", "--batch-size", "4", "--val-every", "2",
            "--sequence-length", "60", "--seed", "5", "--quiet"]
    opts += ["--pretrain-epochs", pretrain]
    assert cli("fit", x, "-o", tmp_path / "single", *opts).code == 0
    res = cli("fit-group", x, "--subject-from-filename", "--features", "0", "-o", tmp_path / "group", *opts, "--json")
    assert res.code == 0, res.err
    single = load_run(tmp_path / "single")
    group = load_run(tmp_path / "group")
    assert isinstance(group, GroupConvSSM) and group.subjects == ["01"]
    sub = group.subject("01")
    a, b = single.net_.state_dict(), sub.net_.state_dict()
    assert a.keys() == b.keys()  # the noise model too (each subject's own residuals)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = np.genfromtxt(tmp_path / "single" / "training_log.tsv", names=True, delimiter="\t")
    lb = np.genfromtxt(tmp_path / "group" / "training_log.tsv", names=True, delimiter="\t")
    assert np.array_equal(la["loss"], lb["loss"]) and np.array_equal(la["val_D_stsp"], lb["val_D_stsp"], equal_nan=True)


def test_subject_selects_its_generated_parameters():
    subs = {"sub-01": rec(28, seed=0, name="a"), "02": [rec(40, seed=1, name="b1"), rec(40, seed=2, name="b2")]}
    g = GroupConvSSM(features=2, **TINY).fit(subs)
    assert g.subjects == ["01", "02"] and g.features_.shape == (2, 2)
    assert not np.allclose(g.features_[0], g.features_[1])
    cfg = g.config
    layout = GroupLayout({n: (o, tuple(s)) for n, (o, s) in _stack_layout(g).items()}, cfg["layout"]["P"], 2, "linear")
    for i, sid in enumerate(g.subjects):
        m = g.subject(sid)
        flat = Stack([m.net_]).row_of(m.net_)
        # by hand: θ = b + P l for this subject's features
        b = g.g_[: layout.P]
        Pm = g.g_[layout.P :].reshape(layout.P, 2)
        want = b + Pm @ torch.as_tensor(g.features_[i], dtype=torch.float32)
        torch.testing.assert_close(flat, want, rtol=0, atol=1e-6)
        assert m.config["subject"] == sid and m.config["inputs"] == [r.source for r in ([subs["sub-01"]] if sid == "01" else subs["02"])]
    a, b = g.subject("01").net_.dynamics.W1, g.subject("02").net_.dynamics.W1
    assert not torch.equal(a, b)
    with pytest.raises(Exception, match="no subject '03'"):
        g.subject("03")


def _stack_layout(g):
    m = g.subject(g.subjects[0])
    return Stack([m.net_]).layout


def test_transfer_freezes_the_group_parameters_and_learns_features(tmp_path):
    subs = {"01": rec(28, seed=0, name="a"), "02": rec(40, seed=1, name="b")}
    g = GroupConvSSM(features=2, **TINY).fit(subs, run_dir=tmp_path / "grp")
    src = load_run(tmp_path / "grp")
    new = src.transfer({"03": rec(34, seed=7, name="c")}, run_dir=tmp_path / "grp2", epochs=3)
    assert torch.equal(new.g_, g.g_)
    on_disk = tensors(tmp_path / "grp2")["group"]
    assert torch.equal(on_disk, tensors(tmp_path / "grp")["group"])
    # the start: where the group's model validates best on the new subject (the mean or a source subject's features)
    cands = {"mean": np.asarray(g.features_).mean(0), "01": np.asarray(g.features_)[0], "02": np.asarray(g.features_)[1]}
    start = cands[new.config["transfer_start"]["03"]]
    assert new.subjects == ["03"] and new.config["transfer_from"]["subjects"] == ["01", "02"]
    assert new.config["training"]["updates"] == 3 * TINY["batches_per_epoch"]
    kept_start = new.config["training"]["best_epoch"] == 0  # the start validated best: it is kept
    assert np.allclose(new.features_[0], start) == kept_start
    out = new.subject("03").simulate(50)
    assert out["latent"].shape == (50, 3)
    # without validation (no held-out tail) the start is the mean and the last model is kept: the features moved
    learned = src.transfer({"03": rec(34, seed=7, name="c")}, epochs=3, test_fraction=0.0)
    assert torch.equal(learned.g_, g.g_) and not np.allclose(learned.features_[0], cands["mean"])
    pre = src.transfer({"03": rec(34, seed=7, name="c")}, run_dir=tmp_path / "grp3", epochs=3, pretrain_epochs=2, test_fraction=0.0)
    assert torch.equal(pre.g_, g.g_)  # teacher-space pretraining of the features leaves the group frozen too
    assert not np.allclose(pre.features_[0], learned.features_[0])


def test_transfer_starts_each_subject_at_its_best_validating_candidate_and_can_keep_it(monkeypatch):
    """choose_start takes, per new subject, the candidate features with the lowest validation
    D_stsp; a transfer validates that start (epoch 0) and keeps it when training only gets worse."""
    from dsrecon.training import group as TG

    subs = {"01": rec(28, seed=0, name="a"), "02": rec(40, seed=1, name="b")}
    g = GroupConvSSM(features=2, **TINY).fit(subs)
    table = {0: [5.0, 9.0], 1: [4.0, 9.5], 2: [6.0, 3.0]}  # candidate → (subject 03, subject 04) validation

    def fake_subject_validation(self, feats):
        k = next(i for i, c in enumerate(cands) if torch.allclose(feats[0], c))
        return table[k]

    cands = torch.as_tensor(np.concatenate([np.asarray(g.features_, np.float32).mean(0, keepdims=True),
                                            np.asarray(g.features_, np.float32)]))
    monkeypatch.setattr(TG.GroupTrainer, "subject_validation", fake_subject_validation)
    calls = []
    orig = TG.GroupTrainer._validate

    def worse_and_worse(self, e, generated=None):  # every validation after the start scores worse
        v = orig(self, e, generated)
        calls.append(self.epoch)
        return {**v, "D_stsp": 1.0 + self.epoch}

    monkeypatch.setattr(TG.GroupTrainer, "_validate", worse_and_worse)
    new = g.transfer({"03": rec(34, seed=7, name="c"), "04": rec(44, seed=8, name="d")}, epochs=4, val_every=2)
    assert new.config["transfer_start"] == {"03": "01", "04": "02"}
    assert calls == [0, 2, 4]  # the start, then every val_every epochs
    assert new.config["training"]["best_epoch"] == 0 and new.config["training"]["best_val_D_stsp"] == 1.0
    np.testing.assert_array_equal(new.features_, cands[[1, 2]].numpy().astype(np.float64))


def test_killed_group_fit_resumes_bit_identically(tmp_path):
    subs = {"01": rec(28, seed=0, name="a"), "02": rec(40, seed=1, name="b")}
    kw = {**TINY, "epochs": 6, "alpha": "adaptive", "pretrain_epochs": 2}  # pretraining is checkpointed and not rerun
    full = GroupConvSSM(features=2, **kw).fit(subs, run_dir=tmp_path / "full")
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=5):
            GroupConvSSM(features=2, **kw).fit(subs, run_dir=tmp_path / "killed")
    assert not (tmp_path / "killed").exists()
    assert (tmp_path / ".killed.staging" / "checkpoint" / "state.json").exists()
    resumed = GroupConvSSM(features=2, **kw).fit(subs, run_dir=tmp_path / "killed", resume=True)
    a, b = tensors(tmp_path / "full"), tensors(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in full.history_] == [r["loss"] for r in resumed.history_]
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=2):
            GroupConvSSM(features=2, **kw).fit(subs, run_dir=tmp_path / "k2")
    with pytest.raises(DsreconError, match="features"):  # resuming with another F is refused; the checkpoint stays
        GroupConvSSM(features=1, **kw).fit(subs, run_dir=tmp_path / "k2", resume=True)
    assert (tmp_path / ".k2.staging" / "checkpoint" / "state.json").exists()


def test_subjects_with_different_kernels_train_together():
    """TR differs between subjects: each keeps its own kernel (a Stack per kernel)."""
    subs = {"01": rec(28, tr=1.0, seed=0, name="a"), "02": rec(40, tr=1.5, seed=1, name="b")}
    g = GroupConvSSM(features=1, **TINY).fit(subs)
    k1, k2 = g.subject("01").kernel_, g.subject("02").kernel_
    assert g.subject("01").tr == 1.0 and g.subject("02").tr == 1.5 and k1.K != k2.K
    assert np.isfinite(g.config["training"]["final_loss"])


# ----------------------------------------------------------------------------- the CLI on a BIDS tree
def test_fit_group_on_a_bids_tree_end_to_end(cli, tmp_path):
    import nibabel as nib

    from test_io_bids import add_run

    root = tmp_path / "fmriprep"
    for sub in ("01", "02"):
        for run in (1, 2):
            add_run(root, sub, run, n_vol=80)
    (root / "dataset_description.json").write_text('{"Name": "fMRIPrep", "DatasetType": "derivative"}')
    lab = np.zeros((4, 4, 4), np.int16)
    lab[:2], lab[2:] = 1, 2
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "atlas.nii.gz")
    out = tmp_path / "grp"
    r = cli("fit-group", root, "--atlas", tmp_path / "atlas.nii.gz", "--features", "2", "--latent-dim", "3", "--hidden-dim", "8",
            "--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4", "--sequence-length", "30", "--val-every", "1",
            "--device", "cpu", "-o", out, "--json", "--quiet")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["subjects"] == ["01", "02"] and res["features"] == 2
    for f in ("model.safetensors", "config.json", "subject_features.tsv", "subject_features.json", "training_log.tsv",
              "teacher/sub-01/index.json", "teacher/sub-02/index.json", "dataset_description.json"):
        assert (out / f).exists(), f
    lines = (out / "subject_features.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["participant_id", "f1", "f2"] and [ln.split("\t")[0] for ln in lines[1:]] == ["sub-01", "sub-02"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "dsrecon-group/1" and [len(s["inputs"]) for s in cfg["subjects"]] == [2, 2]
    assert json.loads((out / "teacher" / "sub-02" / "index.json").read_text())["files"][0].startswith("sub-02_task-rest_run-1")
    g = tmp_path / "gen.tsv"
    r = cli("simulate", "model", out, "--subject", "sub-02", "--steps", "200", "-o", g, "--json")
    assert r.code == 0, r.err
    assert json.loads(g.with_suffix(".json").read_text())["subject"] == "02"


def test_evaluate_all_and_subject_on_a_table_directory(cli, tmp_path):
    from dsrecon.io.tables import write_table

    d = tmp_path / "tables"
    d.mkdir()
    for i, rho in enumerate((28.0, 40.0)):
        r = rec(rho, seed=i)
        write_table(d / f"sub-0{i + 1}_bold.tsv", r.data, r.names, sidecar={"RepetitionTime": 1.0})
    out = tmp_path / "grp"
    r = cli("fit-group", d, "--features", "1", "--hidden-dim", "8", "--epochs", "2", "--batches-per-epoch", "2", "--batch-size", "4",
            "--sequence-length", "60", "--val-every", "1", "-o", out, "--quiet")
    assert r.code == 0, r.err
    r = cli("evaluate", out, "--all", "--lyapunov-steps", "500", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["subjects"]
    assert [x["subject"] for x in rows] == ["01", "02"] and all(x["regime"] for x in rows)
    assert rows[1]["data"] == f"held-out tail of {d / 'sub-02_bold.tsv'}"
    r = cli("evaluate", out, "--subject", "02", "--no-analysis", "--json")
    assert r.code == 0, r.err
    one = json.loads(r.out)
    assert one["subject"] == "02" and one["D_stsp"] == rows[1]["D_stsp"]
    # the group report: the feature space coloured by a participants.tsv column, one row per subject
    from dsrecon.plots.html import html_is_self_contained

    part = tmp_path / "participants.tsv"
    part.write_text("participant_id\tgroup\nsub-01\tpatient\nsub-02\tcontrol\n")
    r = cli("report", out, "--participants", part, "--color-by", "group", "--lyapunov-steps", "500", "--json")
    assert r.code == 0, r.err
    per = json.loads(r.out)["per_subject"]
    assert [(x["subject"], x["group"]) for x in per] == [("01", "patient"), ("02", "control")] and "f1" in per[0]
    text = (out / "report.html").read_text()
    assert html_is_self_contained(text) and "<h2>Subjects</h2>" in text and "feature space" in text and "patient" in text
    r = cli("report", out, "--participants", part, "--color-by", "age", "-o", tmp_path / "r.html")
    assert r.code == 1 and "no such column" in r.err and not (tmp_path / "r.html").exists()
    r = cli("report", out, "--subject", "01", "--lyapunov-steps", "500", "-o", tmp_path / "r1.html", "--json")
    assert r.code == 0, r.err


def test_fit_group_warns_naming_the_subjects_whose_free_run_settles(cli, tmp_path, monkeypatch):
    from dsrecon.io.tables import write_table

    d = tmp_path / "tables"
    d.mkdir()
    for i, rho in enumerate((28.0, 40.0, 33.0)):
        r = rec(rho, seed=i)
        write_table(d / f"sub-0{i + 1}_bold.tsv", r.data, r.names, sidecar={"RepetitionTime": 1.0})

    def long_run(self, n_steps=10_000):  # subjects 02 and 03 settle
        settles = self.config["subject"] in ("02", "03")
        return {"steps": n_steps, "spread": 0.001 if settles else 1.0, "settles": settles, "diverged": False}

    monkeypatch.setattr(ConvSSM, "long_run", long_run)
    r = cli("fit-group", d, "--features", "1", "--hidden-dim", "8", "--epochs", "1", "--batches-per-epoch", "1", "--batch-size", "4",
            "--sequence-length", "60", "-o", tmp_path / "grp", "--quiet", "--json")
    assert r.code == 0, r.err
    assert r.err.count("\n") == 1 and r.err.startswith("warning: subjects 02, 03: the free runs of 10000 steps settle on a fixed point"), r.err
    assert {s: v["settles"] for s, v in json.loads(r.out)["long_run"].items()} == {"01": False, "02": True, "03": True}


# ----------------------------------------------------------------------------- the low-rank feature penalty
def test_feature_penalty_by_hand():
    from types import SimpleNamespace

    from dsrecon.training.group import GroupTrainer

    t = GroupTrainer.__new__(GroupTrainer)  # (only the formula: the fits below train with it)
    t.feature_decay, t.layout = 0.5, SimpleNamespace(P=2)
    vec = torch.tensor([9.0, 9.0, 1.0, 2.0, 3.0])  # b (P = 2) is not penalised; projections and features are
    t.frozen = False
    assert t.feature_penalty(vec).item() == pytest.approx(0.25 * (1 + 4 + 9))
    t.frozen = True  # a transfer's row is the features alone
    assert t.feature_penalty(torch.tensor([1.0, 2.0])).item() == pytest.approx(0.25 * 5)


def test_feature_decay_shrinks_the_features_and_travels_with_the_run(tmp_path):
    subs = {"01": rec(28, seed=0, name="a"), "02": rec(40, seed=1, name="b"), "03": rec(34, seed=2, name="c")}
    kw = {**TINY, "epochs": 6, "test_fraction": 0.0, "learning_rate": 0.02}  # no validation: the last model is kept
    free = GroupConvSSM(features=2, feature_decay=0.0, **kw).fit(subs)
    decayed = GroupConvSSM(features=2, feature_decay=50.0, **kw).fit(subs, run_dir=tmp_path / "grp")
    # the same start (seed): the penalty pulls the features and projections towards 0
    P = decayed.config["layout"]["P"]
    assert np.linalg.norm(decayed.features_) < 0.5 * np.linalg.norm(free.features_)
    assert decayed.g_[P:].norm() < 0.5 * free.g_[P:].norm()
    back = load_run(tmp_path / "grp")
    assert back.feature_decay == 50.0 and back.config["feature_decay"] == 50.0
    new = back.transfer({"04": rec(31, seed=7, name="d")}, epochs=2, test_fraction=0.0)
    assert new.feature_decay == 50.0 and new.config["feature_decay"] == 50.0
    with pytest.raises(DsreconError, match="`feature_decay`"):
        GroupConvSSM(features=2, feature_decay=-1.0, **kw).fit(subs)
    # a run from before the penalty existed (no key in config.json) was fitted without it
    cfg = json.loads((tmp_path / "grp" / "config.json").read_text())
    del cfg["feature_decay"]
    (tmp_path / "grp" / "config.json").write_text(json.dumps(cfg))
    assert load_run(tmp_path / "grp").feature_decay == 0.0


def test_resuming_with_another_feature_decay_is_refused(tmp_path):
    subs = {"01": rec(28, seed=0, name="a"), "02": rec(40, seed=1, name="b")}
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=2):
            GroupConvSSM(features=2, feature_decay=1e-2, **TINY).fit(subs, run_dir=tmp_path / "k")
    with pytest.raises(DsreconError, match="feature decay"):
        GroupConvSSM(features=2, **TINY).fit(subs, run_dir=tmp_path / "k", resume=True)
    assert (tmp_path / ".k.staging" / "checkpoint" / "state.json").exists()


def test_the_feature_decay_default_is_one_number_for_the_library_and_the_cli():
    import inspect

    from dsrecon.cli.group import fit_group_cmd

    g = GroupConvSSM()
    g.validate()
    assert g.feature_decay is None and g.feature_decay_ == MG.FEATURE_DECAY > 0  # (the option stays as given)
    default = inspect.signature(fit_group_cmd).parameters["feature_decay"].default.default
    assert default == MG.FEATURE_DECAY
