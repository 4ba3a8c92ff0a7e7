"""delivery-daemon: a marketplace's paid-order webhook becomes a delivered licence key."""

from delivery_daemon import moved

__version__ = "0.1.0"

moved.install()
