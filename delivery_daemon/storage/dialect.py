"""SQL that differs between SQLite and PostgreSQL, built for the dialect at hand.

Both have ``INSERT … ON CONFLICT DO NOTHING``, but SQLAlchemy spells it through each dialect's own ``insert``.
The PostgreSQL dialect's module costs ~2 MB of memory to import, so it is imported only by a daemon that uses it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table


def insert(dialect: str, table: Table) -> Any:
    """``table``'s ``INSERT`` for ``dialect`` (``"postgresql"`` or ``"sqlite"``), with ``on_conflict_do_nothing``."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # only on PostgreSQL (~2 MB, see above)

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite  # likewise SQLite's, only on SQLite

    return sqlite.insert(table)
