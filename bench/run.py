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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # loadgen, and the tests' process helpers

from tests.e2e.harness import free_port, orderstream_command, process_env, run_cli  # noqa: E402

from loadgen import EventFactory, Result, run_async, run_load  # noqa: E402

DEFAULT_PG = os.environ.get("ORDERSTREAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LOCATION_ID = "location_456"
CLI_MAIN = "from orderstream.cli import main; main()"


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system CPU time of every PostgreSQL process on this machine (its backends, WAL writer, ...)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if (stat.parent / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


@contextmanager
def server(args: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[tuple[str, int]]:
    """A server process answering /readyz on port, as (base URL, pid); SIGTERM (then SIGKILL) on exit."""
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
        yield base, proc.pid
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


def measure_round(url: str, pid: int, factory: EventFactory, opts: argparse.Namespace) -> dict[str, Any]:
    """One round against one app: closed loop (with the server's CPU per 200), then paced."""
    cpu_before, db_cpu_before = cpu_seconds(pid), postgres_cpu_seconds()
    closed, closed_ids = run_async(
        run_load(url, factory, duration=opts.duration, warmup=opts.warmup, concurrency=opts.concurrency)
    )
    cpu, db_cpu = cpu_seconds(pid) - cpu_before, postgres_cpu_seconds() - db_cpu_before
    paced, paced_ids = run_async(
        run_load(url, factory, duration=opts.paced_duration, warmup=0, concurrency=opts.concurrency, rate=opts.rate)
    )
    return {
        "closed": asdict(closed),
        "paced": asdict(paced),
        "acked": len(closed_ids) + len(paced_ids),
        "cpu_ms_per_200": round(cpu * 1000 / len(closed_ids), 2) if closed_ids else None,
        # PostgreSQL as a whole (all its processes) over the same closed loop, warm-up included like the server
        "db_cpu_ms_per_200": round(db_cpu * 1000 / len(closed_ids), 2) if closed_ids else None,
    }


def ratio_of(app_round: dict[str, Any], floor_round: dict[str, Any]) -> float:
    """accepted/s of an app over the floor's, in one round."""
    return round(app_round["closed"]["accepted_per_s"] / max(floor_round["closed"]["accepted_per_s"], 0.1), 2)


def median(values: list[float]) -> float:
    """The median (the lower middle for an even count)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2] if ordered else 0.0


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median figures over the rounds of one app."""

    def med(phase: str, key: str) -> float:
        return median([r[phase][key] for r in rounds])

    return {
        "accepted_per_s": med("closed", "accepted_per_s"),
        "p50_ms": med("closed", "p50_ms"),
        "p99_ms": med("closed", "p99_ms"),
        "errors": sum(r["closed"]["errors"] for r in rounds),
        "paced_p50_ms": med("paced", "p50_ms"),
        "paced_p99_ms": med("paced", "p99_ms"),
        "paced_errors": sum(r["paced"]["errors"] for r in rounds),
        "cpu_ms_per_200": median([r["cpu_ms_per_200"] or 0.0 for r in rounds]),
        "db_cpu_ms_per_200": median([r["db_cpu_ms_per_200"] or 0.0 for r in rounds]),
        "acked": sum(r["acked"] for r in rounds),
    }


def bench_database(kind: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Both apps on one fresh database of that kind, loaded in turn for several rounds."""
    out: dict[str, Any] = {"database": kind, "rounds": {}}
    with database(kind, workdir, opts.postgres_url) as db_url, ExitStack() as stack:
        run_cli(["migrate"], db_url=db_url)
        partner = run_cli(["partners", "add", "bench", "--json"], db_url=db_url)
        run_cli(
            ["locations", "add", "--partner", "bench", "--id", LOCATION_ID, "--name", "Main Street Burgers",
             "--street", "1 Main St", "--city", "Anytown", "--state", "CA", "--postal-code", "12345",
             "--country", "US", "--phone", "+14155550100", "--timezone", "America/Los_Angeles", "--json"],
            db_url=db_url,
        )  # fmt: skip
        # intake only: the jobs an order causes are committed with it (that cost is measured) and are run by
        # workers elsewhere; the embedded worker would dispatch to the sandbox simulators in the same process
        extra = {"ORDERSTREAM_EMBEDDED_WORKER": "false", **dict(kv.split("=", 1) for kv in opts.env)}
        floor_cmd = [sys.executable, str(HERE / "floor_app.py"), "--database-url", db_url]
        serve = ["serve", "--host", "127.0.0.1"]
        commands = {
            "orderstream": ([*orderstream_command(), *serve], process_env(db_url, extra), "orders"),
            "floor": (floor_cmd, process_env(db_url), "floor_orders"),
        }
        if opts.baseline_src:
            # the same serve from another source tree (e.g. `git archive <commit> src`), to compare two versions
            baseline_env = process_env(db_url, {**extra, "PYTHONPATH": str(opts.baseline_src.resolve())})
            commands["baseline"] = ([sys.executable, "-c", CLI_MAIN, *serve], baseline_env, "orders")
        targets: dict[str, tuple[str, int]] = {}
        for app in opts.apps:
            args, env, _table = commands[app]
            port = free_port()
            args = [*args, "--port", str(port), *(opts.serve_arg if app != "floor" else [])]
            targets[app] = stack.enter_context(server(args, env, port, workdir / f"{app}-{kind}.log"))
            print(f"[{kind}] {app} on :{port} (pid {targets[app][1]})", flush=True)
        factory = EventFactory(partner["secret"], LOCATION_ID)
        for number in range(1, opts.rounds + 1):
            for app, (base, pid) in targets.items():
                result = measure_round(f"{base}/pos/bench/webhook", pid, factory, opts)
                out["rounds"].setdefault(app, []).append(result)
                closed, paced = Result(**result["closed"]), Result(**result["paced"])
                db_cpu = f"  postgres cpu/200={result['db_cpu_ms_per_200']} ms" if kind == "postgres" else ""
                print(f"  round {number} {app:<11} {closed.line()}  cpu/200={result['cpu_ms_per_200']} ms{db_cpu}")
                print(f"  round {number} {app:<11} {paced.line()}", flush=True)
        for app in targets:
            out[app] = summarize(out["rounds"][app])
        for app in targets:
            # orderstream and its baseline share the orders table: their 200s are checked together
            sharing = [a for a in targets if commands[a][2] == commands[app][2]]
            out[app]["stored"] = count_rows(db_url, commands[app][2])
            out[app]["acked_checked"] = sum(out[a]["acked"] for a in sharing)
    return out


def table(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    """The summary table (Markdown): medians over the rounds."""
    head = (
        f"| database | app | accepted/s (32 conn) | p50 ms | p99 ms | errors | paced {opts.rate:g}/s p50 ms "
        "| paced p99 ms | paced errors | server CPU ms per 200 | PostgreSQL CPU ms per 200 | 200s stored |"
    )
    lines = [head, "|" + "---|" * 12]
    for res in results:
        for app in ("orderstream", "baseline", "floor"):
            if app not in res:
                continue
            f = res[app]
            db_cpu = f"{f['db_cpu_ms_per_200']:.2f}" if res["database"] == "postgres" else "(in the server)"
            lines.append(
                f"| {res['database']} | {app} | {f['accepted_per_s']:.0f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} "
                f"| {f['errors']} | {f['paced_p50_ms']:.1f} | {f['paced_p99_ms']:.1f} | {f['paced_errors']} "
                f"| {f['cpu_ms_per_200']:.2f} | {db_cpu} | {f['stored']}/{f['acked_checked']} |"
            )
        for app in ("orderstream", "baseline"):
            if app not in res or "floor" not in res:
                continue
            pairs = zip(res["rounds"][app], res["rounds"]["floor"], strict=True)
            ratios = [ratio_of(o, f) for o, f in pairs]
            key = "ratio" if app == "orderstream" else "baseline_ratio"
            res[key] = median(ratios)
            res[f"{key}_per_round"] = ratios
            lines.append(
                f"| {res['database']} | **ratio {app} / floor** | **{res[key]:.2f}** "
                f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}) | | | | | | | | | |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="an admin URL; a fresh database is created")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each loads every app in turn")
    parser.add_argument("--duration", type=float, default=10.0, help="closed-loop seconds per app and round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50.0, help="paced mode: events per second")
    parser.add_argument("--paced-duration", type=float, default=8.0)
    parser.add_argument("--apps", default="orderstream,floor", help="which apps to measure (default both)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for orderstream serve (repeatable)")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for orderstream serve")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also measure `serve` from this source directory (app `baseline`), e.g. `git archive <commit> src`",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    opts = parser.parse_args()
    opts.apps = [a.strip() for a in opts.apps.split(",") if a.strip()]
    if opts.baseline_src and "baseline" not in opts.apps:
        opts.apps.insert(1, "baseline")
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
        f"Load: {opts.rounds} rounds, each app in turn: {opts.concurrency} connections closed loop {opts.duration:g} s "
        f"after {opts.warmup:g} s warm-up, then paced {opts.rate:g}/s for {opts.paced_duration:g} s; unique signed "
        "order.created events (docs example); medians over the rounds"
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
