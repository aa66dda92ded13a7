"""The live board on SQLite and PostgreSQL: today's orders per location time zone, filters, late orders, SSE."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.orders import service as order_service
from orderstream.orders.domain import Actor, OrderStatus
from tests.dashboard_helpers import make_user, sign_in
from tests.factories import make_partner
from tests.orders_api_helpers import seed_order


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    fast = settings.model_copy(update={"dashboard_sse_poll_seconds": 0.1, "dashboard_sse_max_seconds": 2.0})
    with TestClient(create_app(fast, db=db)) as c:
        yield c


def column_of(html: str, order_id: str) -> str:
    """The board column a card sits in."""
    card = html.index(f'id="card-{order_id}"')
    start = html.rindex('data-column="', 0, card) + len('data-column="')
    return html[start : html.index('"', start)]


def test_board_shows_todays_orders_by_status_in_the_location_time_zone(client: TestClient, db: Database) -> None:
    partner = make_partner(db, timezone="Pacific/Kiritimati")  # UTC+14: 'today' differs from UTC most of the time
    now = utcnow()
    new = seed_order(db, partner, pos_order_id="p_new")
    ready = seed_order(db, partner, pos_order_id="p_ready", status="ready_for_pickup")
    canceled = seed_order(db, partner, pos_order_id="p_canceled", status="canceled")
    yesterday = seed_order(db, partner, pos_order_id="p_old", created_at=now - timedelta(days=1, hours=1))
    later = seed_order(
        db, partner, pos_order_id="p_tomorrow", status="scheduled", requested_for=now + timedelta(days=1, hours=1)
    )
    sign_in(client, make_user(db))

    html = client.get("/dashboard/board").text

    assert column_of(html, new) == "received"
    assert column_of(html, ready) == "ready_for_pickup"
    assert column_of(html, canceled) == "closed"
    assert f"card-{yesterday}" not in html
    assert f"card-{later}" not in html


def test_filters_by_location_and_fulfillment_type(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    other = make_partner(db)
    delivery = seed_order(db, partner, pos_order_id="p_delivery")
    pickup = seed_order(db, partner, pos_order_id="p_pickup", fulfillment_type="pickup")
    elsewhere = seed_order(db, other, pos_order_id="p_elsewhere")
    sign_in(client, make_user(db))
    board = client.get("/dashboard/board").text
    location = board.split(f"({partner.slug}/{partner.location_id})")[0].rsplit('value="', 1)[1].split('"')[0]

    by_location = client.get("/dashboard/board", params={"location": location}).text
    by_type = client.get("/dashboard/board", params={"fulfillment_type": "pickup"}).text

    assert f"card-{delivery}" in by_location
    assert f"card-{pickup}" in by_location
    assert f"card-{elsewhere}" not in by_location
    assert f"card-{pickup}" in by_type
    assert f"card-{delivery}" not in by_type


def test_a_delivery_without_a_courier_close_to_pickup_is_highlighted(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    now = utcnow()
    # placed 10 minutes ago with 15 minutes of prep: ready in 5 minutes, no courier -> late
    late = seed_order(db, partner, pos_order_id="p_late", created_at=now - timedelta(minutes=10))
    on_time = seed_order(db, partner, pos_order_id="p_fine", prep_time_minutes=60)
    pickup = seed_order(
        db, partner, pos_order_id="p_pick", fulfillment_type="pickup", created_at=now - timedelta(minutes=10)
    )
    sign_in(client, make_user(db))

    html = client.get("/dashboard/board").text

    def card(order_id: str) -> str:
        start = html.index(f'id="card-{order_id}"')
        return html[html.rindex("<a ", 0, start) : html.index("</a>", start)]

    assert 'class="card late"' in card(late)
    assert 'data-reason="no_courier"' in card(late)
    assert "late" not in card(on_time).split(">")[0]
    assert "late" not in card(pickup).split(">")[0]


def test_the_event_stream_sends_new_and_changed_orders(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    known = seed_order(db, partner, pos_order_id="p_known")
    sign_in(client, make_user(db))
    created: list[str] = []

    def add_order() -> None:
        created.append(seed_order(db, partner, pos_order_id="p_live"))

    timer = threading.Timer(0.7, add_order)
    timer.start()
    body = client.get("/dashboard/board/events").text  # ends after dashboard_sse_max_seconds
    timer.join()

    events = [block for block in body.split("\n\n") if block.startswith("event:")]
    names = [e.split("\n")[0].removeprefix("event: ") for e in events]
    assert names[0] == "ready"
    cards = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("event: card")]
    assert [c["id"] for c in cards] == created  # the known order was on the page already: not re-sent
    assert cards[0]["column"] == "received"
    assert "p_live" in cards[0]["html"]
    assert known not in body


def test_the_event_stream_is_scoped_to_the_merchant(client: TestClient, db: Database) -> None:
    mine = make_partner(db)
    theirs = make_partner(db)
    sign_in(client, make_user(db, role="merchant", partners=(mine,)))
    created: list[str] = []
    timer = threading.Timer(0.5, lambda: created.extend([seed_order(db, theirs), seed_order(db, mine)]))
    timer.start()
    body = client.get("/dashboard/board/events").text
    timer.join()

    assert created[1] in body
    assert created[0] not in body


def test_a_status_change_moves_the_card_over_the_event_stream(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner, fulfillment_type="pickup", status="preparing")
    sign_in(client, make_user(db))

    def mark_ready() -> None:
        with db.write() as conn:
            order = order_service.get_order_for_update(conn, order_id=order_id)
            assert order is not None
            order_service.change_status(conn, order=order, target=OrderStatus.READY_FOR_PICKUP, actor=Actor.POS)

    timer = threading.Timer(0.6, mark_ready)
    timer.start()
    body = client.get("/dashboard/board/events").text
    timer.join()

    cards = [json.loads(b.split("data: ", 1)[1]) for b in body.split("\n\n") if b.startswith("event: card")]
    assert [(c["id"], c["column"]) for c in cards] == [(order_id, "ready_for_pickup")]
