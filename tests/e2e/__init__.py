"""End to end: the daemon and the reference marketplaces as real servers (or processes) on loopback."""
