"""Request ids, access lines, /metrics and the job-queue gauges on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from orderstream import logs
from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import REQUEST_ID_KEY, enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, PermanentError
from orderstream.metrics import start_metrics_server
from tests.e2e.harness import free_port
from tests.factories import make_partner
from tests.jobs_helpers import job_row, running_worker, unique_kind, wait_for, worker_settings
from tests.pos_helpers import legacy_order, post_event


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db=db)) as c:
        yield c


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON lines of every orderstream logger while the test runs."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    logger = logging.getLogger("orderstream")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def test_request_id_is_generated_or_echoed(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz").headers["x-request-id"] != generated
    assert client.get("/healthz", headers={"X-Request-ID": "pos-abc.1"}).headers["x-request-id"] == "pos-abc.1"
    replaced = client.get("/healthz", headers={"X-Request-ID": "two words"}).headers["x-request-id"]
    assert replaced != "two words"


def test_access_line_per_request_with_route_status_and_request_id(client: TestClient, captured: io.StringIO) -> None:
    resp = client.get("/v1/orders/ord_nope", headers={"X-Request-ID": "req-access-1"})
    assert resp.status_code == 401
    lines = [line for line in _lines(captured) if line["msg"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-access-1"
    assert line["route"] == "/v1/orders/{order_id}"
    assert line["status"] == 401
    assert line["method"] == "GET"
    assert isinstance(line["duration_ms"], float)


def test_http_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    def value(route: str, status: str) -> float:
        labels = {"method": "GET", "route": route, "status": status}
        return REGISTRY.get_sample_value("orderstream_http_requests_total", labels) or 0.0

    def count(route: str) -> float:
        labels = {"method": "GET", "route": route}
        return REGISTRY.get_sample_value("orderstream_http_request_duration_seconds_count", labels) or 0.0

    before = (value("/v1/orders/{order_id}", "401"), value("unmatched", "404"), count("/v1/orders/{order_id}"))
    client.get("/v1/orders/ord_a")
    client.get("/v1/orders/ord_b")
    client.get("/no/such/route")
    after = (value("/v1/orders/{order_id}", "401"), value("unmatched", "404"), count("/v1/orders/{order_id}"))
    assert after[0] - before[0] == 2
    assert after[1] - before[1] == 1
    assert after[2] - before[2] == 2
    text = client.get("/metrics").text
    assert 'orderstream_http_requests_total{method="GET",route="/v1/orders/{order_id}",status="401"}' in text
    assert "orderstream_http_request_duration_seconds_bucket" in text


def test_the_pos_webhook_is_counted_by_its_template_and_documented(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    labels = {"method": "POST", "route": "/pos/{partner_slug}/webhook", "status": "200"}
    before = REGISTRY.get_sample_value("orderstream_http_requests_total", labels) or 0.0

    assert post_event(client, partner.slug, partner.secret, legacy_order("counted-1")).status_code == 200

    assert (REGISTRY.get_sample_value("orderstream_http_requests_total", labels) or 0.0) - before == 1
    # served by a plain route ahead of FastAPI's, whose documentation stays
    operation = client.get("/openapi.json").json()["paths"]["/pos/{partner_slug}/webhook"]["post"]
    assert operation["parameters"][0]["name"] == "partner_slug"
    assert "422" in operation["responses"]


def test_metrics_expose_job_queue_depth_and_oldest_due_age(client: TestClient, db: Database) -> None:
    kind, idle = unique_kind("depth"), unique_kind("idle")
    now = utcnow()
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=90))
        enqueue(conn, kind=kind, payload={}, run_at=now - timedelta(seconds=5))
        enqueue(conn, kind=kind, payload={}, run_at=now + timedelta(hours=1))
        enqueue(conn, kind=idle, payload={}, run_at=now + timedelta(hours=1))
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = _samples(resp.text)
    assert samples[("orderstream_job_queue_depth", frozenset({("kind", kind), ("state", "due")}))] == 2
    assert samples[("orderstream_job_queue_depth", frozenset({("kind", kind), ("state", "scheduled")}))] == 1
    oldest = samples[("orderstream_job_queue_oldest_due_seconds", frozenset({("kind", kind)}))]
    assert 89 <= oldest < 300
    assert samples[("orderstream_job_queue_oldest_due_seconds", frozenset({("kind", idle)}))] == 0
    # the job runtime's own counters are served too
    assert "orderstream_jobs_claimed_total" in resp.text


def test_jobs_carry_the_request_id_into_their_logs_and_failures_are_counted(
    db: Database, db_url: str, captured: io.StringIO
) -> None:
    ok_kind, bad_kind = unique_kind("logged"), unique_kind("dead")
    registry = JobRegistry()
    job_log = logging.getLogger("orderstream.test_jobs")

    def handler(ctx: JobContext) -> None:
        job_log.info("handling for %s", ctx.payload["email"])

    def failing(_ctx: JobContext) -> None:
        raise PermanentError("no such order")

    registry.register(JobKind(ok_kind, handler))
    registry.register(JobKind(bad_kind, failing))
    with logs.log_context(request_id="req-job-1"), db.write() as conn:
        ok_id = enqueue(conn, kind=ok_kind, payload={"email": "jane.roe@example.org"})
        bad_id = enqueue(conn, kind=bad_kind, payload={})
    assert ok_id is not None
    assert bad_id is not None
    with db.write() as conn:
        plain_id = enqueue(conn, kind=ok_kind, payload={"email": "x@example.org"})
    assert job_row(db, ok_id)["payload"][REQUEST_ID_KEY] == "req-job-1"
    assert REQUEST_ID_KEY not in job_row(db, plain_id)["payload"]  # type: ignore[arg-type]
    with running_worker(db, worker_settings(db_url, worker_idle_poll_seconds=0.2), registry):
        wait_for(lambda: all(job_row(db, j)["status"] in ("done", "dead") for j in (ok_id, bad_id, plain_id)))
    handled = [line for line in _lines(captured) if str(line["msg"]).startswith("handling for")]
    assert {line.get("request_id") for line in handled} == {"req-job-1", None}
    mine = next(line for line in handled if line.get("request_id") == "req-job-1")
    assert mine["job_id"] == ok_id
    assert mine["kind"] == ok_kind
    assert mine["msg"] == "handling for j***@example.org"
    dead = [line for line in _lines(captured) if line["msg"] == "job dead-lettered"]
    assert dead
    assert dead[0]["request_id"] == "req-job-1"
    assert REGISTRY.get_sample_value("orderstream_jobs_failed_total", {"kind": bad_kind}) == 1
    assert REGISTRY.get_sample_value("orderstream_jobs_dead_total", {"kind": bad_kind}) == 1
    assert REGISTRY.get_sample_value("orderstream_jobs_failed_total", {"kind": ok_kind}) is None


def test_worker_metrics_server_serves_the_same_exposition(db: Database) -> None:
    kind = unique_kind("served")
    with db.write() as conn:
        enqueue(conn, kind=kind, payload={})
    port = free_port()
    server, thread = start_metrics_server(db, port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        thread.join(5)
    assert _samples(text)[("orderstream_job_queue_depth", frozenset({("kind", kind), ("state", "due")}))] == 1
    assert "orderstream_http_requests_total" in text


def test_pos_intake_outcomes_are_counted_and_jobs_carry_the_request_id(
    client: TestClient, db: Database, captured: io.StringIO
) -> None:
    partner = make_partner(db)

    def orders_total(outcome: str, reason: str = "") -> float:
        return REGISTRY.get_sample_value("orderstream_orders_total", {"outcome": outcome, "reason": reason}) or 0.0

    before = (orders_total("accepted"), orders_total("duplicate"), orders_total("rejected", "invalid_signature"))
    event = legacy_order()
    first = post_event(client, partner.slug, partner.secret, event, headers={"X-Request-ID": "pos-req-1"})
    assert first.status_code == 200, first.text
    assert post_event(client, partner.slug, partner.secret, event).json()["duplicate"] is True
    assert post_event(client, partner.slug, "whsec_wrong", legacy_order()).status_code == 401
    status = {"event": "order.status.updated", "data": {"order": {"provider_id": "nope", "status": "preparing"}}}
    assert post_event(client, partner.slug, partner.secret, status).status_code == 404
    after = (orders_total("accepted"), orders_total("duplicate"), orders_total("rejected", "invalid_signature"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    order_id = first.json()["order"]["id"]
    with db.read() as conn:
        payloads = conn.execute(sa.select(jobs.c.payload).where(jobs.c.payload.is_not(None))).scalars().all()
    mine = [p for p in payloads if p.get("order_id") == order_id]
    assert mine, "the order enqueued jobs"
    assert {p[REQUEST_ID_KEY] for p in mine} == {"pos-req-1"}
    # no contact data of the docs' example in any line logged while handling these requests
    text = captured.getvalue()
    assert "john.doe@example.com" not in text
    assert "+1234567890" not in text
    assert "123 Main St" not in text
    # a status update of a known order answers "accepted" too, but it is not a new order
    known = {"event": "order.status.updated", "data": {"order": {"provider_id": event["data"]["order"]["provider_id"]}}}
    known["data"]["order"]["status"] = "preparing"
    assert post_event(client, partner.slug, partner.secret, known).status_code == 200
    assert (orders_total("accepted"), orders_total("duplicate")) == after[:2]
