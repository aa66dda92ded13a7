"""Prebuilt hot-path statements: compiled once and run on the driver's cursor (psycopg's or sqlite3's)."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from psycopg.pq import ExecStatus
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
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
# SQLite's statements compile with named parameters (:name), which sqlite3 takes as a dict, whatever
# paramstyle the engine's own dialect uses (qmark)
_SQLITE_NAMED = SQLiteDialect_pysqlite(paramstyle="named", dbapi=sqlite3)


class Prepared:
    """A statement built once at import; `rows`, `first`, `scalar` and `run` execute it on a connection.

    Only inside Database.write(), read(), atomic_statements() or held(): they begin (or autocommit) the
    transaction themselves, where SQLAlchemy's autobegin would not see a statement it did not run.
    """

    def __init__(self, statement: Statement, *, known_rows_only: bool = False) -> None:
        """known_rows_only: its UPDATE or DELETE only touches rows that existed before the transaction's
        deferred inserts (by a key the caller already had), so a deferred write may go together with them."""
        self.statement = statement
        self.known_rows_only = known_rows_only
        # INSERT / UPDATE compile their VALUES / SET from the parameter names, hence one compilation per name set
        self._by_keys = isinstance(statement, (sa.Insert, sa.Update))
        self._compiled: dict[tuple[str, frozenset[str] | None], _DriverStatement] = {}
        self._lock = threading.Lock()

    def rows(self, conn: Connection, params: Params | None = None) -> list[dict[str, Any]]:
        """Every row the statement returns, as dicts keyed as SQLAlchemy's mappings() would."""
        params = params or {}
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
        return self._driver(conn.dialect, params).execute(conn, params)[1]

    def defer(self, conn: Connection, params: Params | None = None, then: Then | None = None) -> None:
        """Execute it for its effect, inside deferred_writes() together with the others (else at once).

        then(row count, rows returned) is called once it ran: the caller's result, when it needs one.
        """
        params = params or {}
        held: list[_Deferred] | None = conn.info.get(DEFERRED_KEY) if conn.dialect.name == "postgresql" else None
        if held is None:
            count, rows = self._outcome(conn, params)
            if then is not None:
                then(count, rows)
            return
        driver = self._driver(conn.dialect, params)
        if any(driver.shape.depends_on(item.driver.shape) for item in held):
            send_deferred(conn)
        held.append(_Deferred(driver, driver.parameters(params), then))

    def _outcome(self, conn: Connection, params: Params) -> tuple[int, list[dict[str, Any]]]:
        driver = self._driver(conn.dialect, params)
        rows, count = driver.execute(conn, params)
        return (len(rows) if driver.returns_rows else count), rows

    def _driver(self, dialect: Dialect, params: Params) -> _DriverStatement:
        key = (dialect.name, frozenset(params) if self._by_keys else None)
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key)
                if found is None:
                    if len(self._compiled) >= _COMPILED_LIMIT:
                        self._compiled.clear()
                    found = self._compiled[key] = _DriverStatement(
                        self.statement,
                        _SQLITE_NAMED if dialect.name == "sqlite" else dialect,
                        key[1],
                        known_rows_only=self.known_rows_only,
                    )
        return found


def _cursor(conn: Connection) -> Any:
    """The driver connection's own cursor, kept with it: a new cursor per statement cost ~15 us more."""
    pooled = conn.connection
    dbapi_connection = pooled.dbapi_connection
    cursor = pooled.info.get(_CURSOR_KEY)  # info lives as long as the driver connection
    if cursor is None or getattr(cursor, "closed", False) or cursor.connection is not dbapi_connection:
        assert dbapi_connection is not None
        cursor = pooled.info[_CURSOR_KEY] = dbapi_connection.cursor()
    return cursor


def _run(conn: Connection, dialect: Dialect, sql: str, values: dict[str, Any]) -> tuple[Any, list[Any], int]:
    """Execute on conn's driver cursor: (the cursor, the rows as the driver gives them, the row count)."""
    cursor = _cursor(conn)
    try:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, values, None, False)
        cursor.execute(sql, values)
        if dialect.name == "postgresql":
            # not cursor.description: psycopg builds it anew, one object per column, on every access
            returned = cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK
        else:
            returned = cursor.description is not None
        return cursor, cursor.fetchall() if returned else [], int(cursor.rowcount)
    except dialect.loaded_dbapi.Error as err:
        invalidated = dialect.is_disconnect(err, cursor.connection, cursor)
        if invalidated:
            conn.invalidate(err)
        raise sa.exc.DBAPIError.instance(
            sql, values, err, dialect.loaded_dbapi.Error, connection_invalidated=invalidated
        ) from err


class _DriverStatement:
    """One compilation: the SQL text, its parameter defaults and bind processors, its result keys."""

    def __init__(
        self, statement: Statement, dialect: Dialect, keys: frozenset[str] | None, *, known_rows_only: bool = False
    ) -> None:
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
        self.returns_rows = isinstance(statement, sa.Select) or bool(compiled.effective_returning)
        self._known_rows_only = known_rows_only

    @cached_property
    def shape(self) -> _Shape:
        """What it writes and reads, for deferred_writes()."""
        return _Shape.of(self.sql, returns_rows=self.returns_rows, known_rows_only=self._known_rows_only)

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
        return self.execute_values(conn, self.parameters(params))

    def execute_values(self, conn: Connection, values: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """execute() with the driver's parameters already made."""
        if conn.info.get(DEFERRED_KEY):
            send_deferred(conn)  # what was deferred before it comes first
        cursor, raw, rowcount = _run(conn, self.dialect, self.sql, values)
        if not raw:
            return [], rowcount
        processors = self.result_processors
        if processors is None:
            processors = self.result_processors = self._result_processors(cursor.description)
        return [self._row(row, processors) for row in raw], rowcount

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


# -- deferred writes: several statements of one transaction sent as one -----------------------------

# conn.info key: the writes Prepared.defer() holds inside deferred_writes(), in order
DEFERRED_KEY = "orderstream_deferred_writes"

# what a deferred write's caller learns once it ran: its row count and the rows it returned. Sent in a
# batch, the rows come back through JSON: numbers, text, lists and objects as JSON gives them
Then = Callable[[int, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class _Deferred:
    driver: _DriverStatement
    values: dict[str, Any]  # the driver's parameters, processed
    then: Then | None


@contextmanager
def deferred_writes(conn: Connection) -> Iterator[None]:
    """Writes deferred inside the block (Prepared.defer) reach PostgreSQL together, as one statement.

    Each statement still sees every write before it: a statement run any other way on conn first sends the
    deferred ones, and so does a deferred write that depends on one of them (see _Shape.depends_on). At the
    end of the block the rest go. A block that raises sends none of those still held. On SQLite, and nested,
    a plain block: defer() runs at once.
    """
    if conn.dialect.name != "postgresql" or DEFERRED_KEY in conn.info:
        yield
        return
    conn.info[DEFERRED_KEY] = []
    try:
        yield
        send_deferred(conn)
    finally:
        conn.info.pop(DEFERRED_KEY, None)


def send_deferred(conn: Connection) -> None:
    """Send the writes held on conn now (one statement for all), then tell each caller its outcome."""
    held: list[_Deferred] | None = conn.info.get(DEFERRED_KEY)
    while held:
        batch = list(held)
        held.clear()  # a caller told below may defer more: the next turn of the loop sends them
        if len(batch) == 1:
            one = batch[0]
            rows, count = one.driver.execute_values(conn, one.values)
            outcomes = [(count, rows)]
        else:
            outcomes = _send_together(conn, batch)
        for item, (count, rows) in zip(batch, outcomes, strict=True):
            if item.then is not None:
                item.then(count, rows)


def _send_together(conn: Connection, batch: list[_Deferred]) -> list[tuple[int, list[dict[str, Any]]]]:
    combined = _combined(tuple(item.driver for item in batch), tuple(item.then is not None for item in batch))
    values = {f"d{i}_{name}": value for i, item in enumerate(batch) for name, value in item.values.items()}
    (row,), _count = combined.execute_values(conn, values)
    outcomes: list[tuple[int, list[dict[str, Any]]]] = []
    for i, item in enumerate(batch):
        if item.then is None:
            outcomes.append((0, []))  # nobody asks
            continue
        returned = row[f"r{i}"]
        outcomes.append((len(returned), returned if item.driver.shape.returns_rows else []))
    return outcomes


class _TextStatement:
    """Several deferred writes as one statement: its SQL, run as it is (its columns are JSON and counts)."""

    def __init__(self, sql: str, dialect: Dialect) -> None:
        self.sql = sql
        self.dialect = dialect

    def execute_values(self, conn: Connection, values: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Run it: (rows as dicts, rowcount)."""
        cursor, raw, rowcount = _run(conn, self.dialect, self.sql, values)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in raw], rowcount


# keyed by the statements themselves (held, so that no other object takes their identity meanwhile)
_combined_cache: dict[tuple[tuple[_DriverStatement, ...], tuple[bool, ...]], _TextStatement] = {}


def _combined(drivers: tuple[_DriverStatement, ...], told: tuple[bool, ...]) -> _TextStatement:
    key = (drivers, told)
    found = _combined_cache.get(key)
    if found is None:
        if len(_combined_cache) >= 256:
            _combined_cache.clear()
        found = _combined_cache[key] = _TextStatement(_combined_sql(drivers, told), drivers[0].dialect)
    return found


def _combined_sql(drivers: tuple[_DriverStatement, ...], told: tuple[bool, ...]) -> str:
    """One statement of several: their CTEs hoisted (renamed where two share a name), each main part a CTE `d<i>`.

    PostgreSQL runs every data-modifying CTE once, referenced or not; a SELECT part runs when the final
    SELECT reads it, so every SELECT part is read, and every part whose caller wants its outcome returns
    its rows (`RETURNING 1` added where it returns none) as JSON in column `r<i>`.
    """
    ctes: list[str] = []
    taken: set[str] = {f"d{i}" for i in range(len(drivers))}
    outputs: list[str] = []
    for i, (driver, wants) in enumerate(zip(drivers, told, strict=True)):
        shape = driver.shape
        text = _PLACEHOLDER.sub(rf"%(d{i}_\1)s", driver.sql)
        for name in shape.cte_names:
            if name in taken:
                text = re.sub(rf"(?<![\w.]){name}(?!\w)", f"d{i}_{name}", text)
                name = f"d{i}_{name}"
            taken.add(name)
        own_ctes, main = _split_with(text)
        if wants and not shape.returns_rows and not shape.is_select:
            main += " RETURNING 1"
        ctes += own_ctes
        ctes.append(f"d{i} AS (\n{main}\n)")
        if wants:
            outputs.append(f"(SELECT coalesce(jsonb_agg(to_jsonb(d{i})), '[]') FROM d{i}) AS r{i}")
        elif shape.is_select:
            outputs.append(f"(SELECT count(*) FROM d{i}) AS r{i}")
    return "WITH " + ",\n".join(ctes) + "\nSELECT " + (", ".join(outputs) or "1")


_PLACEHOLDER = re.compile(r"(?<!%)%\((\w+)\)s")
_CTE_HEAD = re.compile(r"\s*(\w+)\s*(?:\([\w\s,\"]*\))?\s+AS\s+(?:(?:NOT\s+)?MATERIALIZED\s+)?\(", re.IGNORECASE)


def _split_with(sql: str) -> tuple[list[str], str]:
    """A statement's top-level CTEs (each `name AS (...)`) and its main part."""
    text = sql.strip()
    if text[:5].upper() != "WITH ":
        return [], text
    if text[5:15].upper().startswith("RECURSIVE"):
        raise ValueError("a recursive CTE cannot be deferred")
    ctes: list[str] = []
    pos = 5
    while True:
        head = _CTE_HEAD.match(text, pos)
        if head is None:
            raise ValueError(f"cannot read the CTEs of: {text[:200]}")
        end = _closing(text, head.end() - 1)
        ctes.append(text[head.start(1) : end + 1])
        pos = end + 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        return ctes, text[pos:].strip()


def _closing(text: str, start: int) -> int:
    """The index of the parenthesis closing the one at start (quoted strings and names skipped)."""
    depth = 0
    pos = start
    while pos < len(text):
        char = text[pos]
        if char in "'\"":
            pos = text.index(char, pos + 1)  # SQL doubles a quote inside: the next one reopens, same result
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    raise ValueError("unbalanced parentheses")


_INSERTS = re.compile(r"\bINSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_CHANGES = re.compile(r"\b(?:UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)
_READS = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)", re.IGNORECASE)
_NOT_TABLES = frozenset({"SET", "OF", "SKIP", "NOWAIT"})


@dataclass(frozen=True)
class _Shape:
    """What a statement writes and reads (tables by name, read off its SQL), for sending it with others."""

    inserts: frozenset[str]
    changes: frozenset[str]  # UPDATE, DELETE, and INSERT ... ON CONFLICT DO UPDATE
    reads: frozenset[str]
    cte_names: tuple[str, ...]
    is_select: bool
    returns_rows: bool
    known_rows_only: bool  # its changes touch only rows that existed before (Prepared's declaration)

    @classmethod
    def of(cls, sql: str, *, returns_rows: bool, known_rows_only: bool) -> _Shape:
        ctes, main = _split_with(sql) if sql.lstrip()[:5].upper() == "WITH " else ([], sql.strip())
        inserts = frozenset(_INSERTS.findall(sql))
        changes = frozenset(_CHANGES.findall(sql)) - _NOT_TABLES  # DO UPDATE SET, FOR UPDATE OF / SKIP LOCKED
        if re.search(r"\bDO\s+UPDATE\b", sql, re.IGNORECASE):
            changes |= inserts
        names = tuple(m.group(1) for m in (_CTE_HEAD.match(cte) for cte in ctes) if m is not None)
        reads = frozenset(_READS.findall(re.sub(r"\bDELETE\s+FROM\b", "DELETE", sql, flags=re.IGNORECASE)))
        return cls(
            inserts=inserts,
            changes=changes,
            reads=reads.difference(names),
            cte_names=names,
            is_select=main[:6].upper() == "SELECT",
            returns_rows=returns_rows,
            known_rows_only=known_rows_only,
        )

    def depends_on(self, earlier: _Shape) -> bool:
        """Whether this statement, run after `earlier`, must see its effects (or must not be seen by it)."""
        if self.changes & earlier.changes or self.changes & earlier.reads:
            return True
        inserted_before = self.changes & earlier.inserts
        if inserted_before and not self.known_rows_only:
            return True  # an UPDATE would also have changed the rows earlier inserted
        return bool((self.inserts | self.reads) & earlier.changes or self.reads & earlier.inserts)
