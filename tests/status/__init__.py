"""Tests of ``delivery_daemon.status``: the status page over HTTP and in a browser."""
