"""Where a live service worker's CPU goes under load: py-spy samples bucketed by concern.

Attach to the BentoML workers of a service another benchmark is loading (e.g. `bench.ct_serving`
with a long `--duration`): wait until the load generator runs, sample every worker for a while
with py-spy (Python frames without pausing the workers by default; `--native` adds the C frames
of ONNX Runtime, SQLite or NumPy at the price of pausing them per sample), then give each
sample to the first concern (in the order of `CONCERNS`) one of its frames belongs to, and print
the share of samples per concern as a markdown table.

    uv run python -m bench.worker_profile [--match _bentoml_impl.worker.service] \
        [--wait-for wrk] [--seconds 20] [--out FILE]

Needs the right to trace the workers (root, or `ptrace_scope` 0).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from bench.heart_serving import machine_line, publish

# (concern, frame pattern): a sample counts for the first concern any of its frames matches.
# Ordered from the most specific work to the generic stacks around it.
CONCERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("model call (ONNX Runtime, Keras, scorer)", r"onnxruntime|tensorflow|scorer\.py"),
        ("prediction log (SQLite/PostgreSQL writer)", r"prediction_log|sqlite3|sqlalchemy"),
        ("input decoding and preprocessing", r"pydicom|PIL|medserve/ct/imaging|/codecs?\.py"),
        ("drift statistics", r"drift\.py"),
        ("metrics", r"prometheus_client|serving/metrics\.py"),
        ("access check and audit", r"medserve/auth/|audit\.py|http_security"),
        ("data plane and adapters", r"medserve/serving/|medserve/(ct|ecg|heart|respiratory)/"),
        ("HTTP server and ASGI stack", r"uvicorn|h11|httptools|starlette|anyio|bentoml"),
        ("event loop", r"asyncio|uvloop"),
    )
)
OTHER = "other (interpreter, GC, libc)"
# With native frames py-spy samples waiting threads too: a sample whose deepest resolved frame
# is one of these waits is a thread with nothing to do, left out of the shares.
WAITING = re.compile(
    r"PyThread_acquire_lock|Condition\.wait|Event\.wait|Queue\.get|\bselect \(selectors|"
    r"EpollSelector|time_sleep|nanosleep|epoll_p?wait|uv__io_poll|pthread_cond_(timed)?wait|futex|"
    r"__GI___poll|_queue_SimpleQueue_get"
)
_UNRESOLVED = re.compile(r"^0x[0-9a-f]+ \(")


def worker_pids(match: str) -> list[int]:
    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if match in " ".join(process.info["cmdline"] or []):
            pids.append(process.info["pid"])
    return pids


def wait_for_load(name: str, match: str, timeout_s: float) -> None:
    """Until the load generator `name` runs while a worker matching `match` exists (a benchmark
    may load a peer server first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        loaded = any(p.info["name"] == name for p in psutil.process_iter(["name"]))
        if loaded and worker_pids(match):
            return
        time.sleep(0.2)
    raise SystemExit(f"no `{name}` load on a {match!r} worker within {timeout_s:.0f} s")


def record(pids: list[int], seconds: float, folder: Path, native: bool) -> list[Path]:
    """Sample every pid at once (py-spy's raw format: one collapsed stack and a count per line).

    Without `native` the workers are never paused (`--nonblocking`), so the load they answer is
    the load measured; native frames need a pause per sample, which slows a worker several
    times over and skews the shares towards what runs often."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    outputs = [folder / f"{pid}.txt" for pid in pids]
    mode = ["--native"] if native else ["--nonblocking"]
    common = ["--duration", str(int(seconds)), *mode, "--rate", "250", "--format", "raw"]
    runs = [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), *common, "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]
    for run in runs:
        _, err = run.communicate(timeout=seconds + 60)
        if run.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.strip()[-500:]}")
    return outputs


def concern_of(stack: str) -> str:
    for name, pattern in CONCERNS:
        if pattern.search(stack):
            return name
    return OTHER


def waiting(stack: str) -> bool:
    resolved = [frame for frame in stack.split(";") if not _UNRESOLVED.match(frame)]
    return bool(resolved) and bool(WAITING.search(resolved[-1]))


def bucket(outputs: list[Path]) -> tuple[Counter[str], int]:
    """Samples per concern, and the samples of waiting threads (left out)."""
    shares: Counter[str] = Counter()
    idle = 0
    for output in outputs:
        for line in output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not (stack and count.isdigit()):
                continue
            if waiting(stack):
                idle += int(count)
            else:
                shares[concern_of(stack)] += int(count)
    return shares, idle


def report(shares: Counter[str], idle: int, pids: list[int], seconds: float, native: bool) -> str:
    total = sum(shares.values()) or 1
    rows = [
        f"| {name} | {shares[name]:,} | {100 * shares[name] / total:.1f} % |"
        for name in [*(n for n, _ in CONCERNS), OTHER]
    ]
    return "\n".join(
        [
            f"py-spy ({'native frames' if native else 'Python frames, non-blocking'}, 250 Hz, "
            f"{seconds:.0f} s) on {len(pids)} worker(s), "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            machine_line(os.getloadavg()),
            "",
            "| concern | samples | share of the workers' CPU samples |",
            "|---|---:|---:|",
            *rows,
            "",
            f"Samples of waiting threads, left out: {idle:,} "
            f"({100 * idle / (idle + total):.0f} % of all samples).",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--match", default="_bentoml_impl.worker.service")
    parser.add_argument("--wait-for", default="wrk", help="load generator to wait for")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load before")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks in this folder")
    parser.add_argument("--native", action="store_true", help="native frames (pauses workers)")
    args = parser.parse_args(argv)
    wait_for_load(args.wait_for, args.match, args.timeout)
    time.sleep(args.settle)
    pids = worker_pids(args.match)
    if not pids:
        raise SystemExit(f"no process whose command line holds {args.match!r}")
    with tempfile.TemporaryDirectory(prefix="worker-profile-") as folder:
        raw = args.raw or Path(folder)
        raw.mkdir(parents=True, exist_ok=True)
        shares, idle = bucket(record(pids, args.seconds, raw, args.native))
    text = report(shares, idle, pids, args.seconds, args.native)
    publish(text, args.out)


if __name__ == "__main__":
    main()
