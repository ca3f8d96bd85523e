"""The task-event inputs are part of the data every fit mode resumes on: an interrupted single,
ensemble or group fit whose events changed since is refused (the data hash covers the inputs),
and the checkpoint stays for a resume with the run's own data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dsrecon import ConvSSM, GroupConvSSM, Recording
from dsrecon.ensemble import fit_ensemble
from dsrecon.errors import DsreconError
from dsrecon.systems import simulate_system
from dsrecon.training.hooks import InjectedKill, inject_faults

TINY = dict(latent_dim=3, hidden_dim=8, epochs=4, batches_per_epoch=2, batch_size=4, val_every=100, checkpoint_every=1,
            sequence_length=60)


def rec(seed=0, name="r", onsets=(0, 40)):
    """A short Lorenz BOLD recording with one task input: a boxcar at every ``onsets`` step."""
    out = simulate_system("lorenz63", 300, 0.01, 1.0, kernel="spm", noise=0.01, seed=seed)
    s = np.zeros((300, 1))
    for o in onsets:
        s[o::80][:, 0] = 1.0
    r = Recording(out["observed"], tr=1.0, names=out["names"], source=f"{name}.tsv")
    return dataclasses.replace(r, inputs=s, input_names=["go"])


def moved(r: Recording) -> Recording:
    """The same recording and channel, with other event onsets (the events file was edited)."""
    s = np.roll(r.inputs, 7, axis=0)
    return dataclasses.replace(r, inputs=s)


def _interrupt(fit):
    with pytest.raises(InjectedKill):
        with inject_faults(stop_after_epoch=2):
            fit()


def test_single_fit_resume_refuses_changed_events(tmp_path):
    r = rec()
    _interrupt(lambda: ConvSSM(**TINY).fit(r, run_dir=tmp_path / "one"))
    with pytest.raises(DsreconError, match="input data differ"):
        ConvSSM(**TINY).fit(moved(r), run_dir=tmp_path / "one", resume=True)
    assert (tmp_path / ".one.staging" / "checkpoint" / "state.json").exists()


def test_ensemble_resume_refuses_changed_events(tmp_path):
    r = rec()
    _interrupt(lambda: fit_ensemble(r, tmp_path / "ens", 2, **TINY))
    with pytest.raises(DsreconError, match="input data differ"):
        fit_ensemble(moved(r), tmp_path / "ens", 2, resume=True, **TINY)
    assert (tmp_path / ".ens.staging" / "checkpoint" / "state.json").exists()
    out = fit_ensemble(r, tmp_path / "ens", 2, resume=True, **TINY)  # the run's own events: resumes
    assert out["size"] == 2


def test_group_resume_refuses_changed_events(tmp_path):
    subs = {"01": rec(0, "a"), "02": rec(1, "b", onsets=(10, 50))}
    _interrupt(lambda: GroupConvSSM(features=1, **TINY).fit(subs, run_dir=tmp_path / "grp"))
    with pytest.raises(DsreconError, match="input data differ"):
        GroupConvSSM(features=1, **TINY).fit({"01": subs["01"], "02": moved(subs["02"])}, run_dir=tmp_path / "grp", resume=True)
    assert (tmp_path / ".grp.staging" / "checkpoint" / "state.json").exists()
    g = GroupConvSSM(features=1, **TINY).fit(subs, run_dir=tmp_path / "grp", resume=True)
    assert g.subjects == ["01", "02"]
