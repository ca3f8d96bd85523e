"""`dsrecon demo`: the main job on a built-in default (simulated Lorenz63 BOLD → fit → evaluate → plots)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from dsrecon._util import versions, write_json_atomic
from dsrecon.cli.common import DeviceOpt, JsonOpt, QuietOpt, SeedOpt, emit, log, progress_bar, resolve_device
from dsrecon.cli.main import app

DEMO_TR = 0.2
DEMO_DT = 0.01
DEMO_TRAIN = 2000
DEMO_TEST = 500


@app.command("demo")
def demo_cmd(
    output: Path = typer.Option(Path("demo_output"), "--output", "-o", help="Folder for everything the demo writes."),
    epochs: int = typer.Option(1500, "--epochs", help="Training epochs (at most; early stopping may end sooner)."),
    lyapunov_steps: int = typer.Option(20_000, "--lyapunov-steps", help="Steps for the Lyapunov spectrum in the report."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Simulate Lorenz63 seen through the SPM HRF (TR 0.2 s), fit a convSSM, evaluate it and plot.

    Writes to OUTPUT: data/ (simulated BOLD + ground-truth latent), run/ (the fitted model),
    generated.tsv, metrics.json, figures/*.png|svg and report.html.

    Example: dsrecon demo -o demo_output
    """
    from dsrecon.estimators.convssm import ConvSSM
    from dsrecon.io.recording import Recording
    from dsrecon.io.tables import write_table
    from dsrecon.systems import simulate_system

    dev = resolve_device(device)
    t0 = time.perf_counter()
    out = Path(output)
    check_demo_output(out)
    log(f"1/4 simulating Lorenz63 BOLD: {DEMO_TRAIN + DEMO_TEST} frames, TR {DEMO_TR} s, SPM HRF, noise 0.01", quiet)
    sim = simulate_system("lorenz63", DEMO_TRAIN + DEMO_TEST, DEMO_DT, DEMO_TR, kernel="spm", noise=0.01, seed=seed)
    names = sim["names"]
    write_table(out / "data" / "lorenz_bold_train.tsv", sim["observed"][:DEMO_TRAIN], names, sidecar={**sim["sidecar"], "split": "train"})
    write_table(out / "data" / "lorenz_bold_test.tsv", sim["observed"][DEMO_TRAIN:], names, sidecar={**sim["sidecar"], "split": "test"})
    write_table(out / "data" / "lorenz_bold_latent.tsv", sim["latent"], names, sidecar={"RepetitionTime": DEMO_TR, "Description": "z-scored ground-truth Lorenz63 states",
                                                                                          "versions": versions()})
    train = Recording(sim["observed"][:DEMO_TRAIN], tr=DEMO_TR, names=names, source=str(out / "data" / "lorenz_bold_train.tsv"))
    test = Recording(sim["observed"][DEMO_TRAIN:], tr=DEMO_TR, names=names, source=str(out / "data" / "lorenz_bold_test.tsv"))

    model = ConvSSM(latent_dim=3, epochs=epochs, seed=seed, device=dev)
    spec = model.resolved([train])  # the preset's options for these data
    log(f"2/4 fitting a cshPLRNN convSSM (M 3, L {spec.hidden_dim}, α {spec.alpha}, {spec.preset}-data preset): "
        f"{model.train_options.pretraining()} epochs "
        f"of teacher-space pretraining, then up to {epochs} through the HRF", quiet)
    with progress_bar(quiet) as prog:
        task = prog.add_task("fit", total=epochs, status="")
        model.fit(train, out / "run", overwrite=True, progress=lambda e, t, s: prog.update(task, completed=e, total=t, status=s),
                  log=lambda s: log(s, quiet))

    log("3/4 evaluating on the held-out test segment and against the true attractor", quiet)
    gen = model.simulate(100_000, seed=seed)
    write_table(out / "generated.tsv", gen["observed"][:10_000], names, sidecar={"RepetitionTime": DEMO_TR, "seed": seed, "versions": versions()})
    latent = latent_comparison(model, gen["latent"], seed)

    log("4/4 plotting and writing the report", quiet)
    from dsrecon.plots import figures as F

    figdir = out / "figures"
    obs_norm = model.norm_.apply(test.data)
    F.time_series(obs_norm, gen["observed_normalised"][: test.n_frames], figdir / "timeseries", tr=DEMO_TR, names=names)
    F.attractor(sim["latent"], latent["z"][:20_000], figdir / "attractor_latent", dims=3, names=names)
    F.power_spectra(obs_norm, gen["observed_normalised"][: test.n_frames], figdir / "spectra", tr=DEMO_TR, names=names)
    F.training_curves(out / "run" / "training_log.tsv", figdir / "training")
    from dsrecon.plots.report import build_report

    rep = build_report(model, out / "report.html", data=test, lyapunov_steps=lyapunov_steps, seed=seed,
                       lead=lambda an, card: demo_lead(latent, an, figdir / "attractor_latent.png"))
    metrics = demo_metrics(model, rep, latent)
    metrics.update(report=str(out / "report.html"), seconds=time.perf_counter() - t0, seed=seed, versions=versions())
    write_json_atomic(out / "metrics.json", metrics)
    log(f"done in {metrics['seconds']:.0f} s: {out}/metrics.json, {figdir}/*.png, {out}/report.html", quiet)
    if as_json:
        emit({k: v for k, v in metrics.items() if k != "versions"}, True)
    else:
        log(f"verdict: {metrics['verdict']}", quiet)
        shown = {"D_stsp": "test_D_stsp", "D_H": "test_D_H"}  # the three D_stsp named apart: test, validation, latent
        emit({shown.get(k, k): v for k, v in metrics.items() if k not in ("versions", "verdict", "PE_n")}, False,
             title="dsrecon demo (FC_corr: higher is better; the others: lower)", quiet=quiet)


#: the largest Lyapunov exponent of Lorenz63 (σ 10, ρ 28, β 8/3) per unit of system time (docs/method.md §6)
TRUE_LAMBDA_MAX = 0.9056
#: free-run steps of the latent comparison
LATENT_STEPS = 100_000


def _zscored(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(0)) / np.where(x.std(0) > 1e-8, x.std(0), 1.0)


def latent_comparison(model, latent: np.ndarray, seed: int) -> dict:
    """The model's latent free run against the true Lorenz63 (each z-scored; binned D_stsp, 30 bins;
    D_H, smoothing 20, the settings for long simulated series), beside the floor (an independent
    true trajectory of the same length, scored the same way) and the linear baseline (a VAR(1),
    ridge 1, fitted to the deconvolved training data, the model's own estimate of the latent
    states, run freely as long)."""
    from dsrecon.evaluation import training_split_of
    from dsrecon.metrics.baselines import DEFAULT_RIDGE, LinearVAR
    from dsrecon.metrics.spectrum import hellinger_spectral
    from dsrecon.metrics.stsp import stsp_binned
    from dsrecon.metrics.yardsticks import valid_runs
    from dsrecon.signal.deconvolution import wiener_deconvolve
    from dsrecon.systems import simulate_system

    n = min(LATENT_STEPS, latent.shape[0])
    z = _zscored(latent[:n, :3])
    truth = simulate_system("lorenz63", n, DEMO_DT, DEMO_TR, kernel="none", seed=seed + 1)["latent"]
    other = simulate_system("lorenz63", n, DEMO_DT, DEMO_TR, kernel="none", seed=seed + 2)["latent"]
    out = {"z": z, "steps": n,
           "latent_D_stsp": float(stsp_binned(z, truth, bins=30)), "latent_D_H": float(hellinger_spectral(z, truth, smoothing=20)),
           "floor_D_stsp": float(stsp_binned(other, truth, bins=30)), "floor_D_H": float(hellinger_spectral(other, truth, smoothing=20))}
    train, _ = training_split_of(model)
    if train:
        teach = [wiener_deconvolve(np.where(np.isfinite(t), t, 0.0), model.kernel_.taps) for t in train]
        var = LinearVAR.fit([s for t in teach for s in valid_runs(t)], order=1, ridge=DEFAULT_RIDGE)
        vz = var.simulate(n, seed=seed)
        out.update(VAR1_D_stsp=float(stsp_binned(_zscored(vz), truth, bins=30)), VAR1_D_H=float(hellinger_spectral(_zscored(vz), truth, smoothing=20)),
                   VAR1_lambda_max_per_step=float(np.log(var.spectral_radius())))
    return out


def demo_lead(latent: dict, analysis: dict, figure=None) -> list[tuple[str, str]]:
    """The demo report's first section: the latent attractor against the true Lorenz63, each number
    beside the linear baseline and the floor (or the true value)."""
    import html

    from dsrecon.plots.html import figure_html, fmt_value

    ly = analysis.get("lyapunov") or {}
    lam = ly.get("lambda_max_per_step")
    per_unit = None if lam is None else lam / DEMO_DT
    var_unit = None if latent.get("VAR1_lambda_max_per_step") is None else latent["VAR1_lambda_max_per_step"] / DEMO_DT
    rows = [
        ("latent D_stsp", latent["latent_D_stsp"], latent.get("VAR1_D_stsp"), latent["floor_D_stsp"], "lower",
         f"state space of the latent free run vs the true attractor (binned, 30 bins, {latent['steps']} steps each); "
         "a free run stuck on a fixed point scores about 16"),
        ("latent D_H", latent["latent_D_H"], latent.get("VAR1_D_H"), latent["floor_D_H"], "lower", "spectra of the latent run vs the truth (smoothing 20)"),
        ("λ_max per unit of Lorenz time", per_unit, var_unit, TRUE_LAMBDA_MAX, "closer to the truth",
         f"the model's λ_max per step / dt ({DEMO_DT} of Lorenz time a frame); truth {TRUE_LAMBDA_MAX}; a linear model cannot be chaotic"),
        ("λ_max per second of recording", None if lam is None else lam / DEMO_TR, None if var_unit is None else var_unit * DEMO_DT / DEMO_TR,
         TRUE_LAMBDA_MAX * DEMO_DT / DEMO_TR, "closer to the truth", f"the same per second (TR {DEMO_TR} s)"),
    ]
    e = html.escape
    t = ["<table><tr><th>quantity</th><th>model</th><th>VAR(1)</th><th>floor / truth</th><th>better</th><th>what it is</th></tr>"]
    for q, m, v, f, b, note in rows:
        t.append(f"<tr><td>{e(q)}</td><td class=\"num\">{e(fmt_value(m))}</td><td class=\"num\">{e(fmt_value(v))}</td><td class=\"num\">{e(fmt_value(f))}</td>"
                 f"<td>{e(b)}</td><td class=\"muted\">{e(note)}</td></tr>")
    t.append("</table>")
    t.append('<p class="muted">The demo\'s data are simulated, so the true latent system is known: this comparison says whether the '
             "model found the Lorenz attractor. Floor: an independent trajectory of the true system scored the same way (the best "
             "possible). VAR(1): a linear autoregression fitted to the deconvolved training data (the latent estimate the model is "
             "trained from), run as long. The scores on the 500 test frames below compare observations only; on so few frames even "
             "a perfect model scores a test D_stsp near 9 (docs/metrics.md), which is why their floor stands beside them.</p>")
    if figure is not None and Path(figure).exists():
        t.append(figure_html(Path(figure), "The true Lorenz63 attractor (data panel, z-scored states) and the model's latent free run (model "
                                    "panel), on the same axes."))
    return [("Latent attractor against the true Lorenz63", "\n".join(t))]


def demo_metrics(model, rep: dict, latent: dict) -> dict:
    """metrics.json: the test scores beside their baselines, the verdict and settings, the three
    D_stsp named apart (test, validation, latent), and the latent comparison."""
    sc = rep["scores"] or {}
    ly = rep["analysis"].get("lyapunov") or {}
    tr = model.config["training"]
    m = {"verdict": rep["verdict"]}
    m.update({k: sc.get(k) for k in ("D_stsp", "D_stsp_method", "D_H", "PE_n", "FC_corr", "FC_rmse", "FCD_KS")})
    m["PE20"] = sc.get("PE_n")
    m["baselines"] = sc.get("baselines")
    m["metric_settings"] = sc.get("metric_settings")
    m["validation_D_stsp"] = tr.get("best_val_D_stsp")
    m.update({(k if k.startswith("latent_") else f"latent_{k}"): v for k, v in latent.items() if k != "z"})
    if "lambda_max_per_step" in ly:
        m.update(lambda_max_per_second=ly["lambda_max_per_second"], lambda_max_per_time_unit=ly["lambda_max_per_step"] / DEMO_DT,
                 true_lambda_max_per_time_unit=TRUE_LAMBDA_MAX, regime=ly.get("regime"))
    m.update(epochs_run=tr["epochs_run"], best_epoch=tr["best_epoch"], warnings=rep.get("warnings") or [])
    return m


#: figures the demo draws in OUTPUT/figures (each as .png and .svg)
DEMO_FIGURES = ("timeseries", "attractor_latent", "spectra", "training")


def check_demo_output(out: Path) -> None:
    """Before any work: every file the demo writes in ``out`` is absent or the output of an earlier
    demo (recognised by its own content: tables by their sidecars, JSON by the versions it records,
    the report by its generator tag; or any of them when out/metrics.json is an earlier demo's), and
    run/ is new, empty or a run holding only what dsrecon wrote (as `fit --force`)."""
    from dsrecon.cli.outputs import html_is_ours, json_is_ours, table_is_ours
    from dsrecon.errors import DsreconError
    from dsrecon.io.runs import check_target
    from dsrecon.io.tables import sidecar_path

    earlier = json_is_ours(out / "metrics.json")
    checks = {}
    for t in [out / "data" / f"lorenz_bold_{k}.tsv" for k in ("train", "test", "latent")] + [out / "generated.tsv"]:
        checks[t], checks[sidecar_path(t)] = table_is_ours, json_is_ours
    checks[out / "metrics.json"], checks[out / "report.html"] = json_is_ours, html_is_ours
    for stem in DEMO_FIGURES:
        for ext in ("png", "svg"):
            checks[out / "figures" / f"{stem}.{ext}"] = lambda p: earlier
    for p, ours in checks.items():
        if (p.exists() or p.is_symlink()) and not (p.is_file() and not p.is_symlink() and (ours(p) or earlier)):
            raise DsreconError(f"{p}: already exists and was not written by dsrecon (the demo writes it in -o {out}); "
                               "move it away or choose another -o")
    check_target(out / "run", force=True)
