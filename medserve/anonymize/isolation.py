"""One exam at a time in a child process with a wall-clock limit.

Why a process: the time goes inside MuPDF's C calls (interpreting, rendering, redacting), which a
Python thread, signal or cooperative check cannot interrupt, and an exam that exhausts memory
gets the process holding it killed by the kernel. The pipeline worker therefore keeps one child
process (started with `python -m medserve.anonymize.isolation`, so nothing of the worker's state
is forked) that holds the `Anonymizer`, hands it one exam at a time over a pipe, and waits at most
`exam_timeout_s`. A child past its time is killed (`exam_timeout`); a child that dies (the
kernel's OOM killer, a crash in MuPDF) leaves its exam `exam_crashed`. Either way the worker
survives and the next exam gets a fresh child. The child exits by itself when its parent goes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from multiprocessing.connection import Connection

from medserve.anonymize.anonymizer import (
    AnonymizedExam,
    Anonymizer,
    check_input_size,
    quarantine_record,
)
from medserve.anonymize.errors import ExamRejected
from medserve.anonymize.records import QuarantineRecord
from medserve.anonymize.settings import AnonymizerSettings

_READY = "ready"
# How often an idle child checks that its parent is still there.
PARENT_CHECK_SECONDS = 1.0
OOM_SCORE_ADJ = 1000  # the most a process can ask for: killed before anything else

Result = AnonymizedExam | QuarantineRecord


class ExamProcessUnavailable(RuntimeError):
    """The exam process cannot start (configuration, environment): no exam is to blame."""


class IsolatedAnonymizer:
    """`Anonymizer.process`, each exam run in a child process under `exam_timeout_s`."""

    def __init__(self, settings: AnonymizerSettings) -> None:
        self.settings = settings
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    # The parts of Anonymizer's interface the pipeline uses besides `process`.
    def check_size(self, size: int) -> None:
        check_input_size(self.settings, size)

    def quarantine(self, key: str, size: int, rejection: ExamRejected) -> QuarantineRecord:
        return quarantine_record(key, size, rejection)

    @property
    def child_pid(self) -> int | None:
        """The running child's process id (None before the first exam or after a kill)."""
        return self._child.pid if self._child is not None else None

    def process(self, data: bytes, key: str) -> Result:
        """Anonymise `data` in the child; `exam_timeout` or `exam_crashed` when it cannot."""
        conn = self._ensure_child()  # a process that cannot start is not the exam's fault
        try:
            conn.send((data, key))
        except OSError:  # it died between the start check and the send
            code = self.close()
            rejection = ExamRejected("exam_crashed", f"exam process ended ({_describe(code)})")
            return self.quarantine(key, len(data), rejection)
        if not conn.poll(self.settings.exam_timeout_s):
            self.close()
            rejection = ExamRejected(
                "exam_timeout", f"not finished within {self.settings.exam_timeout_s:g} s"
            )
            return self.quarantine(key, len(data), rejection)
        try:
            result: Result = conn.recv()
            return result
        except (OSError, EOFError):
            code = self.close()
            rejection = ExamRejected("exam_crashed", f"exam process ended ({_describe(code)})")
            return self.quarantine(key, len(data), rejection)

    def _ensure_child(self) -> Connection:
        if self._child is not None and self._conn is not None and self._child.poll() is None:
            return self._conn
        self.close()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        command = [sys.executable, "-m", "medserve.anonymize.isolation"]
        self._child = subprocess.Popen(
            [*command, str(to_child_r), str(from_child_w), self.settings.model_dump_json()],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._conn = _DuplexPair(from_child_r, to_child_w)
        # Starting (imports, layouts, name lists) is not the exam's time.
        try:
            if self._conn.poll(self.settings.exam_start_timeout_s) and self._conn.recv() == _READY:
                return self._conn
        except (OSError, EOFError):
            pass
        code = self.close()
        raise ExamProcessUnavailable(f"the exam process did not start ({_describe(code)})")

    def close(self) -> int | None:
        """Stop the child (killed: it may be stuck in C code); its exit code, if any."""
        code = None
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            code = self._child.wait()
        if self._conn is not None:
            self._conn.close()
        self._child, self._conn = None, None
        return code

    def __enter__(self) -> IsolatedAnonymizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit modules may be gone
            self.close()


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


class _DuplexPair(Connection):
    """A `Connection` reading from one pipe and writing to another (Popen gives two fds)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        super().__init__(read_fd, readable=True, writable=False)
        self._writer = Connection(write_fd, readable=False, writable=True)

    def send(self, obj: object) -> None:
        self._writer.send(obj)

    def close(self) -> None:
        super().close()
        self._writer.close()


def _first_for_the_oom_killer() -> None:
    """Make this process the kernel's first choice when memory runs out (raising one's own
    score needs no privilege): the exam is lost, its worker and the other exams are not."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as score:
        score.write(str(OOM_SCORE_ADJ))


def _serve(read_fd: int, write_fd: int, settings_json: str) -> None:
    """The child: build the anonymiser once, then answer exams until the parent goes."""
    inbox = Connection(read_fd, readable=True, writable=False)
    outbox = Connection(write_fd, readable=False, writable=True)
    parent = os.getppid()
    _first_for_the_oom_killer()
    anonymizer = Anonymizer(AnonymizerSettings.model_validate_json(settings_json))
    outbox.send(_READY)
    while True:
        if not inbox.poll(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:  # orphaned: the worker died
                return
            continue
        try:
            data, key = inbox.recv()
        except EOFError:
            return
        result = anonymizer.process(data, key)
        del data
        try:
            outbox.send(result)
        except OSError:
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    sys.stdout.flush()
    # Skip interpreter teardown: PyMuPDF's objects can crash the garbage collector at exit, and
    # nothing is left to flush.
    os._exit(0)
