"""Dispatch lag: from an order accepted by the POS webhook to the DoorDash simulator receiving its booking.

Starts, as separate processes, the DoorDash simulator (`orderstream simulate doordash`), `orderstream serve`
(with its embedded worker, or `--workers N` separate `orderstream worker` processes) on a fresh database,
creates a partner and a location through the CLI, then:

1. ASAP: posts signed `order.created` delivery orders (the docs' example, unique ids) at `--rate` per
   second for `--duration` seconds, open loop. Lag = the simulator's receive time of the booking
   (`POST /quotes/{id}/accept` or `POST /deliveries`, from its `/_sim/requests` record) minus the
   order's `created_at` (both clocks are this machine's).
2. Scheduled: posts `--future` future orders whose dispatch falls over the next `--future-spread`
   seconds. Error = the booking's receive time minus the dispatch job's planned `run_at`.

With `--app floor` the server is bench/dispatch_floor_app.py instead (the least work a durable dispatcher on the
same stack does: intake, job, quote, accept, done), measured the same way; PostgreSQL and ASAP orders only.

Percentiles are nearest-rank. Orders never booked within `--settle` seconds are counted as missing.
All ASAP orders are the docs' one customer unless `--distinct-customers` is given: that customer's confirmations
stop at the hourly cap (8), so by default the orders' messages are planned and skipped, not sent; with the flag each
order sends its SMS (to the in-process Twilio simulator) and its e-mail (to the log), as real orders do.
The simulator sends no lifecycle webhooks unless `--lifecycle` is given (they add ~8 requests per
order to the server's load; the benchmark measures dispatch).

    .venv/bin/python bench/dispatch_lag.py --db sqlite --rate 100 --duration 60 --future 120
    .venv/bin/python bench/dispatch_lag.py --db postgres --workers 2 --json results.json
    .venv/bin/python bench/dispatch_lag.py --db postgres --app floor --rate 100 --duration 30 --future 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import harness  # noqa: E402  (the e2e harness starts and stops the processes)
from tests.pos_helpers import legacy_order  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from run import cpu_seconds as process_cpu_seconds  # noqa: E402  (bench/run.py: fresh databases, machine line)
from run import database, machine, postgres_cpu_seconds  # noqa: E402

PG_ADMIN = os.environ.get("ORDERSTREAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GOAL_LAG_P99_MS = 250.0
GOAL_SCHEDULE_P99_MS = 1000.0
FLOOR_APP = ROOT / "bench" / "dispatch_floor_app.py"
PREP_MINUTES = 10  # sent with each future order, so that its dispatch time is requested_for - (prep + travel)


def order_event(pos_id: str, location_id: str, *, requested_for: datetime | None = None) -> dict[str, Any]:
    """The docs' in-store delivery order with a unique POS id; a future order when requested_for is set."""
    if requested_for is None:
        return legacy_order(pos_id, location_id=location_id)
    when = requested_for.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return legacy_order(
        pos_id, location_id=location_id, is_future_order=True, requested_for=when, prep_time_minutes=PREP_MINUTES
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank q-quantile (0 < q <= 1) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


@dataclass
class Sent:
    """One order posted by the load generator."""

    pos_id: str
    future: bool
    status: int | str = 0
    latency_ms: float = 0.0


@dataclass
class Summary:
    """Figures of one run on one database."""

    database: str
    workers: str
    rate: float
    duration: float
    app: str = "orderstream"
    posted: int = 0
    accepted: int = 0
    intake_p99_ms: float | None = None
    booked: int = 0
    missing: int = 0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    # part of the lag until the simulator received the quote request (wake-up, claim, job start, HTTP)
    to_quote_p50_ms: float | None = None
    to_quote_p99_ms: float | None = None
    future_posted: int = 0
    future_booked: int = 0
    schedule_error_p50_ms: float | None = None
    schedule_error_p99_ms: float | None = None
    schedule_error_max_ms: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    cpu_ms_per_order: float = 0.0  # the app's processes (serve and workers, or the floor): intake + dispatch
    simulator_cpu_ms_per_order: float = 0.0
    postgres_cpu_ms_per_order: float | None = None  # every PostgreSQL process of the machine (PostgreSQL runs)
    # serve's embedded worker, by job kind: handler threads' CPU per order and runs per order (from /metrics)
    job_cpu_ms_per_order: dict[str, float] = field(default_factory=dict)
    job_runs_per_order: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human-readable result lines."""
        goal = "met" if self.lag_p99_ms is not None and self.lag_p99_ms <= GOAL_LAG_P99_MS else "NOT met"
        if self.future_posted == 0:
            sched_goal = "not measured: no future orders"
        elif self.schedule_error_p99_ms is not None and self.schedule_error_p99_ms <= GOAL_SCHEDULE_P99_MS:
            sched_goal = "met"
        else:
            sched_goal = "NOT met"
        return [
            f"[{self.database}, {self.workers}] {self.rate:g} orders/s for {self.duration:g} s: posted {self.posted}, "
            f"accepted {self.accepted} (intake p99 {_ms(self.intake_p99_ms)}), statuses {self.statuses}; "
            f"CPU per order: {self.app} {self.cpu_ms_per_order:g} ms, "
            f"simulator {self.simulator_cpu_ms_per_order:g} ms"
            + ("" if self.postgres_cpu_ms_per_order is None else f", PostgreSQL {self.postgres_cpu_ms_per_order:g} ms"),
            f"  dispatch lag  p50 {_ms(self.lag_p50_ms)}  p99 {_ms(self.lag_p99_ms)}  max {_ms(self.lag_max_ms)}  "
            f"booked {self.booked}, missing {self.missing}  (goal p99 <= {GOAL_LAG_P99_MS:g} ms: {goal})",
            f"    of which until the quote request: p50 {_ms(self.to_quote_p50_ms)}  p99 {_ms(self.to_quote_p99_ms)}",
            *(
                [
                    "  job handlers' CPU per order (runs per order): "
                    + ", ".join(
                        f"{kind} {ms:g} ms ({self.job_runs_per_order.get(kind, 0):g})"
                        for kind, ms in sorted(self.job_cpu_ms_per_order.items(), key=lambda kv: -kv[1])
                    )
                ]
                if self.job_cpu_ms_per_order
                else []
            ),
            f"  schedule err  p50 {_ms(self.schedule_error_p50_ms)}  p99 {_ms(self.schedule_error_p99_ms)}  "
            f"max {_ms(self.schedule_error_max_ms)}  booked {self.future_booked}/{self.future_posted}  "
            f"(goal p99 <= {GOAL_SCHEDULE_P99_MS:g} ms: {sched_goal})",
        ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


# --- processes ------------------------------------------------------------------------------------------


def start_simulator(
    log_dir: Path, *, webhook_url: str | None, step_seconds: float
) -> tuple[harness.ManagedProcess, str]:
    """`orderstream simulate doordash` on a free port, ready."""
    port = harness.free_port()
    args = [
        *harness.orderstream_command(),
        "simulate",
        "doordash",
        "--port",
        str(port),
        "--step-seconds",
        str(step_seconds),
    ]
    if webhook_url:
        args += ["--webhook-url", webhook_url]
    proc = harness.ManagedProcess(
        "doordash simulator", args, env=harness.process_env("sqlite://"), log_path=log_dir / "simulator.log"
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    harness.wait_for(lambda: _answers(f"{url}/_sim/health"), timeout=harness.READY_TIMEOUT, message="simulator ready")
    return proc, url


def start_floor(
    db_url: str, log_dir: Path, *, sim_url: str, secret: str, threads: int
) -> tuple[harness.ManagedProcess, str]:
    """bench/dispatch_floor_app.py on a free port, ready."""
    port = harness.free_port()
    args = [sys.executable, str(FLOOR_APP), "--database-url", db_url, "--port", str(port)]
    args += ["--doordash-url", sim_url, "--secret", secret, "--threads", str(threads)]
    proc = harness.ManagedProcess(
        "dispatch floor", args, env=harness.process_env(db_url), log_path=log_dir / "floor.log"
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    ready = harness.wait_for(
        lambda: "ready" if _answers(f"{url}/readyz") else ("exited" if not proc.running else None),
        timeout=harness.READY_TIMEOUT,
        message="dispatch floor ready",
    )
    if ready == "exited":
        raise harness.ProcessError(f"the dispatch floor exited:\n{proc.log_tail()}")
    return proc, url


def cpu_seconds(procs: list[harness.ManagedProcess]) -> float:
    """User + system CPU the processes used so far."""
    return sum(process_cpu_seconds(proc.pid) for proc in procs)


def job_counters(base_url: str) -> dict[str, dict[str, float]]:
    """Per job kind, from serve's /metrics: handler CPU seconds ("cpu") and runs ("runs") so far."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    out: dict[str, dict[str, float]] = {"cpu": {}, "runs": {}}
    for family in text_string_to_metric_families(text):
        which = {"orderstream_job_cpu_seconds": "cpu", "orderstream_jobs_claimed": "runs"}.get(family.name)
        for sample in family.samples:
            if which and sample.name.endswith("_total"):
                out[which][sample.labels["kind"]] = sample.value
    return out


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- load -----------------------------------------------------------------------------------------------


async def post_orders(url: str, secret: str, events: list[tuple[float, Sent, bytes]], *, in_flight: int = 128) -> None:
    """Post each body at its offset (seconds from now), whatever the answers do (open loop).

    At most `in_flight` requests are open at once; an event that waits for a slot still counts its latency
    from its scheduled time. (Thousands of requests queued inside httpx's pool make the client itself spin.)
    """
    slots = asyncio.Semaphore(in_flight)
    # a pooled connection is dropped before uvicorn's keep-alive timeout (5 s) closes it: at the same expiry a
    # request sent just as the server closes its idle connection fails (ReadError) without an answer
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight, keepalive_expiry=2.0)

    async def one(client: httpx.AsyncClient, sent: Sent, body: bytes, due: float) -> None:
        headers = {"Content-Type": "application/json", "Stream-Webhook-Signature": harness.sign_hex(secret, body)}
        async with slots:
            try:
                resp = await client.post(url, content=body, headers=headers)
                sent.status = resp.status_code
            except httpx.HTTPError as err:
                sent.status = type(err).__name__
        sent.latency_ms = (time.perf_counter() - due) * 1000

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, pool=None)) as client:
        start = time.perf_counter()
        tasks = []
        for offset, sent, body in events:
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, sent, body, due)))
        await asyncio.gather(*tasks)


def received(sim_url: str, kinds: tuple[str, ...], *, booked_only: bool) -> dict[str, float]:
    """external_delivery_id -> when the simulator first received such a request, epoch seconds."""
    out: dict[str, float] = {}
    for kind in kinds:
        rows = httpx.get(f"{sim_url}/_sim/requests", params={"kind": kind}, timeout=60).json()["requests"]
        for row in rows:
            if (row.get("booked") or not booked_only) and row.get("external_delivery_id"):
                key = row["external_delivery_id"]
                out[key] = min(out.get(key, row["received_at"]), row["received_at"])
    return out


def bookings(sim_url: str) -> dict[str, float]:
    """external_delivery_id -> when the simulator received its (first successful) booking."""
    return received(sim_url, ("accept", "create"), booked_only=True)


def read_orders(db_url: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """POS id -> {order_id, created_at, planned}, and attempt external_id -> order id."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    meta = sa.MetaData()
    orders = sa.Table("orders", meta, autoload_with=engine)
    jobs = sa.Table("jobs", meta, autoload_with=engine)
    attempts = sa.Table("delivery_attempts", meta, autoload_with=engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(orders.c.id, orders.c.source_order_id, orders.c.created_at)).all()
        # the first dispatch job of a future order runs early with a generic lead and re-enqueues itself at
        # the precise dispatch time under the key "<order id>:at": that run_at is the plan
        planned: dict[str, datetime] = {}
        for key, run_at in conn.execute(
            sa.select(jobs.c.key, jobs.c.run_at).where(jobs.c.kind == "dispatch").order_by(jobs.c.id)
        ):
            order_id, _, precise = str(key).partition(":")
            if precise or order_id not in planned:
                planned[order_id] = run_at
        external = {ext: oid for ext, oid in conn.execute(sa.select(attempts.c.external_id, attempts.c.order_id))}
    engine.dispose()
    by_pos = {
        pos: {"order_id": oid, "created_at": _epoch(created), "planned": _epoch(planned.get(oid))}
        for oid, pos, created in rows
    }
    return by_pos, external


def read_floor_orders(db_url: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """read_orders for the dispatch floor's tables (no future orders: nothing is planned)."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    meta = sa.MetaData()
    orders = sa.Table("dispatch_floor_orders", meta, autoload_with=engine)
    jobs = sa.Table("dispatch_floor_jobs", meta, autoload_with=engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(orders.c.id, orders.c.pos_id, orders.c.created_at)).all()
        done = conn.execute(sa.select(jobs.c.external_id, jobs.c.order_id).where(jobs.c.external_id.is_not(None)))
        external = {ext: str(oid) for ext, oid in done}
    engine.dispose()
    by_pos = {pos: {"order_id": str(oid), "created_at": _epoch(created), "planned": None} for oid, pos, created in rows}
    return by_pos, external


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


# --- one run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, kind: str) -> Summary:
    """Start everything on a fresh database of this kind, load it, measure, stop everything."""
    workdir = Path(tempfile.mkdtemp(prefix=f"dispatch-lag-{kind}-"))
    logs = workdir / "logs"
    logs.mkdir()
    procs: list[harness.ManagedProcess] = []
    with database(kind, workdir, PG_ADMIN) as db_url:
        try:
            if args.app == "floor":
                partner = harness.Partner(
                    slug="floor", secret=secrets.token_hex(16), api_key="", location_id="location_456"
                )
                sim, sim_url = start_simulator(logs, webhook_url=None, step_seconds=args.step_seconds)
                procs.append(sim)
                floor, floor_url = start_floor(
                    db_url, logs, sim_url=sim_url, secret=partner.secret, threads=args.floor_threads
                )
                procs.append(floor)
                return measure(args, kind, db_url, floor_url, partner, sim_url, procs)
            harness.run_cli(["migrate"], db_url=db_url)
            partner = harness.create_partner(db_url)
            server_port = harness.free_port()
            webhook = f"http://127.0.0.1:{server_port}/providers/doordash/webhook" if args.lifecycle else None
            sim, sim_url = start_simulator(logs, webhook_url=webhook, step_seconds=args.step_seconds)
            procs.append(sim)
            env = {
                "ORDERSTREAM_LOG_LEVEL": "WARNING",
                "ORDERSTREAM_DOORDASH_BASE_URL": sim_url,
                "ORDERSTREAM_DISPATCH_SANDBOX": "false",
                "ORDERSTREAM_DISPATCH_PROVIDERS": "doordash",
                "ORDERSTREAM_DEFAULT_RATE_LIMIT_PER_MINUTE": "1000000",
                **dict(kv.split("=", 1) for kv in args.env),
            }
            server = harness.start_server(
                db_url, log_dir=logs, env=env, port=server_port, embedded_worker=args.workers == 0
            )
            procs.append(server)
            for n in range(args.workers):
                procs.append(harness.start_worker(db_url, log_dir=logs, env=env, name=f"worker-{n}"))
            return measure(args, kind, db_url, server.base_url, partner, sim_url, procs)
        finally:
            for proc in reversed(procs):
                proc.stop(timeout=15)
            print(f"  logs: {logs}", file=sys.stderr)


def warm_up(url: str, partner: harness.Partner, sim_url: str) -> dict[str, float]:
    """One order through the whole path first: every process is up (workers too) and has its connections."""
    body = json.dumps(order_event(f"warm-{uuid.uuid4().hex[:8]}", partner.location_id)).encode()
    headers = {"Content-Type": "application/json", "Stream-Webhook-Signature": harness.sign_hex(partner.secret, body)}
    resp = httpx.post(url, content=body, headers=headers, timeout=30)
    resp.raise_for_status()
    found: dict[str, float] = harness.wait_for(
        lambda: bookings(sim_url), timeout=120, interval=0.2, message="the warm-up order booked"
    )
    return found


def measure(
    args: argparse.Namespace,
    kind: str,
    db_url: str,
    base_url: str,
    partner: harness.Partner,
    sim_url: str,
    procs: list[harness.ManagedProcess],
) -> Summary:
    """Post the load, wait for the bookings, and compute the figures."""
    run_id = uuid.uuid4().hex[:8]
    events: list[tuple[float, Sent, bytes]] = []
    total = int(args.rate * args.duration)
    for i in range(total):
        sent = Sent(pos_id=f"lag-{run_id}-{i}", future=False)
        event = order_event(sent.pos_id, partner.location_id)
        if args.distinct_customers:
            # each order its own customer: every order's confirmation goes out (one phone would hit the hourly cap)
            event["data"]["order"]["customer"].update(
                phone=f"+1415555{i % 10000:04d}", email=f"c{run_id}{i}@example.com"
            )
        events.append((i / args.rate, sent, json.dumps(event).encode()))
    # future orders: their dispatch is due between 10 s and future_spread s from now
    now = datetime.now(UTC)
    lead = timedelta(minutes=PREP_MINUTES + args.travel_minutes)
    for i in range(args.future):
        offset = 10 + (args.future_spread - 10) * i / max(1, args.future - 1)
        sent = Sent(pos_id=f"sched-{run_id}-{i}", future=True)
        body = json.dumps(
            order_event(sent.pos_id, partner.location_id, requested_for=now + lead + timedelta(seconds=offset))
        )
        events.append((i * 0.2, sent, body.encode()))
    events.sort(key=lambda e: e[0])
    url = f"{base_url}/pos/{partner.slug}/webhook"
    baseline = len(warm_up(url, partner, sim_url))
    ours, simulator = procs[1:], procs[:1]
    embedded = args.app == "orderstream" and args.workers == 0
    jobs_before = job_counters(base_url) if embedded else None
    cpu_before = (cpu_seconds(ours), cpu_seconds(simulator), postgres_cpu_seconds())
    asyncio.run(post_orders(url, partner.secret, events))

    sent_all = [e[1] for e in events]
    accepted = [s for s in sent_all if s.status == 200]
    deadline = time.monotonic() + max(args.settle, args.future_spread + args.settle - args.duration)
    while True:
        booked = bookings(sim_url)
        if len(booked) - baseline >= len(accepted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    cpu_ours, cpu_sim = cpu_seconds(ours) - cpu_before[0], cpu_seconds(simulator) - cpu_before[1]
    cpu_db = postgres_cpu_seconds() - cpu_before[2]
    per_order = 1 / max(1, len(accepted))
    job_cpu: dict[str, float] = {}
    job_runs: dict[str, float] = {}
    if jobs_before is not None:
        jobs_after = job_counters(base_url)
        for job_kind, seconds in jobs_after["cpu"].items():
            job_cpu[job_kind] = round((seconds - jobs_before["cpu"].get(job_kind, 0.0)) * 1000 * per_order, 2)
        for job_kind, runs in jobs_after["runs"].items():
            job_runs[job_kind] = round((runs - jobs_before["runs"].get(job_kind, 0.0)) * per_order, 2)
    by_pos, external = read_floor_orders(db_url) if args.app == "floor" else read_orders(db_url)
    booked_by_order = {external[ext]: at for ext, at in booked.items() if ext in external}
    quoted_by_order = {
        external[ext]: at for ext, at in received(sim_url, ("quote",), booked_only=False).items() if ext in external
    }

    lags: list[float] = []
    to_quote: list[float] = []
    errors: list[float] = []
    missing = 0
    for sent in accepted:
        order = by_pos.get(sent.pos_id)
        at = booked_by_order.get(order["order_id"]) if order else None
        if order is None or at is None:
            missing += 1
            continue
        if sent.future:
            if order["planned"] is not None:
                errors.append((at - order["planned"]) * 1000)
        elif order["created_at"] is not None:
            lags.append((at - order["created_at"]) * 1000)
            if order["order_id"] in quoted_by_order:
                to_quote.append((quoted_by_order[order["order_id"]] - order["created_at"]) * 1000)
    statuses: dict[str, int] = {}
    for sent in sent_all:
        statuses[str(sent.status)] = statuses.get(str(sent.status), 0) + 1
    asap = [s for s in sent_all if not s.future]
    if args.app == "floor":
        workers = f"floor, {args.floor_threads} dispatcher threads"
    else:
        workers = "embedded worker" if args.workers == 0 else f"{args.workers} worker processes"
    return Summary(
        database=kind,
        workers=workers,
        app=args.app,
        rate=args.rate,
        duration=args.duration,
        posted=len(asap),
        accepted=sum(1 for s in asap if s.status == 200),
        intake_p99_ms=percentile([s.latency_ms for s in asap], 0.99),
        booked=len(lags),
        missing=missing,
        lag_p50_ms=percentile(lags, 0.50),
        lag_p99_ms=percentile(lags, 0.99),
        lag_max_ms=max(lags) if lags else None,
        to_quote_p50_ms=percentile(to_quote, 0.50),
        to_quote_p99_ms=percentile(to_quote, 0.99),
        future_posted=args.future,
        future_booked=len(errors),
        schedule_error_p50_ms=percentile(errors, 0.50),
        schedule_error_p99_ms=percentile(errors, 0.99),
        schedule_error_max_ms=max(errors) if errors else None,
        statuses=statuses,
        cpu_ms_per_order=round(cpu_ours * 1000 / max(1, len(accepted)), 1),
        simulator_cpu_ms_per_order=round(cpu_sim * 1000 / max(1, len(accepted)), 1),
        postgres_cpu_ms_per_order=round(cpu_db * 1000 / max(1, len(accepted)), 1) if kind == "postgres" else None,
        job_cpu_ms_per_order=job_cpu,
        job_runs_per_order=job_runs,
    )


def main() -> None:
    """Command line: one run per database, printed (and written as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--app", choices=("orderstream", "floor"), default="orderstream", help="floor: see docstring")
    parser.add_argument("--floor-threads", type=int, default=8, help="the floor's dispatcher threads (--app floor)")
    parser.add_argument("--rate", type=float, default=100.0, help="ASAP orders per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of ASAP load")
    parser.add_argument("--future", type=int, default=120, help="how many future orders")
    parser.add_argument("--future-spread", type=float, default=120.0, help="their dispatch falls within this many s")
    parser.add_argument("--travel-minutes", type=float, default=15.0, help="the server's courier travel minutes")
    parser.add_argument("--workers", type=int, default=0, help="0: serve's embedded worker; N: N worker processes")
    parser.add_argument(
        "--distinct-customers",
        action="store_true",
        help="a phone and e-mail per ASAP order (default: the docs' one customer, messages stop at the hourly cap)",
    )
    parser.add_argument("--settle", type=float, default=60.0, help="how long to wait for late bookings")
    parser.add_argument("--lifecycle", action="store_true", help="let the simulator send lifecycle webhooks")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="simulator lifecycle step (with --lifecycle)")
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for serve/worker (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the summaries to this file")
    args = parser.parse_args()
    if args.app == "floor":
        if args.db != "postgres":
            parser.error("--app floor runs on PostgreSQL only: pass --db postgres")
        if args.future > 0:
            parser.error("--app floor dispatches ASAP orders only: pass --future 0")
        if args.workers or args.lifecycle or args.env:
            parser.error("--workers, --lifecycle and --env are orderstream's: not with --app floor")
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    print(machine(), flush=True)
    results = []
    for kind in kinds:
        summary = run(args, kind)
        results.append(summary)
        print("\n".join(summary.lines()), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
