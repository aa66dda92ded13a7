"""Prebuilt hot-path statements: on PostgreSQL compiled once and run on the driver's cursor; elsewhere by SQLAlchemy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from psycopg.pq import ExecStatus
from sqlalchemy.engine import Connection, Dialect

Params = Mapping[str, Any]
Statement = sa.Select[Any] | sa.Insert | sa.Update | sa.Delete
# a row read by name: a Prepared statement's dict, or SQLAlchemy's RowMapping
Row = Mapping[Any, Any]

# SQLAlchemy's execute() costs ~40-110 us of CPU per statement beyond the driver's own work (execution
# context, parameter processing, result metadata from cursor.description, which psycopg builds anew per access):
# 28% of a dispatched order's Python time in a profile. A Prepared statement keeps SQLAlchemy's SQL and type
# processing (compiled by SQLAlchemy once per parameter-name set) and runs it on the same connection and
# transaction, without the rest. Statement listeners (before_cursor_execute) still see it.
_CURSOR_KEY = "orderstream_prepared_cursor"
_COMPILED_LIMIT = 64  # parameter-name sets per statement: callers use a fixed few


class Prepared:
    """A statement built once at import; `rows`, `first`, `scalar` and `run` execute it on a connection.

    Only inside Database.write(), read(), atomic_statements() or held(): they begin (or autocommit) the
    transaction themselves, where SQLAlchemy's autobegin would not see a statement it did not run.
    """

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        # INSERT / UPDATE compile their VALUES / SET from the parameter names, hence one compilation per name set
        self._by_keys = isinstance(statement, (sa.Insert, sa.Update))
        self._compiled: dict[frozenset[str] | None, _DriverStatement] = {}
        self._lock = threading.Lock()

    def rows(self, conn: Connection, params: Params | None = None) -> list[dict[str, Any]]:
        """Every row the statement returns, as dicts keyed as SQLAlchemy's mappings() would."""
        params = params or {}
        if conn.dialect.name != "postgresql":
            return [dict(row) for row in conn.execute(self.statement, dict(params)).mappings()]
        return self._driver(conn.dialect, params).execute(conn, params)[0]

    def first(self, conn: Connection, params: Params | None = None) -> dict[str, Any] | None:
        """The first row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: Params | None = None) -> Any:
        """The first column of the first row, or None."""
        found = self.rows(conn, params)
        return next(iter(found[0].values())) if found else None

    def run(self, conn: Connection, params: Params | None = None) -> int:
        """Execute it for its effect; the number of rows it changed (as the driver reports it)."""
        params = params or {}
        if conn.dialect.name != "postgresql":
            return int(conn.execute(self.statement, dict(params)).rowcount)
        return self._driver(conn.dialect, params).execute(conn, params)[1]

    def _driver(self, dialect: Dialect, params: Params) -> _DriverStatement:
        key = frozenset(params) if self._by_keys else None
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key)
                if found is None:
                    if len(self._compiled) >= _COMPILED_LIMIT:
                        self._compiled.clear()
                    found = self._compiled[key] = _DriverStatement(self.statement, dialect, key)
        return found


def _cursor(conn: Connection) -> Any:
    """The driver connection's own cursor, kept with it: a new cursor per statement cost ~15 us more."""
    pooled = conn.connection
    dbapi_connection = pooled.dbapi_connection
    cursor = pooled.info.get(_CURSOR_KEY)  # info lives as long as the driver connection
    if cursor is None or cursor.closed or cursor.connection is not dbapi_connection:
        assert dbapi_connection is not None
        cursor = pooled.info[_CURSOR_KEY] = dbapi_connection.cursor()
    return cursor


class _DriverStatement:
    """One compilation: the SQL text, its parameter defaults and bind processors, its result keys."""

    def __init__(self, statement: Statement, dialect: Dialect, keys: frozenset[str] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys) if keys is not None else None)
        binds = compiled.binds
        if compiled.positional or compiled.escaped_bind_names or any(b.expanding for b in binds.values()):
            raise ValueError("a Prepared statement takes named, non-expanding parameters only")
        self.dialect = dialect
        self.sql = compiled.string
        self.defaults = {name: b.effective_value for name, b in binds.items() if not b.required}
        self.required = frozenset(name for name, b in binds.items() if b.required)
        processors = ((name, b.type.dialect_impl(dialect).bind_processor(dialect)) for name, b in binds.items())
        self.bind_processors: dict[str, Callable[[Any], Any]] = {name: p for name, p in processors if p is not None}
        self.result_columns = list(compiled._result_columns)  # (keyname, name, objects, type): what mappings() uses
        self.keys = tuple(column[0] for column in self.result_columns)
        self.result_processors: list[tuple[int, Callable[[Any], Any]]] | None = None

    def parameters(self, params: Params) -> dict[str, Any]:
        """The driver's parameters: defaults, then the given values, each through its type's bind processor."""
        missing = self.required.difference(params)
        if missing:  # as SQLAlchemy reports it
            err = sa.exc.InvalidRequestError(f"A value is required for bind parameter {sorted(missing)[0]!r}")
            raise sa.exc.StatementError(str(err), self.sql, dict(params), err)
        values = {**self.defaults, **params}
        for name, process in self.bind_processors.items():
            if name in values:
                values[name] = process(values[name])
        return values

    def execute(self, conn: Connection, params: Params) -> tuple[list[dict[str, Any]], int]:
        """Run it on conn's driver connection (in conn's transaction): (rows as dicts, rowcount)."""
        values = self.parameters(params)
        cursor = _cursor(conn)
        try:
            conn.dispatch.before_cursor_execute(conn, cursor, self.sql, values, None, False)
            cursor.execute(self.sql, values)
            # not cursor.description: psycopg builds it anew, one object per column, on every access
            returned = cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK
            raw = cursor.fetchall() if returned else []
            rowcount = int(cursor.rowcount)
            if raw:
                processors = self.result_processors
                if processors is None:
                    processors = self.result_processors = self._result_processors(cursor.description)
                rows = [self._row(row, processors) for row in raw]
            else:
                rows = []
        except self.dialect.loaded_dbapi.Error as err:
            invalidated = self.dialect.is_disconnect(err, cursor.connection, cursor)
            if invalidated:
                conn.invalidate(err)
            raise sa.exc.DBAPIError.instance(
                self.sql, values, err, self.dialect.loaded_dbapi.Error, connection_invalidated=invalidated
            ) from err
        return rows, rowcount

    def _result_processors(self, description: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        if len(description) != len(self.result_columns):
            raise RuntimeError(f"{len(description)} result columns where {len(self.result_columns)} were compiled")
        found: list[tuple[int, Callable[[Any], Any]]] = []
        for index, (column, described) in enumerate(zip(self.result_columns, description, strict=True)):
            process = column[3].dialect_impl(self.dialect).result_processor(self.dialect, described[1])
            if process is not None:
                found.append((index, process))
        return found

    def _row(self, row: tuple[Any, ...], processors: list[tuple[int, Callable[[Any], Any]]]) -> dict[str, Any]:
        if processors:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            return dict(zip(self.keys, values, strict=True))
        return dict(zip(self.keys, row, strict=True))
