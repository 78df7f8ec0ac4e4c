"""S3 fault-injection test infrastructure: an in-process moto S3 and a faulty reverse proxy.

* :func:`moto_s3` runs moto's S3 on a free loopback port (explicit credentials, no AWS_* env).
* :class:`FaultyS3Proxy` sits between a client and any S3 endpoint (moto, SeaweedFS) and
  injects 503/500 errors, slow answers and connection resets from a seeded schedule.

Point the code under test at ``proxy.endpoint_url``; the Host header and the request target
are forwarded verbatim, so SigV4 signatures stay valid for upstreams that check them.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import logging
import random
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from botocore.client import BaseClient

LOOPBACK = "127.0.0.1"
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
MOTO_REGION = "us-east-1"

# Fault kinds, as used in FaultyS3Proxy.counts() and FaultyS3Proxy.fault_log.
SLOWDOWN = "slowdown"  # 503 SlowDown (a throttling error for botocore)
INTERNAL_ERROR = "internal_error"  # 500 InternalError (a transient error for botocore)
TIMEOUT = "timeout"  # answer held back for delay_seconds
RESET = "reset"  # connection reset (RST) without an answer

# Connection-level headers that must not be copied from one hop to the next (RFC 9110 7.6.1);
# Expect is answered by our own server, and the framing headers are recomputed per hop.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)
_PIECE = 64 * 1024
# Loopback urllib opener that ignores HTTP(S)_PROXY from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def s3_client(
    endpoint_url: str,
    access_key: str = MOTO_ACCESS_KEY,
    secret_key: str = MOTO_SECRET_KEY,
    region: str = MOTO_REGION,
    **config: Any,
) -> BaseClient:
    """Return a path-style boto3 S3 client; ``config`` adds ``botocore.config.Config`` options.

    Credentials and region are explicit and ``proxies={}`` stops botocore from routing loopback
    traffic through an HTTP(S)_PROXY found in the environment.
    """
    import boto3
    from botocore.config import Config

    base = Config(s3={"addressing_style": "path"}, proxies={})
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=base.merge(Config(**config)),
    )


@contextlib.contextmanager
def quick_throttling_backoff(base_scale: float = 0.05) -> Iterator[None]:
    """Let botocore retry throttling errors (503 SlowDown) as quickly as other transient errors.

    botocore's standard mode sleeps ``rand(0, 1) * min(scale * 2**i, 20)`` seconds before retry
    ``i``, with ``scale`` 1 s for throttling errors but 50 ms for other 5xx and connection
    errors, so injected SlowDowns alone can cost seconds per test. This patches botocore's
    (private) class-level setting, so it affects only clients in this process; no-op if absent.
    """
    from botocore.retries.standard import ExponentialBackoff

    settings: dict[str, float] | None = getattr(ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG", None)
    if settings is None or "throttling_base_scale" not in settings:
        yield
        return
    previous = settings["throttling_base_scale"]
    settings["throttling_base_scale"] = base_scale
    try:
        yield
    finally:
        settings["throttling_base_scale"] = previous


# --------------------------------------------------------------------------- moto


@dataclass(frozen=True)
class MotoS3:
    """A running in-process moto S3 endpoint."""

    endpoint_url: str
    access_key: str = MOTO_ACCESS_KEY
    secret_key: str = MOTO_SECRET_KEY
    region: str = MOTO_REGION

    def client(self, **config: Any) -> BaseClient:
        """Return a path-style boto3 S3 client for this endpoint (``config``: Config options)."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region, **config)

    def reset(self) -> None:
        """Drop all moto state (buckets, objects) via moto's ``/moto-api/reset``."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with _NO_PROXY_OPENER.open(request, timeout=10) as response:
            response.read()


@contextlib.contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """Run moto's S3 on a free loopback port for the duration of the block.

    moto keeps its backends in process-global state, shared with ``mock_aws`` and with any other
    moto server in this process; the state is reset on entry and exit, so do not nest these.
    """
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; keep thousands of fault-test requests out of the log.
    werkzeug_log = logging.getLogger("werkzeug")
    previous_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        moto = MotoS3(endpoint_url=f"http://{host}:{port}")
        moto.reset()
        yield moto
        moto.reset()
    finally:
        server.stop()
        # stop() only ends serve_forever(); close the listening socket too.
        if server._server is not None:
            server._server.server_close()
        werkzeug_log.setLevel(previous_level)


# --------------------------------------------------------------------------- faulty proxy


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault: the proxy-wide request number, the request line and the kind."""

    index: int
    method: str
    path: str
    kind: str


class FaultyS3Proxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 that injects faults into S3 traffic.

    Every request gets a number (1, 2, ...). Requests after the first ``first_n_free`` whose method
    is in ``methods`` (all methods if ``None``) draw one number from ``random.Random(seed)`` that
    picks, by the cumulative rates, one of:

    * error (``error_rate``): answer 503 ``SlowDown`` and 500 ``InternalError`` alternately, with
      an S3 XML error body, without forwarding;
    * timeout (``timeout_rate``): forward the request, so the upstream *does* apply it, then hold
      the answer for ``delay_seconds`` before sending it. Set ``delay_seconds`` above the client's
      read timeout: the client gives up and retries, as after a lost reply, so this also checks
      that retried writes are idempotent;
    * reset (``reset_rate``): read the request, do not forward it, and reset the connection (RST).

    The schedule is deterministic for a given order of requests (a single sequential client);
    concurrent clients interleave nondeterministically. ``max_faults`` caps the faults injected
    and ``enabled = False`` pauses injection. Counters are read-only, thread-safe attributes.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        reset_rate: float = 0.0,
        delay_seconds: float = 3.0,
        methods: Collection[str] | None = None,
        first_n_free: int = 0,
        max_faults: int | None = None,
        seed: int = 0,
        upstream_timeout: float = 60.0,
    ) -> None:
        rates = (error_rate, timeout_rate, reset_rate)
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {rates}")
        upstream = urllib.parse.urlsplit(upstream_url)
        if upstream.scheme != "http" or not upstream.hostname:
            raise ValueError(f"upstream must be a plain http:// URL, got {upstream_url!r}")
        self.upstream_url = upstream_url
        self._upstream_host = upstream.hostname
        self._upstream_port = upstream.port or 80
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.reset_rate = reset_rate
        self.delay_seconds = delay_seconds
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        self.first_n_free = first_n_free
        self.max_faults = max_faults
        self.upstream_timeout = upstream_timeout
        self.enabled = True

        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests = 0
        self._forwarded = 0
        self._upstream_failures = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._log: list[FaultEvent] = []

        self._stopping = threading.Event()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._to_reset: set[socket.socket] = set()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FaultyS3Proxy:
        """Bind a free loopback port and serve in a background thread."""
        self._stopping.clear()  # allow start() again after stop()
        handler = type("_BoundProxyHandler", (_ProxyHandler,), {"proxy": self})
        self._server = _ProxyServer((LOOPBACK, 0), handler, self)
        # A short poll interval keeps stop() prompt; the loop is otherwise idle.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="faulty-s3-proxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, join_timeout: float = 2.0) -> None:
        """Stop accepting, wake held requests, cut open connections; wait up to ``join_timeout``."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for sock in connections:
            # Wakes handlers blocked reading the next keep-alive request.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + join_timeout
        for thread in [*threads, self._thread]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: use as the client's endpoint_url."""
        if self._server is None:
            raise RuntimeError("proxy is not running; call start() or use it as a context")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    @contextlib.contextmanager
    def faults_disabled(self) -> Iterator[None]:
        """Pause fault injection (e.g. to set up or verify state through the same endpoint)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    # ----------------------------------------------------------------- counters

    @property
    def requests(self) -> int:
        """Requests received (every request line, faulted or not)."""
        with self._lock:
            return self._requests

    @property
    def forwarded(self) -> int:
        """Requests sent upstream, including those whose answer was held (timeouts)."""
        with self._lock:
            return self._forwarded

    @property
    def upstream_failures(self) -> int:
        """Forwarded requests that failed at the upstream (answered 502 or cut)."""
        with self._lock:
            return self._upstream_failures

    @property
    def errors(self) -> int:
        """Injected 503 SlowDown plus 500 InternalError answers."""
        with self._lock:
            return self._counts[SLOWDOWN] + self._counts[INTERNAL_ERROR]

    @property
    def timeouts(self) -> int:
        """Injected held answers."""
        with self._lock:
            return self._counts[TIMEOUT]

    @property
    def resets(self) -> int:
        """Injected connection resets."""
        with self._lock:
            return self._counts[RESET]

    @property
    def faults(self) -> int:
        """All injected faults."""
        with self._lock:
            return sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        """Snapshot of all counters, faults by kind (``slowdown``, ``internal_error``, ...)."""
        with self._lock:
            return {
                "requests": self._requests,
                "forwarded": self._forwarded,
                "upstream_failures": self._upstream_failures,
                SLOWDOWN: self._counts[SLOWDOWN],
                INTERNAL_ERROR: self._counts[INTERNAL_ERROR],
                TIMEOUT: self._counts[TIMEOUT],
                RESET: self._counts[RESET],
            }

    @property
    def fault_log(self) -> list[FaultEvent]:
        """Copy of the injected faults, in order."""
        with self._lock:
            return list(self._log)

    # ----------------------------------------------------------------- internals

    def _decide(self, method: str, path: str) -> str | None:
        """Number the request and pick its fault (or ``None``) from the seeded schedule."""
        with self._lock:
            self._requests += 1
            index = self._requests
            if (
                not self.enabled
                or index <= self.first_n_free
                or (self.methods is not None and method not in self.methods)
            ):
                return None
            draw = self._rng.random()
            if self.max_faults is not None and sum(self._counts.values()) >= self.max_faults:
                return None
            if draw < self.error_rate:
                errors = self._counts[SLOWDOWN] + self._counts[INTERNAL_ERROR]
                kind = SLOWDOWN if errors % 2 == 0 else INTERNAL_ERROR
            elif draw < self.error_rate + self.timeout_rate:
                kind = TIMEOUT
            elif draw < self.error_rate + self.timeout_rate + self.reset_rate:
                kind = RESET
            else:
                return None
            self._counts[kind] += 1
            self._log.append(FaultEvent(index, method, path, kind))
            return kind

    def _note_forwarded(self) -> None:
        with self._lock:
            self._forwarded += 1

    def _note_upstream_failure(self) -> None:
        with self._lock:
            self._upstream_failures += 1

    def _track(self, sock: socket.socket, thread: threading.Thread, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
                self._handler_threads.add(thread)
            else:
                self._connections.discard(sock)
                self._handler_threads.discard(thread)

    def _upstream(self) -> http.client.HTTPConnection:
        # A fresh upstream connection per request: a stale keep-alive connection could fail
        # after a streamed (non-replayable) body was partly sent, with no safe way to retry.
        return http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=self.upstream_timeout
        )


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True  # held or keep-alive handlers must never block interpreter exit
    block_on_close = False  # stop() does its own bounded joins

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        proxy: FaultyS3Proxy,
    ) -> None:
        self.proxy = proxy
        super().__init__(address, handler)

    def shutdown_request(self, request: Any) -> None:
        with self.proxy._lock:
            reset = request in self.proxy._to_reset
            self.proxy._to_reset.discard(request)
        if reset:
            # Skip the polite shutdown(SHUT_WR), which would send a FIN before the RST.
            self.close_request(request)
        else:
            super().shutdown_request(request)


def _error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{_xml_escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ERRORS = {
    SLOWDOWN: (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
    INTERNAL_ERROR: (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
}


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one client connection's requests (keep-alive) to the upstream."""

    proxy: ClassVar[FaultyS3Proxy]
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; Nagle plus delayed ACKs would stall each.
    disable_nagle_algorithm = True
    timeout = 120  # drop idle keep-alive connections eventually
    server_version = "FaultyS3Proxy"

    def setup(self) -> None:
        super().setup()
        self.proxy._track(self.connection, threading.current_thread(), add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client went away; nothing left to flush
        finally:
            self.proxy._track(self.connection, threading.current_thread(), add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; counters and fault_log carry the useful information

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # client vanished mid-request: just drop it

    # All methods go through the same path.
    def _handle(self) -> None:
        kind = self.proxy._decide(self.command, self.path)
        if kind in _ERRORS:
            self._drain_request_body()  # keep the keep-alive stream in sync
            self._send_error(kind)
        elif kind == RESET:
            self._drain_request_body()
            self._reset()
        else:
            self._forward(hold=kind == TIMEOUT)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _handle

    # ----------------------------------------------------------------- request body

    def _request_body(self) -> Iterator[bytes]:
        """Yield the decoded request body in pieces (Content-Length or chunked framing)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionResetError("client closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Discard trailer fields up to the blank line: they are not signed by SigV4
                    # and S3 checksums travel inside aws-chunked bodies, not as HTTP trailers.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._read_exact(size)
                self.rfile.readline(3)  # CRLF after the chunk data
        else:
            yield from self._read_exact(int(self.headers.get("Content-Length") or 0))

    def _read_exact(self, size: int) -> Iterator[bytes]:
        while size > 0:
            piece = self.rfile.read(min(size, _PIECE))
            if not piece:
                raise ConnectionResetError("client closed inside the request body")
            size -= len(piece)
            yield piece

    def _drain_request_body(self) -> None:
        for _ in self._request_body():
            pass

    # ----------------------------------------------------------------- faults

    def _send_error(self, kind: str) -> None:
        status, reason, code, message = _ERRORS[kind]
        request_id = f"faulty-proxy-{self.proxy.requests}"
        body = _error_body(code, message, urllib.parse.urlsplit(self.path).path, request_id)
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        if self.command == "HEAD":
            self.send_header("Content-Length", "0")  # HEAD answers carry no body
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.proxy._lock:
            self.proxy._to_reset.add(self.connection)
        self.close_connection = True

    # ----------------------------------------------------------------- forwarding

    def _forward(self, *, hold: bool) -> None:
        upstream = self.proxy._upstream()
        try:
            try:
                response = self._send_upstream(upstream)
            except (OSError, http.client.HTTPException):
                self.proxy._note_upstream_failure()
                self._send_bad_gateway()
                # The request body may be half read: the stream is out of sync, close it.
                self.close_connection = True
                return
            if hold:
                # Buffer the answer, then hold it; stop() wakes us early.
                body = response.read()
                if self.proxy._stopping.wait(self.proxy.delay_seconds):
                    self.close_connection = True
                    return
                self._relay(response, [body], len(body))
            else:
                self._relay(response, self._iter_response(response), response.length)
        except (OSError, http.client.HTTPException):
            # Failed mid-answer (client gone or upstream cut): the framing is lost, drop it.
            self.close_connection = True
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection) -> http.client.HTTPResponse:
        # Forward the raw request target and the client's Host header untouched: both are part
        # of the SigV4 canonical request that upstreams like SeaweedFS verify.
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                upstream.putheader(name, value)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        elif "Content-Length" in self.headers:
            upstream.putheader("Content-Length", self.headers["Content-Length"])
        upstream.endheaders()
        for piece in self._request_body():
            upstream.send(b"%X\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            upstream.send(b"0\r\n\r\n")
        self.proxy._note_forwarded()
        return upstream.getresponse()

    @staticmethod
    def _iter_response(response: http.client.HTTPResponse) -> Iterator[bytes]:
        while piece := response.read(_PIECE):
            yield piece

    def _relay(
        self,
        response: http.client.HTTPResponse,
        body: Iterator[bytes] | list[bytes],
        length: int | None,
    ) -> None:
        """Send the upstream's status and headers, then the body with this hop's framing."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        bodyless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        if bodyless:
            # A HEAD answer's Content-Length describes the object, not this message.
            if (declared := response.getheader("Content-Length")) is not None:
                self.send_header("Content-Length", declared)
            self.end_headers()
            return
        if length is not None:
            self.send_header("Content-Length", str(length))
            self.end_headers()
            for piece in body:
                self.wfile.write(piece)
        elif self.request_version == "HTTP/1.0":
            data = b"".join(body)  # no chunked encoding for HTTP/1.0 clients
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            # Unknown length (upstream chunked or close-delimited): re-chunk as we stream.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in body:
                if piece:
                    self.wfile.write(b"%X\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

    def _send_bad_gateway(self) -> None:
        body = _error_body(
            "BadGateway", "Upstream S3 endpoint failed.", self.path, "faulty-proxy-502"
        )
        self.send_response_only(502, "Bad Gateway")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
