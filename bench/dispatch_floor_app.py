"""The dispatch floor: the least work a durable dispatcher on orderstream's stack does per order.

bench/dispatch_lag.py --app floor measures it against orderstream on the same machine, like bench/floor_app.py
does for the intake alone. One process: uvicorn with the options of `orderstream serve`, a bare Starlette app,
sync SQLAlchemy Core with psycopg on PostgreSQL, httpx to the DoorDash simulator.

What it does, and nothing more:

- `POST /pos/{partner_slug}/webhook`: checks the `Stream-Webhook-Signature` (hex HMAC-SHA256 of the body with
  `--secret`), parses the JSON, takes the POS order id (`data.order.provider_id`) and stores the order (id, POS id,
  created_at, raw body) and its job (queued, due now) with one statement, a transaction of its own, then 200;
- dispatcher threads (`--threads`, default 8) in the same process: each claims up to `--claim-batch` due jobs
  with one statement (`FOR UPDATE SKIP LOCKED`, a lease: a job claimed by a process that died runs again once
  its lease is over), asks the simulator for a quote and accepts it (Drive v2, a JWT made by orderstream's
  `make_jwt` with the simulator's default credentials), then marks the job done with the external delivery id
  (= the order id) in one statement. Idle threads wait for a commit of the intake (in-process wake-up), or
  1 s at most.

What it does not do: no partner or location lookup, no idempotency (a POS event posted twice is two orders), no
validation of the order, no order state machine or history, no line items, no tracking, no customer
notifications, no outbound webhooks to the POS, no retries with back-off (a failed job runs again when its
lease is over), no acceptance or reconcile checks, no metrics or logs per request. PostgreSQL only.

    python bench/dispatch_floor_app.py --database-url postgresql://postgres@127.0.0.1:5432/floor --port 8100 \\
        --doordash-url http://127.0.0.1:8710 --secret whsec_any
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orderstream.deliveries.providers.doordash.client import make_jwt
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor_app import make_engine  # noqa: E402  (the intake floor's engine: same driver and pool)

log = logging.getLogger("dispatch_floor")

LEASE_SECONDS = 60
# the pickup side: the floor has no locations, so every order is picked up at the bench's one location
STORE = {
    "pickup_address": "1 Main St, Anytown, CA 12345, US",
    "pickup_business_name": "Main Street Burgers",
    "pickup_phone_number": "+14155550100",
}

metadata = sa.MetaData()
orders = sa.Table(
    "dispatch_floor_orders",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("pos_id", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
jobs = sa.Table(
    "dispatch_floor_jobs",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.BigInteger, sa.ForeignKey(orders.c.id), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued, running (leased until run_at), done
    sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("external_id", sa.String(64)),
    sa.Index("ix_dispatch_floor_jobs_due", "run_at", postgresql_where=sa.text("status <> 'done'")),
)

# the order and its job: one statement, so one transaction even in autocommit
INTAKE = sa.text(
    "WITH o AS (INSERT INTO dispatch_floor_orders (pos_id, created_at, body) VALUES (:pos_id, :now, :body) "
    "RETURNING id) "
    "INSERT INTO dispatch_floor_jobs (order_id, status, run_at) SELECT id, 'queued', :now FROM o RETURNING order_id"
)
# due jobs (queued, or leased by a process that died), leased to us, with their order's body
CLAIM = sa.text(
    "UPDATE dispatch_floor_jobs AS j SET status = 'running', run_at = now() + make_interval(secs => :lease) "
    "FROM dispatch_floor_orders AS o "
    "WHERE o.id = j.order_id AND j.id IN ("
    "SELECT id FROM dispatch_floor_jobs WHERE status <> 'done' AND run_at <= now() "
    "ORDER BY run_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "RETURNING j.id, o.id, o.body"
)
DONE = sa.text("UPDATE dispatch_floor_jobs SET status = 'done', external_id = :external_id WHERE id = :id")


def quote_body(external_id: str, body: str) -> dict[str, Any]:
    """The quote request for an order: the fields orderstream sends, read straight from the POS body."""
    order = json.loads(body)["data"]["order"]
    address, customer = order["delivery_address"], order["customer"]
    return {
        "external_delivery_id": external_id,
        **STORE,
        "pickup_reference_tag": external_id,
        "dropoff_address": ", ".join(
            [address["street"], address["city"], f"{address['state']} {address['zip']}", address["country"]]
        ),
        "dropoff_phone_number": customer["phone"],
        "dropoff_contact_given_name": customer["name"],
        "dropoff_contact_send_notifications": False,
        "order_value": order["total_amount"],
        "items": [
            {"name": item["name"], "quantity": item["quantity"], "price": item["price_amount"]}
            for item in order["line_items"]
        ],
        "tip": 0,
        "action_if_undeliverable": "return_to_pickup",
    }


class DoorDash:
    """Quote and accept through Drive v2, with a JWT reused for half its lifetime (as orderstream's client)."""

    def __init__(self, base_url: str, *, connections: int) -> None:
        self.settings = DoorDashSettings.for_simulator(base_url)
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(self.settings.read_timeout_seconds, connect=self.settings.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"Accept": "application/json", "User-Agent": "dispatch-floor/1"},
        )
        self._token: tuple[float, str] = (0.0, "")

    def _headers(self) -> dict[str, str]:
        now = time.time()
        issued, token = self._token
        if not issued <= now < issued + self.settings.jwt_ttl_seconds / 2:
            issued, token = now, make_jwt(self.settings, now=now)
            self._token = (issued, token)
        return {"Authorization": f"Bearer {token}"}

    def book(self, external_id: str, body: str) -> None:
        """Quote, then accept the quote; raises on any non-2xx answer."""
        self.http.post(
            "/drive/v2/quotes", json=quote_body(external_id, body), headers=self._headers()
        ).raise_for_status()
        self.http.post(
            f"/drive/v2/quotes/{external_id}/accept", json={"tip": 0}, headers=self._headers()
        ).raise_for_status()


class Dispatcher:
    """Threads that claim due jobs and book them; the intake wakes one of them per committed order."""

    def __init__(self, engine: sa.Engine, doordash: DoorDash, *, threads: int, batch: int) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.doordash = doordash
        self.batch = batch
        # one permit per committed order: wakes one idle thread (an Event would wake them all, each to claim)
        self.wake = threading.Semaphore(0)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.loop, name=f"dispatch-{n}", daemon=True) for n in range(threads)]

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Let the threads finish their current jobs (a few seconds at most)."""
        self.stopping.set()
        self.wake.release(len(self.threads))
        deadline = time.monotonic() + 5
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def loop(self) -> None:
        """Claim and book until stopped; wait for a wake-up (1 s at most) when nothing is due."""
        while not self.stopping.is_set():
            try:
                with self.engine.connect() as conn:
                    claimed = conn.execute(CLAIM, {"lease": LEASE_SECONDS, "limit": self.batch}).all()
            except sa.exc.SQLAlchemyError:
                log.exception("claim failed")
                claimed = []
            if not claimed:
                self.wake.acquire(timeout=1.0)
                continue
            for job_id, order_id, body in claimed:
                self.run(job_id, str(order_id), body)

    def run(self, job_id: int, external_id: str, body: str) -> None:
        """Book one order and mark its job done; on failure the job runs again after its lease."""
        try:
            self.doordash.book(external_id, body)
            with self.engine.connect() as conn:
                conn.execute(DONE, {"id": job_id, "external_id": external_id})
        except (httpx.HTTPError, sa.exc.SQLAlchemyError, KeyError, ValueError):
            log.exception("dispatch of order %s failed; it runs again in %s s", external_id, LEASE_SECONDS)


def create_app(url: str, *, doordash_url: str, secret: str, threads: int = 8, batch: int = 4) -> Starlette:
    """The dispatch floor app: the POS webhook, /readyz, and the dispatcher threads while it runs."""
    if not url.startswith("postgresql"):
        raise SystemExit("the dispatch floor runs on PostgreSQL only")
    engine = make_engine(url)
    metadata.create_all(engine)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    dispatcher = Dispatcher(engine, DoorDash(doordash_url, connections=threads), threads=threads, batch=batch)
    key = secret.encode("utf-8")

    def store(pos_id: str, now: datetime, body: str) -> int:
        with autocommit.connect() as conn:
            order_id = int(conn.execute(INTAKE, {"pos_id": pos_id, "now": now, "body": body}).scalar_one())
        dispatcher.wake.release()
        return order_id

    async def webhook(request: Request) -> JSONResponse:
        now = datetime.now(UTC)
        raw = await request.body()
        expected = hmac.new(key, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("stream-webhook-signature", "")):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        try:
            text = raw.decode("utf-8")
            pos_id = str(json.loads(text)["data"]["order"]["provider_id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "no data.order.provider_id"}, status_code=400)
        order_id = await run_in_threadpool(store, pos_id, now, text)
        return JSONResponse({"accepted": True, "order_id": order_id})

    async def readyz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        dispatcher.start()
        yield
        dispatcher.stop()
        dispatcher.doordash.http.close()
        engine.dispose()

    return Starlette(
        routes=[Route("/pos/{partner_slug}/webhook", webhook, methods=["POST"]), Route("/readyz", readyz)],
        lifespan=lifespan,
    )


def main() -> None:
    """Serve the dispatch floor."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--doordash-url", required=True, help="the DoorDash simulator's base URL")
    parser.add_argument("--secret", default="whsec_any", help="the POS webhook signing secret")
    parser.add_argument("--threads", type=int, default=8, help="dispatcher threads")
    parser.add_argument("--claim-batch", type=int, default=4, help="jobs one claim takes at most")
    args = parser.parse_args()
    app = create_app(
        args.database_url,
        doordash_url=args.doordash_url,
        secret=args.secret,
        threads=args.threads,
        batch=args.claim_batch,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
