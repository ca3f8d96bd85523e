"""`dsrecon simulate list|system`: outputs, the simulate convention end to end, bad input."""

import json

import numpy as np
import pytest

from dsrecon.io.tables import read_array
from dsrecon.signal.kernels import convolve_valid, spm_hrf


def test_list_json(cli):
    r = cli("simulate", "list", "--json")
    assert r.code == 0
    systems = json.loads(r.out)["systems"]
    assert {"lorenz63", "rossler", "lorenz96", "jansen_rit", "van_der_pol"} <= set(systems)
    assert systems["lorenz63"]["dim"] == 3 and systems["lorenz63"]["default_dt"] == 0.01
    assert systems["lorenz96"]["variable_dim"] is True and systems["lorenz96"]["params"] == {"F": 8.0}


def test_list_table(cli):
    r = cli("simulate", "list")
    assert r.code == 0 and "lorenz63" in r.out and "sigma=10" in r.out


def test_acceptance_latent_convolved_reproduces_observations(cli, tmp_path):
    out = tmp_path / "x.tsv"
    r = cli("simulate", "system", "lorenz63", "--length", "3000", "--tr", "0.2", "--dt", "0.01",
            "--noise", "0.01", "--seed", "0", "-o", out, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["output"] == str(out) and res["latent"] == str(tmp_path / "x_latent.tsv")
    assert res["sidecar"] == str(tmp_path / "x.json")
    assert (res["n_samples"], res["n_regions"]) == (3000, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.tsv", "x_latent.json", "x_latent.tsv"]

    x, names = read_array(out)
    z, lnames = read_array(tmp_path / "x_latent.tsv")
    assert x.shape == z.shape == (3000, 3) and names == lnames == ["x", "y", "z"]
    h = spm_hrf(0.2)
    K = len(h)
    # the first K − 1 latent rows lack their history in the file: compare rows K − 1 …
    resid = x[K - 1 :] - convolve_valid(z, h)
    ratio = resid.std(axis=0) / x.std(axis=0)
    assert np.all((ratio > 0.008) & (ratio < 0.012)), ratio
    assert np.abs(resid.mean(axis=0)).max() < 0.003

    side = json.loads((tmp_path / "x.json").read_text())
    assert side["RepetitionTime"] == 0.2 and side["kernel"] == "spm" and side["kernel_taps"] == K
    assert side["system"] == "lorenz63" and side["parameters"]["rho"] == 28.0
    assert (side["dt"], side["noise"], side["seed"], side["length"], side["transient"]) == (0.01, 0.01, 0, 3000, 50.0)
    assert side["versions"]["numpy"] and side["dsrecon_version"]
    lat_side = json.loads((tmp_path / "x_latent.json").read_text())
    assert lat_side["content"] == "latent" and lat_side["RepetitionTime"] == 0.2 and lat_side["seed"] == 0


def test_seed_reproducible_and_param_recorded(cli, tmp_path):
    args = ("simulate", "system", "van_der_pol", "--length", "200", "--kernel", "none", "--noise", "0.1", "--quiet")
    assert cli(*args, "--seed", "1", "-o", tmp_path / "a.tsv").code == 0
    assert cli(*args, "--seed", "1", "-o", tmp_path / "b.tsv").code == 0
    assert cli(*args, "--seed", "2", "--param", "mu=2", "-o", tmp_path / "c.tsv").code == 0
    a, b, c = ((tmp_path / f"{n}.tsv").read_text() for n in "abc")
    assert a == b and a != c
    assert json.loads((tmp_path / "c.json").read_text())["parameters"]["mu"] == 2.0


def test_lorenz96_dim_and_calcium_kernel(cli, tmp_path):
    r = cli("simulate", "system", "lorenz96", "--dim", "6", "--length", "100", "--tr", "0.1",
            "--kernel", "calcium", "--tau-decay", "0.5", "--transient", "5", "-o", tmp_path / "l.tsv", "--json")
    assert r.code == 0, r.err
    x, names = read_array(tmp_path / "l.tsv")
    assert x.shape == (100, 6) and names == [f"x{i}" for i in range(6)]
    side = json.loads((tmp_path / "l.json").read_text())
    assert side["kernel"] == "calcium" and side["kernel_params"]["tau_decay"] == 0.5 and side["kernel_taps"] == 26


def _one_line_error(r, *needles):
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("tr", ["0", "-1"])
def test_bad_tr_is_one_line_and_writes_nothing(cli, tmp_path, tr):
    r = cli("simulate", "system", "lorenz63", "--tr", tr, "-o", tmp_path / "x.tsv")
    _one_line_error(r, "--tr")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,needle",
    [
        (("simulate", "system", "lorenz64"), "unknown system 'lorenz64'"),
        (("simulate", "system", "lorenz63", "--dim", "5"), "--dim"),
        (("simulate", "system", "lorenz63", "--dt", "0"), "--dt"),
        (("simulate", "system", "lorenz63", "--noise", "-0.1"), "--noise"),
        (("simulate", "system", "lorenz63", "--param", "gamma=1"), "no parameter 'gamma'"),
        (("simulate", "system", "lorenz63", "--kernel", "boxcar"), "--kernel"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, args, needle):
    r = cli(*args, "--length", "50", "-o", tmp_path / "x.tsv")
    _one_line_error(r, needle)
    assert list(tmp_path.iterdir()) == []


def test_output_must_be_tsv(cli, tmp_path):
    _one_line_error(cli("simulate", "system", "lorenz63", "-o", tmp_path / "x.csv"), "--output")
    assert list(tmp_path.iterdir()) == []


def test_missing_output_is_usage_error(cli):
    assert cli("simulate", "system", "lorenz63").code == 2


def test_failure_while_writing_leaves_nothing(cli, tmp_path, monkeypatch):
    import dsrecon.cli.simulate as sim
    from dsrecon.errors import DsreconError

    calls = []

    def failing(path, obj):
        calls.append(path)
        if len(calls) == 2:  # the latent sidecar, after both tables and the first sidecar
            raise DsreconError("disk full (simulated)")
        from dsrecon._util import write_json_atomic

        write_json_atomic(path, obj)

    monkeypatch.setattr(sim, "write_json_atomic", failing)
    r = cli("simulate", "system", "van_der_pol", "--length", "50", "--kernel", "none", "-q", "-o", tmp_path / "x.tsv")
    _one_line_error(r, "disk full")
    assert list(tmp_path.iterdir()) == []
