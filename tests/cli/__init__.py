"""Tests of ``delivery_daemon.cli``: the operator's commands and their tables."""
