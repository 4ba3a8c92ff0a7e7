"""Tests of ``delivery_daemon.stock``: the listed count following the stock pool."""
