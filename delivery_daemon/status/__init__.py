"""The status page: a small, server-rendered web page that shows whether deliveries flow (off by default).

``status_mount(daemon, settings.status)`` puts it at ``/status`` on the admin address (``admin.host``/``admin.port``),
next to ``/metrics``; it is never served on the public webhook port. See :mod:`.routes`, :mod:`.auth`,
:mod:`.throttle` and :mod:`.queries`.
"""

from __future__ import annotations

from delivery_daemon.status.routes import MOUNT_PATH, create_status_app, status_mount

__all__ = ["MOUNT_PATH", "create_status_app", "status_mount"]
