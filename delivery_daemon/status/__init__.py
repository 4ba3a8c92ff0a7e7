"""The status page: a small, server-rendered web page that shows whether deliveries flow (off by default).

``create_status_app(daemon, settings.status)`` builds it; :func:`.server.serve_status` runs it on its own address
next to the receiver. See :mod:`.routes`, :mod:`.auth` and :mod:`.queries`.
"""

from __future__ import annotations

from .routes import create_status_app, status_routes

__all__ = ["create_status_app", "status_routes"]
