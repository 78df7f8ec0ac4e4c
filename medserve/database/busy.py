"""Database calls of request handlers: off the event loop, and bounded in time.

A held lock (another writer, a migration) used to block the event loop for SQLite's 30 s busy
timeout: readiness probes timed out and the call ended in a 500. Here each call runs in a
thread of a small executor and waits at most the database timeout (the same bound the engine
gives SQLite's busy handler and PostgreSQL's lock and statement timeouts); past it, or on a
lock error, the caller gets `DatabaseBusy`, which the HTTP layer answers as a retryable 503.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

T = TypeVar("T")
# PostgreSQL SQLSTATEs of a bounded wait that ran out: query_canceled (statement_timeout),
# lock_not_available (lock_timeout).
BUSY_SQLSTATES = frozenset({"57014", "55P03"})


class DatabaseBusy(RuntimeError):
    """The database did not answer within the bound: retry after `retry_after_s`."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the database did not answer within {timeout_s:g} s")
        self.retry_after_s = max(1, math.ceil(timeout_s))


def is_busy(error: BaseException) -> bool:
    """Whether `error` is a wait that ran out (a lock held too long), not a real failure."""
    if isinstance(error, PoolTimeout):
        return True
    original = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return "locked" in text or "busy" in text
    return getattr(original, "sqlstate", None) in BUSY_SQLSTATES


async def bounded(
    executor: Executor | None, timeout_s: float, call: Callable[..., T], *args: Any, **kw: Any
) -> T:
    """`call(*args, **kw)` in `executor`, waited for at most `timeout_s`; a wait that runs out
    (here or in the database) raises `DatabaseBusy`. A call still queued when the wait ends is
    cancelled; one already running ends on the engine's own timeout."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, functools.partial(call, *args, **kw))
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        raise DatabaseBusy(timeout_s) from None
    except Exception as error:
        if is_busy(error):
            raise DatabaseBusy(timeout_s) from error
        raise
