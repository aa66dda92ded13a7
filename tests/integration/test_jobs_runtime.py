"""Job state changes on SQLite and PostgreSQL: outbox, claim, lease expiry, fencing, dedupe, replay."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.db import Database, utcnow
from orderstream.jobs import runtime
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import BATCH_KEY, ENQUEUED_FLAG, batch, collect, enqueue, write
from tests.jobs_helpers import job_row, unique_kind


def _claim(db: Database, kinds: dict[str, float], *, worker: str = "w1", limit: int = 10, now=None):  # type: ignore[no-untyped-def]
    with db.write() as conn:
        return runtime.claim(conn, worker_id=worker, kinds=kinds, limit=limit, now=now)


def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(db: Database) -> None:
    kind = unique_kind("rollback")

    class Boom(Exception):
        pass

    def enqueue_then_fail() -> None:
        with db.write() as conn:
            assert enqueue(conn, kind=kind, payload={"order_id": 1}) is not None
            raise Boom

    with pytest.raises(Boom):
        enqueue_then_fail()
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(jobs.c.kind == kind)).scalar() == 0
    assert _claim(db, {kind: 30}) == []


def test_claim_then_complete(db: Database) -> None:
    kind = unique_kind("claim")
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, payload={"n": 1})
    [job] = _claim(db, {kind: 30})
    assert (job.id, job.kind, job.payload, job.attempts) == (job_id, kind, {"n": 1}, 1)
    row = job_row(db, job.id)
    assert row["status"] == "running"
    assert row["leased_by"] == "w1"
    assert row["leased_until"] > utcnow() + timedelta(seconds=25)
    # a running job with a live lease is not claimed again
    assert _claim(db, {kind: 30}, worker="w2") == []
    with db.write() as conn:
        assert runtime.complete(conn, job=job) is True
    row = job_row(db, job.id)
    assert row["status"] == "done"
    assert row["finished_at"] is not None
    assert row["leased_until"] is None
    assert _claim(db, {kind: 30}, worker="w2") == []


def test_claim_takes_due_jobs_in_run_at_order_up_to_the_limit(db: Database) -> None:
    kind = unique_kind("order")
    now = utcnow()
    with db.write() as conn:
        late = enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=1))
        early = enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=10))
        future = enqueue(conn, kind=kind, payload={}, run_at=now + timedelta(seconds=60))
        middle = enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=5))
    first = _claim(db, {kind: 120}, limit=2, now=now)
    assert [job.id for job in first] == [early, middle]
    second = _claim(db, {kind: 120}, limit=5, now=now)
    assert [job.id for job in second] == [late]
    with db.read() as conn:
        assert runtime.next_due(conn, kinds=[kind]) == now + timedelta(seconds=60)
    # the scheduled job is claimable exactly from its run_at
    assert _claim(db, {kind: 120}, now=now + timedelta(seconds=59.9)) == []
    assert [job.id for job in _claim(db, {kind: 120}, now=now + timedelta(seconds=60))] == [future]
    with db.read() as conn:
        assert runtime.next_due(conn, kinds=[kind]) == now + timedelta(seconds=120)  # the first lease end


def test_per_kind_lease_lengths(db: Database) -> None:
    short, long = unique_kind("short"), unique_kind("long")
    now = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=short, payload={}, run_at=now)
        enqueue(conn, kind=long, payload={}, run_at=now)
    claimed = {job.kind: job for job in _claim(db, {short: 5, long: 600}, now=now)}
    assert job_row(db, claimed[short].id)["leased_until"] == now + timedelta(seconds=5)
    assert job_row(db, claimed[long].id)["leased_until"] == now + timedelta(seconds=600)


def test_unregistered_kind_waits_visible(db: Database) -> None:
    known, unknown = unique_kind("known"), unique_kind("dispatch")
    with db.write() as conn:
        waiting = enqueue(conn, kind=unknown, payload={"order_id": "o1"})
        enqueue(conn, kind=known, payload={})
    assert [job.kind for job in _claim(db, {known: 30})] == [known]
    assert _claim(db, {known: 30}) == []
    row = job_row(db, waiting)  # type: ignore[arg-type]
    assert (row["status"], row["attempts"], row["leased_by"]) == ("pending", 0, None)
    with db.read() as conn:
        listed = runtime.list_jobs(conn, status="pending", kind=unknown)
        stats = {entry["kind"]: entry for entry in runtime.stats(conn)}
    assert [job["id"] for job in listed] == [waiting]
    assert stats[unknown]["pending"] == 1
    assert stats[unknown]["oldest_due_lag_seconds"] >= 0


def test_expired_lease_is_reclaimed_and_the_stale_holder_is_fenced_out(db: Database) -> None:
    kind = unique_kind("lease")
    t0 = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={}, run_at=t0)
    [stale] = _claim(db, {kind: 10}, worker="w1", now=t0)
    # still leased: nobody else gets it
    assert _claim(db, {kind: 10}, worker="w2", now=t0 + timedelta(seconds=9)) == []
    # the lease ran out (w1 died or hung): w2 takes over, as a new attempt
    [fresh] = _claim(db, {kind: 10}, worker="w2", now=t0 + timedelta(seconds=11))
    assert fresh.id == stale.id
    assert fresh.attempts == 2
    with db.write() as conn:
        # the stale holder can neither renew, nor complete, nor fail it
        assert runtime.renew(conn, job=stale, lease_seconds=10) is False
        assert runtime.complete(conn, job=stale) is False
        assert runtime.fail(conn, job=stale, error="late", retry_in=1) is None
    row = job_row(db, fresh.id)
    assert (row["status"], row["leased_by"], row["attempts"], row["last_error"]) == ("running", "w2", 2, None)
    with db.write() as conn:
        assert runtime.renew(conn, job=fresh, lease_seconds=10) is True
        assert runtime.complete(conn, job=fresh) is True
    assert job_row(db, fresh.id)["status"] == "done"


def test_same_worker_reclaiming_its_own_expired_lease_is_fenced_by_attempt(db: Database) -> None:
    kind = unique_kind("self")
    t0 = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={}, run_at=t0)
    [first] = _claim(db, {kind: 1}, worker="w1", now=t0)
    [second] = _claim(db, {kind: 1}, worker="w1", now=t0 + timedelta(seconds=2))
    with db.write() as conn:
        assert runtime.complete(conn, job=first) is False
        assert runtime.complete(conn, job=second) is True


def test_renewed_lease_is_not_reclaimed(db: Database) -> None:
    kind = unique_kind("renew")
    t0 = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={}, run_at=t0)
    [job] = _claim(db, {kind: 10}, now=t0)
    with db.write() as conn:
        assert runtime.renew(conn, job=job, lease_seconds=10, now=t0 + timedelta(seconds=8)) is True
    assert _claim(db, {kind: 10}, worker="w2", now=t0 + timedelta(seconds=12)) == []
    assert len(_claim(db, {kind: 10}, worker="w2", now=t0 + timedelta(seconds=19))) == 1


def test_failure_reschedules_then_dead_letters(db: Database) -> None:
    kind = unique_kind("fail")
    t0 = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={}, run_at=t0)
    [job] = _claim(db, {kind: 30}, now=t0)
    with db.write() as conn:
        assert runtime.fail(conn, job=job, error="provider 503", retry_in=5, now=t0) == "pending"
    row = job_row(db, job.id)
    assert (row["status"], row["run_at"], row["last_error"], row["leased_by"]) == (
        "pending",
        t0 + timedelta(seconds=5),
        "provider 503",
        None,
    )
    assert _claim(db, {kind: 30}, now=t0 + timedelta(seconds=4)) == []
    [again] = _claim(db, {kind: 30}, now=t0 + timedelta(seconds=5))
    assert again.attempts == 2
    with db.write() as conn:
        assert runtime.fail(conn, job=again, error="x" * 10_000, retry_in=None) == "dead"
    row = job_row(db, job.id)
    assert row["status"] == "dead"
    assert row["finished_at"] is not None
    assert len(row["last_error"]) == runtime.MAX_ERROR_CHARS
    assert _claim(db, {kind: 30}, now=t0 + timedelta(days=1)) == []


def test_key_dedupes_while_active_and_frees_after_done(db: Database) -> None:
    kind = unique_kind("dedupe")
    with db.write() as conn:
        first = enqueue(conn, kind=kind, key="order-1", payload={"v": 1})
        assert first is not None
        assert enqueue(conn, kind=kind, key="order-1", payload={"v": 2}) is None
        other = enqueue(conn, kind=kind, key="order-2", payload={})
        assert other is not None
    # in a later transaction, and while running, still one active job per key
    [job] = _claim(db, {kind: 30}, limit=1)
    assert job.id == first
    with db.write() as conn:
        assert enqueue(conn, kind=kind, key="order-1", payload={"v": 3}) is None
        runtime.complete(conn, job=job)
    with db.write() as conn:
        again = enqueue(conn, kind=kind, key="order-1", payload={"v": 4})
    assert again is not None
    assert again != first
    # another kind with the same key is independent
    with db.write() as conn:
        assert enqueue(conn, kind=unique_kind("dedupe_other"), key="order-1", payload={}) is not None


def test_retry_dead_job_puts_it_back_to_pending(db: Database) -> None:
    kind = unique_kind("replay")
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, key="k1", payload={})
    [job] = _claim(db, {kind: 30})
    with db.write() as conn:
        runtime.fail(conn, job=job, error="boom", retry_in=None)
    # while it is dead the key is free: a new job may take it, and then the dead one cannot come back
    with db.write() as conn:
        newer = enqueue(conn, kind=kind, key="k1", payload={})
    with pytest.raises(runtime.JobError) as excinfo, db.write() as conn:
        runtime.retry_dead(conn, job_id=job.id)
    assert excinfo.value.code == "job_duplicate"
    [newer_job] = _claim(db, {kind: 30})
    assert newer_job.id == newer
    with db.write() as conn:
        runtime.complete(conn, job=newer_job)
        row = runtime.retry_dead(conn, job_id=job.id)
    assert (row["status"], row["attempts"], row["last_error"], row["finished_at"]) == ("pending", 0, "boom", None)
    [replayed] = _claim(db, {kind: 30})
    assert (replayed.id, replayed.attempts) == (job_id, 1)
    with pytest.raises(runtime.JobError) as excinfo, db.write() as conn:
        runtime.retry_dead(conn, job_id=job.id)
    assert excinfo.value.code == "job_not_dead"
    with pytest.raises(runtime.JobError) as excinfo, db.write() as conn:
        runtime.retry_dead(conn, job_id=10**12)
    assert excinfo.value.code == "job_not_found"


def _jobs_of(db: Database, *kinds: str) -> list[tuple[str, str | None, dict]]:  # type: ignore[type-arg]
    with db.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.kind, jobs.c.key, jobs.c.payload).where(jobs.c.kind.in_(kinds)).order_by(jobs.c.id)
        )
        return [(r.kind, r.key, r.payload) for r in rows]


def test_a_batch_writes_its_jobs_together_with_the_usual_dedupe(db: Database) -> None:
    keyed, plain = unique_kind("batch_keyed"), unique_kind("batch_plain")
    with db.write() as conn:
        enqueue(conn, kind=keyed, key="k1", payload={"n": 0})
    with db.write() as conn:
        with batch(conn):
            assert enqueue(conn, kind=keyed, key="k1", payload={"n": 1}) is None  # active already: skipped
            enqueue(conn, kind=keyed, key="k2", payload={"n": 2})
            enqueue(conn, kind=keyed, key="k2", payload={"n": 3})  # twice in one batch: once
            for n in range(4, 14):  # more rows than one statement takes
                enqueue(conn, kind=plain, payload={"n": n})
            assert conn.execute(sa.select(sa.func.count()).where(jobs.c.kind == plain)).scalar() == 0  # not yet
        enqueued = set(conn.info.get(ENQUEUED_FLAG, ()))
    assert enqueued == {keyed, plain}  # an in-process worker is woken for both kinds
    assert _jobs_of(db, keyed, plain) == [
        (keyed, "k1", {"n": 0}),
        (keyed, "k2", {"n": 2}),
        *[(plain, None, {"n": n}) for n in range(4, 14)],
    ]


def test_a_batch_that_raises_writes_nothing(db: Database) -> None:
    kind = unique_kind("batch_raise")

    def enqueue_then_fail(conn: Connection) -> None:
        with batch(conn):
            enqueue(conn, kind=kind, payload={})
            raise RuntimeError("the change failed")

    with db.write() as conn:
        with pytest.raises(RuntimeError):
            enqueue_then_fail(conn)
        assert BATCH_KEY not in conn.info
        enqueue(conn, kind=kind, payload={"after": True})  # outside the batch: written at once
    assert _jobs_of(db, kind) == [(kind, None, {"after": True})]


def test_collected_jobs_wait_for_the_caller_to_write_them(db: Database) -> None:
    kind = unique_kind("collected")
    with db.write() as conn:
        with collect(conn) as pending:
            assert enqueue(conn, kind=kind, key="k", payload={"n": 1}) is None
            enqueue(conn, kind=kind, payload={"n": 2})
            with pytest.raises(RuntimeError, match="collected"), collect(conn):
                pass  # one collector per connection: a second would steal the first one's jobs
        assert [values["payload"] for values in pending] == [{"n": 1}, {"n": 2}]
        assert BATCH_KEY not in conn.info
        assert conn.execute(sa.select(sa.func.count()).where(jobs.c.kind == kind)).scalar() == 0
        write(conn, pending)
        assert conn.info.get(ENQUEUED_FLAG) == {kind}
    assert _jobs_of(db, kind) == [(kind, "k", {"n": 1}), (kind, None, {"n": 2})]


def _plan(conn: Connection, stmt: sa.Executable, params: dict[str, object]) -> str:
    """The plan the database picks for stmt; on PostgreSQL a generic one, as a prepared statement gets after a few
    runs (the parameters' values unknown to it)."""
    compiled = stmt.compile(dialect=conn.dialect)
    if conn.dialect.name == "sqlite":
        values = tuple(None for _ in compiled.positiontup or ())  # the plan does not depend on them
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
        return "\n".join(str(row[-1]) for row in rows)
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    raw = conn.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute("EXPLAIN " + str(compiled), compiled.construct_params(params), prepare=True)
        return "\n".join(row[0] for row in cursor.fetchall())


def _finished_jobs(db: Database, kind: str, count: int, now: datetime, *, inserted_as: str) -> None:
    """count done jobs of kind (inserted as `inserted_as`, then done), with fresh planner statistics."""
    row = {"kind": kind, "payload": {}, "status": inserted_as, "run_at": now, "created_at": now, "updated_at": now}
    with db.write() as conn:
        conn.execute(sa.insert(jobs), [row] * count)
        conn.execute(sa.update(jobs).where(jobs.c.kind == kind).values(status="done"))
        conn.exec_driver_sql("ANALYZE jobs")


def _claim_params(kinds: tuple[str, ...], now: datetime) -> dict[str, object]:
    params: dict[str, object] = {"claim_now": now, "claim_limit": 5, "claim_worker": "w", "claim_lease_max": now}
    return params | {f"claim_lease_{i}": now for i in range(len(kinds))}


def test_claim_and_next_due_use_the_partial_indexes_not_a_scan_of_all_jobs(db: Database) -> None:
    """Finished jobs pile up; finding the next due job must not read them (it once scanned the whole table)."""
    kinds = (unique_kind("plan-a"), unique_kind("plan-b"))
    now = utcnow()
    _finished_jobs(db, kinds[0], 3000, now, inserted_as="done")
    with db.write() as conn:
        next_due = _plan(conn, runtime._next_due_statement(kinds), {})
    with db.write() as conn:
        claim = _plan(conn, runtime._claim_statement(kinds), _claim_params(kinds, now))
    for plan in (next_due, claim):
        # (a generic plan of `status = $1` read every job to find the running ones)
        assert "Seq Scan on jobs" not in plan, plan
        assert "SCAN jobs" not in plan.splitlines(), plan  # SQLite's full scan (an index's ordered scan names it)


def test_the_claim_loop_reads_due_jobs_and_expired_leases_in_index_order(db: Database) -> None:
    """A bitmap scan read every claimed job's leftover index entries on every claim (5 ms a claim after 30 s at
    100 orders/s); the claim loop's connection scans each partial index in order, which marks them dead once."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner; SQLite has no bitmap scans")
    kinds = (unique_kind("ordered-a"), unique_kind("ordered-b"))
    now = utcnow()
    _finished_jobs(db, kinds[0], 2000, now, inserted_as="pending")  # each left an entry in the pending index
    statement = runtime._claim_statement(kinds, ((kinds[0],), (kinds[1],)))
    held = db.held(runtime.CLAIM_SESSION_SETTINGS)
    with held.statements() as conn:
        plan = _plan(conn, statement, _claim_params(kinds, now))
    held.close()
    assert "Bitmap" not in plan, plan
    assert plan.count("Index Scan using ix_jobs_pending_run_at") == 2, plan
    assert plan.count("Index Scan using") >= 5, plan  # and the expired leases' (by either index), and the update


def test_next_due_reads_one_pending_job_however_many_are_scheduled(db: Database) -> None:
    """Thousands of scheduled checks (acceptance, reconcile) in a table whose statistics predate them: the next-due
    query reads the first one only (min() over the same rows read all of them on a young table)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's plan and row counts; SQLite picks its index without statistics")
    kind = unique_kind("scheduled")
    now = utcnow()
    with db.write() as conn:
        conn.exec_driver_sql("ANALYZE jobs")  # statistics from before the scheduled jobs, as in a young database
    with db.write() as conn:
        rows = [
            {
                "kind": kind,
                "key": f"k{i}",
                "payload": {},
                "status": "pending",
                "run_at": now + timedelta(seconds=60 + i),
                "created_at": now,
                "updated_at": now,
            }
            for i in range(2000)
        ]
        conn.execute(sa.insert(jobs), rows)
    with db.write() as conn:
        compiled = runtime._next_due_statement((kind,)).compile(dialect=conn.dialect)
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}").scalar_one()
        assert runtime.next_due(conn, kinds=[kind]) == now + timedelta(seconds=60)

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    scans = [n for n in nodes(plan[0]["Plan"]) if n.get("Index Name") == "ix_jobs_pending_run_at"]
    assert scans, plan
    assert [scan["Actual Rows"] for scan in scans] == [1], plan


def test_urgent_kinds_are_claimed_before_older_jobs_of_other_kinds(db: Database) -> None:
    urgent, normal, other = unique_kind("urgent"), unique_kind("normal"), unique_kind("other")
    now = utcnow()
    ids: dict[str, list[int]] = {urgent: [], normal: [], other: []}
    with db.write() as conn:
        for kind, ages in ((normal, (50, 40)), (other, (45,)), (urgent, (5, 2)), (normal, (30,))):
            for age in ages:
                job_id = enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=age))
                assert job_id is not None
                ids[kind].append(job_id)
        # not due yet: never claimed, however urgent
        enqueue(conn, kind=urgent, payload={}, run_at=now + timedelta(seconds=60))
    kinds = {urgent: 30.0, normal: 30.0, other: 30.0}
    priorities = {urgent: runtime.URGENT}  # the others default to NORMAL

    def claim(worker: str, limit: int) -> list[int]:
        with db.write() as conn:
            found = runtime.claim(conn, worker_id=worker, kinds=kinds, limit=limit, priorities=priorities)
        return [job.id for job in found]

    # both urgent jobs (the oldest first), then the oldest of the rest
    assert claim("w1", 3) == [*ids[urgent], ids[normal][0]]
    assert claim("w2", 10) == [ids[other][0], ids[normal][1], ids[normal][2]]
    assert claim("w3", 10) == []
    # without priorities, the same kinds are claimed by due time alone
    with db.write() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.kind.in_(list(kinds))).values(status="pending", leased_by=None))
        found = runtime.claim(conn, worker_id="w4", kinds=kinds, limit=2, now=now)
    assert [job.id for job in found] == [ids[normal][0], ids[other][0]]
