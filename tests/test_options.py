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
    assert c.set_params(epochs=5) is c and c.epochs == 5 and m.epochs is None
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


def test_group_model_params_are_kept_as_given_and_clone():
    """GroupConvSSM follows the scikit-learn rule like ConvSSM: get_params/set_params, clone, and
    fitting or validating never rewrites a hyperparameter (derived values end in _)."""
    base = pytest.importorskip("sklearn.base")
    from dsrecon import GroupConvSSM
    from dsrecon.errors import DsreconError
    from dsrecon.models.group import FEATURE_DECAY

    g = GroupConvSSM(features=2, hidden_dim=7)
    p = g.get_params()
    assert p["features"] == 2 and p["scheme"] == "linear" and p["feature_decay"] is None and p["hidden_dim"] == 7
    c = base.clone(g)
    assert c is not g and c.get_params() == p
    assert c.set_params(features=0, epochs=5, feature_decay=0.5) is c
    assert (c.features, c.feature_decay, c.base.epochs) == (0, 0.5, 5) and g.base.epochs is None and g.features == 2
    g.validate()
    assert g.feature_decay is None and g.feature_decay_ == FEATURE_DECAY  # resolved beside, not over, the option
    with pytest.raises(Exception, match="unexpected keyword argument 'nope'"):
        g.set_params(nope=1)
    for bad in ({"features": -1}, {"features": 1.5}, {"feature_decay": float("nan")}, {"scheme": "cubic"}):
        with pytest.raises(DsreconError):
            GroupConvSSM(**bad).validate()


def test_the_library_names_parameters_and_the_cli_names_flags(cli, tmp_path):
    """Issue 37: a Python user reads the parameter they passed (`hidden_dim`), a CLI user the flag
    they typed (--hidden-dim); one OptionError carries both."""
    from dsrecon.cli.options import cli_words, flag_for
    from dsrecon.errors import OptionError

    with pytest.raises(OptionError) as e:
        ConvSSM(hidden_dim=0).validate()
    assert str(e.value) == "`hidden_dim` must be a positive integer, got 0"
    assert cli_words(e.value) == "--hidden-dim must be a positive integer, got 0"
    with pytest.raises(OptionError, match="^`alpha_end` anneals a fixed `alpha`") as e:
        ConvSSM(alpha="adaptive", alpha_end=0.1).validate()
    assert cli_words(e.value).startswith("--alpha-end anneals a fixed --alpha;")
    assert cli_words(OptionError("`n_steps` must be positive, got 0")) == "--steps must be positive, got 0"
    assert cli_words(OptionError("`size` must be at least 1 (members), got 0")).startswith("--ensemble must")
    # every estimator parameter maps to a flag `dsrecon fit` has (or a backend option's)
    fit_flags = _flags(cli, "fit")
    for f in estimator_fields():
        if f.metadata.get("cli", True) and f.name != "backend_options":
            assert flag_for(f.name) in fit_flags, (f.name, flag_for(f.name))
    # the command line: the flag, not the parameter name
    np = pytest.importorskip("numpy")
    x = tmp_path / "x.tsv"
    np.savetxt(x, np.random.default_rng(0).standard_normal((200, 3)), delimiter="\t", header="a\tb\tc", comments="")
    r = cli("fit", str(x), "--tr", "1", "-o", str(tmp_path / "run"), "--hidden-dim", "0", "--quiet")
    assert r.code == 1 and "--hidden-dim must be a positive integer, got 0" in r.err and "`" not in r.err, r.err


def test_no_option_error_is_written_in_cli_words():
    """OptionError messages name parameters (`name`), never flags (the CLI maps them)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "dsrecon"
    bad = []
    for p in root.rglob("*.py"):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if "OptionError(" in line and re.search(r"(?<![\w-])--[a-z]", line):
                bad.append(f"{p.relative_to(root)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
