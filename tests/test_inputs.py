"""External inputs (task fMRI): events on the TR grid, input tables, BIDS discovery, the input term
of every backend, the fused kernel with inputs, and fits/simulations driven by inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon.errors import DataError
from dsrecon.io.events import attach_inputs, events_to_inputs, read_input_table
from dsrecon.io.recording import Recording


def _events(path, rows, header=("onset", "duration", "trial_type", "modulation")):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(str(c) for c in r) + "\n" for r in rows))
    return path


def test_events_boxcar_by_hand(tmp_path):
    # TR 2 s, 5 frames (run ends at 10 s); frame t covers [2t, 2t + 2)
    p = _events(tmp_path / "ev.tsv", [
        (1.0, 3.0, "A", 1),      # onset between frames: [1, 4) → frame 0 half, frame 1 full
        (4.5, 0.5, "B", 2),      # shorter than one TR: 0.5 s of frame 2, modulation 2 → 2 · 0.25
        (9.0, 0, "A", 3),        # an impulse: modulation 3 in the frame holding 9 s (frame 4)
        (8.5, 4.0, "A", "n/a"),  # runs past the end: cut at 10 s → 1.5 s of frame 4; n/a modulation = 1
        (20.0, 1.0, "B", 1),     # starts past the end: dropped, with a warning
    ])
    warnings = []
    s, names = events_to_inputs(p, 5, 2.0, warn=warnings.append)
    assert names == ["A", "B"]
    expected = np.array([[0.5, 0], [1.0, 0], [0, 0.5], [0, 0], [3 + 0.75, 0]])
    np.testing.assert_allclose(s, expected)
    assert len(warnings) == 1 and "1 event(s)" in warnings[0] and str(p) in warnings[0]


def test_events_conditions_of_a_model_and_defaults(tmp_path):
    p = _events(tmp_path / "ev.tsv", [(0, 2, 1)], header=("onset", "duration", "modulation"))
    s, names = events_to_inputs(p, 3, 1.0)
    assert names == ["event"] and s[:, 0].tolist() == [1.0, 1.0, 0.0]
    s, names = events_to_inputs(p, 3, 1.0, conditions=["other", "event"])
    assert names == ["other", "event"] and s[:, 0].tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="not among the model's inputs"):
        events_to_inputs(p, 3, 1.0, conditions=["other"])


@pytest.mark.parametrize("rows,header,msg", [
    ([(1, 2)], ("onset", "trial_type"), "no 'duration' column"),
    ([(1, 2)], ("time", "trial_type"), "no 'onset' and no 'duration'"),
    ([(-1, 2, "A")], ("onset", "duration", "trial_type"), "onset -1 must be a finite number >= 0"),
    ([("inf", 2, "A")], ("onset", "duration", "trial_type"), "must be a finite number"),
    ([("x", 2, "A")], ("onset", "duration", "trial_type"), "not a number"),
])
def test_bad_events(tmp_path, rows, header, msg):
    p = _events(tmp_path / "ev.tsv", rows, header)
    with pytest.raises(DataError, match=msg) as e:
        events_to_inputs(p, 10, 1.0)
    assert str(p) in str(e.value)


def test_input_table_rows_must_match(tmp_path):
    p = tmp_path / "inp.tsv"
    p.write_text("u\tv\n" + "".join(f"{i}\t{2 * i}\n" for i in range(4)))
    s, names = read_input_table(p, 4, 1.0)
    assert names == ["u", "v"] and s[3].tolist() == [3, 6]
    with pytest.raises(DataError, match="4 rows, .* has 5 frames"):
        read_input_table(p, 5, 1.0)
    rec = attach_inputs(Recording(np.random.default_rng(0).normal(size=(4, 2)), tr=1.0), table=p)
    assert rec.inputs.shape == (4, 2) and rec.input_names == ["u", "v"]
    assert rec.slice(1, 3).inputs.tolist() == [[1, 2], [2, 4]] and rec.slice(1, 3).input_names == ["u", "v"]


def test_recording_checks_inputs():
    with pytest.raises(DataError, match="inputs have 3 rows"):
        Recording(np.zeros((4, 2)), tr=1.0, inputs=np.zeros((3, 1)))
    with pytest.raises(DataError, match="NaN or Inf"):
        Recording(np.zeros((4, 2)), tr=1.0, inputs=np.full((4, 1), np.nan))


# ----------------------------------------------------------------------------- the input term in the model
import torch  # noqa: E402

from dsrecon.models.base import LatentDynamics, available_backends  # noqa: E402


def _backend(name, K=2, dtype=torch.float64, seed=0):
    cls = available_backends()[name]
    kw = {"hidden_dim": 6} if "hidden_dim" in cls.Options.__dataclass_fields__ else {}
    if "state_size" in cls.Options.__dataclass_fields__:
        kw["state_size"] = 3
    g = torch.Generator().manual_seed(seed)
    m = cls(3, generator=g, **kw).enable_inputs(K).to(dtype)
    with torch.no_grad():
        m.C.copy_(torch.randn(m.C.shape, generator=g, dtype=dtype))
    return m


@pytest.mark.parametrize("name", sorted(available_backends()))
def test_zero_input_is_the_autonomous_model_and_input_adds_C_s(name):
    m = _backend(name)
    g = torch.Generator().manual_seed(1)
    z0 = m.init_state(torch.randn(4, 3, generator=g, dtype=torch.float64))
    T = 9
    s = torch.randn(4, T, 2, generator=g, dtype=torch.float64)
    free = m.rollout(z0, T)
    torch.testing.assert_close(m.rollout(z0, T, inputs=torch.zeros_like(s)), free)
    # one step: F(z) + C s on the latent units, the hidden units untouched
    one = m.step(z0, s[:, 0])
    auto = m.step(z0)
    torch.testing.assert_close(one[:, :3], auto[:, :3] + s[:, 0] @ m.C.T)
    torch.testing.assert_close(one[:, 3:], auto[:, 3:])
    # the rollout with inputs equals repeated step with inputs (teacher-forced too)
    teacher = torch.randn(4, T, 3, generator=g, dtype=torch.float64)
    ref = LatentDynamics.rollout(m, z0, T, teacher, 0.3, s)
    torch.testing.assert_close(m.rollout(z0, T, teacher, 0.3, s), ref)
    # the Jacobian is unchanged by an additive input
    torch.testing.assert_close(m.jacobian(z0), LatentDynamics.jacobian(m, z0), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", ["cshplrnn", "shplrnn", "plrnn"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_fused_with_inputs_equals_repeated_step_forward_and_gradients(name, dtype, tol):
    from dsrecon.models.backends import plrnn_fused

    m = _backend(name, K=2, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    B, T = 5, 23
    z0 = torch.randn(B, 3, generator=g, dtype=dtype, requires_grad=True)
    teacher = torch.randn(B, T, 2, generator=g, dtype=dtype)
    teacher[1, 4:9] = float("nan")
    alpha = torch.rand(T, generator=g, dtype=dtype) * 0.5
    s = torch.randn(B, T, 2, generator=g, dtype=dtype)
    w = torch.randn(B, T, 3, generator=g, dtype=dtype)
    params = [z0] + list(m.parameters())
    ref = LatentDynamics.rollout(m, z0, T, teacher, alpha, s)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    assert plrnn_fused.fused_available(z0)
    out = m.rollout(z0, T, teacher, alpha, s)
    gr = torch.autograd.grad((out * w).sum(), params)
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    for a, b in zip(gr, g_ref):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol * 10)
    # E members at once: packed rows, each with its own C
    rows = torch.stack([m.pack().detach(), m.pack().detach() * 0.9])
    Z = m.fused_rollout(rows, torch.stack([z0.detach()] * 2), torch.stack([teacher] * 2), torch.stack([alpha] * 2), torch.stack([s] * 2))
    torch.testing.assert_close(Z[0], ref.detach(), atol=tol, rtol=tol)


def test_inputs_to_a_model_without_input_term_fail():
    m = available_backends()["cshplrnn"](3, hidden_dim=4)
    with pytest.raises(ValueError, match="without an input term"):
        m.rollout(torch.zeros(2, 3), 4, inputs=torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="without an input term"):
        m.step(torch.zeros(2, 3), torch.zeros(2, 1))


# ----------------------------------------------------------------------------- driven systems and the CLI
def test_driven_system_zero_gain_is_autonomous_and_input_moves_the_driven_state(tmp_path):
    from dsrecon.systems import simulate_system

    T = 120
    s = np.zeros((T, 1))
    s[40:50] = 1.0
    base = simulate_system("van_der_pol", T, None, 0.5, kernel="none", seed=3)
    zero = simulate_system("van_der_pol", T, None, 0.5, kernel="none", seed=3, inputs=s, input_gain=[0.0], input_dim=[1])
    np.testing.assert_allclose(zero["observed"], base["observed"])
    drv = simulate_system("van_der_pol", T, None, 0.5, kernel="none", seed=3, inputs=s, input_gain=[3.0], input_dim=[1])
    # identical before the first input, different after it (the input drives the ODE, not the output)
    z_b = base["latent"] * base["sidecar"]["state_std"] + base["sidecar"]["state_mean"]
    z_d = drv["latent"] * drv["sidecar"]["state_std"] + drv["sidecar"]["state_mean"]
    np.testing.assert_allclose(z_d[:40], z_b[:40], atol=1e-6)
    assert np.abs(z_d[41:60, 1] - z_b[41:60, 1]).max() > 0.1
    assert drv["sidecar"]["input_states"] == ["y"] or drv["sidecar"]["input_dim"] == [1]


@pytest.fixture(scope="module")
def driven_run(tmp_path_factory):
    """A tiny fit of driven Van der Pol data with --events (a few seconds)."""
    from dsrecon.cli.main import main
    from dsrecon.io.events import random_design, write_events

    d = tmp_path_factory.mktemp("driven")
    rng = np.random.default_rng(0)
    write_events(d / "train_events.tsv", random_design(300 * 0.5, 10, ["go", "stop"], 2.0, rng, min_gap=2.0))
    write_events(d / "test_events.tsv", random_design(150 * 0.5, 5, ["go", "stop"], 2.0, rng, min_gap=2.0))
    common = ["--tr", "0.5", "--kernel", "spm", "--noise", "0.05", "--input-gain", "3", "--input-dim", "1", "--quiet"]
    assert main(["simulate", "system", "van_der_pol", "--length", "300", "--events", str(d / "train_events.tsv"), *common,
                 "-o", str(d / "train.tsv")]) == 0
    assert main(["simulate", "system", "van_der_pol", "--length", "150", "--seed", "1", "--events", str(d / "test_events.tsv"),
                 *common, "-o", str(d / "test.tsv")]) == 0
    assert main(["fit", str(d / "train.tsv"), "--events", str(d / "train_events.tsv"), "--epochs", "2", "--batches-per-epoch", "3",
                 "--batch-size", "4", "--hidden-dim", "8", "--sequence-length", "90", "--latent-dim", "3", "--quiet",
                 "-o", str(d / "run")]) == 0
    return d


def _driven_by_hand(net, z0, rows) -> np.ndarray:
    """The independent slow path of a driven free run: z0 (1, S) stepped once per input row (each
    a (K,) tensor), every state kept, then observed: (len(rows) − K + 2, N) normalised frames."""
    import torch

    states = [z0]
    with torch.no_grad():
        for u in rows:
            states.append(net.dynamics.step(states[-1], u[None]))
        return net.observe(torch.cat(states)[None])[0].numpy()


def test_fit_with_events_records_inputs_and_simulate_reproduces_the_driven_run(driven_run, cli):
    from dsrecon.api import load_run
    from dsrecon.io.events import events_to_inputs
    from dsrecon.io.tables import read_table

    d = driven_run
    cfg = json.loads((d / "run" / "config.json").read_text())
    assert cfg["input_names"] == ["go", "stop"] and cfg["n_inputs"] == 2 and cfg["input_kind"] == "events"
    model = load_run(d / "run")
    assert model.net_.dynamics.C.shape == (3, 2)
    n = 200
    r = cli("simulate", "model", d / "run", "--events", d / "train_events.tsv", "--steps", n, "--quiet", "-o", d / "gen.tsv")
    assert r.code == 0, r.err
    gen = read_table(d / "gen.tsv").data
    # the CLI's driven run is the model's response to the training design: the net driven step by step
    s, _ = events_to_inputs(d / "train_events.tsv", n, 0.5, ["go", "stop"])
    net = model.net_
    x = _driven_by_hand(net, net.z_init[None].clone(), net.step_inputs(s, n)[0])
    np.testing.assert_allclose(gen, model.norm_.invert(x), rtol=1e-4, atol=1e-4)
    auto = model.simulate(n)["observed"]
    assert np.abs(auto - gen).max() > 1e-6  # the design changes the response
    side = json.loads((d / "gen.json").read_text())
    assert side["events"].endswith("train_events.tsv") and side["input_names"] == ["go", "stop"]


def test_simulate_from_start_replays_the_training_period(cli, tmp_path):
    """`simulate model --from DATA --from-start --events` replays the recording: from the state at its
    first reliable frame, driven by its own design, the run tracks the training BOLD of a driven
    linear system (r > 0.8 per region; without the design it does not), and equals the net driven
    step by step from that state with the design of the recording's frames."""
    import torch

    from dsrecon.api import load_run
    from dsrecon.io.events import random_design, write_events
    from dsrecon.io.tables import read_table, write_table
    from dsrecon.signal.deconvolution import wiener_deconvolve
    from dsrecon.signal.kernels import spm_hrf

    rng = np.random.default_rng(0)
    T, tr = 400, 0.5
    write_events(tmp_path / "ev.tsv", random_design(T * tr, 12, ["go", "stop"], 2.0, rng, min_gap=4.0))
    s, _ = events_to_inputs(tmp_path / "ev.tsv", T, tr)
    z = np.zeros((T, 2))
    for t in range(1, T):  # each condition drives one leaky unit (time constant ≈ 2 s)
        z[t] = 0.8 * z[t - 1] + s[t]
    h = spm_hrf(tr)
    x = np.stack([np.convolve(z[:, i], h)[:T] for i in range(2)], 1)
    x = x + 0.05 * x.std(0) * rng.standard_normal(x.shape)
    write_table(tmp_path / "bold.tsv", x, ["r1", "r2"], sidecar={"RepetitionTime": tr})
    r = cli("fit", tmp_path / "bold.tsv", "--events", tmp_path / "ev.tsv", "--epochs", 30, "--batches-per-epoch", 5, "--batch-size", 4,
            "--hidden-dim", 8, "--sequence-length", 90, "--latent-dim", 3, "--learning-rate", "3e-3", "--lr-end", "3e-4", "--quiet",
            "-o", tmp_path / "run")
    assert r.code == 0, r.err
    n = 250
    r = cli("simulate", "model", tmp_path / "run", "--from", tmp_path / "bold.tsv", "--from-start", "--events", tmp_path / "ev.tsv",
            "--steps", n, "--json", "-o", tmp_path / "replay.tsv")
    assert r.code == 0, r.err
    first = json.loads(r.out)["first_frame"]
    side = json.loads((tmp_path / "replay.json").read_text())
    assert side["from_start"] is True and side["first_frame"] == first
    gen = read_table(tmp_path / "replay.tsv").data
    model = load_run(tmp_path / "run")
    net = model.net_
    teacher = wiener_deconvolve(model.norm_.apply(x), model.kernel_.taps)
    rel = int(np.flatnonzero(np.isfinite(teacher).all(1))[0])
    assert first == rel + net.K - 1
    corr = [np.corrcoef(gen[:, i], x[first : first + n, i])[0, 1] for i in range(2)]
    assert min(corr) > 0.8, corr
    # the independent path: the net stepped from the state of teacher frame rel, latent state i driven by frame rel + i
    z0 = net.init_state(torch.as_tensor(teacher[rel][None], dtype=torch.float32))
    want = _driven_by_hand(net, z0, torch.as_tensor(s[rel + 1 : rel + n + net.K - 1], dtype=torch.float32))
    np.testing.assert_allclose(gen, model.norm_.invert(want), rtol=1e-4, atol=1e-4)
    # without the design the model runs autonomously and does not track the recording
    r = cli("simulate", "model", tmp_path / "run", "--from", tmp_path / "bold.tsv", "--from-start", "--steps", n, "--quiet",
            "-o", tmp_path / "auto.tsv")
    assert r.code == 0, r.err
    auto = read_table(tmp_path / "auto.tsv").data
    assert max(abs(np.corrcoef(auto[:, i], x[first : first + n, i])[0, 1]) for i in range(2)) < 0.5
    # an input table must have the recording's rows; --from-start needs --from
    write_table(tmp_path / "short.tsv", s[:100], ["go", "stop"], sidecar={"RepetitionTime": tr})
    r = cli("simulate", "model", tmp_path / "run", "--from", tmp_path / "bold.tsv", "--from-start", "--inputs", tmp_path / "short.tsv",
            "--steps", 10, "-o", tmp_path / "g.tsv")
    assert r.code == 1 and "short.tsv" in r.err and "400 frames" in r.err and not (tmp_path / "g.tsv").exists()
    r = cli("simulate", "model", tmp_path / "run", "--from-start", "--steps", 10, "-o", tmp_path / "g.tsv")
    assert r.code == 1 and "--from" in r.err and not (tmp_path / "g.tsv").exists()


def test_evaluate_with_events_and_input_mismatches(driven_run, cli, tmp_path):
    d = driven_run
    r = cli("evaluate", d / "run", "--data", d / "test.tsv", "--events", d / "test_events.tsv", "--no-analysis", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert np.isfinite(res["PE10"])
    # without --data: the held-out tail of the training data, with the training events read again
    r = cli("evaluate", d / "run", "--no-analysis", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["data"].startswith("held-out tail")
    # a model with inputs needs the test design; a model without inputs takes none
    r = cli("evaluate", d / "run", "--data", d / "test.tsv", "--no-analysis")
    assert r.code == 1 and "fitted with inputs" in r.err and "test.tsv" in r.err
    r = cli("simulate", "model", d / "run", "--inputs", d / "test_events.tsv", "--steps", 10, "-o", tmp_path / "g.tsv")
    assert r.code == 1 and "test_events.tsv" in r.err


# ----------------------------------------------------------------------------- BIDS discovery of events
def test_bids_discovery_finds_each_runs_events_file(tmp_path):
    from test_io_bids import N_VOL, TR, add_run, atlas  # noqa: F401  (the fake fMRIPrep tree of the BIDS tests)
    import nibabel as nib

    from dsrecon.io.load import InputSpec, load_inputs

    raw = tmp_path / "raw"
    deriv = tmp_path / "elsewhere" / "fmriprep"
    for sub, run in (("01", 1), ("01", 2), ("02", 1)):
        add_run(deriv, sub, run)
        func = raw / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        # each run its own design: onset = 2·run + (subject 2: +10) seconds
        onset = 2.0 * run + (10.0 if sub == "02" else 0.0)
        _events(func / f"sub-{sub}_task-rest_run-{run}_events.tsv", [(onset, 2.0, "cue", 1)])
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "DatasetType": "derivative", "SourceDatasets": [{"URL": f"bids::{raw}"}]}))
    lab = np.zeros((4, 4, 4), np.int16)
    lab[:2], lab[2:] = 1, 2
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "atlas.nii.gz")
    spec = InputSpec(task="rest", atlas=str(tmp_path / "atlas.nii.gz"))
    recs = load_inputs([str(deriv)], spec)
    assert len(recs) == 3
    for r in recs:
        ent = r.provenance["entities"]
        want = raw / f"sub-{ent['sub']}" / "func" / f"sub-{ent['sub']}_task-rest_run-{ent['run']}_events.tsv"
        assert r.provenance["inputs_file"] == str(want)
        assert r.input_names == ["cue"] and r.inputs.shape == (N_VOL, 1)
        onset = 2.0 * int(ent["run"]) + (10.0 if ent["sub"] == "02" else 0.0)
        assert np.flatnonzero(r.inputs[:, 0]).tolist() == [int(onset // TR)]
    # --bids-dir names the raw dataset when the derivatives do not
    (deriv / "dataset_description.json").write_text('{"Name": "fMRIPrep", "DatasetType": "derivative"}')
    assert all(r.inputs is None for r in load_inputs([str(deriv)], spec))
    recs = load_inputs([str(deriv)], InputSpec(task="rest", atlas=str(tmp_path / "atlas.nii.gz"), bids_dir=str(raw)))
    assert all(r.input_names == ["cue"] for r in recs)


def test_report_adds_the_event_locked_figure(driven_run, cli):
    d = driven_run
    r = cli("report", d / "run", "--data", d / "test.tsv", "--events", d / "test_events.tsv", "--lyapunov-steps", 300,
            "--k-max", 2, "--quiet", "-o", d / "report.html")
    assert r.code == 0, r.err
    text = (d / "report.html").read_text()
    assert "Event-locked mean response per condition" in text


def test_ensemble_fit_with_events_and_api_input_arrays(driven_run, cli, tmp_path):
    d = driven_run
    r = cli("fit", d / "train.tsv", "--events", d / "train_events.tsv", "--ensemble", 2, "--epochs", 1, "--batches-per-epoch", 2,
            "--batch-size", 4, "--hidden-dim", 8, "--sequence-length", 90, "--latent-dim", 3, "--val-every", 100, "--quiet",
            "-o", tmp_path / "ens")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "ens" / "member-00" / "config.json").read_text())["input_names"] == ["go", "stop"]
    # the Python API: inputs= as arrays, on fit and on score
    from dsrecon.api import ConvSSM
    from dsrecon.io.tables import read_table

    rec = read_table(d / "train.tsv")
    s = np.zeros((rec.n_frames, 1))
    s[::25] = 1.0
    m = ConvSSM(latent_dim=3, hidden_dim=8, epochs=1, batches_per_epoch=2, sequence_length=90, val_every=100).fit(rec, inputs=s)
    assert m.input_names == ["input1"] and m.net_.dynamics.C.shape == (3, 1)
    assert np.isfinite(m.score(rec.slice(0, 150), inputs=s[:150])["PE_n"])


def test_resume_and_cohort_compatibility_compares_the_input_channels():
    from dsrecon.io.runs import differences

    base = {"data_hash": "h", "backend": "cshplrnn", "seed": 0}
    assert differences(base, {**base, "input_names": []}) == []  # a run from before inputs: autonomous
    d = differences({**base, "input_names": ["go"]}, {**base, "input_names": []})
    assert len(d) == 1 and "input channels" in d[0]


def test_sequence_sampler_gathers_the_inputs_of_the_teacher_frames():
    from dsrecon.training.batches import Prepared, SequenceSampler

    T = 50
    frame = np.arange(T, dtype=np.float32)
    recs = [Prepared(np.stack([frame, frame], 1), np.ones(T, bool), np.stack([frame, -frame], 1), None, "a",
                     inputs=(frame + 1000 * k)[:, None]) for k in range(2)]
    recs[1].mask[10:20] = False  # censored frames: out of the loss, their inputs still drive
    b = SequenceSampler(recs, 12, 3).gather(np.arange(len(SequenceSampler(recs, 12, 3)))[None])
    offset = np.where(b["inputs"][..., 0] >= 1000, 1000, 0)
    np.testing.assert_array_equal(b["inputs"][..., 0] - offset, b["teacher"][..., 0])
    assert b["inputs"].shape == b["teacher"].shape[:3] + (1,)
