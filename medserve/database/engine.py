"""The engine every part of medserve opens the shared database with."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

# How long a command-line job (migration, prune) waits for SQLite's lock when it has no bound
# of its own: long enough to outwait the services' short transactions.
UNBOUNDED_SQLITE_WAIT_S = 60.0


def _to_json(value: Any) -> str:
    return to_json(value).decode()


def make_engine(url: str, timeout_s: float | None = None) -> Engine:
    """An engine on `url`; with `timeout_s`, no statement waits longer than that for a lock.

    SQLite gets WAL (several workers share the file) and that bound as its busy timeout;
    PostgreSQL gets it as `lock_timeout` and `statement_timeout`, and as the connection pool's
    wait. Without it (migrations, prune) statements may wait as long as they need.
    """
    is_sqlite = url.startswith("sqlite")
    options: dict[str, Any] = {}
    if not is_sqlite and timeout_s is not None:
        millis = max(1, round(timeout_s * 1000))
        if url.startswith("postgresql"):
            options["connect_args"] = {
                "options": f"-c lock_timeout={millis} -c statement_timeout={millis}"
            }
        options["pool_timeout"] = timeout_s
    # A network database can drop idle connections; a local SQLite file cannot.
    # pydantic-core's Rust JSON encoder: the stdlib one spent milliseconds per group on ECG
    # rows (two arrays of 140 floats per beat) while holding the GIL.
    engine = create_engine(url, pool_pre_ping=not is_sqlite, json_serializer=_to_json, **options)
    if is_sqlite:
        busy_ms = round((timeout_s if timeout_s is not None else UNBOUNDED_SQLITE_WAIT_S) * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # the log's checkpoint thread does it
            cursor.close()

    return engine
