"""A dispatch round's database steps on SQLite and PostgreSQL: its reads, and starting an attempt (start_attempt)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from orderstream.config import Settings
from orderstream.db import PSYCOPG_CACHE_LIMITS, Database
from orderstream.deliveries import service
from orderstream.deliveries.models import delivery_attempts
from orderstream.deliveries.policy import external_id
from orderstream.deliveries.protocol import DeliveryRequest, DeliverySnapshot, DeliveryStatus, Quote, WebhookUpdate
from orderstream.jobs.models import jobs
from orderstream.notifications import tracking
from orderstream.notifications.models import tracking_tokens
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.prepared import deferred_writes
from orderstream.webhooks_out import service as webhooks_out
from orderstream.webhooks_out.models import outbound_events, webhook_deliveries
from tests.factories import PartnerFixture
from tests.orders_api_helpers import seed_order


def _request(db: Database, order_id: str, number: int = 1) -> DeliveryRequest:
    with db.read() as conn:
        facts = service.dispatch_facts(conn, order_id, settings=Settings())
        assert facts is not None
        return service.delivery_request(
            conn, order=facts.order, location=facts.location, external_id=external_id(order_id, number),
            pickup_ready_at=None, dropoff_deadline=None, items=facts.items,
        )  # fmt: skip


def _start(db: Database, order_id: str, number: int = 1, request: DeliveryRequest | None = None) -> Any:
    request = request or _request(db, order_id, number)
    quote = Quote(
        provider="doordash", external_id=request.external_id, quote_id="q-1", fee=975, currency="USD",
        pickup_eta=None, dropoff_eta=None, expires_at=None,
    )  # fmt: skip
    context = {"actor": "operator", "exclude": ["uber"]}
    return service.start_attempt(
        db, service.attempt_values(
            order_id=order_id, number=number, provider="doordash", quote=quote, request=request, context=context
        ),
    )  # fmt: skip


def _rows(db: Database, order_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with db.read() as conn:
        attempts = conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.order_id == order_id))
        history = conn.execute(
            sa.select(order_history).where(order_history.c.order_id == order_id, order_history.c.kind == "delivery")
        )
        return [dict(r) for r in attempts.mappings()], [dict(r) for r in history.mappings()]


def test_start_attempt_writes_the_attempt_and_its_history_line(
    db: Database, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner)
    request = _request(db, order_id)
    statements.clear()
    attempt = _start(db, order_id, request=request)
    assert attempt is not None
    sent = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    if not db.is_sqlite:
        # the order's lock, the dispatchability check, the attempt and its history line: one self-committing statement
        assert len(sent) == 1, sent
        assert len(statements) == 1, statements
        assert len(sent[0]) <= PSYCOPG_CACHE_LIMITS[0]
    [stored], [line] = _rows(db, order_id)
    assert dict(attempt) == stored
    assert (stored["number"], stored["state"], stored["provider"]) == (1, "booking", "doordash")
    assert (stored["external_id"], stored["active_order_id"]) == (request.external_id, order_id)
    assert (stored["quote_id"], stored["fee"], stored["currency"]) == ("q-1", 975, "usd")
    assert stored["context"] == {"actor": "operator", "exclude": ["uber"]}
    assert (line["actor"], line["reason"]) == ("operator", "delivery booking")
    assert line["details"] == {"attempt": 1, "provider": "doordash", "fee": 975, "external_id": request.external_id}


def test_start_attempt_refuses_a_second_active_attempt(db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner)
    assert _start(db, order_id) is not None
    assert _start(db, order_id, number=2) is None
    attempts, lines = _rows(db, order_id)
    assert [a["number"] for a in attempts] == [1]
    assert len(lines) == 1


@pytest.mark.parametrize(("fulfillment_type", "status"), [("delivery", "canceled"), ("pickup", "received")])
def test_start_attempt_refuses_an_order_not_dispatchable(
    db: Database, partner: PartnerFixture, fulfillment_type: str, status: str
) -> None:
    order_id = seed_order(db, partner)
    with db.write() as conn:  # the order changed after the round read it
        conn.execute(
            sa.update(orders).where(orders.c.id == order_id).values(fulfillment_type=fulfillment_type, status=status)
        )
    assert _start(db, order_id) is None
    assert _rows(db, order_id) == ([], [])


def test_start_attempt_for_an_unknown_order_writes_nothing(db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner)
    request = _request(db, order_id)
    values = service.attempt_values(
        order_id="ord_missing", number=1, provider="doordash", quote=None, request=request, context={}
    )
    attempt = service.start_attempt(db, values)
    assert attempt is None
    assert _rows(db, "ord_missing") == ([], [])


def test_start_attempt_waits_for_a_cancel_in_flight_and_then_refuses(db: Database, partner: PartnerFixture) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite has one writer, so a cancel cannot be in flight during the start")
    order_id = seed_order(db, partner)
    request = _request(db, order_id)
    result: list[Any] = []
    with db.write() as conn:  # a cancel holding the order's lock
        conn.execute(sa.select(orders.c.id).where(orders.c.id == order_id).with_for_update())
        starter = threading.Thread(target=lambda: result.append(_start(db, order_id, request=request)))
        starter.start()
        starter.join(0.5)
        assert starter.is_alive(), "the start must wait for the order's lock"
        conn.execute(sa.update(orders).where(orders.c.id == order_id).values(status="canceled"))
    starter.join(10)
    assert result == [None]
    assert _rows(db, order_id) == ([], [])


def test_dispatch_facts_bring_the_line_items_in_their_order(
    db: Database, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner)
    with db.write() as conn:  # two more lines, stored out of order
        for position, name in ((7, "Pie"), (5, "Shake")):
            conn.execute(
                sa.insert(order_line_items).values(
                    order_id=order_id, position=position, name=name, quantity=position, price_amount=350 * position,
                    price_currency="usd", modifiers=[],
                )
            )  # fmt: skip
    statements.clear()
    request = _request(db, order_id)
    items = [(i.name, i.quantity, i.price) for i in request.items]
    assert items[0] == ("Cheeseburger", 2, 1200)  # seed_order's lines come first, then these two by position
    assert items[-2:] == [("Shake", 5, 1750), ("Pie", 7, 2450)]
    # PostgreSQL: one read for the facts and the items; SQLite reads the items apart
    reads = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    assert len(reads) == (2 if db.is_sqlite else 1), reads


def test_a_booking_stores_attempt_order_and_history_in_one_statement_on_postgresql(
    db: Database, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner)
    started = _start(db, order_id)
    snapshot = DeliverySnapshot(
        provider="doordash", external_id=started["external_id"], provider_delivery_id="dd-1",
        status=DeliveryStatus.ENROUTE_TO_PICKUP, provider_status="enroute_to_pickup", fee=975,
    )  # fmt: skip
    statements.clear()
    with db.write() as conn:
        locked = service.lock_order_and_attempt(conn, int(started["id"]), order_id=order_id)
        assert locked is not None
        order, attempt = locked
        service.record_booked(
            conn, order=order, attempt=attempt, snapshot=snapshot, accept_within=None, settings=Settings()
        )
    if not db.is_sqlite:
        [combined] = [s for s in statements if "UPDATE delivery_attempts" in s]
        assert "UPDATE orders" in combined
        assert "INSERT INTO order_history" in combined
    with db.read() as conn:
        stored = (
            conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.id == started["id"])).mappings().one()
        )
        status = conn.execute(sa.select(orders.c.delivery_status).where(orders.c.id == order_id)).scalar()
    assert (stored["state"], stored["delivery_status"], stored["provider_delivery_id"]) == (
        "booked",
        "enroute_to_pickup",
        "dd-1",
    )
    assert status == "enroute_to_pickup"
    _, lines = _rows(db, order_id)
    assert [(line["from_status"], line["to_status"]) for line in lines] == [
        (None, None),
        ("pending", "enroute_to_pickup"),
    ]
    # the POS event of the change, built from the order row the booking holds (no second read of it)
    assert not [s for s in statements if "SELECT orders.source_order_id" in s]
    with db.read() as conn:
        query = sa.select(outbound_events.c.body).where(outbound_events.c.order_id == order_id)
        [body] = conn.execute(query).scalars().all()
    event = json.loads(body)["object"]
    expected = {"location_id": partner.location_id, "status": "in_progress", "delivery_status": "enroute_to_pickup"}
    assert {key: event[key] for key in ("location_id", "status", "delivery_status")} == expected
    assert event["order_id"] == order["source_order_id"]


def test_a_provider_webhook_answers_the_stored_delivery_status(db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner)
    started = _start(db, order_id)

    def apply(event_id: str, status: DeliveryStatus, minute: int) -> service.ApplyResult:
        snapshot = DeliverySnapshot(
            provider="doordash", external_id=started["external_id"], provider_delivery_id="dd-1", status=status,
            provider_status=status.value, updated_at=datetime(2026, 11, 27, 12, minute, tzinfo=UTC),
        )  # fmt: skip
        update = WebhookUpdate(provider="doordash", event_id=event_id, event_name=status.value, snapshot=snapshot)
        with db.write() as conn:
            return service.apply_update(conn, update, actor="courier", settings=Settings())

    def stored() -> str:
        with db.read() as conn:
            query = sa.select(delivery_attempts.c.delivery_status).where(delivery_attempts.c.id == started["id"])
            return str(conn.execute(query).scalar())

    answers = [
        apply("e1", DeliveryStatus.ENROUTE_TO_DROPOFF, 10),  # forward
        apply("e2", DeliveryStatus.ENROUTE_TO_PICKUP, 5),  # late and backwards
        apply("e1", DeliveryStatus.ENROUTE_TO_DROPOFF, 10),  # the same event again
        apply("e3", DeliveryStatus.ENROUTE_TO_DROPOFF, 12),  # the same status, newer facts
    ]
    assert [(a.result, a.delivery_status) for a in answers] == [
        ("applied", "enroute_to_dropoff"),
        ("stale", "enroute_to_dropoff"),
        ("duplicate", "enroute_to_dropoff"),
        ("applied", "enroute_to_dropoff"),
    ]
    assert stored() == "enroute_to_dropoff"


def test_the_order_and_its_attempt_are_locked_in_one_statement(
    db: Database, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner)
    other_id = seed_order(db, partner)
    started = _start(db, order_id)
    other = _start(db, other_id)
    statements.clear()
    with db.write() as conn:
        locked = service.lock_order_and_attempt(conn, int(started["id"]), order_id=order_id)
        assert locked is not None
        order, attempt = locked
        # an attempt of another order is not this order's
        assert service.lock_order_and_attempt(conn, int(other["id"]), order_id=order_id) is None
    assert (order["id"], order["location_external_id"], attempt["id"]) == (
        order_id, partner.location_id, started["id"],
    )  # fmt: skip
    assert set(order) == {*orders.c.keys(), "location_external_id"}
    assert attempt == dict(started)
    reads = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    assert len(reads) == 2, reads  # one per call
    if db.is_sqlite:
        return
    assert "FOR UPDATE OF orders, delivery_attempts" in reads[0]
    for table, key in ((orders, order_id), (delivery_attempts, started["id"])):
        with db.write() as conn:
            service.lock_order_and_attempt(conn, int(started["id"]), order_id=order_id)
            with db.engine.connect() as probe:  # another writer of either row must wait
                probe.exec_driver_sql("SET lock_timeout = '100ms'")
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    probe.execute(sa.select(table.c.id).where(table.c.id == key).with_for_update())


@pytest.mark.parametrize("subscribed", [False, True], ids=["no-endpoint", "endpoint"])
def test_a_booking_after_the_lock_is_one_statement_on_postgresql(
    db: Database, partner: PartnerFixture, statements: list[str], subscribed: bool
) -> None:
    order_id = seed_order(db, partner)
    started = _start(db, order_id)
    with db.write() as conn:
        tracking.start(conn, order_id=order_id, at=datetime.now(UTC))  # as the intake does
    if subscribed:
        with db.write() as conn:
            endpoint, _secret = webhooks_out.create_endpoint(
                conn, partner_id=partner.partner_id, url="https://pos.example.com/hooks",
                event_types=["order.updated"], allow_private=False, resolver=lambda _host, _port: ["93.184.216.34"],
            )  # fmt: skip
    snapshot = DeliverySnapshot(
        provider="doordash", external_id=started["external_id"], provider_delivery_id="dd-1",
        status=DeliveryStatus.ENROUTE_TO_PICKUP, provider_status="enroute_to_pickup", fee=975,
    )  # fmt: skip
    with db.write() as conn:
        locked = service.lock_order_and_attempt(conn, int(started["id"]), order_id=order_id)
        assert locked is not None
        statements.clear()
        with deferred_writes(conn):
            service.record_booked(
                conn, order=locked[0], attempt=locked[1], snapshot=snapshot, accept_within=60, settings=Settings()
            )
        written = list(statements)
    if not db.is_sqlite:
        # attempt, order, history, POS event, tracking page, acceptance and reconcile checks: one statement;
        # the POS event's delivery to a subscribed endpoint follows it (it needs the event's sequence)
        assert len(written) == (5 if subscribed else 1), [s[:80] for s in written]
        for part in (
            "UPDATE delivery_attempts",
            "INSERT INTO outbound_events",
            "UPDATE tracking_tokens",
            "INSERT INTO jobs",
        ):
            assert part in written[0]
    with db.read() as conn:
        stored = conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.id == started["id"])).mappings()
        attempt = stored.one()
        status = conn.execute(sa.select(orders.c.delivery_status).where(orders.c.id == order_id)).scalar()
        page = conn.execute(sa.select(tracking_tokens).where(tracking_tokens.c.order_id == order_id)).mappings().one()
        of_attempt = jobs.c.payload["attempt_id"].as_integer() == attempt["id"]
        kinds = sorted(conn.execute(sa.select(jobs.c.kind).where(of_attempt, jobs.c.kind.like("dispatch.%"))).scalars())
        sequences = (
            conn.execute(sa.select(outbound_events.c.sequence).where(outbound_events.c.order_id == order_id))
            .scalars()
            .all()
        )
        deliveries = conn.execute(sa.select(webhook_deliveries.c.sequence, webhook_deliveries.c.endpoint_id)).all()
    assert (attempt["state"], status) == ("booked", "enroute_to_pickup")
    assert page["delivery"]["status"] == "enroute_to_pickup"
    assert page["version"] == 2
    assert kinds == [service.ACCEPTANCE_KIND, service.RECONCILE_KIND]
    assert sequences == [1]
    assert deliveries == ([(1, endpoint["id"])] if subscribed else [])
