"""Dispatch against both simulators over real HTTP, on SQLite and PostgreSQL: quote, choose, book, follow."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orderstream.deliveries import service
from orderstream.deliveries.policy import Policy, Strategy
from orderstream.jobs.models import jobs
from orderstream.notifications.handlers import PLAN_KIND
from orderstream.tenancy.models import locations
from tests.deliveries_helpers import dispatch_stack
from tests.factories import make_partner

pytestmark = pytest.mark.timeout(120)


def test_asap_order_is_quoted_booked_and_delivered(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        order_id = stack.create_order(partner)
        order = stack.wait_status(order_id, "completed")
        assert order["delivery_status"] == "completed"
        [attempt] = stack.attempts(order_id)
        assert attempt["outcome"] == "delivered"
        assert attempt["active_order_id"] is None
        assert attempt["external_id"] == f"os-{order_id}-1"
        assert attempt["courier"]["name"]
        assert "*" in attempt["courier"]["phone"]
        assert attempt["tracking_url"]
        assert attempt["picked_up_at"] is not None
        statuses = [h["to_status"] for h in stack.history(order_id) if h["kind"] == "status"]
        assert statuses[-2:] == ["out_for_delivery", "completed"]
        assert stack.bookings(attempt["provider"], attempt["external_id"]) == 1
        with stack.client() as client:
            body = client.get(
                f"/v1/orders/{order_id}/deliveries", headers={"Authorization": f"Bearer {partner.api_key}"}
            ).json()
        assert body["delivery_status"] == "completed"
        assert [a["outcome"] for a in body["data"]] == ["delivered"]


@pytest.mark.parametrize("strategy", [Strategy.CHEAPEST, Strategy.PREFERRED])
def test_strategy_and_fee_cap_choose_the_provider(
    db_url: str, monkeypatch: pytest.MonkeyPatch, strategy: Strategy
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("uber", "doordash"), strategy=strategy)
        order_id = stack.create_order(partner)
        attempts = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked" or a[0]["state"] == "ended")
        context = attempts[0]["context"]
        assert context["strategy"] == strategy.value
        assert set(context["quotes"]) == {"uber", "doordash"}
        if strategy is Strategy.PREFERRED:
            assert attempts[0]["provider"] == "uber"
        else:
            cheapest = min(context["quotes"], key=lambda p: (context["quotes"][p], p != "uber"))
            assert attempts[0]["provider"] == cheapest


def test_fee_cap_leaves_out_expensive_quotes_and_fails_the_order(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, max_fee=1)
        order_id = stack.create_order(partner)
        stack.wait_status(order_id, "failed")
        assert stack.attempts(order_id) == []
        reasons = [h["reason"] or "" for h in stack.history(order_id)]
        assert any("over the maximum 1" in r for r in reasons)


def test_unpaid_order_goes_only_to_a_provider_that_collects_cash(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db, allow_unpaid_delivery=True)
        stack.set_policy(partner, allowed_providers=("uber", "doordash"), strategy=Strategy.PREFERRED)
        order_id = stack.create_order(partner, unpaid=True)
        attempts = stack.wait_attempts(order_id, lambda a: a[0]["state"] != "booking")
        assert [a["provider"] for a in attempts] == ["doordash"]


def test_unpaid_order_without_a_cash_provider_fails_with_the_reason(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db, allow_unpaid_delivery=True)
        stack.set_policy(partner, allowed_providers=("uber",))
        order_id = stack.create_order(partner, unpaid=True)
        order = stack.wait_status(order_id, "failed")
        assert order["status"] == "failed"
        assert any("cannot collect cash" in (h["reason"] or "") for h in stack.history(order_id))


def test_the_booking_queues_no_plan_job(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=30.0) as stack:
        partner = make_partner(stack.db)
        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        with stack.db.read() as conn:
            payloads = conn.execute(sa.select(jobs.c.payload).where(jobs.c.kind == PLAN_KIND)).scalars().all()
    # the order's confirmation only: the booking's delivery status (no courier yet) tells the customer nothing
    assert [p["event"] for p in payloads if p["order_id"] == order_id] == ["OrderCreated"]


def test_dispatch_facts_read_the_order_location_policy_and_attempts_at_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=30.0) as stack:
        partner = make_partner(stack.db)
        order_id = stack.create_order(partner)
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        with stack.db.read() as conn:
            facts = service.dispatch_facts(conn, order_id, settings=stack.settings)
            order = service.get_order(conn, order_id)
            assert order is not None
            location = conn.execute(sa.select(locations).where(locations.c.id == order["location_id"])).mappings().one()
            assert service.dispatch_facts(conn, "ord_missing", settings=stack.settings) is None
        assert facts is not None
        assert dict(facts.order) == dict(order)
        assert dict(facts.location) == dict(location)
        assert facts.policy == service.default_policy(stack.settings)  # the location has none of its own
        assert (facts.next_number, facts.active_attempt_id) == (2, attempt["id"])
        with stack.db.write() as conn:
            policy = Policy(allowed_providers=("uber",), strategy=Strategy.FASTEST, max_fee=900)
            service.set_policy(conn, location_id=int(order["location_id"]), policy=policy)
        with stack.db.read() as conn:
            facts = service.dispatch_facts(conn, order_id, settings=stack.settings)
        assert facts is not None
        assert (facts.policy.allowed_providers, facts.policy.strategy, facts.policy.max_fee) == (
            ("uber",),
            Strategy.FASTEST,
            900,
        )
