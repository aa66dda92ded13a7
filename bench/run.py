"""The benchmark: orderstream and the floor app, one after the other, on SQLite and on PostgreSQL.

For each database: a fresh database; `orderstream migrate`, a partner and a location through the CLI;
`orderstream serve` as a real process, loaded by bench/loadgen.py (closed loop at 32 connections,
then paced at a fixed rate); the same for bench/floor_app.py on the same database. Prints one table
with accepted/s, p50/p99 and errors per app and the ratio orderstream / floor.

    make bench                                   # both databases, defaults below
    .venv/bin/python bench/run.py --databases sqlite --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import EventFactory, Result, run_async, run_load  # noqa: E402

DEFAULT_PG = os.environ.get("ORDERSTREAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LOCATION_ID = "location_456"


def free_port() -> int:
    """A TCP port the OS just reported free."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orderstream_cmd() -> list[str]:
    """The `orderstream` script of this interpreter."""
    script = Path(sys.executable).parent / "orderstream"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from orderstream.cli import main; main()"]


def child_env(db_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without ORDERSTREAM_* settings, plus the database and extras."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_")}
    env["ORDERSTREAM_DATABASE_URL"] = db_url
    env.update(extra or {})
    return env


def cli(args: list[str], db_url: str) -> Any:
    """Run `orderstream <args> --json` and parse its output."""
    out = subprocess.run(
        [*orderstream_cmd(), *args], env=child_env(db_url), capture_output=True, text=True, check=False, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"orderstream {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else out.stdout


def machine() -> str:
    """What the figures were measured on."""
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs ({model or 'unknown'}), "
        f"Python {platform.python_version()}, load average at start {load:.2f}"
    )


@contextmanager
def database(kind: str, workdir: Path, pg_admin: str) -> Iterator[str]:
    """A fresh database URL of that kind, dropped afterwards (PostgreSQL)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    name = f"orderstream_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        pg_admin.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield pg_admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def postgres_reachable(url: str) -> bool:
    """True when the admin URL answers."""
    try:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means no PostgreSQL
        return False
    return True


@contextmanager
def server(args: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """A server process answering /readyz on port; SIGTERM (then SIGKILL) on exit."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[:3]} exited with {proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[:3]} not ready after 60 s; see {log_path}")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def count_rows(db_url: str, table: str) -> int:
    """Rows stored in a table (to check that every 200 was stored)."""
    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608 - fixed names
    finally:
        engine.dispose()


def measure(url: str, secret: str, opts: argparse.Namespace) -> tuple[Result, Result, int]:
    """Closed loop then paced load against one URL; also the total number of 200s (warm-up included)."""
    factory = EventFactory(secret, LOCATION_ID)
    closed, closed_ids = run_async(
        run_load(url, factory, duration=opts.duration, warmup=opts.warmup, concurrency=opts.concurrency)
    )
    paced, paced_ids = run_async(
        run_load(url, factory, duration=opts.paced_duration, warmup=0, concurrency=opts.concurrency, rate=opts.rate)
    )
    return closed, paced, len(closed_ids) + len(paced_ids)


def bench_database(kind: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Both apps on one fresh database of that kind."""
    out: dict[str, Any] = {"database": kind}
    with database(kind, workdir, opts.postgres_url) as db_url:
        cli(["migrate"], db_url)
        partner = cli(["partners", "add", "bench", "--json"], db_url)
        cli(
            ["locations", "add", "--partner", "bench", "--id", LOCATION_ID, "--name", "Main Street Burgers",
             "--street", "1 Main St", "--city", "Anytown", "--state", "CA", "--postal-code", "12345",
             "--country", "US", "--phone", "+14155550100", "--timezone", "America/Los_Angeles", "--json"],
            db_url,
        )  # fmt: skip
        secret = partner["secret"]
        extra = dict(kv.split("=", 1) for kv in opts.env)
        port = free_port()
        serve = [*orderstream_cmd(), "serve", "--host", "127.0.0.1", "--port", str(port), *opts.serve_arg]
        print(f"[{kind}] orderstream serve on :{port} ...", flush=True)
        if "orderstream" in opts.apps:
            with server(serve, child_env(db_url, extra), port, workdir / f"orderstream-{kind}.log") as base:
                closed, paced, acked = measure(f"{base}/pos/bench/webhook", secret, opts)
            stored = count_rows(db_url, "orders")
            out["orderstream"] = {"closed": asdict(closed), "paced": asdict(paced), "acked": acked, "stored": stored}
            print(f"  orderstream {closed.line()}\n  orderstream {paced.line()}\n  200s={acked} stored={stored}")
        if "floor" not in opts.apps:
            return out
        port = free_port()
        floor = [sys.executable, str(HERE / "floor_app.py"), "--database-url", db_url, "--port", str(port)]
        print(f"[{kind}] floor app on :{port} ...", flush=True)
        with server(floor, child_env(db_url), port, workdir / f"floor-{kind}.log") as base:
            closed, paced, acked = measure(f"{base}/pos/bench/webhook", secret, opts)
        stored = count_rows(db_url, "floor_orders")
        out["floor"] = {"closed": asdict(closed), "paced": asdict(paced), "acked": acked, "stored": stored}
        print(f"  floor       {closed.line()}\n  floor       {paced.line()}\n  200s={acked} stored={stored}")
    return out


def table(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    """The summary table (Markdown)."""
    head = (
        f"| database | app | accepted/s (32 conn) | p50 ms | p99 ms | errors | paced {opts.rate:g}/s p50 ms "
        "| paced p99 ms | paced errors | 200s stored |"
    )
    lines = [head, "|" + "---|" * 10]
    for res in results:
        for app in ("orderstream", "floor"):
            if app not in res:
                continue
            c, p = res[app]["closed"], res[app]["paced"]
            lines.append(
                f"| {res['database']} | {app} | {c['accepted_per_s']:.0f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
                f"| {c['errors']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} "
                f"| {res[app]['stored']}/{res[app]['acked']} |"
            )
        if "orderstream" not in res or "floor" not in res:
            continue
        floor_rate = res["floor"]["closed"]["accepted_per_s"]
        ratio = res["orderstream"]["closed"]["accepted_per_s"] / floor_rate if floor_rate else 0.0
        res["ratio"] = round(ratio, 2)
        lines.append(f"| {res['database']} | **ratio orderstream / floor** | **{ratio:.2f}** | | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="an admin URL; a fresh database is created")
    parser.add_argument("--duration", type=float, default=20.0, help="closed-loop seconds per app")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0, help="paced mode: events per second")
    parser.add_argument("--paced-duration", type=float, default=15.0)
    parser.add_argument("--apps", default="orderstream,floor", help="which apps to measure (default both)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for orderstream serve (repeatable)")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for orderstream serve")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    opts = parser.parse_args()
    kinds = [k.strip() for k in opts.databases.split(",") if k.strip()]
    if "postgres" in kinds and not postgres_reachable(opts.postgres_url):
        print(f"PostgreSQL not reachable at {opts.postgres_url}: skipped")
        kinds.remove("postgres")
    workdir = Path(tempfile.mkdtemp(prefix="orderstream-bench-"))
    header = machine()
    print(header, flush=True)
    results = [bench_database(kind, opts, workdir) for kind in kinds]
    print()
    print(f"Machine: {header}")
    print(
        f"Load: {opts.concurrency} connections, closed loop {opts.duration:g} s after {opts.warmup:g} s warm-up; "
        f"paced {opts.rate:g}/s for {opts.paced_duration:g} s; unique signed order.created events (docs example)"
    )
    print(table(results, opts))
    if opts.json:
        opts.json.write_text(json.dumps({"machine": header, "options": vars(opts) | {"json": str(opts.json)},
                                         "results": results}, indent=2, default=str))  # fmt: skip
    if opts.keep:
        print(f"logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
