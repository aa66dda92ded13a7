"""The own-drivers provider and fleet use cases against both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import RowMapping

from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.deliveries.protocol import DeliveryRef, DeliveryStatus, ProviderRejected, WebhookRejected
from orderstream.deliveries.providers.own_drivers import service
from orderstream.deliveries.providers.own_drivers.provider import OwnDriversProvider
from orderstream.deliveries.providers.own_drivers.service import DriversError
from orderstream.deliveries.providers.own_drivers.settings import OwnDriversSettings
from orderstream.deliveries.registry import ProviderRegistry
from tests.factories import make_partner
from tests.orders_api_helpers import seed_order
from tests.own_drivers_helpers import Updates, add_driver, delivery_request, new_order


def _loc(db: Database, partner_id: int, location_id: str) -> RowMapping:
    with db.read() as conn:
        return service.location(conn, partner_id=partner_id, external_id=location_id)


def test_quote_needs_drivers_and_uses_fee_and_prep_time(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db, OwnDriversSettings(travel_minutes=25))
    order_id = seed_order(db, partner)  # a courier delivery order; prep time 15 min on the order
    with pytest.raises(ProviderRejected) as caught:
        provider.quote(delivery_request(order_id))
    assert caught.value.code == "no_drivers"
    # a merchant-managed order has nobody else: it is quoted (and booked unassigned) without any driver
    assert provider.quote(delivery_request(new_order(db, partner))).provider == "own_drivers"

    add_driver(db, partner, "Sam", on_shift=False)
    before = utcnow()
    quote = provider.quote(delivery_request(order_id))
    assert (quote.provider, quote.fee, quote.currency, quote.quote_id) == ("own_drivers", 0, "usd", f"os-{order_id}-1")
    assert quote.pickup_eta is not None
    assert quote.dropoff_eta is not None
    assert before + timedelta(minutes=15) <= quote.pickup_eta <= utcnow() + timedelta(minutes=15)
    assert quote.dropoff_eta - quote.pickup_eta == timedelta(minutes=25)

    loc = _loc(db, partner.partner_id, partner.location_id)
    with db.write() as conn:
        service.set_fleet(conn, loc=loc, fee=450, auto_assign=None)
    later = datetime.now(UTC) + timedelta(hours=3)
    quote = provider.quote(delivery_request(order_id, pickup_ready_at=later))
    assert quote.fee == 450
    assert quote.pickup_eta == later


def test_book_assigns_the_least_busy_on_shift_driver_and_is_idempotent(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db)
    sam, _ = add_driver(db, partner, "Sam")
    kim, _ = add_driver(db, partner, "Kim", phone="+14155550143")
    add_driver(db, partner, "Off Shift", on_shift=False, phone="+14155550144")

    first_order, second_order, third_order = (new_order(db, partner) for _ in range(3))
    first = provider.book(delivery_request(first_order), provider.quote(delivery_request(first_order)))
    second = provider.book(delivery_request(second_order))
    assert first.status is DeliveryStatus.ENROUTE_TO_PICKUP
    assert first.courier is not None
    assert second.courier is not None
    assert {first.courier.name, second.courier.name} == {"Sam", "Kim"}  # one each: both had nothing open
    assert first.courier.phone is not None
    assert first.courier.phone.endswith(("0142", "0143"))
    assert "555" not in (first.courier.phone or "")

    again = provider.book(delivery_request(first_order))  # a retry after a crash: the same booking
    assert again.provider_delivery_id == first.provider_delivery_id
    assert again.courier == first.courier

    # Sam finishes his delivery: he is now the least busy and gets the third order
    sam_delivery = first if first.raw["driver_id"] == sam else second
    with db.read() as conn:
        assert service.driver_for_token(conn, token="osd_made-up") is None
    with db.read() as conn:
        sam_row = service.store.get_driver(conn, driver_id=sam)
    assert sam_row is not None
    with db.write() as conn:
        service.report_status(
            conn, driver=sam_row, delivery_id=sam_delivery.provider_delivery_id, status="delivered", apply=Updates()
        )
    third = provider.book(delivery_request(third_order))
    assert third.raw["driver_id"] == sam
    assert kim != sam


def test_book_without_auto_assign_waits_for_an_operator(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db, OwnDriversSettings(default_auto_assign=False))
    sam, _ = add_driver(db, partner, "Sam")
    order_id = new_order(db, partner)
    booked = provider.book(delivery_request(order_id, cash_to_collect=2808))
    assert booked.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION
    assert booked.courier is None

    loc = _loc(db, partner.partner_id, partner.location_id)
    with db.read() as conn:
        waiting = service.list_deliveries(conn, loc=loc, status="unassigned")
    assert [d["id"] for d in waiting] == [booked.provider_delivery_id]
    assert waiting[0]["cash_to_collect"] == 2808

    updates = Updates()
    with db.write() as conn:
        assigned = service.assign(conn, loc=loc, delivery_id=booked.provider_delivery_id, driver_id=sam, apply=updates)
    assert (assigned["status"], assigned["driver_id"]) == ("assigned", sam)
    assert [u.snapshot.status for u in updates.seen] == [DeliveryStatus.ENROUTE_TO_PICKUP]
    assert updates.seen[0].snapshot.courier is not None
    assert provider.get(DeliveryRef(booked.external_id)).status is DeliveryStatus.ENROUTE_TO_PICKUP


def test_no_on_shift_driver_leaves_the_delivery_unassigned(db: Database) -> None:
    partner = make_partner(db)
    add_driver(db, partner, "Sam", on_shift=False)
    order_id = new_order(db, partner)
    booked = OwnDriversProvider(db).book(delivery_request(order_id))
    assert booked.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION


def test_driver_reports_drive_the_delivery_to_the_door(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db)
    sam, token = add_driver(db, partner, "Sam")
    order_id = new_order(db, partner)
    booked = provider.book(delivery_request(order_id))
    with db.read() as conn:
        driver = service.driver_for_token(conn, token=token)
    assert driver is not None
    assert driver["id"] == sam

    updates = Updates()
    eta = utcnow() + timedelta(minutes=12)
    steps = [
        {"status": "at_pickup"},
        {"status": "picked_up", "latitude": 37.7, "longitude": -122.4, "eta": eta},
        {"status": "picked_up", "latitude": 37.71, "longitude": -122.41},  # a position ping
        {"status": "at_dropoff"},
        {"status": "delivered", "proof_of_delivery": {"photo_url": "https://example.com/p.jpg"}},
    ]
    for step in steps:
        with db.write() as conn:
            service.report_status(conn, driver=driver, delivery_id=booked.provider_delivery_id, apply=updates, **step)
    assert [u.snapshot.status for u in updates.seen] == [
        DeliveryStatus.ARRIVED_AT_PICKUP,
        DeliveryStatus.ENROUTE_TO_DROPOFF,
        DeliveryStatus.ENROUTE_TO_DROPOFF,
        DeliveryStatus.ARRIVED_AT_DROPOFF,
        DeliveryStatus.COMPLETED,
    ]
    assert len({u.event_id for u in updates.seen}) == 5  # every report is a distinct event
    ping = updates.seen[2].snapshot
    assert ping.courier is not None
    assert (ping.courier.latitude, ping.courier.longitude) == (37.71, -122.41)
    assert updates.seen[1].snapshot.dropoff_eta == eta
    final = provider.get(DeliveryRef(booked.external_id))
    assert final.status is DeliveryStatus.COMPLETED
    assert final.proof_of_delivery == {"photo_url": "https://example.com/p.jpg"}

    for status, code in (("at_pickup", "delivery_finished"), ("flying", "invalid_status")):
        with db.write() as conn, pytest.raises(DriversError) as caught:
            service.report_status(
                conn, driver=driver, delivery_id=booked.provider_delivery_id, status=status, apply=updates
            )
        assert caught.value.code == code


def test_reports_are_checked_against_the_driver_and_the_order_of_steps(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db)
    sam, _ = add_driver(db, partner, "Sam")
    kim, _ = add_driver(db, partner, "Kim", phone="+14155550143", on_shift=False)
    booked = provider.book(delivery_request(new_order(db, partner)))
    with db.read() as conn:
        sam_row, kim_row = service.store.get_driver(conn, driver_id=sam), service.store.get_driver(conn, driver_id=kim)
    assert sam_row is not None
    assert kim_row is not None
    updates = Updates()
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.report_status(
            conn, driver=kim_row, delivery_id=booked.provider_delivery_id, status="at_pickup", apply=updates
        )
    assert (caught.value.status, caught.value.code) == (404, "delivery_not_found")
    with db.write() as conn:
        service.report_status(
            conn, driver=sam_row, delivery_id=booked.provider_delivery_id, status="picked_up", apply=updates
        )
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.report_status(
            conn, driver=sam_row, delivery_id=booked.provider_delivery_id, status="at_pickup", apply=updates
        )
    assert (caught.value.status, caught.value.code) == (409, "status_backwards")
    # after pickup nobody can take the delivery over, and the merchant can no longer cancel it
    loc = _loc(db, partner.partner_id, partner.location_id)
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.assign(conn, loc=loc, delivery_id=booked.provider_delivery_id, driver_id=kim, apply=updates)
    assert caught.value.code == "not_reassignable"
    outcome = provider.cancel(DeliveryRef(booked.external_id))
    assert (outcome.canceled, outcome.reason) == (False, "noncancelable_delivery")
    # the driver gives up after pickup: failed to deliver
    with db.write() as conn:
        service.report_status(
            conn,
            driver=sam_row,
            delivery_id=booked.provider_delivery_id,
            status="canceled",
            reason="customer_unavailable",
            apply=updates,
        )
    assert updates.seen[-1].snapshot.status is DeliveryStatus.FAILED_TO_DELIVER
    assert updates.seen[-1].snapshot.cancellation_reason == "customer_unavailable"


def test_cancel_before_pickup_and_update(db: Database) -> None:
    partner = make_partner(db)
    provider = OwnDriversProvider(db)
    add_driver(db, partner, "Sam")
    booked = provider.book(delivery_request(new_order(db, partner)))
    ref = DeliveryRef(booked.external_id, booked.provider_delivery_id)
    later = utcnow() + timedelta(hours=1)
    updated = provider.update(ref, tip=500, pickup_ready_at=later)
    assert (updated.tip, updated.pickup_eta) == (500, later)
    outcome = provider.cancel(ref)
    assert (outcome.canceled, outcome.fee_charged) == (True, 0)
    assert provider.cancel(ref).canceled  # a retried cancel is safe
    assert provider.get(ref).status is DeliveryStatus.MERCHANT_CANCELED
    with pytest.raises(ProviderRejected) as caught:
        provider.update(ref, tip=100)
    assert caught.value.code == "delivery_finished"
    with pytest.raises(ProviderRejected) as caught:
        provider.get(DeliveryRef("os-unknown-1"))
    assert caught.value.code == "not_found"


def test_drivers_add_list_shift_and_deactivate(db: Database) -> None:
    partner = make_partner(db)
    loc = _loc(db, partner.partner_id, partner.location_id)
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.add_driver(conn, loc=loc, name="Sam", phone="12")
    assert (caught.value.code, caught.value.path) == ("invalid_phone", "phone")
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.add_driver(conn, loc=loc, name="  ", phone="+14155550142")
    assert caught.value.path == "name"

    sam, token = add_driver(db, partner, "Sam")  # a national number, read in the location's country
    with db.read() as conn:
        listed = service.list_drivers(conn, loc=loc)
    assert [(d["id"], d["phone"], d["on_shift"], d["open_deliveries"]) for d in listed] == [
        (sam, "+14155550142", True, 0)
    ]
    assert token.startswith("osd_")
    assert listed[0]["token_prefix"] == token[:12]

    booked = OwnDriversProvider(db).book(delivery_request(new_order(db, partner)))
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.deactivate_driver(conn, loc=loc, driver_id=sam)
    assert caught.value.code == "driver_busy"
    OwnDriversProvider(db).cancel(DeliveryRef(booked.external_id))
    with db.write() as conn:
        out = service.deactivate_driver(conn, loc=loc, driver_id=sam)
    assert (out["active"], out["on_shift"]) == (False, False)
    with db.read() as conn:
        assert service.driver_for_token(conn, token=token) is None  # the token dies with the driver
        assert service.list_drivers(conn, loc=loc) == []
        assert len(service.list_drivers(conn, loc=loc, include_inactive=True)) == 1
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.set_shift(conn, loc=loc, driver_id=sam, on_shift=True)
    assert caught.value.code == "driver_inactive"

    other = make_partner(db)  # another partner's location never sees this driver
    other_loc = _loc(db, other.partner_id, other.location_id)
    with db.write() as conn, pytest.raises(DriversError) as caught:
        service.set_shift(conn, loc=other_loc, driver_id=sam, on_shift=True)
    assert caught.value.code == "driver_not_found"


def test_the_registry_factory_uses_the_shared_database(db: Database, db_url: str) -> None:
    partner = make_partner(db)
    add_driver(db, partner, "Sam")
    registry = ProviderRegistry(Settings(database_url=db_url), db)
    try:
        provider = registry.get("own_drivers")
        assert isinstance(provider, OwnDriversProvider)
        assert provider.db is db  # no pool of its own
        assert provider.name == "own_drivers"
        assert provider.capabilities().cash_collection
        booked = provider.book(delivery_request(new_order(db, partner)))
        assert booked.status is DeliveryStatus.ENROUTE_TO_PICKUP
    finally:
        registry.close()
    with pytest.raises(WebhookRejected) as caught:
        provider.parse_webhook(b"{}", {})
    assert caught.value.status == 404
