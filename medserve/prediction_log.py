"""The prediction log and feedback store every service shares (SQLAlchemy).

SQLite file by default, any SQLAlchemy URL (PostgreSQL in production) by `MEDSERVE_DATABASE_URL`.
Writes use group commit: concurrent requests hand their rows to one writer thread, which commits
them in one transaction and then releases all of them, so the answer can wait for durability
without one fsync per request. Rows recorded from async code during one event-loop iteration
reach the writer together (`record_async`), so requests answered one by one group too. Request
handlers make their other calls through `run` (a thread of a small executor, a bounded wait:
medserve/database/busy.py). The schema is Alembic's (medserve/database/): the log only checks,
at construction, that it is current.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, Field
from sqlalchemy import JSON, ForeignKey, Index, Integer, String, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from ulid import ULID

from medserve.database.busy import DatabaseBusy, bounded, is_busy
from medserve.database.engine import make_engine as make_engine  # re-exported
from medserve.database.schema import check_schema
from medserve.database.types import UtcDateTime
from medserve.database.types import as_utc as as_utc  # re-exported
from medserve.settings import get_settings

T = TypeVar("T")


def new_id() -> str:
    """A new ULID string (sortable by creation time)."""
    return new_ids(1)[0]


# ULID randomness from a per-process generator seeded by the OS: a getrandom() system call per id
# was measurable on the serving hot path. Reseeded in forked children so that no two processes
# share a stream; uniqueness, not secrecy, is what ids need.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_ids(count: int) -> list[str]:
    """`count` ULID strings sharing one millisecond timestamp."""
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    return [str(ULID.from_bytes(stamp + _random.randbytes(10))) for _ in range(count)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    """One prediction: what came in, what went out, which model answered."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model: Mapped[str] = mapped_column(String(64))
    model_tag: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(64))
    # The API that answered (`http_json`, `grpc`, `form`, ...): the metrics' `api` label.
    api: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The predicted class (heart: 1 = CAD; ECG: 1 = anomalous), so review lists filter on an
    # indexed column instead of inside the JSON.
    predicted_class: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_predictions_model_created", "model", "created_at"),
        Index("ix_predictions_model_class_created", "model", "predicted_class", "created_at"),
    )


class FeedbackRow(Base):
    """A confirmed outcome for a prediction (the latest confirmation wins)."""

    __tablename__ = "feedback"

    prediction_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("predictions.id"), primary_key=True
    )
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON)
    reviewer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The authenticated subject who confirmed it (the token's `sub`); `reviewer` is free text.
    confirmed_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PredictionRecord(BaseModel):
    """A prediction as handed to the log."""

    id: str
    model: str
    model_tag: str
    request_id: str
    # `transport` is the name before schema revision 0002 (issue 16 renamed the metric label).
    api: str = Field(validation_alias=AliasChoices("api", "transport"))
    created_at: datetime
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    predicted_class: int | None = None


class LabelledExample(BaseModel):
    """A logged input with its confirmed outcome (training data for the next run)."""

    prediction_id: str
    created_at: datetime
    inputs: dict[str, Any]
    outcome: dict[str, Any]


class UnknownPrediction(LookupError):
    """Feedback named a prediction id that the log does not have."""


# A SQLite log is checkpointed (WAL pages copied into the database, with an fsync) by a thread of
# its own at this interval, never by a committing writer: SQLite's automatic checkpoint runs in
# the commit that crosses 1,000 WAL pages and stalled every answer waiting on it for tens of ms.
SQLITE_CHECKPOINT_INTERVAL_S = 1.0


Waiter = Future[None] | tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]
# A row as the writer inserts it: `PredictionRecord`'s fields. The serving hot path builds these
# dicts directly; a pydantic model per row (and its dump) was measurable there.
LogRow = Mapping[str, Any]


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class RowInserter:
    """One group commit: a single `executemany` and commit on the writer's own DB-API connection.

    The statement is SQLAlchemy's own INSERT compiled for the engine's dialect, and values go
    through the column types' own bind processors (JSON -> text ...), so rows are stored exactly
    as SQLAlchemy would store them; what is skipped is its per-execution machinery, which cost
    ~15 us per row here on top of SQLite's own ~20 (a third of a small request's CPU).
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        table = PredictionRow.__table__
        compiled = insert(table).compile(dialect=dialect)
        self.sql = str(compiled)
        processors = {
            c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns
        }
        self.positional = compiled.positiontup
        names = self.positional or list(processors)
        self.columns = [(name, processors[name]) for name in names]

    def __call__(self, connection: Any, rows: Sequence[LogRow]) -> None:
        if self.positional is not None:
            params: list[Any] = [
                tuple(p(row[n]) if p else row[n] for n, p in self.columns) for row in rows
            ]
        else:
            params = [{n: p(row[n]) if p else row[n] for n, p in self.columns} for row in rows]
        cursor = connection.cursor()
        try:
            cursor.executemany(self.sql, params)
        finally:
            cursor.close()
        connection.commit()


class SqliteWriters:
    """What lets several worker processes write one SQLite log without stalls.

    - Writers take an exclusive `flock` on `<file>.write-lock` around each transaction, so
      SQLite's own write lock is never contended between them: a writer that finds it taken
      retries after sleeping 1, 2, 5 ... 100 ms (its busy handler), which made tail latencies of
      tens to hundreds of ms; a kernel lock wakes the next writer as soon as it is released.
    - A daemon thread checkpoints the WAL every `SQLITE_CHECKPOINT_INTERVAL_S` (PASSIVE: it
      never blocks a writer), instead of whichever commit crosses SQLite's threshold.
    """

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database or ""
        self.engine = engine
        self._lock_fd = os.open(f"{database}.write-lock", os.O_CREAT | os.O_RDWR, 0o600)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="prediction-log-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _checkpoint_loop(self) -> None:
        while True:
            time.sleep(SQLITE_CHECKPOINT_INTERVAL_S)
            try:
                with self.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a busy or vanished file: the next round tries again
                continue


class PredictionLog:
    """Read/write access to the log; `record` is group-committed by a background thread."""

    def __init__(
        self, url: str, timeout_s: float | None = None, threads: int | None = None
    ) -> None:
        """Open the log at `url`, refusing (SchemaNotCurrent) a database `medserve db upgrade`
        has not brought to this release's schema. `timeout_s` bounds every wait on the
        database (default `MEDSERVE_DATABASE_TIMEOUT_S`); `threads` run handlers' calls."""
        settings = get_settings()
        self.timeout_s = settings.database_timeout_s if timeout_s is None else timeout_s
        self.engine = make_engine(url, self.timeout_s)
        check_schema(self.engine)
        self._calls = ThreadPoolExecutor(
            threads or settings.database_threads, thread_name_prefix="prediction-log-call"
        )
        is_file = (
            url.startswith("sqlite") and (self.engine.url.database or ":memory:") != ":memory:"
        )
        self._sqlite = SqliteWriters(self.engine) if is_file else None
        # SimpleQueue: a C-level put without the Condition round trip of queue.Queue.
        self._queue: queue.SimpleQueue[tuple[Sequence[LogRow], Waiter]] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        # Per event loop: the rows recorded in its current iteration and the future they share.
        self._ticks: dict[asyncio.AbstractEventLoop, tuple[list[LogRow], asyncio.Future[None]]]
        self._ticks = {}

    async def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)` (one of the methods below) off the event loop, waited for at
        most `timeout_s`; a wait that runs out raises `DatabaseBusy`."""
        return await bounded(self._calls, self.timeout_s, call, *args, **kwargs)

    # -- writing ---------------------------------------------------------------------------------
    def record(self, records: Sequence[PredictionRecord]) -> Future[None]:
        """Queue records for the next group commit; the future resolves once they are durable."""
        done: Future[None] = Future()
        self._enqueue([record.model_dump() for record in records], done)
        return done

    async def record_async(self, rows: Sequence[LogRow], wait: bool = True) -> None:
        """Queue rows (`PredictionRecord` fields) from async code; waits for the commit unless
        `wait` is False.

        The rows join those recorded by other tasks in the same event-loop iteration and reach
        the writer in one piece at its end (one commit, one wake-up of the loop for all). The
        writer must not start on the first: a request answered without a batch (a triage
        step) records alone, and its model's NumPy calls release the GIL often enough for the
        writer to commit every row on its own, a commit's fixed cost per row (~0.13 ms)."""
        loop = asyncio.get_running_loop()
        tick = self._ticks.get(loop)
        if tick is None:
            tick = self._ticks[loop] = ([], loop.create_future())
            loop.call_soon(self._flush_tick, loop)
        tick[0].extend(rows)
        done = tick[1]
        if not wait:
            return
        try:
            # Shielded: one cancelled waiter (a client gone) must not cancel the others' commit.
            await asyncio.shield(done)
        except Exception as error:
            if is_busy(error):
                raise DatabaseBusy(self.timeout_s) from None
            raise

    def _flush_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        rows, done = self._ticks.pop(loop)
        self._enqueue(rows, (loop, done))

    def _enqueue(self, rows: Sequence[LogRow], waiter: Waiter) -> None:
        if self._writer is None or not self._writer.is_alive():
            self._start_writer()
        self._queue.put((rows, waiter))

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="prediction-log-writer", daemon=True
                )
                self._writer.start()

    def _write_loop(self) -> None:
        insert_rows = RowInserter(self.engine)
        connection = self.engine.raw_connection()
        while True:
            pending = [self._queue.get()]
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: Exception | None = None
            try:
                with self._exclusive():
                    insert_rows(connection, [row for rows, _ in pending for row in rows])
            except Exception as exc:  # the callers decide; the writer keeps running
                error = exc
                with contextlib.suppress(Exception):
                    connection.rollback()
                    connection.close()
                connection = self.engine.raw_connection()
            self._release([waiter for _, waiter in pending], error)

    def _exclusive(self) -> AbstractContextManager[None]:
        return self._sqlite.exclusive() if self._sqlite is not None else nullcontext()

    @staticmethod
    def _release(waiters: list[Waiter], error: Exception | None) -> None:
        """Resolve a group's waiters: one wake-up per event loop, not one per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in waiters:
            if isinstance(waiter, Future):
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
            else:
                loop, future = waiter
                by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, futures, error)

    def add_feedback(
        self,
        model: str,
        prediction_id: str,
        outcome: dict[str, Any],
        reviewer: str | None = None,
        confirmed_by: str | None = None,
    ) -> None:
        """Attach (or replace) the confirmed outcome of a prediction `model` made; `confirmed_by`
        is the authenticated subject."""
        with Session(self.engine) as session, session.begin():
            row = session.get(PredictionRow, prediction_id)
            if row is None or row.model != model:
                raise UnknownPrediction(prediction_id)
            session.merge(
                FeedbackRow(
                    prediction_id=prediction_id,
                    outcome=outcome,
                    reviewer=reviewer,
                    confirmed_by=confirmed_by,
                    created_at=utcnow(),
                )
            )

    # -- reading ---------------------------------------------------------------------------------
    def get(self, prediction_id: str) -> PredictionRecord | None:
        with Session(self.engine) as session:
            row = session.get(PredictionRow, prediction_id)
            return None if row is None else _record(row)

    def recent(
        self,
        model: str,
        limit: int = 50,
        predicted_class: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[PredictionRecord]:
        """The newest predictions of a model, optionally of one predicted class and in
        [since, until)."""
        query = select(PredictionRow).where(PredictionRow.model == model)
        if predicted_class is not None:
            query = query.where(PredictionRow.predicted_class == predicted_class)
        if since is not None:
            query = query.where(PredictionRow.created_at >= since)
        if until is not None:
            query = query.where(PredictionRow.created_at < until)
        query = query.order_by(PredictionRow.created_at.desc(), PredictionRow.id.desc())
        with Session(self.engine) as session:
            return [_record(row) for row in session.scalars(query.limit(limit))]

    def feedback_of(self, prediction_id: str) -> dict[str, Any] | None:
        """The confirmed outcome of a prediction, if a reviewer gave one."""
        with Session(self.engine) as session:
            row = session.get(FeedbackRow, prediction_id)
            return None if row is None else row.outcome

    def feedback_for(self, prediction_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Confirmed outcomes of those of `prediction_ids` that a reviewer confirmed."""
        if not prediction_ids:
            return {}
        query = select(FeedbackRow).where(FeedbackRow.prediction_id.in_(list(prediction_ids)))
        with Session(self.engine) as session:
            return {row.prediction_id: row.outcome for row in session.scalars(query)}

    def labelled(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[LabelledExample]:
        """Every logged input of `model` with a confirmed outcome, predicted in [since, until)."""
        query = (
            select(PredictionRow, FeedbackRow)
            .join(FeedbackRow, FeedbackRow.prediction_id == PredictionRow.id)
            .where(PredictionRow.model == model)
            .order_by(PredictionRow.id)
        )
        if since is not None:
            query = query.where(PredictionRow.created_at >= since)
        if until is not None:
            query = query.where(PredictionRow.created_at < until)
        with Session(self.engine) as session:
            return [
                LabelledExample(
                    prediction_id=p.id,
                    created_at=as_utc(p.created_at),
                    inputs=p.inputs,
                    outcome=f.outcome,
                )
                for p, f in session.execute(query)
            ]


def _record(row: PredictionRow) -> PredictionRecord:
    created = as_utc(row.created_at)
    return PredictionRecord(
        id=row.id,
        model=row.model,
        model_tag=row.model_tag,
        request_id=row.request_id,
        api=row.api,
        created_at=created,
        inputs=row.inputs,
        outputs=row.outputs,
        predicted_class=row.predicted_class,
    )
