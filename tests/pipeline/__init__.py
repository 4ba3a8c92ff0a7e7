"""Tests of ``delivery_daemon.pipeline``: the worker and its steps."""
