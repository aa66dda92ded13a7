"""The notifications migration: tables exist on both databases and the once-only rule is a constraint."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orderstream.db import Database, utcnow
from orderstream.notifications.models import notifications
from tests.factories import make_partner
from tests.orders_api_helpers import seed_order


def _row(order_id: str, partner_id: int, location_id: int, nid: str) -> dict[str, object]:
    now = utcnow()
    return {
        "id": nid,
        "order_id": order_id,
        "partner_id": partner_id,
        "location_id": location_id,
        "kind": "confirmed",
        "channel": "sms",
        "status": "queued",
        "facts": {},
        "send_after": now,
        "created_at": now,
        "updated_at": now,
    }


def test_tables_exist_and_once_only_is_enforced(db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    inspector = sa.inspect(db.engine)
    names = set(inspector.get_table_names())
    assert {"notifications", "notification_opt_outs", "notification_settings", "tracking_tokens"} <= names
    with db.write() as conn:
        location_id = conn.execute(sa.text("SELECT location_id FROM orders WHERE id = :i"), {"i": order_id}).scalar()
        conn.execute(sa.insert(notifications).values(**_row(order_id, partner.partner_id, location_id, "ntf_a")))
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        conn.execute(sa.insert(notifications).values(**_row(order_id, partner.partner_id, location_id, "ntf_b")))
