"""Tests of ``delivery_daemon.generators``: the plugin contract and hung-thread accounting."""
