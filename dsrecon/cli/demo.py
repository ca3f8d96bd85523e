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
    from dsrecon.api import ConvSSM
    from dsrecon.io.recording import Recording
    from dsrecon.io.tables import write_table
    from dsrecon.metrics.spectrum import hellinger_spectral
    from dsrecon.metrics.stsp import stsp_binned
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
    scores = model.score(test, seed=seed)
    gen = model.simulate(100_000, seed=seed)
    write_table(out / "generated.tsv", gen["observed"][:10_000], names, sidecar={"RepetitionTime": DEMO_TR, "seed": seed, "versions": versions()})
    lat = gen["latent"][:, :3]
    true_lat = simulate_system("lorenz63", 100_000, DEMO_DT, DEMO_TR, kernel="none", seed=seed + 1)["latent"]
    z = (lat - lat.mean(0)) / np.where(lat.std(0) > 1e-8, lat.std(0), 1.0)
    latent_stsp = float(stsp_binned(z, true_lat, bins=30))
    latent_dh = float(hellinger_spectral(z, true_lat, smoothing=20))
    metrics = {
        "D_stsp": scores["D_stsp"], "D_stsp_method": scores["D_stsp_method"], "D_H": scores["D_H"], "PE20": scores["PE_n"],
        "latent_D_stsp": latent_stsp, "latent_D_H": latent_dh, "epochs_run": model.config["training"]["epochs_run"],
        "best_epoch": model.config["training"]["best_epoch"], "seconds": time.perf_counter() - t0, "seed": seed, "versions": versions(),
    }

    log("4/4 plotting and writing the report", quiet)
    from dsrecon.plots import figures as F

    figdir = out / "figures"
    obs_norm = model.norm_.apply(test.data)
    F.time_series(obs_norm, gen["observed_normalised"][: test.n_frames], figdir / "timeseries", tr=DEMO_TR, names=names)
    F.attractor(sim["latent"], z[:20_000], figdir / "attractor_latent", dims=3)
    F.power_spectra(obs_norm, gen["observed_normalised"][: test.n_frames], figdir / "spectra", tr=DEMO_TR)
    F.training_curves(out / "run" / "training_log.tsv", figdir / "training")
    from dsrecon.plots.report import build_report

    rep = build_report(model, out / "report.html", data=test, lyapunov_steps=lyapunov_steps, seed=seed)
    lyap = rep["analysis"].get("lyapunov") or {}
    if "lambda_max_per_second" in lyap:
        metrics["lambda_max_per_second"] = lyap["lambda_max_per_second"]
        metrics["regime"] = lyap.get("regime")
    metrics["report"] = str(out / "report.html")
    metrics["seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "metrics.json", metrics)
    log(f"done in {metrics['seconds']:.0f} s: {out}/metrics.json, {figdir}/*.png, {out}/report.html", quiet)
    emit({k: v for k, v in metrics.items() if k != "versions"}, as_json, title="dsrecon demo (lower is better)", quiet=quiet)


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
