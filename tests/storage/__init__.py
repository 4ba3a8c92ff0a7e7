"""Tests of ``delivery_daemon.storage``: engine, queue, schema, stock pool, backups, keys at rest."""
