"""Prometheus metrics: HTTP requests, order intake outcomes, outbound webhook attempts, the job queue.

Counters and histograms live in the process that counts them (the default registry; the job
runtime's own are in `orderstream.jobs.metrics`). Every process exposes its own: `serve` at
`GET /metrics`, `orderstream worker --metrics-port N` on a port of its own; scrape each process
(Prometheus sums them). The job-queue gauges are read from the database at scrape time, so every
process reports the same, database-wide values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.logs import route_template

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("orderstream_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "orderstream_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDERS = Counter(
    "orderstream_orders_total",
    "POS webhook: order.created accepted (new order stored) or duplicate; any event rejected (by error code)",
    ["outcome", "reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "orderstream_webhook_attempts_total", "Outbound webhook attempts to the POS, by outcome", ["outcome"]
)


class HttpMetricsMiddleware:
    """ASGI middleware: counts requests by route template and status, and times them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_count(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            route = route_template(scope)
            method = scope.get("method", "")
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()


class JobQueueCollector:
    """Gauges read from the jobs table at scrape time: depth by kind and state, age of the oldest due job."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry must not query the database when this is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Query the jobs table once; on a database error report nothing (the HTTP answer still works)."""
        depth = GaugeMetricFamily(
            "orderstream_job_queue_depth",
            "Jobs by kind and state: due (pending, run_at passed), scheduled (pending, later), running, dead",
            labels=["kind", "state"],
        )
        oldest = GaugeMetricFamily(
            "orderstream_job_queue_oldest_due_seconds",
            "How long the oldest due pending job of a kind has been waiting (0 when none is due)",
            labels=["kind"],
        )
        now = utcnow()
        state = sa.case(
            (sa.and_(jobs.c.status == "pending", jobs.c.run_at <= now), sa.literal("due")),
            (jobs.c.status == "pending", sa.literal("scheduled")),
            else_=jobs.c.status,
        ).label("state")
        stmt = (
            sa.select(jobs.c.kind, state, sa.func.count().label("n"), sa.func.min(jobs.c.run_at).label("first"))
            .where(jobs.c.status.in_(("pending", "running", "dead")))
            .group_by(jobs.c.kind, state)
        )
        try:
            with self.db.read() as conn:
                rows = conn.execute(stmt).all()
        except sa.exc.SQLAlchemyError:
            log.warning("job queue metrics unavailable: database error", exc_info=True)
            return
        kinds: set[str] = set()
        for kind, st, count, first in rows:
            kinds.add(kind)
            depth.add_metric([kind, st], float(count))
            if st == "due" and first is not None:
                first = first if first.tzinfo else first.replace(tzinfo=now.tzinfo)
                oldest.add_metric([kind], max(0.0, (now - first).total_seconds()))
        due_kinds = {kind for kind, st, *_ in rows if st == "due"}
        for kind in sorted(kinds - due_kinds):
            oldest.add_metric([kind], 0.0)
        yield depth
        yield oldest


class CombinedRegistry:
    """The process-wide default registry plus collectors of one database, exposed together."""

    def __init__(self, db: Database) -> None:
        self.local = CollectorRegistry(auto_describe=False)
        self.local.register(JobQueueCollector(db))

    def collect(self) -> Iterator[Metric]:
        """Every metric of both registries."""
        yield from REGISTRY.collect()
        yield from self.local.collect()

    def restricted_registry(self, names: Iterable[str]) -> Any:
        """Filtering by name (`?name[]=`) as prometheus_client's HTTP server offers it."""
        wanted = set(names)
        outer = self

        class _Restricted:
            def collect(self) -> Iterator[Metric]:
                for metric in outer.collect():
                    samples = [s for s in metric.samples if s.name in wanted]
                    if samples:
                        metric.samples = samples
                        yield metric

        return _Restricted()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, include_in_schema=True)
def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics of this process (and the database-wide job queue gauges)."""
    combined: CombinedRegistry = request.app.state.metrics
    return Response(combined.render(), media_type=CONTENT_TYPE_LATEST)


def start_metrics_server(db: Database, port: int, host: str = "127.0.0.1") -> Any:
    """Serve this process's metrics on host:port in a daemon thread (for `orderstream worker`)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=CombinedRegistry(db))
