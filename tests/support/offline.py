"""A fence for tests that run commands on configurations naming real hosts (the shipped examples): nothing may leave
the machine. Name lookups of anything but loopback names fail at once, and connections to anything but loopback
addresses are refused, both before a packet is sent; each attempt is recorded so a test can say what was tried."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _loopback(host: Any) -> bool:
    if host is None or host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def offline() -> Iterator[list[str]]:
    """Within the block only loopback can be reached; yields the hosts that were attempted and refused."""
    attempted: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if _loopback(host):
            return real_getaddrinfo(host, *args, **kwargs)
        attempted.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "offline test: only loopback names are looked up")

    def refused(address: Any) -> bool:
        if isinstance(address, tuple) and not _loopback(address[0]):
            attempted.append(str(address[0]))
            return True
        return False

    def connect(self: socket.socket, address: Any) -> None:
        if refused(address):
            raise ConnectionRefusedError("offline test: only loopback addresses are connected to")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        return 111 if refused(address) else real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield attempted
