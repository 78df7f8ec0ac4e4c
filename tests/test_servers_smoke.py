"""Smoke tests proving each helper in ``tests/servers.py`` starts a working server."""

from __future__ import annotations

import html
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.servers import (
    LOOPBACK,
    chromium_browser,
    free_port,
    owns_port,
    prometheus_server,
    seaweedfs_s3,
    wait_for_http,
)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5])
def test_every_port_has_one_xdist_owner_and_weeds_admin_pair_shares_it(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen with `-n 3`: weed mini's admin port and its +10000 gRPC neighbour had different
    owners, so no pair was ever found."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    ports = range(20_000, 32_768)
    owners: dict[int, list[int]] = {port: [] for port in ports}
    for index in range(workers):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        for port in ports:
            if owns_port(port):
                owners[port].append(index)
                assert owns_port(port + 10_000)
    assert all(len(found) == 1 for found in owners.values())


def test_prometheus_scrapes_prometheus_client(tmp_path: Path) -> None:
    """Prometheus scrapes an in-process prometheus_client exporter and finds the counter."""
    registry = CollectorRegistry()
    counter = Counter("smoke_requests", "Smoke-test counter.", ["route"], registry=registry)
    counter.labels(route="/predict").inc(3)
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    try:
        wait_for_http(f"http://{LOOPBACK}:{port}/metrics", timeout_s=10)
        with prometheus_server(tmp_path / "prom", targets=[f"{LOOPBACK}:{port}"]) as prom:
            series = prom.wait_for_series('smoke_requests_total{route="/predict"}', timeout_s=30)
            assert len(series) == 1
            labels = series[0]["metric"]
            assert labels["job"] == "medserve"
            assert labels["instance"] == f"{LOOPBACK}:{port}"
            assert float(series[0]["value"][1]) == 3.0
            assert prom.query("up") and prom.query('up{job="medserve"}')[0]["value"][1] == "1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_seaweedfs_s3_roundtrip(tmp_path: Path) -> None:
    """Bucket create, metadata round-trip and paginated listing against weed mini."""
    with seaweedfs_s3(tmp_path / "weed") as s3:
        client = s3.client()
        client.create_bucket(Bucket="smoke-bucket")
        client.put_object(
            Bucket="smoke-bucket", Key="models/a.bin", Body=b"hello", Metadata={"x": "1"}
        )
        obj = client.get_object(Bucket="smoke-bucket", Key="models/a.bin")
        assert obj["Body"].read() == b"hello"
        assert obj["Metadata"] == {"x": "1"}

        keys = [f"page/{i}.txt" for i in range(5)]
        for key in keys:
            client.put_object(Bucket="smoke-bucket", Key=key, Body=key.encode())
        pages: list[list[str]] = []
        kwargs: dict[str, str | int] = {"Bucket": "smoke-bucket", "Prefix": "page/", "MaxKeys": 2}
        while True:
            resp = client.list_objects_v2(**kwargs)
            pages.append([item["Key"] for item in resp.get("Contents", [])])
            if not resp.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [key for page in pages for key in page] == keys

        names = [b["Name"] for b in client.list_buckets()["Buckets"]]
        assert "smoke-bucket" in names

        # Requests are really authenticated: a wrong secret is rejected.
        bad = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key="wrong-secret",
            region_name="us-east-1",
        )
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            bad.list_buckets()


class _FormHandler(BaseHTTPRequestHandler):
    """Serves a one-field form on GET / and echoes the submitted name on POST /greet."""

    def do_GET(self) -> None:
        self._send(
            "<form method='post' action='/greet'>"
            "<input id='name' name='name'><button id='go' type='submit'>Go</button></form>"
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        fields = urllib.parse.parse_qs(self.rfile.read(length).decode())
        name = html.escape(fields.get("name", [""])[0])
        self._send(f"<p id='result'>Hello, {name}!</p>")

    def _send(self, body: str) -> None:
        data = f"<!doctype html><html><body>{body}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def form_url() -> Iterator[str]:
    """URL of a tiny HTML form served from a background thread."""
    httpd = ThreadingHTTPServer((LOOPBACK, 0), _FormHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_chromium_fills_and_submits_form(form_url: str) -> None:
    """Chromium loads the form, fills the field, submits and reads the result."""
    with chromium_browser() as browser:
        page = browser.new_page()
        try:
            page.goto(form_url)
            page.fill("#name", "Ada")
            with page.expect_navigation():
                page.click("#go")
            assert page.text_content("#result") == "Hello, Ada!"
        finally:
            page.close()
