"""`medserve` command line: thin commands over the platform's functions."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medserve.settings import get_settings, use_local_bentoml_home

app = typer.Typer(help="medserve: serve clinical ML models.", no_args_is_help=True)
console = Console(stderr=True)

# Model name -> BentoML service import path.
SERVICES = {"heart_risk": "bentos.heart_risk:HeartRisk"}


@app.callback()
def _setup() -> None:
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    use_local_bentoml_home(settings)


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
    console.print(
        f"[green]trained[/] {outcome.tag}: accuracy {metrics.get('accuracy', float('nan')):.3f}, "
        f"ROC AUC {metrics.get('roc_auc', float('nan')):.3f}"
        + (f", exported to {outcome.exported_to}" if outcome.exported_to else "")
    )


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
def serve(
    model: Annotated[str, typer.Argument()] = "heart_risk",
    port: Annotated[int | None, typer.Option(help="HTTP port (MEDSERVE_HTTP_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve MODEL with BentoML in the foreground."""
    settings = get_settings()
    env = dict(os.environ)
    if port is not None:
        env["MEDSERVE_HTTP_PORT"] = str(port)
    if workers is not None:
        env["MEDSERVE_WORKERS"] = str(workers)
    chosen_port = port or settings.http_port
    base = f"http://127.0.0.1:{chosen_port}"
    console.print(
        f"[bold]{model}[/] on {base}\n"
        f"  form     {base}/ui\n  predict  POST {base}/predict\n"
        f"  feedback POST {base}/feedback\n  metrics  {base}/metrics\n"
        f"  docs     {base}/docs (BentoML) · model card {base}/model\n"
        f"  OIP v2   {base}/v2/models/{model} · gRPC {settings.grpc_host}:{settings.grpc_port}"
    )
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICES[model],
        "--host",
        settings.http_host,
        "--port",
        str(chosen_port),
    ]
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Start the platform on embedded defaults: train the default model if missing, serve it."""
    from medserve.model_store import has_model

    if not has_model("heart_risk:latest"):
        console.print("no heart_risk model in the local store: training one first")
        train("heart_risk")
    serve("heart_risk", port=port, workers=workers)


if __name__ == "__main__":
    app()
