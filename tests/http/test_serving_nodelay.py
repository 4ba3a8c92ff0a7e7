"""The loopback servers of the tests, demo and benchmark answer without Nagle's delay."""

from __future__ import annotations

import socket

from delivery_daemon.http.serving import bind_socket


def test_bound_socket_is_tcp_with_nodelay() -> None:
    """The listener says it is TCP (so asyncio sets TCP_NODELAY on accepted sockets) and has TCP_NODELAY itself."""
    sock = bind_socket()
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def test_accepted_connection_has_nodelay() -> None:
    """A connection accepted on the listener inherits TCP_NODELAY: a response in two writes is not held back."""
    listener = bind_socket()
    client = socket.create_connection(listener.getsockname(), timeout=10)
    try:
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()
        listener.close()
