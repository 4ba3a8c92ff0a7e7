"""The test suite: one folder per package of ``delivery_daemon``, plus end-to-end runs, guarantees and helpers."""
