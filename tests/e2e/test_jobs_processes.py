"""Worker processes against one database: exactly-once effects, kill -9 recovery, cross-process wake-ups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orderstream.db import Database
from orderstream.jobs.outbox import enqueue
from tests.e2e.jobs_worker_proc import RUNS_DDL
from tests.jobs_helpers import job_row, unique_kind, wait_for

SCRIPT = Path(__file__).with_name("jobs_worker_proc.py")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Procs:
    """Worker subprocesses started by one test, always reaped."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, db_url: str, prefix: str, *args: str) -> subprocess.Popen[str]:
        log = (self.tmp_path / f"worker{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), db_url, prefix, *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert "ready" in proc.stdout.readline()
        return proc

    def stop_all(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(30) for proc in self.procs]

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp_path.glob("worker*.log")))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    started = Procs(tmp_path)
    yield started
    for proc in started.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def runs_db(db: Database) -> Database:
    """The database under test, with the table the test handlers write their effects to."""
    with db.write() as conn:
        conn.exec_driver_sql(RUNS_DDL)
    return db


def _runs(db: Database, job_ids: list[int], phase: str) -> list[tuple[int, str, float]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.text("SELECT job_id, worker, at FROM test_job_runs WHERE phase = :p AND job_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"p": phase, "ids": job_ids},
        ).all()
    return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]


def _statuses(db: Database, job_ids: list[int]) -> dict[str, int]:
    from orderstream.jobs.models import jobs

    with db.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.status, sa.func.count()).where(jobs.c.id.in_(job_ids)).group_by(jobs.c.status)
        ).all()
    return {str(status): int(count) for status, count in rows}


def test_several_worker_processes_run_each_job_exactly_once(runs_db: Database, db_url: str, procs: Procs) -> None:
    db = runs_db
    prefix = unique_kind("many")
    for _ in range(3):
        procs.start(db_url, prefix, "--concurrency", "4", "--idle", "1")
    job_ids: list[int] = []
    for _batch in range(6):  # enqueued while the workers are already claiming
        with db.write() as conn:
            for _ in range(100):
                job_id = enqueue(conn, kind=f"{prefix}_record", payload={"seconds": 0.002})
                assert job_id is not None
                job_ids.append(job_id)
    wait_for(lambda: _statuses(db, job_ids).get("done") == len(job_ids), timeout=180, interval=0.2)
    runs = _runs(db, job_ids, "run")
    assert len(runs) == 600  # every handler effect happened once: no job ran twice
    assert {job_id for job_id, _w, _at in runs} == set(job_ids)
    with db.read() as conn:
        from orderstream.jobs.models import jobs

        attempts = conn.execute(sa.select(sa.func.max(jobs.c.attempts)).where(jobs.c.id.in_(job_ids))).scalar()
    assert attempts == 1
    workers = {worker for _j, worker, _at in runs}
    assert len(workers) >= 2, "the load was not shared"
    assert procs.stop_all() == [0, 0, 0], procs.logs()


def test_job_of_a_killed_worker_is_completed_by_another_after_its_lease(
    runs_db: Database, db_url: str, procs: Procs
) -> None:
    db = runs_db
    prefix = unique_kind("kill")
    pids = {procs.start(db_url, prefix, "--lease", "2", "--idle", "0.5").pid for _ in range(2)}
    with db.write() as conn:
        job_id = enqueue(conn, kind=f"{prefix}_slow", payload={"seconds": 3})
    assert job_id is not None
    wait_for(lambda: _runs(db, [job_id], "start"), timeout=30)
    victim = job_row(db, job_id)["leased_by"]
    victim_pid = int(victim.split(":")[-2])
    assert victim_pid in pids
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: job_row(db, job_id)["status"] == "done", timeout=40, interval=0.1)
    row = job_row(db, job_id)
    assert row["attempts"] == 2
    assert row["leased_by"] != victim
    starts = _runs(db, [job_id], "start")
    dones = _runs(db, [job_id], "done")
    assert [w for _j, w, _at in starts][0] == victim
    assert len(starts) == 2
    assert len(dones) == 1  # the killed attempt never finished; the second one finished once
    assert dones[0][1] == row["leased_by"]
    # it was taken over only after the lease (2 s) had run out, and soon after
    second_start = max(at for _j, _w, at in starts)
    assert 0 < second_start - killed_at < 2 + 3
    assert sorted(procs.stop_all()) == [-signal.SIGKILL, 0], procs.logs()


def test_sigterm_lets_the_running_job_finish(runs_db: Database, db_url: str, procs: Procs) -> None:
    db = runs_db
    prefix = unique_kind("term")
    proc = procs.start(db_url, prefix, "--idle", "0.2")
    with db.write() as conn:
        job_id = enqueue(conn, kind=f"{prefix}_slow", payload={"seconds": 1.5})
    assert job_id is not None
    wait_for(lambda: _runs(db, [job_id], "start"), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, procs.logs()
    assert job_row(db, job_id)["status"] == "done"
    assert len(_runs(db, [job_id], "done")) == 1


def _listening(db: Database) -> bool:
    with db.read() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).scalar()
        )


def test_job_enqueued_by_another_process_wakes_the_worker(runs_db: Database, db_url: str, procs: Procs) -> None:
    """PostgreSQL: LISTEN/NOTIFY beats a 30 s idle poll. SQLite: the idle poll (1 s) is the only signal."""
    db = runs_db
    prefix = unique_kind("wake")
    postgres = db.engine.dialect.name == "postgresql"
    idle = 30.0 if postgres else 1.0
    procs.start(db_url, prefix, "--idle", str(idle))
    if postgres:
        wait_for(lambda: _listening(db), timeout=20)
    time.sleep(idle + 0.2 if not postgres else 0.5)
    latencies = []
    for _ in range(5):
        with db.write() as conn:
            job_id = enqueue(conn, kind=f"{prefix}_record", payload={})
        committed = time.time()
        assert job_id is not None
        wait_for(lambda jid=job_id: _runs(db, [jid], "run"), timeout=idle + 10, interval=0.005)  # type: ignore[misc]
        latencies.append(_runs(db, [job_id], "run")[0][2] - committed)
        time.sleep(0.37)  # land somewhere inside the idle wait
    print(
        f"cross-process wake latency ({db.engine.dialect.name}, idle poll {idle} s): "
        f"max {max(latencies) * 1000:.0f} ms, all {[round(x * 1000) for x in latencies]} ms"
    )
    assert max(latencies) < (1.0 if postgres else idle + 1.0)
    assert procs.stop_all() == [0]


def test_orderstream_worker_command_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_")}
    env["ORDERSTREAM_DATABASE_URL"] = f"sqlite:///{tmp_path}/cli.db"
    env["ORDERSTREAM_LOG_LEVEL"] = "INFO"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("orderstream")), "worker", "--concurrency", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while "job worker started" not in proc.stderr.readline():
            assert time.monotonic() < deadline
            assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
