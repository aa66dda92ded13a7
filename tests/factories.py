"""Factory functions for test data: random refs keep tests apart without truncating tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from orderstream.db import Database
from orderstream.tenancy import service as tenancy


def random_ref(prefix: str) -> str:
    """A unique id for test data."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class PartnerFixture:
    """A partner with one location, and its only copy of the secret and API key."""

    slug: str
    partner_id: int
    secret: str
    api_key: str
    location_id: str


def make_partner(
    db: Database,
    *,
    location_id: str = "location_456",
    allow_unpaid_delivery: bool = False,
    require_standard_webhooks: bool = False,
    rate_limit_per_minute: int | None = None,
    timezone: str = "America/Los_Angeles",
) -> PartnerFixture:
    """Create a partner with a random slug and one active location."""
    slug = random_ref("pos")
    with db.write() as conn:
        created = tenancy.create_partner(
            conn,
            slug=slug,
            require_standard_webhooks=require_standard_webhooks,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        tenancy.add_location(
            conn,
            partner_slug=slug,
            external_id=location_id,
            name="Main Street Burgers",
            street="1 Main St",
            city="Anytown",
            state="CA",
            postal_code="12345",
            country="US",
            phone="+14155550100",
            timezone=timezone,
            allow_unpaid_delivery=allow_unpaid_delivery,
        )
    return PartnerFixture(
        slug=slug,
        partner_id=int(created.partner["id"]),
        secret=created.secret,
        api_key=created.api_key,
        location_id=location_id,
    )
