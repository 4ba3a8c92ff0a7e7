"""Tests of the shipped generators in ``plugins/`` (``delivery_daemon_plugins``)."""
