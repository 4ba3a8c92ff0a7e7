"""Tests of ``delivery_daemon.reference``: the reference marketplaces against their documents."""
