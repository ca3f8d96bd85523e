"""The estimators floor (`dsrecon.estimators`): one fit skeleton, the ensemble's members built from
the model's own options (none dropped), and the old import paths kept."""

from __future__ import annotations

from dsrecon import ConvSSM
from dsrecon.ensemble import convssm_kwargs


def test_ensemble_members_keep_every_model_option():
    m = ConvSSM(preset="wide", latent_dim=4, kernel="glover", decoder="affine", seed=3, epochs=7)
    kw = convssm_kwargs(m)
    assert kw["preset"] == "wide"
    assert kw == m.get_params()  # every constructor argument travels: no option can be silently dropped
    assert ConvSSM(**kw).get_params() == m.get_params()


# ----------------------------------------------------------------------------- the floor's shape
from pathlib import Path  # noqa: E402
import ast  # noqa: E402

PKG = Path(__file__).resolve().parents[1] / "dsrecon"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_one_fit_skeleton():
    hits = [(p.relative_to(PKG), n.name) for p in PKG.rglob("*.py") for n in ast.walk(_tree(p))
            if isinstance(n, ast.FunctionDef) and n.name in ("_fit", "_fit_staged")]
    assert hits == [(Path("estimators/session.py"), "_fit")]


def test_fit_modes_and_shims_are_small():
    for name in ("convssm", "ensemble", "group"):
        assert len((PKG / "estimators" / f"{name}.py").read_text().splitlines()) < 250, name
    for p in [*(PKG / "estimators").glob("*.py"), PKG / "api.py", PKG / "group.py", PKG / "ensemble.py"]:
        assert len(p.read_text().splitlines()) <= 500, p


def test_estimators_import_no_private_names_and_no_loader():
    for p in (PKG / "estimators").glob("*.py"):
        for n in ast.walk(_tree(p)):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("dsrecon"):
                assert not [a.name for a in n.names if a.name.startswith("_")], (p.name, n.module)
                if p.name != "load.py":  # only load_run knows every run format: nothing imports it back
                    assert n.module != "dsrecon.estimators.load", p.name
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [m for m in ast.walk(n) if isinstance(m, ast.ImportFrom) and (m.module or "").startswith("dsrecon.estimators")]
                assert not inner, (p.name, n.name)  # no function-level import between the estimators' modules


def test_old_import_paths_still_work():
    from dsrecon.api import ConvSSM as A, load_run  # noqa: F401
    from dsrecon.ensemble import fit_ensemble, member_seeds  # noqa: F401
    from dsrecon.group import GroupConvSSM, group_preset, select_subject, subject_id  # noqa: F401
    from dsrecon.estimators.convssm import ConvSSM as B

    assert A is B is ConvSSM


def test_fitting_loading_and_moving_leave_the_options_as_given(tmp_path):
    from dsrecon import Recording, load_run
    from dsrecon.systems import simulate_system

    out = simulate_system("lorenz63", 300, 0.01, 1.0, kernel="spm", noise=0.01, seed=0)
    rec = Recording(out["observed"], tr=1.0, names=out["names"])
    m = ConvSSM(epochs=2, batches_per_epoch=2, batch_size=4, sequence_length=60, val_every=100, hidden_dim=8)
    given = m.get_params()
    m.fit(rec, run_dir=tmp_path / "run")
    assert m.get_params() == given  # what fit derived is in resolved_ and config_
    assert m.resolved_.preset != "auto" and m.resolved_.kernel == "spm" and m.config_["latent_dim"] == 3
    m.to("cpu")
    assert m.device == "auto" and m.device_ == "cpu"
    back = load_run(tmp_path / "run")
    assert back.latent_dim is None and back.net_.M == 3  # the option as requested; the built M in the net


_KILLED_AT_COMMIT = r"""
import sys
from pathlib import Path
from dsrecon.io.runs import inject_commit_faults
sys.path.insert(0, sys.argv[1])
import test_resume_inputs as T
from dsrecon import GroupConvSSM
from dsrecon.ensemble import fit_ensemble
out = Path(sys.argv[2])
with inject_commit_faults("before_commit"):  # SIGKILL once the run is complete in staging
    if out.name == "grp":
        GroupConvSSM(features=1, **T.TINY).fit({"01": T.rec(0, "a"), "02": T.rec(1, "b")}, run_dir=out)
    else:
        fit_ensemble(T.rec(), out, 2, **T.TINY)
"""


def _killed_at_commit(tmp_path, name):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _KILLED_AT_COMMIT, str(Path(__file__).parent), str(tmp_path / name)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not (tmp_path / name).exists() and (tmp_path / f".{name}.staging").is_dir()


def test_a_finished_uncommitted_group_fit_is_put_in_place_by_resume(tmp_path):
    import pytest

    import test_resume_inputs as T
    from dsrecon import GroupConvSSM, load_run
    from dsrecon.errors import DsreconError

    _killed_at_commit(tmp_path, "grp")
    subs = {"01": T.rec(0, "a"), "02": T.rec(1, "b")}
    with pytest.raises(DsreconError, match="input data differ"):  # the same check as any resume
        GroupConvSSM(features=1, **T.TINY).fit({**subs, "02": T.moved(subs["02"])}, run_dir=tmp_path / "grp", resume=True)
    lines = []
    g = GroupConvSSM(features=1, **T.TINY).fit(subs, run_dir=tmp_path / "grp", resume=True, log=lines.append)
    assert any("the fit had finished" in s for s in lines) and not any(s.startswith("fitting") for s in lines)
    assert g.subjects == ["01", "02"] and g.run_dir == (tmp_path / "grp").resolve()
    assert load_run(tmp_path / "grp").subjects == ["01", "02"]
    assert g.subject("02").simulate(5)["observed"].shape == (5, 3)


def test_a_finished_uncommitted_ensemble_is_put_in_place_by_resume(tmp_path):
    import pytest

    import test_resume_inputs as T
    from dsrecon.ensemble import fit_ensemble
    from dsrecon.errors import DsreconError

    _killed_at_commit(tmp_path, "ens")
    with pytest.raises(DsreconError, match="input data differ"):
        fit_ensemble(T.moved(T.rec()), tmp_path / "ens", 2, resume=True, **T.TINY)
    out = fit_ensemble(T.rec(), tmp_path / "ens", 2, resume=True, **T.TINY)
    assert out["size"] == 2 and (tmp_path / "ens" / out["best_run"] / "model.safetensors").exists()
