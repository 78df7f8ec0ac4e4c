"""Catalogue ports moved out of everyone's way for a test (`MEDSERVE_PORT_OFFSET`)."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator

from medserve.catalogue import SERVICES
from medserve.doctor import port_in_use
from tests.servers import LOOPBACK

# Below Linux's ephemeral range (32768+), where the ports of outgoing connections land.
OFFSETS = range(10_000, 29_000)


def catalogue_ports(offset: int) -> list[int]:
    return [p + offset for entry in SERVICES.values() for p in (entry.http_port, entry.grpc_port)]


def free_offset() -> int:
    """An offset at which every service's HTTP and gRPC port is free right now."""
    for offset in random.sample(OFFSETS, 200):
        if not any(port_in_use(LOOPBACK, port) for port in catalogue_ports(offset)):
            return offset
    raise RuntimeError("no offset with every catalogue port free")


@contextlib.contextmanager
def listening_on(*ports: int) -> Iterator[None]:
    """Hold `ports` with listening sockets, as a running server would, until the block ends."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            sock.bind((LOOPBACK, port))
            sock.listen()
        yield
