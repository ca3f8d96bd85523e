"""Options are defined once (dsrecon/options.py): fit, fit-cohort, sweep, ConvSSM and config.json agree."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re

import pytest

from dsrecon.api import ConvSSM
from dsrecon.options import ModelOptions, TrainOptions, estimator_fields


def _flags(cli, *command: str) -> set[str]:
    r = cli(*command, "--help")
    assert r.code == 0, r.err
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", r.out))


#: options of `dsrecon fit` about its one run directory, not about a fit (fit-cohort has its own --force)
_RUN_ONLY = {"--output", "--resume", "--force", "--ensemble", "--ensemble-alpha", "--help"}


@pytest.mark.parametrize("command", ["fit-cohort", "sweep"])
def test_cohort_and_sweep_accept_every_fit_option(cli, command):
    fit = _flags(cli, "fit") - _RUN_ONLY
    other = _flags(cli, command)
    assert fit - other == set(), f"`dsrecon {command}` lacks {sorted(fit - other)}"
    assert {"--tau-rise", "--lr-end", "--l2", "--min-epochs", "--restore-on-collapse", "--stsp", "--pwl-units", "--r-min"} <= other


def test_get_params_lists_every_fit_option_with_the_cli_defaults(cli):
    params = ConvSSM().get_params()
    assert list(params) == [f.name for f in estimator_fields()]
    assert params["epochs"] is None and params["device"] == "auto" and params["preset"] == "auto"  # epochs: the preset's
    assert params["alpha"] is None and params["hidden_dim"] is None and params["l2"] is None  # the preset's (resolved by fit)
    assert params["kernel"] is None and params["sequence_length"] is None and params["latent_dim"] is None
    # every CLI option of the model and the training is a parameter, with the CLI's default
    for cls in (ModelOptions, TrainOptions):
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli"):
                flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
                assert flag in _flags(cli, "fit"), flag
    sig = inspect.signature(ConvSSM)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    assert {k: p.default for k, p in sig.parameters.items()} == params


def test_sklearn_clone():
    base = pytest.importorskip("sklearn.base")
    m = ConvSSM(hidden_dim=7, backend_options={"pwl_units": 2}, backend="alrnn")
    c = base.clone(m)
    assert c is not m and c.get_params() == m.get_params() and c.hidden_dim == 7
    assert c.set_params(epochs=5) is c and c.epochs == 5 and m.epochs == 2000
    with pytest.raises(Exception, match="unexpected keyword argument 'nope'"):
        ConvSSM(nope=1)


def test_fit_resolves_the_derived_defaults_and_config_records_the_options(tmp_path):
    import numpy as np

    from dsrecon.io.recording import Recording

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((300, 3)), axis=0)
    rec = Recording(data=x, tr=1.0, names=["a", "b", "c"], source="x.tsv")
    m = ConvSSM(hidden_dim=6, epochs=1, batches_per_epoch=1, batch_size=2, val_every=1, device="cpu")
    r = m.resolved([rec])
    assert r.kernel == "spm" and r.sequence_length >= 2 and m.kernel is None and m.sequence_length is None
    m.fit(rec, run_dir=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["kernel_name"] == "spm" and cfg["train_options"]["sequence_length"] == r.sequence_length
    assert set(cfg["train_options"]) == {f.name for f in dataclasses.fields(TrainOptions) if not f.metadata.get("hook")}
    assert m.get_params()["kernel"] is None  # the parameters stay as given; what fit derived is in config_


def test_backend_options_come_from_the_backend(cli):
    from dsrecon.models.base import available_backends

    for name, cls in available_backends().items():
        sig = inspect.signature(cls.__init__).parameters
        for f in dataclasses.fields(cls.Options):
            assert f.name in sig and sig[f.name].default == f.default, (name, f.name)
    r = cli("backends", "--json")
    rows = json.loads(r.out)["backends"]
    assert rows["lru"]["options"]["r_min"]["default"] == 0.4


def test_unknown_or_mistyped_backend_option_is_one_line(cli, tmp_path):
    x = tmp_path / "x.tsv"
    assert cli("simulate", "system", "lorenz63", "--length", "300", "--tr", "0.5", "-o", x).code == 0
    r = cli("fit", x, "-o", tmp_path / "r1", "--backend", "cshplrnn", "--pwl-units", "2", "--epochs", "1")
    assert r.code == 1 and r.err.count("\n") == 1 and "--backend cshplrnn: no option 'pwl_units'" in r.err
    r = cli("fit", x, "-o", tmp_path / "r2", "--backend", "s4d", "--backend-option", "state_size=many", "--epochs", "1")
    assert r.code == 1 and r.err.count("\n") == 1 and "--state-size: 'many' is not an integer" in r.err
