"""Alembic migrations of the shared database, and the check services make before they start.

Migrations live in `migrations/versions/` inside the package (they ship in the bento: the
chart's hook Job runs them from the serving image). Upgrades are serialised per database, so
two started at once (two `medserve up`, a hook retried while the first still runs) are safe:
the second waits, then finds the schema current. PostgreSQL: a transaction-level advisory lock,
and the whole upgrade is one transaction (its DDL is transactional). SQLite: an `flock` on
`<file>.migrate-lock` beside the database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from medserve.database.engine import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "medserve db upgrade"
# Any fixed 64-bit number: the advisory lock the upgrades of one PostgreSQL database share.
PG_UPGRADE_LOCK = 0x6D65_6473_6572_7665  # "medserve"


class SchemaNotCurrent(RuntimeError):
    """The database is not at the schema revision this release needs."""


class Upgraded(BaseModel):
    """What `upgrade` did: the revision before (None: an empty or pre-Alembic database)."""

    before: str | None
    after: str


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The revision this release's code expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def check_schema(engine: Engine) -> None:
    """Refuse (SchemaNotCurrent) unless the database is at this release's revision."""
    head = head_revision()
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == head:
        return
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current is not None and current not in known:
        raise SchemaNotCurrent(
            f"the database at {safe_url(engine)} is at schema revision {current}, newer than "
            f"this release's {head}: run the release that migrated it"
        )
    state = f"schema revision {current}" if current else "no medserve schema (empty or older)"
    raise SchemaNotCurrent(
        f"the database at {safe_url(engine)} has {state}; this release needs {head}: "
        f"run `{UPGRADE_COMMAND}` first"
    )


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on a SQLite file's `.migrate-lock` (nothing for other backends)."""
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:"):
        yield
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{database}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def upgrade(url: str, revision: str = "head") -> Upgraded:
    """Migrate the database at `url` to `revision` (serialised with any concurrent upgrade)."""
    engine = make_engine(url)
    config = alembic_config()
    try:
        with _file_lock(engine), engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_UPGRADE_LOCK}
                )
            before = current_revision(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            after = current_revision(connection)
    finally:
        engine.dispose()
    assert after is not None
    return Upgraded(before=before, after=after)
