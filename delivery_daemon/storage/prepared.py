"""Statements of the per-order hot path, run on the database driver's cursor instead of through SQLAlchemy's
execution machinery.

Why hand-written (issue #26, item 3): on the 2-core bench machine SQLAlchemy's ``Connection.execute`` of a cached
Core statement costs ~100-150 µs of CPU beyond the driver's own ~20 µs (the execution context, its events, the
result object). A webhook's order, handed to the worker and delivered, ran seven statements through it on the
database thread, whose CPU shares the event loop's GIL (tests/pipeline/test_worker.py now checks that none does).

A :class:`Prepared` statement is still written in SQLAlchemy Core and compiled by SQLAlchemy, once per dialect and
set of parameter names; only its execution goes straight to the DBAPI cursor, inside the SQLAlchemy connection's
transaction (and savepoints), so it sees and is seen by every other statement of the transaction. Bound values go
through the conversions SQLAlchemy would apply (its bind processors, e.g. SQLite's ``Float``).

It falls back to ``Connection.execute`` when the statement needs more of SQLAlchemy: a returned column whose type
converts values on this dialect (psycopg's ``Float`` decides from the column's runtime type), a column default
computed in Python, names the dialect escapes, parameters rendered at execution (an ``IN`` list), or a
``before_cursor_execute`` listener (tests that capture
statements); and for an executemany, a driver that does not sum the rowcount. A driver error is raised as
SQLAlchemy's (:meth:`sqlalchemy.exc.DBAPIError.instance`), so callers catch the same exceptions either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None
    """Parameter names in order, for a positional paramstyle (SQLite's ``?``); None for a named one (psycopg's)."""
    defaults: dict[str, Any]
    """The values of the statement's own bound literals (e.g. the 1 of ``attempts + 1``), processed."""
    processors: dict[str, Callable[[Any], Any]]
    """SQLAlchemy's conversion of a parameter's value for the driver, by name (e.g. SQLite's ``Float``)."""

    def bind(self, params: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """``params`` (and the statement's own literals) as the driver takes them."""
        values = {**self.defaults, **params}
        for name, process in self.processors.items():
            if name in params:
                values[name] = process(values[name])
        return values if self.names is None else [values[name] for name in self.names]


class Rows:
    """What a :class:`Prepared` execution gives back: the rows (mappings of column name to value) and the rowcount."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[dict[str, Any]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None


class Prepared:
    """One Core statement (``statement``) executed with one set of parameters at a time: see the module doc."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled | None] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Rows:
        """Run the statement with ``params`` in ``conn``'s transaction; its rows (if it returns any) and rowcount."""
        compiled = self._prepared(conn, params)
        if compiled is None:
            result = conn.execute(self.statement, dict(params))
            rows = [dict(row._mapping) for row in result.all()] if result.returns_rows else []
            return Rows(rows, result.rowcount)
        bound = compiled.bind(params)
        with _cursor(conn, compiled.sql, bound) as cursor:
            cursor.execute(compiled.sql, bound)
            if cursor.description is None:
                return Rows([], cursor.rowcount)
            columns = [column[0] for column in cursor.description]
            return Rows([dict(zip(columns, row, strict=True)) for row in cursor.fetchall()], cursor.rowcount)

    def execute_many(self, conn: Connection, many: Sequence[Mapping[str, Any]]) -> int:
        """Run the statement (one without RETURNING) once for each mapping of ``many``, which all have the same
        names, as one executemany in ``conn``'s transaction; the number of rows changed in all."""
        compiled = self._prepared(conn, many[0])
        if compiled is None or not conn.dialect.supports_sane_multi_rowcount:
            return conn.execute(self.statement, [dict(params) for params in many]).rowcount
        bound: list[Any] = [compiled.bind(params) for params in many]
        with _cursor(conn, compiled.sql, bound) as cursor:
            cursor.executemany(compiled.sql, bound)
            return int(cursor.rowcount)

    def _prepared(self, conn: Connection, params: Mapping[str, Any]) -> _Compiled | None:
        """The statement compiled for ``conn``'s dialect and ``params``' names; None when SQLAlchemy must run it."""
        key = (conn.dialect.name, tuple(params))
        compiled = self._compiled.get(key)
        if compiled is None and key not in self._compiled:
            compiled = self._compiled[key] = _compile(self.statement, conn.dialect, key[1])
        if conn.dispatch.before_cursor_execute:  # someone captures statements: they go where it can see them
            return None
        return compiled


@contextlib.contextmanager
def _cursor(conn: Connection, sql: str, bound: Any) -> Iterator[Any]:
    """A DBAPI cursor on ``conn``'s connection (inside its transaction), closed after use; a driver error raised in
    the block comes out as SQLAlchemy raises it (IntegrityError, OperationalError, ...), parameters hidden."""
    error: type[Exception] = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]  # a live transaction's connection
    try:
        yield cursor
    except error as exc:
        raised: StatementError = DBAPIError.instance(sql, bound, exc, error, hide_parameters=True, dialect=conn.dialect)
        raise raised from exc
    finally:
        cursor.close()


def _compile(statement: Executable, dialect: Dialect, names: tuple[str, ...]) -> _Compiled | None:
    """``statement`` compiled for ``dialect`` with parameters ``names``, or None if SQLAlchemy must execute it: the
    cases the module doc lists."""
    returning = list(getattr(statement, "exported_columns", ()))  # RETURNING's columns (none without RETURNING)
    # Without RETURNING asked for, compiled as for executemany: PostgreSQL's single-row form would add an implicit
    # RETURNING of the primary key, which SQLAlchemy reads for ``inserted_primary_key`` and nothing here does.
    compiled = statement.compile(  # type: ignore[attr-defined]  # every Core statement compiles
        dialect=dialect, column_keys=list(names), for_executemany=not returning
    )
    assert isinstance(compiled, SQLCompiler)
    if (
        compiled.escaped_bind_names
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.post_compile_params
        or compiled.literal_execute_params
    ):
        # Escaped names, column defaults computed in Python, or parameters rendered at execution (``IN`` lists):
        # SQLAlchemy's own work when the statement runs.
        return None
    for column in returning:
        try:
            if column.type.dialect_impl(dialect).result_processor(dialect, None) is not None:
                return None
        except Exception:  # a processor that needs the column's runtime type code (psycopg's Float): SQLAlchemy's
            return None
    processors: dict[str, Callable[[Any], Any]] = {}
    own: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
        if name not in names:
            if bind.required:  # a parameter the caller did not give: SQLAlchemy raises its own error for it
                return None
            own[name] = bind.effective_value
    defaults = {name: processors[name](value) if name in processors else value for name, value in own.items()}
    positional = tuple(compiled.positiontup or ()) if compiled.positional else None
    return _Compiled(compiled.string, positional, defaults, processors)
