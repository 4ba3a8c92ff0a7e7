"""delivery-daemon: a marketplace's paid-order webhook becomes a delivered licence key."""

__version__ = "0.1.0"
