"""Closed-loop HTTP load generation with /usr/bin/wrk, plus small reporting helpers.

`run_client` runs any load generator and measures its CPU time (also used by `bench.h2load`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

WRK = "/usr/bin/wrk"
_MARKER = "WRKBENCH"

# Lua for wrk: each thread counts non-2xx answers in its own Lua state; `setup` keeps the thread
# handles so that `done` (which runs in the main Lua state) can sum them with thread:get().
_LUA = """
wrk.method = "POST"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "{content_type}"
{extra_headers}
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end

non2xx = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "{marker} requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d"
      .. " p50_ms=%.3f p99_ms=%.3f\\n",
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0))
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Outcome of one wrk run; errors = socket errors + non-2xx + timeouts."""

    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_seconds: float


def _lua_string(data: bytes) -> str:
    """Escape bytes as the body of a double-quoted Lua string (decimal escapes)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in data)


def _parse(stdout: str) -> dict[str, float]:
    """Return the key=value pairs of the marker line the Lua `done` callback prints."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER + " "):
            return {k: float(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:])}
    raise RuntimeError(f"wrk printed no {_MARKER} line:\n{stdout}")


def run_client(cmd: list[str], during: Callable[[], None] | None = None) -> tuple[str, float]:
    """Run a load generator to completion; return (stdout+stderr, its user+sys CPU seconds).

    `during` runs in this process right after the start (e.g. to sample server metrics while the
    load runs). The CPU time comes from os.wait4 on the child; a non-zero exit raises.
    """
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            if during is not None:
                during()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        sink.seek(0)
        stdout = sink.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}:\n{stdout}")
    return stdout, usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    duration_s: float,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST `body` to `url` over `connections` keep-alive connections for ~`duration_s` seconds.

    wrk only takes whole seconds, so the duration is rounded (at least 1 s). `headers` are sent
    with every request besides the content type.
    """
    seconds = max(1, round(duration_s))
    threads = max(1, min(threads, connections))
    extra = "\n".join(
        f'wrk.headers["{_lua_string(k.encode())}"] = "{_lua_string(v.encode())}"'
        for k, v in (headers or {}).items()
    )
    script = _LUA.format(
        body=_lua_string(body),
        content_type=_lua_string(content_type.encode()),
        extra_headers=extra,
        marker=_MARKER,
    )
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        lua = Path(tmp, "post.lua")
        lua.write_text(script)
        cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), url]
        stdout, cpu_seconds = run_client(cmd)
    v = _parse(stdout)
    return LoadResult(
        connections=connections,
        requests=int(v["requests"]),
        rps=v["requests"] / (v["duration_us"] / 1e6),
        p50_ms=v["p50_ms"],
        p99_ms=v["p99_ms"],
        errors=int(v["non2xx"] + v["connect"] + v["read"] + v["write"] + v["timeout"]),
        client_cpu_seconds=cpu_seconds,
    )


def wrk_version() -> str:
    """wrk's version, e.g. "wrk debian/4.1.0-3+b2" (`wrk -v` exits with 1)."""
    out = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].split(" [", 1)[0]


def warmup(
    url: str,
    body: bytes,
    content_type: str,
    seconds: float,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Drive a short load to warm the server; fail if it never answered with a 2xx."""
    result = run_wrk(url, body, content_type, connections=4, duration_s=seconds, headers=headers)
    if result.requests <= result.errors:
        raise RuntimeError(f"warm-up got no successful response from {url}: {result}")


def require(ok: bool, line: str) -> str:
    """Print a correctness-check line; stop the benchmark if the check failed."""
    print(line, flush=True)
    if not ok:
        raise SystemExit(f"correctness check failed: {line}")
    return line


def markdown_table(rows: list[dict]) -> str:
    """Render rows as a GitHub markdown table; columns in first-seen key order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def process_tree_rss_mb(pid: int) -> dict[int, float]:
    """Resident memory in MiB of `pid` and all its live descendants, keyed by pid."""
    root = psutil.Process(pid)
    rss: dict[int, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            rss[proc.pid] = proc.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return rss
