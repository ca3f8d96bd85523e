"""`dsrecon fit`: fit a convSSM to recordings and write a run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from dsrecon.cli.common import DeviceOpt, JsonOpt, QuietOpt, SeedOpt, emit, log, progress_bar, resolve_device
from dsrecon.cli.main import app
from dsrecon.errors import DsreconError

FIT_HELP = """Fit a generative convSSM (latent dynamics + measurement kernel) with generalized teacher forcing.

INPUTS are region time-series tables (TSV/CSV/NPY, TR from a JSON sidecar or --tr), a directory
of tables, 4D NIfTI images with --atlas, an fMRIPrep derivatives directory, or a suite2p plane
folder. Several inputs (or runs) are separate recordings of one model.

Examples:

  dsrecon fit x.tsv -o run

  dsrecon fit sub-01_task-rest_bold.tsv --tr 2.0 --latent-dim 20 --epochs 3000 -o run

  dsrecon fit bold.nii.gz --atlas labels.nii.gz --confounds scrubbing -o run

  dsrecon fit run --resume   (continue a killed fit: give the same inputs and options)

  dsrecon fit x.tsv --ensemble 16 --ensemble-alpha 0.1,0.15,0.2 -o ens   (16 models at once; ens/best)
"""


@app.command("fit", help=FIT_HELP)
def fit_cmd(
    inputs: list[Path] = typer.Argument(..., help="Input files or directories."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory to write."),
    tr: Optional[float] = typer.Option(None, "--tr", help="Seconds per frame (when no sidecar/header gives it)."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="spm|glover|calcium|none|FILE (default spm; calcium for calcium imaging)."),
    tau_decay: float = typer.Option(0.4, "--tau-decay", help="Calcium kernel decay time constant (s)."),
    tau_rise: Optional[float] = typer.Option(None, "--tau-rise", help="Calcium kernel rise time constant (s); double exponential."),
    backend: str = typer.Option("cshplrnn", "--backend", help="Latent dynamics (see `dsrecon backends`)."),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", "-M", help="Latent dimension M (default N, at least 3)."),
    hidden_dim: int = typer.Option(50, "--hidden-dim", "-L", help="Hidden width L of the shPLRNN."),
    pwl_units: Optional[int] = typer.Option(None, "--pwl-units", help="ALRNN: number of piecewise-linear units P."),
    bases: Optional[int] = typer.Option(None, "--bases", help="dendPLRNN: number of basis functions B."),
    init: Optional[str] = typer.Option(None, "--init", help="s4d: initialisation of the diagonal A: lin|inv|real."),
    real: bool = typer.Option(False, "--real", help="s4d: real-valued diagonal instead of complex modes."),
    r_min: Optional[float] = typer.Option(None, "--r-min", help="lru: inner radius of the eigenvalue ring init."),
    r_max: Optional[float] = typer.Option(None, "--r-max", help="lru: outer radius of the eigenvalue ring init."),
    backend_option: list[str] = typer.Option([], "--backend-option", help="Extra backend argument KEY=VALUE (repeatable)."),
    decoder: str = typer.Option("identity", "--decoder", help="identity|affine|regressor."),
    alpha: str = typer.Option("0.15", "--alpha", help="GTF forcing weight in [0, 1], or 'adaptive'."),
    sparse_tf_interval: Optional[int] = typer.Option(None, "--sparse-tf-interval", help="Sparse teacher forcing: force fully every τ steps instead of α."),
    epochs: int = typer.Option(2000, "--epochs", help="Maximum number of epochs."),
    batches_per_epoch: int = typer.Option(50, "--batches-per-epoch"),
    batch_size: int = typer.Option(16, "--batch-size"),
    sequence_length: Optional[int] = typer.Option(None, "--sequence-length", help="Latent sequence length T̃ (default 200, at least K+39)."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Initial RAdam learning rate (decays exponentially to --lr-end)."),
    lr_end: float = typer.Option(1e-6, "--lr-end"),
    noise: float = typer.Option(0.05, "--noise", help="Std of Gaussian noise injected into batches and teacher signals."),
    l2: float = typer.Option(0.0, "--l2", help="L2 regularisation of latent and decoder weights."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Held-out tail of each recording used for validation."),
    val_every: int = typer.Option(25, "--val-every", help="Validate (D_stsp, D_H) every this many epochs."),
    patience: int = typer.Option(20, "--patience", help="Stop after this many validations without improvement (0: never)."),
    min_epochs: Optional[int] = typer.Option(None, "--min-epochs", help="Never stop early before this epoch (default: half of --epochs)."),
    restore_on_collapse: bool = typer.Option(False, "--restore-on-collapse",
                                             help="When a validation free run has collapsed onto a fixed point, continue from the best model so far."),
    stsp: str = typer.Option("auto", "--stsp", help="Validation D_stsp: auto|binned|gmm."),
    gmm_var: float = typer.Option(1.0, "--gmm-var", help="σ² of the GMM D_stsp (0.3 is typical for BOLD)."),
    smoothing: float = typer.Option(20.0, "--smoothing", help="D_H spectral smoothing σ (bins)."),
    checkpoint_every: int = typer.Option(25, "--checkpoint-every", help="Write a resumable checkpoint every this many epochs."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run directory."),
    atlas: Optional[str] = typer.Option(None, "--atlas", help="Integer label image (NIfTI) for region signals."),
    atlas_labels: Optional[str] = typer.Option(None, "--atlas-labels", help="TSV naming the atlas labels (index, name)."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Brain mask for voxel-level signals (with --pca)."),
    pca: Optional[int] = typer.Option(None, "--pca", help="Number of PCA components of masked voxel signals."),
    detrend: bool = typer.Option(False, "--detrend", help="Detrend signals (nilearn)."),
    standardize: bool = typer.Option(False, "--standardize", help="Standardize signals (nilearn)."),
    low_pass: Optional[float] = typer.Option(None, "--low-pass", help="Low-pass cutoff (Hz)."),
    high_pass: Optional[float] = typer.Option(None, "--high-pass", help="High-pass cutoff (Hz)."),
    confounds: str = typer.Option("none", "--confounds", help="fMRIPrep confound strategy: simple|scrubbing|compcor|none."),
    participant_label: list[str] = typer.Option([], "--participant-label", help="BIDS participant(s) to fit (repeatable)."),
    task: Optional[str] = typer.Option(None, "--task", help="BIDS task."),
    space: Optional[str] = typer.Option(None, "--space", help="fMRIPrep output space (space-<label>) when runs exist in several."),
    fd_threshold: Optional[float] = typer.Option(None, "--fd-threshold", help="Scrubbing: framewise-displacement threshold in mm (nilearn default 0.5)."),
    std_dvars_threshold: Optional[float] = typer.Option(None, "--std-dvars-threshold", help="Scrubbing: standardised DVARS threshold (nilearn default 1.5)."),
    session: list[str] = typer.Option([], "--session", help="BIDS session(s) (repeatable)."),
    neuropil_factor: float = typer.Option(0.7, "--neuropil-factor", help="suite2p: F − factor·Fneu."),
    regressor_column: list[str] = typer.Option([], "--regressor-column", help="Table column to use as a nuisance regressor (repeatable)."),
    drop_column: list[str] = typer.Option([], "--drop-column", help="Table column to ignore (repeatable)."),
    ensemble: int = typer.Option(1, "--ensemble", help="Train K independent models (seeds SEED…SEED+K−1) in one batched computation; writes OUT/member-XX runs, ensemble.json and OUT/best."),
    ensemble_alpha: Optional[str] = typer.Option(None, "--ensemble-alpha", help="With --ensemble: comma-separated α values; member k uses the (k mod n)-th."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    from dsrecon.api import ConvSSM
    from dsrecon.io.load import InputSpec, load_inputs

    from dsrecon.io.runs import check_target

    dev = resolve_device(device)
    check_target(output, resume=resume, force=force)  # refuse an unusable -o before loading anything
    for name, val in (("--epochs", epochs), ("--batches-per-epoch", batches_per_epoch), ("--batch-size", batch_size), ("--val-every", val_every), ("--checkpoint-every", checkpoint_every)):
        if val < 1:
            raise DsreconError(f"{name} must be at least 1, got {val}")
    if not 0 <= test_fraction < 1:
        raise DsreconError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if not learning_rate > 0 or not lr_end > 0:
        raise DsreconError("--learning-rate and --lr-end must be positive")
    if tr is not None and not tr > 0:
        raise DsreconError(f"--tr must be positive, got {tr}")
    spec = InputSpec(
        tr=tr, atlas=atlas, atlas_labels=atlas_labels, mask=mask, pca=pca, detrend=detrend, standardize=standardize,
        low_pass=low_pass, high_pass=high_pass, confounds=confounds, participant_label=list(participant_label), task=task,
        session=list(session), space=space, fd_threshold=fd_threshold, std_dvars_threshold=std_dvars_threshold, quiet=quiet,
        neuropil_factor=neuropil_factor, regressor_columns=list(regressor_column), drop_columns=list(drop_column),
    )
    recs = load_inputs([str(p) for p in inputs], spec)
    modality = recs[0].provenance.get("modality", "bold")
    kernel_name = kernel or ("calcium" if modality == "calcium" else "spm")
    from dsrecon.signal.kernels import make_kernel

    K = make_kernel(kernel_name, recs[0].tr, tau_decay=tau_decay, tau_rise=tau_rise).K
    seq = sequence_length
    if seq is None:
        from dsrecon.training.batches import DEFAULT_SEQUENCE_LENGTH, default_sequence_length

        seq, usable = default_sequence_length([r.n_frames for r in recs], K, test_fraction)
        if seq < max(DEFAULT_SEQUENCE_LENGTH, K + 39):
            log(f"the training split is short ({usable} usable frames): using --sequence-length {seq}", quiet)
    opts = dict(backend_option_pairs(backend_option))
    if pwl_units is not None:
        opts["pwl_units"] = pwl_units
    if bases is not None:
        opts["bases"] = bases
    for key, val in (("init", init), ("r_min", r_min), ("r_max", r_max)):
        if val is not None:
            opts[key] = val
    if real:
        opts["real"] = True
    if decoder == "identity" and recs[0].regressors is not None:
        log("nuisance regressors present: use --decoder regressor to model them; the identity decoder ignores them", quiet)
    model = ConvSSM(
        backend=backend, latent_dim=latent_dim, hidden_dim=hidden_dim, kernel=kernel_name, tau_decay=tau_decay, tau_rise=tau_rise,
        decoder=decoder, backend_options=opts, seed=seed, device=dev, epochs=epochs, batches_per_epoch=batches_per_epoch,
        batch_size=batch_size, sequence_length=seq, learning_rate=learning_rate, lr_end=lr_end, alpha=alpha,
        sparse_tf_interval=sparse_tf_interval, noise=noise, l2=l2, test_fraction=test_fraction, val_every=val_every,
        patience=patience, min_epochs=min_epochs, restore_on_collapse=restore_on_collapse, stsp=stsp, gmm_var=gmm_var, smoothing=smoothing, checkpoint_every=checkpoint_every,
    )
    if ensemble != 1 or ensemble_alpha is not None:
        from dsrecon.cli.ensemble import fit_ensemble_cli

        if ensemble < 1:
            raise DsreconError(f"--ensemble must be at least 1, got {ensemble}")
        return fit_ensemble_cli(model, recs, output, ensemble, ensemble_alpha, resume=resume, force=force, quiet=quiet,
                                as_json=as_json, inputs=[str(p) for p in inputs])
    from dsrecon.cli.main import report_interrupt
    from dsrecon.errors import FitInterrupted

    n_frames = sum(r.n_frames for r in recs)
    log(f"fitting {backend} on {len(recs)} recording(s), {recs[0].n_regions} regions, {n_frames} frames, TR {recs[0].tr:g} s, kernel {kernel_name} ({K} taps) → {output}", quiet)
    t0 = time.perf_counter()
    with progress_bar(quiet) as prog:
        task_id = prog.add_task("fit", total=epochs, status="")

        def on_epoch(epoch: int, total: int, status: str) -> None:
            prog.update(task_id, completed=epoch, total=total, status=status)

        try:
            model.fit(recs, output, resume=resume, overwrite=force, progress=on_epoch, log=lambda s: log(s, quiet),
                      inputs=[str(p) for p in inputs])
        except FitInterrupted as e:  # one line: the epoch, the checkpoint, the exact --resume command
            prog.stop()
            raise typer.Exit(report_interrupt(e)) from None
    tr_sum = model.config["training"]
    result = {"run": str(output), "seconds": time.perf_counter() - t0, **tr_sum, "seed": seed, "versions": model.config["versions"]}
    log(f"wrote {output}/model.safetensors, config.json, training_log.tsv", quiet)
    emit(result, as_json, title=f"dsrecon fit → {output}", quiet=quiet)


def backend_option_pairs(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for it in items:
        if "=" not in it:
            raise DsreconError(f"--backend-option expects KEY=VALUE, got '{it}'")
        k, v = it.split("=", 1)
        val: object = v
        for cast in (int, float):
            try:
                val = cast(v)
                break
            except ValueError:
                continue
        if v.lower() in ("true", "false"):
            val = v.lower() == "true"
        out.append((k.strip().replace("-", "_"), val))
    return out
