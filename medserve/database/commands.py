"""The database commands, shared by `medserve db ...` and `python -m medserve.database ...`
(the serving image has no `medserve` CLI: the chart's hook Job runs the module)."""

from __future__ import annotations

from medserve.database.engine import make_engine
from medserve.database.retention import cutoff_for, prune
from medserve.database.schema import check_schema, safe_url, upgrade
from medserve.settings import Settings


class CommandRefused(RuntimeError):
    """A command that cannot run with these settings (the message says why)."""


def upgrade_command(settings: Settings) -> str:
    """Migrate the configured database to this release's schema; a one-line report."""
    url = settings.resolved_database_url
    done = upgrade(url)
    where = safe_url(make_engine(url))
    if done.before == done.after:
        return f"database {where}: schema already at revision {done.after}"
    return f"database {where}: schema upgraded from {done.before or 'nothing'} to {done.after}"


def prune_command(settings: Settings, retention_days: int | None = None) -> str:
    """Delete predictions older than the retention; a one-line report with the counts."""
    days = retention_days if retention_days is not None else settings.prediction_log_retention_days
    if days is not None and days < 1:
        raise CommandRefused(f"retention must be at least 1 day, not {days}")
    if days is None:
        raise CommandRefused(
            "no retention set: set MEDSERVE_PREDICTION_LOG_RETENTION_DAYS (or --days)"
        )
    engine = make_engine(settings.resolved_database_url)
    try:
        check_schema(engine)
        batch = settings.prediction_log_prune_batch_size
        done = prune(engine, cutoff_for(days), batch)
    finally:
        engine.dispose()
    return (
        f"pruned predictions older than {days} days (before {done.cutoff:%Y-%m-%d %H:%M:%S} "
        f"UTC): {done.predictions} predictions, {done.feedback} feedback rows, "
        f"{done.batches} batches of at most {batch}"
    )
