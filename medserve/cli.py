"""`medserve` command line: thin commands over the platform's functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from medserve.auth.roles import Role
from medserve.catalogue import SERVICES
from medserve.settings import get_settings, use_local_bentoml_home

app = typer.Typer(help="medserve: serve clinical ML models.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _setup(ctx: typer.Context) -> None:
    settings = get_settings()
    use_local_bentoml_home(settings)
    if ctx.invoked_subcommand != "doctor":  # the doctor reports an unwritable home instead
        settings.home.mkdir(parents=True, exist_ok=True)


# Printed after training when the model reports them (the rules miner has no ROC AUC).
TRAIN_FIGURES = (("accuracy", "accuracy"), ("roc_auc", "ROC AUC"))


@app.command()
def train(
    model: str,
    with_feedback: Annotated[
        bool, typer.Option("--with-feedback", help="Add clinician-confirmed outcomes.")
    ] = False,
    export: Annotated[str | None, typer.Option(help="s3://bucket/prefix or a folder.")] = None,
) -> None:
    """Train MODEL as a Ray job (local Ray unless RAY_ADDRESS is set)."""
    from ray_jobs.train import run

    with console.status(f"training {model} on Ray"):
        outcome = run(model, with_feedback, export)
    metrics = outcome.metrics
    figures = [f"{label} {metrics[key]:.3f}" for key, label in TRAIN_FIGURES if key in metrics]
    console.print(
        f"[green]trained[/] {outcome.tag}: {', '.join(figures)}"
        + (f", exported to {outcome.exported_to}" if outcome.exported_to else "")
    )
    if outcome.report:
        console.print(outcome.report, markup=False)


@app.command()
def models(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """List stored models with their headline metrics."""
    from medserve.model_store import list_models

    table = Table("tag", "created (UTC)", "accuracy", "roc_auc", "n_train")
    for summary in list_models(name):
        m = summary.metrics
        table.add_row(
            summary.tag,
            summary.created[:19],
            f"{m['accuracy']:.3f}" if "accuracy" in m else "",
            f"{m['roc_auc']:.3f}" if "roc_auc" in m else "",
            str(m.get("n_train", "")),
        )
    Console().print(table)


@app.command("export")
def export_cmd(tag: str, uri: str) -> None:
    """Export a stored model to s3://bucket/prefix or a folder."""
    from medserve.model_store import export_model

    console.print(f"exported to {export_model(tag, uri)}")


@app.command("import")
def import_cmd(uri: str) -> None:
    """Import a `.bentomodel` archive from S3 or a local path."""
    from medserve.model_store import import_model

    console.print(f"imported {import_model(uri)}")


@app.command()
def calibrate(
    model: str,
    normal_beats: Annotated[
        Path, typer.Option("--normal-beats", help="Normal beats: 140 values per row, or ECG5000.")
    ],
    tag: Annotated[str, typer.Option(help="Model version to calibrate.")] = "latest",
    k: Annotated[
        float | None, typer.Option(help="Threshold = mean + k * std (default: the model's k).")
    ] = None,
) -> None:
    """Refit MODEL's decision threshold on a deployment's own normal beats; saves a new tag."""
    if model != "ecg_anomaly":
        raise typer.BadParameter(
            "only ecg_anomaly has a calibratable threshold", param_hint="MODEL"
        )
    from training.ecg_anomaly import calibrate as calibrate_threshold
    from training.ecg_anomaly import read_beats_file

    try:
        beats = read_beats_file(normal_beats)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--normal-beats") from None
    result = calibrate_threshold(f"{model}:{tag}", beats, k)
    console.print(
        f"[green]calibrated[/] {result.tag} from {result.calibrated_from} on {result.beats} beats: "
        f"threshold {result.previous_threshold:.5f} -> {result.threshold:.5f} "
        f"(the old threshold flagged {result.flagged_share_before:.1%} of these normal beats)"
    )


class _RunByDefault(TyperGroup):
    """`medserve anonymize IN OUT` stays the run command: arguments that name no subcommand go
    to `run` (an input folder literally named "run" or "preview" needs `anonymize run ...`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


anonymize_app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Anonymise ECG exam PDFs (`medserve anonymize IN OUT` runs), or preview a layout.",
)
app.add_typer(anonymize_app, name="anonymize")


def _refuse(reason: object) -> NoReturn:
    # soft_wrap: one line whatever the terminal width (the reason may quote a path).
    console.print(f"[red]refused[/]: {reason}", soft_wrap=True)
    raise typer.Exit(2)


@anonymize_app.command("run")
def anonymize(
    input_uri: Annotated[str, typer.Argument(help="s3://bucket/prefix or a folder of PDFs.")],
    output_uri: Annotated[str, typer.Argument(help="s3://bucket/prefix or a folder.")],
    engine: Annotated[str, typer.Option(help="ray (Ray Data) or processpool.")] = "ray",
    workers: Annotated[
        int | None, typer.Option(help="CPU workers (default from settings).")
    ] = None,
    retry_quarantined: Annotated[
        bool, typer.Option("--retry-quarantined", help="Try quarantined exams again.")
    ] = False,
) -> None:
    """Anonymise every exam PDF under INPUT_URI into OUTPUT_URI (resumable, idempotent)."""
    from medserve.anonymize.pipeline import ENGINES, RunRefused, run
    from medserve.anonymize.settings import PipelineSettings

    if engine not in ENGINES:
        raise typer.BadParameter(f"engine must be one of {', '.join(ENGINES)}")
    pipeline = PipelineSettings(**({"workers": workers} if workers else {}))
    try:
        manifest = run(
            input_uri,
            output_uri,
            engine=engine,  # type: ignore[arg-type]
            retry_quarantined=retry_quarantined,
            pipeline=pipeline,
            console=console,
        )
    except RunRefused as refusal:
        _refuse(refusal)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(manifest.quarantine_reasons.items()))
    console.print(
        f"[green]done[/] {manifest.listed} listed: {manifest.anonymized} anonymised, "
        f"{manifest.quarantined} quarantined{f' ({reasons})' if reasons else ''}, "
        f"{manifest.skipped} already done, {manifest.failed} failed; "
        f"{manifest.files_per_second:.2f} files/s; manifest runs/{manifest.run_ulid}.json"
    )
    if not manifest.complete:
        console.print("[red]incomplete[/]: storage errors left exams unprocessed; run again")
        raise typer.Exit(1)


@anonymize_app.command("preview")
def anonymize_preview(
    exam: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An exam PDF.")],
    layout: Annotated[
        str | None, typer.Option(help="Use this profile instead of the one that matches.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The PNG to write (default: EXAM.preview.png).")
    ] = None,
    dpi: Annotated[int, typer.Option(min=36, max=300, help="Resolution of the picture.")] = 100,
) -> None:
    """Draw EXAM's kept zones, burnt areas and identifier hits on both pages (a PNG)."""
    from medserve.anonymize.errors import ExamRejected
    from medserve.anonymize.layouts import LayoutError, load_layouts
    from medserve.anonymize.preview import preview_png
    from medserve.anonymize.settings import AnonymizerSettings

    try:
        layouts = load_layouts(AnonymizerSettings().layouts_dir)
        png, profile = preview_png(exam.read_bytes(), layouts, layout, dpi)
    except (LayoutError, ExamRejected) as error:
        _refuse(error)
    target = out or exam.with_suffix(".preview.png")
    target.write_bytes(png)
    console.print(f"[green]preview[/] {target} (layout {profile.name})")


@app.command("anonymize-file")
def anonymize_file(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An exam PDF.")],
    target: Annotated[Path, typer.Argument(help="The output ZIP; its record goes beside it.")],
) -> None:
    """Anonymise one exam PDF into a ZIP (plus TARGET.json); exit 2 if it is quarantined."""
    from medserve.anonymize.anonymizer import AnonymizedExam, EnvironmentRefused, preflight
    from medserve.anonymize.isolation import ExamProcessUnavailable, IsolatedAnonymizer
    from medserve.anonymize.settings import AnonymizerSettings

    settings = AnonymizerSettings()
    try:
        preflight(settings)
    except EnvironmentRefused as refusal:
        _refuse(refusal)
    # In a child process under MEDSERVE_ANON_EXAM_TIMEOUT_S, as in the pipeline.
    try:
        with IsolatedAnonymizer(settings) as anonymizer:
            result = anonymizer.process(source.read_bytes(), source.name)
    except ExamProcessUnavailable as error:
        _refuse(error)
    record_path = target.with_name(target.name + ".json")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(result, AnonymizedExam):
        target.write_bytes(result.zip_bytes)
        record_path.write_text(result.record.model_dump_json(indent=1))
        console.print(
            f"[green]anonymised[/] {target} ({result.record.output_size_bytes} bytes, "
            f"{result.record.seconds.total:.2f} s, verification passed)"
        )
        return
    record_path.write_text(result.model_dump_json(indent=1))
    console.print(f"[red]quarantined[/]: {result.reason} ({result.detail}); see {record_path}")
    raise typer.Exit(2)


@app.command()
def serve(
    model: Annotated[str, typer.Argument()] = "heart_risk",
    port: Annotated[int | None, typer.Option(help="HTTP port (default: the catalogue's).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve MODEL with BentoML in the foreground."""
    from medserve import launcher

    if model not in SERVICES:
        raise typer.BadParameter(f"known: {', '.join(SERVICES)}", param_hint="MODEL")
    # As before: MEDSERVE_HTTP_PORT / MEDSERVE_GRPC_PORT, when set, win over the catalogue.
    http_port = port or int(os.environ.get("MEDSERVE_HTTP_PORT", 0)) or None
    grpc_port = int(os.environ.get("MEDSERVE_GRPC_PORT", 0)) or None
    settings = get_settings()
    code = launcher.serve(
        SERVICES[model], settings, console, workers=workers, ports=(http_port, grpc_port)
    )
    raise typer.Exit(code)


@app.command()
def up(
    workers: Annotated[int | None, typer.Option(help="Worker processes per service.")] = None,
) -> None:
    """Serve every service; train missing models (quickest first), each service starting as
    soon as its model is ready."""
    from medserve.launcher import Launcher

    raise typer.Exit(Launcher(get_settings(), console, workers=workers).run())


@app.command()
def token(
    role: Annotated[list[Role], typer.Option("--role", help="A role to grant (repeat for more).")],
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 30m, 12h, 7d.")] = "12h",
    subject: Annotated[
        str | None, typer.Option(help="Who the token names (default local:<user>).")
    ] = None,
) -> None:
    """Mint a bearer token with the local signing key (local mode only); prints the token."""
    from medserve.auth.local import NotLocalMode, default_subject, mint, parse_duration
    from medserve.auth.settings import get_auth_settings

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    try:
        minted = mint(get_auth_settings(), role, seconds, subject or default_subject())
    except NotLocalMode as exc:
        _refuse(exc)
    typer.echo(minted)


@app.command()
def audit(
    since: Annotated[
        str, typer.Option(help="ISO date/time (UTC if no zone) or a duration back: 24h, 7d.")
    ] = "24h",
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the audit trail: who read or labelled patient data, when, where, with what outcome."""
    from medserve.audit import AuditTrail, parse_since
    from medserve.prediction_log import make_engine

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    from medserve.database.schema import SchemaNotCurrent

    try:
        trail = AuditTrail(make_engine(get_settings().resolved_database_url))
    except SchemaNotCurrent as refusal:
        _refuse(refusal)
    entries = trail.entries(start, subject, limit)
    if as_json:
        for entry in entries:
            typer.echo(entry.model_dump_json())
        return
    table = Table("time (UTC)", "subject", "role", "model", "call", "predictions", "outcome")
    for entry in entries:
        table.add_row(
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.subject,
            entry.role or "-",
            entry.model,
            f"{entry.method} {entry.route}",
            str(len(entry.prediction_ids)),
            f"{entry.status} {entry.outcome}",
        )
    Console().print(table)


db_app = typer.Typer(
    no_args_is_help=True,
    help="The shared database (MEDSERVE_DATABASE_URL, default the SQLite file under the home).",
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this release's schema (services refuse an older one)."""
    from medserve.database.commands import upgrade_command

    console.print(upgrade_command(get_settings()), soft_wrap=True, highlight=False)


@db_app.command("prune")
def db_prune(
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Retention in days (default MEDSERVE_PREDICTION_LOG_RETENTION_DAYS)."
        ),
    ] = None,
) -> None:
    """Delete predictions (and their feedback) older than the retention, in batches."""
    from medserve.database.commands import CommandRefused, prune_command
    from medserve.database.schema import SchemaNotCurrent

    try:
        report = prune_command(get_settings(), days)
    except (CommandRefused, SchemaNotCurrent) as refusal:
        _refuse(refusal)
    console.print(report, soft_wrap=True, highlight=False)


triage_app = typer.Typer(
    no_args_is_help=True, help="The respiratory triage: its knowledge base and review report."
)
app.add_typer(triage_app, name="triage")


@triage_app.command("load-kb")
def triage_load_kb(
    path: Annotated[
        Path | None, typer.Argument(help="The KB YAML (default MEDSERVE_TRIAGE_KB_PATH).")
    ] = None,
) -> None:
    """Validate the KB, store it in the model store (pinned by tag, with its SHA-256) and
    write its tables in the database (which must be migrated: `medserve db upgrade`)."""
    from medserve.database.schema import SchemaNotCurrent
    from medserve.respiratory.kb import KnowledgeBaseError
    from medserve.respiratory.settings import get_triage_settings
    from training.respiratory_triage import publish

    try:
        published = publish(path or get_triage_settings().kb_path, get_settings())
    except (KnowledgeBaseError, SchemaNotCurrent) as refusal:
        _refuse(refusal)
    stored = "stored as" if published.created else "already stored as"
    tables = "tables written" if published.tables_written else "tables already current"
    console.print(f"KB {stored} {published.tag}; {tables}", soft_wrap=True, highlight=False)


@triage_app.command("report")
def triage_report(
    since: Annotated[
        str | None, typer.Option(help="Only consults of the last DURATION (e.g. 30d, 12h).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Per disease: how often it was confirmed when ranked first, and the symptoms confirmed
    patients answered differently from the KB."""
    from datetime import UTC, datetime, timedelta

    from medserve.auth.local import parse_duration
    from medserve.database.engine import make_engine
    from medserve.respiratory.report import build_report, report_table

    start = None
    if since is not None:
        start = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
    engine = make_engine(get_settings().resolved_database_url)
    try:
        report = build_report(engine, start)
    finally:
        engine.dispose()
    print(report.model_dump_json(indent=1) if as_json else report_table(report))


@app.command()
def doctor() -> None:
    """Check what each feature needs on this machine and say how to fix what is missing."""
    from medserve.doctor import checks_table, failed, run_checks

    checks = run_checks(get_settings())
    Console().print(checks_table(checks))
    problems = failed(checks)
    if problems:
        console.print(f"[red]{len(problems)} required check(s) failed[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
