"""Tests of ``delivery_daemon.net``: the network guard and the HTTP transport."""
