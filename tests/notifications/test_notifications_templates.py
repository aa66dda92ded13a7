"""Unit tests of the templates: every kind on both channels, fulfillment variants, locale formatting, overrides."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from orderstream.notifications.domain import Channel, Kind
from orderstream.notifications.render import local_datetime, local_time, money, render


def _context(**kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "lang": "en",
        "location_name": "Main Street Burgers",
        "location_phone": "(415) 555-0100",
        "order_ref": "#pos_1",
        "customer_first_name": "Jane",
        "fulfillment_type": "delivery",
        "total": "$28.08",
        "requested_for": None,
        "eta": "7:45 PM",
        "courier_first_name": "Dana",
        "vehicle": "blue Toyota Prius",
        "why": None,
        "tracking_url": "https://orders.example.com/t/tok123",
        "pickup_address": "1 Main St, Anytown",
        "pickup_instructions": "Shelf by the door",
        "unsubscribe_url": "https://orders.example.com/notifications/unsubscribe/x",
    }
    values.update(kw)
    return values


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("fulfillment", ["delivery", "pickup", "curbside"])
@pytest.mark.parametrize("channel", list(Channel))
def test_every_kind_renders_with_the_location(kind: Kind, fulfillment: str, channel: Channel) -> None:
    message = render(channel, kind, fulfillment, _context(fulfillment_type=fulfillment, why="eta_later"))
    assert "Main Street Burgers" in message.text or (message.subject and "Main Street Burgers" in message.subject)
    assert "#pos_1" in message.text
    assert "{{" not in message.text
    if channel is Channel.SMS:
        assert message.subject is None
        assert message.html is None
        assert "\n" not in message.text
        assert re.search(r"[a-z][.!][A-Z]", message.text) is None, message.text  # no sentences glued together
        assert len(message.text) <= 320  # two SMS segments at most
    else:
        assert message.subject
        assert message.html is not None
        assert "Unsubscribe" in message.html


def test_confirmation_carries_the_tracking_link_and_stop_hint() -> None:
    sms = render(Channel.SMS, Kind.CONFIRMED, "delivery", _context())
    assert "https://orders.example.com/t/tok123" in sms.text
    assert "STOP" in sms.text
    mail = render(Channel.EMAIL, Kind.CONFIRMED, "delivery", _context())
    assert mail.html is not None
    assert 'href="https://orders.example.com/t/tok123"' in mail.html


def test_fulfillment_variants_differ() -> None:
    pickup = render(Channel.SMS, Kind.READY_FOR_PICKUP, "pickup", _context()).text
    curbside = render(Channel.SMS, Kind.READY_FOR_PICKUP, "curbside", _context()).text
    assert "ready for pickup at 1 Main St, Anytown" in pickup
    assert "curbside" in curbside
    assert "(415) 555-0100" in curbside


def test_courier_and_eta_messages() -> None:
    assigned = render(Channel.SMS, Kind.COURIER_ASSIGNED, "delivery", _context()).text
    assert "Dana (blue Toyota Prius)" in assigned
    out = render(Channel.SMS, Kind.OUT_FOR_DELIVERY, "delivery", _context()).text
    assert "arriving around 7:45 PM" in out
    redispatch = render(Channel.SMS, Kind.UPDATE, "delivery", _context(why="redispatch")).text
    assert "Dana (blue Toyota Prius) is now bringing it" in redispatch


def test_html_escapes_location_text() -> None:
    mail = render(Channel.EMAIL, Kind.CANCELED, "delivery", _context(location_name="Bob's <Burgers> & Co"))
    assert mail.html is not None
    assert "Bob&#39;s &lt;Burgers&gt; &amp; Co" in mail.html
    assert "<Burgers>" not in mail.html
    assert "Bob's <Burgers> & Co" in mail.text  # the plain-text part stays plain


def test_location_override_replaces_the_text() -> None:
    override = {"text": "{{ location_name }}: order {{ order_ref }} is ready, come on in!"}
    sms = render(Channel.SMS, Kind.READY_FOR_PICKUP, "pickup", _context(), override=override)
    assert sms.text == "Main Street Burgers: order #pos_1 is ready, come on in!"
    mail = render(
        Channel.EMAIL, Kind.READY_FOR_PICKUP, "pickup", _context(), override={**override, "subject": "Ready!"}
    )
    assert mail.subject == "Ready!"
    assert mail.text == "Main Street Burgers: order #pos_1 is ready, come on in!"


def test_override_cannot_reach_python_internals() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render(Channel.SMS, Kind.CANCELED, "pickup", _context(), override={"text": "{{ ''.__class__.__mro__ }}"})


def test_money_and_times_follow_locale_and_zone() -> None:
    assert money(2808, "usd", "en_US") == "$28.08"
    assert money(2808, "eur", "de_DE") == "28,08\xa0€"
    assert money(1500, "jpy", "ja_JP") == "￥1,500"
    at = datetime(2026, 11, 27, 3, 45, tzinfo=UTC)
    assert local_time(at, "America/Los_Angeles", "en_US") == "7:45\u202fPM"
    assert local_time(at, "Europe/Paris", "fr_FR") == "04:45"
    assert local_datetime(at, "America/New_York", "en_US") == "Thu, Nov 26, 10:45\u202fPM"
    assert local_datetime(at, "Europe/Berlin", "de_DE") == "Fr., 27. Nov., 04:45"
