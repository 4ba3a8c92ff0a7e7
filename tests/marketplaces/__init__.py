"""Tests of ``delivery_daemon.marketplaces``: the adapter seam and SoftStore's adapter."""
