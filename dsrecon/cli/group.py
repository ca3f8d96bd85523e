"""`dsrecon fit-group`: the hierarchical group model of many subjects (and transfer with --from)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from dsrecon.cli.common import SETTLES_HINT, JsonOpt, QuietOpt, check_long_run, emit, log, progress_bar, warn
from dsrecon.cli.main import app
from dsrecon.cli.options import parse_fit_options, with_fit_options
from dsrecon.errors import DataError, DsreconError

FIT_GROUP_HELP = """Fit ONE hierarchical model to many subjects: shared group parameters, one feature vector per subject.

Each subject's model parameters (dynamics, initial-state map, decoder) are generated from its F
features (--scheme linear: θ = b + P·l; outer: low-rank W = b + Σ_f l_f u_f v_fᵀ). Every subject has its
own recordings, kernel (TR), normalisation and teacher signals. INPUTS: a BIDS/fMRIPrep tree
(subjects from sub- entities; a subject's runs share its features), a directory of tables
(sub-XX_… files grouped by subject, else one subject per file or subfolder), or several files
with --subject-from-filename. Every option of `dsrecon fit` applies.

Examples:

  dsrecon fit-group fmriprep/ --atlas atlas.nii.gz --features 3 -o group

  dsrecon fit-group tables/ --latent-dim 3 -o group

  dsrecon fit-group sub-01_bold.tsv sub-02_bold.tsv --subject-from-filename -o group

  dsrecon fit-group new_subjects/ --from group -o group2   (transfer: group parameters frozen, features learned)

  dsrecon simulate model group --subject 01 --steps 10000 -o gen.tsv

  dsrecon evaluate group --all
"""


def group_inputs(inputs: list[Path], spec, subject_from_filename: bool) -> dict[str, list[str]]:
    """Subject id → its input paths (module help)."""
    from dsrecon.distributed.subjects import discover_subjects, file_stem
    from dsrecon.estimators.group_run import subject_id
    from dsrecon.io.results import bids_entities

    from dsrecon.io.load import refuse_unused_queries

    for p in inputs:
        if not p.exists():
            raise DataError(f"{p}: file not found")
    refuse_unused_queries([str(p) for p in inputs], spec)
    if len(inputs) == 1 and inputs[0].is_dir() and not subject_from_filename:
        subs = discover_subjects(inputs[0], participant_label=spec.participant_label or None, task=spec.task,
                                 session=spec.session or None, space=spec.space)
        return {subject_id(s.name): list(s.paths) for s in subs}
    if not subject_from_filename:
        raise DsreconError("several inputs: give --subject-from-filename (each file's sub-<label>, else its name, is its subject), "
                           "or one directory of subjects")
    out: dict[str, list[str]] = {}
    for p in inputs:
        sub = bids_entities(p).get("sub")
        out.setdefault(sub if sub else subject_id(file_stem(p)), []).append(str(p))
    return out


def load_subjects(groups: dict[str, list[str]], spec) -> dict[str, list]:
    """Every subject's recordings; a subject whose inputs cannot be read is one line naming it and the file."""
    from dsrecon.io.load import load_inputs

    out = {}
    for sid, paths in groups.items():
        try:
            out[sid] = load_inputs(paths, spec)
        except DataError as e:
            raise DataError(f"subject {sid}: {e}") from None
    return out


def _given(name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    import click

    try:
        src = click.get_current_context().get_parameter_source(name)
    except RuntimeError:  # pragma: no cover - not inside a click command
        return False
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command("fit-group", help=FIT_GROUP_HELP)
@with_fit_options()
def fit_group_cmd(
    inputs: list[Path] = typer.Argument(..., help="A BIDS/fMRIPrep tree, a directory of tables, or files (with --subject-from-filename)."),
    output: Path = typer.Option(..., "--output", "-o", help="Group run directory to write."),
    features: int = typer.Option(3, "--features", help="Features per subject F (0: one model for every subject)."),
    scheme: str = typer.Option("linear", "--scheme", help="How features generate parameters: linear|outer."),
    feature_decay: float = typer.Option(1e-3, "--feature-decay", help="λ of the low-rank penalty λ/2·(‖projections‖² + ‖features‖²): feature axes the data do not need shrink to 0, so one axis can track what differs between subjects (0: none; see the user guide)."),
    subject_from_filename: bool = typer.Option(False, "--subject-from-filename", help="Several files: each file's sub-<label> (else its name) is its subject."),
    from_run: Optional[Path] = typer.Option(None, "--from", help="Transfer: a group run whose group parameters are frozen; only the new subjects' features are learned (default epochs: a tenth of its)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run directory."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    **options,
) -> None:
    from dsrecon.estimators.load import load_run
    from dsrecon.cli.main import report_interrupt
    from dsrecon.errors import FitInterrupted
    from dsrecon.estimators.group import GroupConvSSM
    from dsrecon.io.load import InputSpec
    from dsrecon.cli.outputs import check_inputs_outside, fit_input_paths
    from dsrecon.io.runs import check_target, recover_commit
    from dsrecon.options import model_fields, train_fields, validate_options

    params, spec_kw = parse_fit_options(options)
    model = GroupConvSSM(features, scheme, feature_decay, **params)
    model.validate()  # bad values fail here, before any data is read
    spec = validate_options(InputSpec(**spec_kw, quiet=quiet))
    recover_commit(output, lambda s: log(s, quiet))  # a commit of this run cut short by a kill: completed first
    check_target(output, resume=resume, force=force)
    check_inputs_outside(output, [*fit_input_paths(inputs, spec, model.base.kernel), from_run])
    source = None
    if from_run is not None:
        from dsrecon.io.runs import CONFIG_FILE

        if not (from_run / CONFIG_FILE).is_file():
            raise DsreconError(f"--from {from_run}: not a run directory (no {CONFIG_FILE})")
        source = load_run(from_run)
        if not isinstance(source, GroupConvSSM):
            raise DsreconError(f"--from {from_run}: not a group run (written by dsrecon fit, not dsrecon fit-group)")
        fixed = [f.name for f in model_fields() if f.name not in ("seed", "device") and f.metadata.get("cli") and _given(f.name)]
        fixed += [n for n in ("features", "scheme", "feature_decay") if _given(n)]
        if fixed:
            raise DsreconError(f"--{fixed[0].replace('_', '-')}: with --from the model comes from {from_run}; leave it out")
    from dsrecon.io.load import refuse_shared_confounds

    groups = group_inputs(inputs, spec, subject_from_filename)
    refuse_shared_confounds(len(groups), spec)
    subs = load_subjects(groups, spec)
    t0 = time.perf_counter()
    inp = {sid: [r.source for r in recs] for sid, recs in subs.items()}
    with progress_bar(quiet) as prog:
        task_id = prog.add_task("fit-group", total=model.base.epochs, status="")

        def on_epoch(epoch: int, total: int, status: str) -> None:
            prog.update(task_id, completed=epoch, total=total, status=status)

        kw = dict(resume=resume, overwrite=force, progress=on_epoch, log=lambda s: log(s, quiet), inputs=inp)
        try:
            if source is None:
                fitted = model.fit(subs, output, **kw)
            else:
                train = {f.name: params[f.name] for f in train_fields() if f.metadata.get("cli") and f.name in params and _given(f.name)}
                train.update(seed=params.get("seed", 0), device=params.get("device", "auto"))
                fitted = source.transfer(subs, output, **kw, **train)
        except FitInterrupted as e:
            prog.stop()
            raise typer.Exit(report_interrupt(e)) from None
    summary = fitted.config["training"]
    result = {"run": str(output), "seconds": time.perf_counter() - t0, "subjects": fitted.subjects, "features": int(fitted.features),
              "scheme": fitted.scheme, "feature_decay": fitted.feature_decay_, "transfer_from": None if from_run is None else str(from_run), **summary,
              "seed": fitted.config.get("seed"), "versions": fitted.config["versions"]}
    models = {sid: fitted.subject(sid) for sid in fitted.subjects}
    # (a model with task inputs may rest without them: checked only for autonomous models)
    result["long_run"] = long_runs = {sid: m.long_run() for sid, m in models.items() if not m.config.get("n_inputs")}
    for key, one, many in (("settles", "settles on a fixed point, so it does not reproduce the data's oscillation",
                            "settle on a fixed point, so they do not reproduce the data's oscillation"),
                           ("diverged", "diverges", "diverge")):
        bad = [sid for sid, r in long_runs.items() if r[key]]
        if bad:
            n = long_runs[bad[0]]["steps"]
            warn(f"subject {bad[0]}: the free run of {n} steps {one}; {SETTLES_HINT}" if len(bad) == 1 else
                 f"subjects {', '.join(bad)}: the free runs of {n} steps {many}; {SETTLES_HINT}")
    log(f"wrote {output}/model.safetensors, config.json, subject_features.tsv, training_log.tsv", quiet)
    emit(result, as_json, title=f"dsrecon fit-group → {output}", quiet=quiet)

