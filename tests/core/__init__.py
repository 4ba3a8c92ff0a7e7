"""Tests of the core modules: configuration, logs, retry timing."""
