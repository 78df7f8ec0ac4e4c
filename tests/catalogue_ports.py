"""Catalogue ports moved out of everyone's way for a test (`MEDSERVE_PORT_OFFSET`)."""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
from collections.abc import Iterator

from medserve.catalogue import SERVICES
from medserve.doctor import port_in_use
from tests.servers import LOOPBACK, worker_slot

EPHEMERAL_START = 32_768  # Linux's ephemeral range, where the ports of outgoing connections land
LOWEST_OFFSET = 10_000


def catalogue_ports(offset: int) -> list[int]:
    return [p + offset for entry in SERVICES.values() for p in (entry.http_port, entry.grpc_port)]


def _offset_step() -> int:
    """The smallest step no gap between two catalogue ports is a multiple of: offsets that are
    different multiples of it never move two services onto one port."""
    ports = catalogue_ports(0)
    gaps = {abs(a - b) for a in ports for b in ports if a != b}
    return next(step for step in itertools.count(2) if all(gap % step for gap in gaps))


def offsets() -> list[int]:
    """This worker's offsets: every catalogue port stays below the ephemeral range, and under
    pytest-xdist no offset of one worker puts a port where another worker's offset can."""
    index, workers = worker_slot()
    step = _offset_step()
    top = EPHEMERAL_START - max(catalogue_ports(0))
    count = (top - LOWEST_OFFSET) // step
    return [LOWEST_OFFSET + k * step for k in range(count) if k % workers == index]


def free_offset() -> int:
    """An offset at which every service's HTTP and gRPC port is free right now."""
    for offset in random.sample(offsets(), 200):
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
