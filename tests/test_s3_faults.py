"""Fast checks of the S3 fault-injection infrastructure (moto + FaultyS3Proxy)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from tests.s3_faults import (
    INTERNAL_ERROR,
    SLOWDOWN,
    TIMEOUT,
    FaultyS3Proxy,
    MotoS3,
    moto_s3,
    quick_throttling_backoff,
    s3_client,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

OBJECTS = 30
PAGE_SIZE = 7
# The client configuration the pipeline is expected to use against a flaky S3.
RETRYING: dict[str, Any] = {
    "retries": {"max_attempts": 10, "mode": "standard"},
    "read_timeout": 1,
    "connect_timeout": 1,
}
# One attempt only, so each injected fault surfaces as an exception. Note that botocore's
# "max_attempts" counts retries in legacy configs; "total_max_attempts" is unambiguous.
NO_RETRIES: dict[str, Any] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_s3() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoS3, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, created directly on moto (never through a proxy)."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:63]
    moto.client().create_bucket(Bucket=name)
    return name


def _payload(i: int) -> bytes:
    # Varied sizes, some larger than one 64 KiB relay piece, and non-text bytes.
    return hashlib.sha256(str(i).encode()).digest() * (1 + 97 * i)


def _round_trip(client: BaseClient, bucket: str) -> None:
    """Put, get and list OBJECTS objects through ``client`` and check everything came back."""
    expected: dict[str, tuple[bytes, dict[str, str]]] = {}
    for i in range(OBJECTS):
        key = f"anon/{i:03d}.bin"
        body = _payload(i)
        # Lower-case keys: S3 (and moto) return user metadata names lower-cased.
        metadata = {
            "pseudonym": f"p-{i:04d}",
            "sha256": hashlib.sha256(body).hexdigest(),
            "anonymised": "true",
        }
        client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
        expected[key] = (body, metadata)

    for key, (body, metadata) in expected.items():
        got = client.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body, key
        assert got["Metadata"] == metadata, key

    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": PAGE_SIZE}
    )
    listed = [[obj["Key"] for obj in page.get("Contents", [])] for page in pages]
    assert [len(page) for page in listed] == [7, 7, 7, 7, 2]
    assert [key for page in listed for key in page] == sorted(expected)


def _presigned(moto: MotoS3, proxy: FaultyS3Proxy, method: str, bucket: str, key: str) -> str:
    """Path+query of a presigned URL for the proxy, for raw http.client requests."""
    client = s3_client(proxy.endpoint_url, moto.access_key, moto.secret_key, moto.region)
    url = client.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key})
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _port(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    return port


# --------------------------------------------------------------------------- round trips


def test_round_trip_survives_errors(moto: MotoS3, bucket: str) -> None:
    # botocore backs off >= 1 s per SlowDown by default; shrink that so the test stays fast.
    with (
        quick_throttling_backoff(),
        FaultyS3Proxy(moto.endpoint_url, error_rate=0.3, seed=1) as proxy,
    ):
        _round_trip(s3_client(proxy.endpoint_url, **RETRYING), bucket)
    assert proxy.counts()[SLOWDOWN] > 0
    assert proxy.counts()[INTERNAL_ERROR] > 0
    assert proxy.timeouts == proxy.resets == 0
    # Errors are answered by the proxy itself; the client retried each of them.
    assert proxy.forwarded == proxy.requests - proxy.errors


def test_round_trip_survives_timeouts(moto: MotoS3, bucket: str) -> None:
    # Each timeout costs the client's 1 s read timeout, so cap them to keep the test short.
    with FaultyS3Proxy(
        moto.endpoint_url, timeout_rate=0.1, delay_seconds=2.5, max_faults=3, seed=3
    ) as proxy:
        _round_trip(s3_client(proxy.endpoint_url, **RETRYING), bucket)
    assert proxy.timeouts == 3
    assert {event.kind for event in proxy.fault_log} == {TIMEOUT}
    # Held requests were still applied upstream (a retried PUT simply wrote the object again).
    assert proxy.forwarded == proxy.requests


def test_round_trip_survives_resets(moto: MotoS3, bucket: str) -> None:
    with FaultyS3Proxy(moto.endpoint_url, reset_rate=0.3, seed=5) as proxy:
        _round_trip(s3_client(proxy.endpoint_url, **RETRYING), bucket)
    assert proxy.resets > 0
    assert proxy.forwarded == proxy.requests - proxy.resets


# --------------------------------------------------------------------------- proxy behaviour


def test_each_fault_as_seen_by_an_unretried_client(moto: MotoS3, bucket: str) -> None:
    moto.client().put_object(Bucket=bucket, Key="k", Body=b"v")

    with FaultyS3Proxy(moto.endpoint_url, error_rate=1.0) as proxy:
        client = s3_client(proxy.endpoint_url, **NO_RETRIES)
        seen = []
        for _ in range(3):
            with pytest.raises(ClientError) as caught:
                client.get_object(Bucket=bucket, Key="k")
            error = caught.value.response
            seen.append((error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]))
        # HEAD errors carry no body; botocore falls back to the status code.
        with pytest.raises(ClientError, match=r"\(500\)"):
            client.head_object(Bucket=bucket, Key="k")
    assert seen == [(503, "SlowDown"), (500, "InternalError"), (503, "SlowDown")]
    assert proxy.forwarded == 0

    with (
        FaultyS3Proxy(moto.endpoint_url, reset_rate=1.0) as proxy,
        pytest.raises(ConnectionClosedError),
    ):
        s3_client(proxy.endpoint_url, **NO_RETRIES).get_object(Bucket=bucket, Key="k")
    assert proxy.resets == 1

    with FaultyS3Proxy(moto.endpoint_url, timeout_rate=1.0, delay_seconds=5) as proxy:
        client = s3_client(proxy.endpoint_url, read_timeout=0.3, **NO_RETRIES)
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.put_object(Bucket=bucket, Key="late", Body=b"applied anyway")
        assert time.monotonic() - started < 2
    # Forwarded before being held: the write happened although the client saw a timeout.
    assert moto.client().get_object(Bucket=bucket, Key="late")["Body"].read() == b"applied anyway"


def test_schedule_is_deterministic_and_filtered(moto: MotoS3, bucket: str) -> None:
    def run() -> list[tuple[int, str, str]]:
        with FaultyS3Proxy(
            moto.endpoint_url, error_rate=0.5, methods={"get"}, first_n_free=3, seed=7
        ) as proxy:
            client = s3_client(proxy.endpoint_url, **NO_RETRIES)
            for i in range(12):
                client.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")  # PUT: never faulted
                with contextlib.suppress(ClientError):
                    client.get_object(Bucket=bucket, Key=f"d/{i}")
            with proxy.faults_disabled():
                client.get_object(Bucket=bucket, Key="d/0")
        assert proxy.requests == 25
        assert all(event.method == "GET" and event.index > 3 for event in proxy.fault_log)
        return [(event.index, event.method, event.kind) for event in proxy.fault_log]

    first = run()
    assert first, "error_rate=0.5 over 12 GETs should inject something"
    assert run() == first


def test_keep_alive_and_chunked_upload(moto: MotoS3, bucket: str) -> None:
    body = [b"chunk-%d;" % i * 5000 for i in range(4)]  # ~160 kB in 4 chunks
    with FaultyS3Proxy(moto.endpoint_url) as proxy:
        put = _presigned(moto, proxy, "put_object", bucket, "chunked")
        get = _presigned(moto, proxy, "get_object", bucket, "chunked")
        head = _presigned(moto, proxy, "head_object", bucket, "chunked")
        conn = http.client.HTTPConnection("127.0.0.1", _port(proxy.endpoint_url), timeout=5)
        conn.request("PUT", put, body=iter(body), encode_chunked=True)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"")
        sock = conn.sock

        conn.request("GET", get)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"".join(body)

        conn.request("HEAD", head)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == str(len(b"".join(body)))
        assert response.read() == b""
        assert conn.sock is sock, "the proxy should keep the client connection alive"
        conn.close()
    assert proxy.forwarded == proxy.requests == 3


def test_stop_is_prompt_with_held_requests(moto: MotoS3, bucket: str) -> None:
    proxy = FaultyS3Proxy(moto.endpoint_url, timeout_rate=1.0, delay_seconds=60).start()
    outcome: list[BaseException | int] = []

    def held_get() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", _port(proxy.endpoint_url), timeout=30)
        try:
            conn.request("GET", f"/{bucket}")
            outcome.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)
        finally:
            conn.close()

    # An idle keep-alive connection must not keep stop() waiting either.
    idle = socket.create_connection(("127.0.0.1", _port(proxy.endpoint_url)))
    client = threading.Thread(target=held_get)
    client.start()
    deadline = time.monotonic() + 5
    while proxy.timeouts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.timeouts == 1

    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 1.5
    client.join(5)
    idle.close()
    assert not client.is_alive()
    assert isinstance(outcome[0], http.client.RemoteDisconnected)


def test_moto_needs_no_environment_and_stays_on_loopback(
    moto: MotoS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")  # would break any proxied request

    destinations: list[str] = []
    real_connect = socket.socket.connect

    def recording_connect(sock: socket.socket, address: Any) -> None:
        destinations.append(address[0])
        real_connect(sock, address)

    # Both the client and moto's server thread open sockets through socket.socket.connect.
    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    client = moto.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"v", Metadata={"Mixed-Case": "kept"})
    got = client.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"v"
    assert got["Metadata"] == {"mixed-case": "kept"}  # S3 lower-cases metadata names
    assert destinations
    assert all(ipaddress.ip_address(host).is_loopback for host in destinations)
