"""Which deferred writes may go to PostgreSQL as one statement: what each writes and reads, read off its SQL."""

from __future__ import annotations

import pytest

from orderstream.prepared import _Shape, _split_with


def _shape(sql: str, *, known_rows_only: bool = False) -> _Shape:
    return _Shape.of(sql, returns_rows=False, known_rows_only=known_rows_only)


def test_tables_written_and_read_and_the_ctes() -> None:
    shape = _shape(
        "WITH c AS (INSERT INTO a (x) VALUES (1) ON CONFLICT (x) DO UPDATE SET x = 2 RETURNING a.x) "
        "UPDATE b SET y = 1 FROM c JOIN d ON d.id = c.x WHERE b.id = c.x"
    )
    assert shape.inserts == {"a"}
    assert shape.changes == {"a", "b"}  # an upsert changes rows
    assert shape.reads == {"d"}  # c is the statement's own CTE
    assert shape.cte_names == ("c",)
    assert not shape.is_select
    assert _shape("DELETE FROM e WHERE id = 1").changes == {"e"}
    assert _shape("DELETE FROM e WHERE id = 1").reads == frozenset()
    assert _shape("SELECT f.id FROM f FOR UPDATE OF f SKIP LOCKED").changes == frozenset()


def test_inserts_go_together_and_a_known_row_update_after_them() -> None:
    jobs_in = _shape("INSERT INTO jobs (kind) SELECT 'a'")
    history_in = _shape("INSERT INTO order_history (kind) SELECT 'a'")
    done = _shape("UPDATE jobs SET status = 'done' WHERE id = 1", known_rows_only=True)
    by_kind = _shape("UPDATE jobs SET status = 'dead' WHERE kind = 'a'")
    assert not jobs_in.depends_on(jobs_in)  # two inserts into one table
    assert not history_in.depends_on(jobs_in)
    assert not done.depends_on(jobs_in)  # it cannot touch the rows just inserted
    assert by_kind.depends_on(jobs_in)  # it could
    assert jobs_in.depends_on(done)  # an insert after an update sees it (unique keys of active jobs)
    assert done.depends_on(done)  # two changes of one table
    assert _shape("INSERT INTO x SELECT id FROM jobs").depends_on(jobs_in)  # a read of what went in
    assert _shape("UPDATE orders SET status = 'x' WHERE id = 'o'").depends_on(_shape("SELECT id FROM orders"))


def test_the_parts_of_a_statement_with_ctes() -> None:
    ctes, main = _split_with(
        "WITH a AS \n(SELECT ')(' AS \"x)\"), b(n) AS NOT MATERIALIZED (SELECT (1)) SELECT * FROM a"
    )
    assert ctes == ["a AS \n(SELECT ')(' AS \"x)\")", "b(n) AS NOT MATERIALIZED (SELECT (1))"]
    assert main == "SELECT * FROM a"
    assert _split_with("UPDATE jobs SET x = 1") == ([], "UPDATE jobs SET x = 1")
    with pytest.raises(ValueError, match="recursive"):
        _split_with("WITH RECURSIVE a AS (SELECT 1) SELECT * FROM a")
