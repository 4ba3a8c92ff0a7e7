"""Tests of ``delivery_daemon.http``: the protocol, limits, metrics and the loopback servers."""
