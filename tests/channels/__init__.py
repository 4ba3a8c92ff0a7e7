"""Tests of ``delivery_daemon.channels``: email and the outbound webhook."""
