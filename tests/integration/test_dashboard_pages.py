"""Location settings, admin and numbers pages on SQLite and PostgreSQL, through the same authorization."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.dashboard import admin, charts, features
from orderstream.db import Database, utcnow
from orderstream.jobs import outbox
from orderstream.jobs.models import jobs
from orderstream.tenancy import service as tenancy
from orderstream.tenancy.models import locations, partner_secrets
from tests.dashboard_helpers import csrf_of, make_user, sign_in
from tests.factories import PartnerFixture, make_partner
from tests.orders_api_helpers import seed_order


def location_pk(db: Database, partner: PartnerFixture) -> int:
    with db.read() as conn:
        row = tenancy.get_location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
    assert row is not None
    return int(row["id"])


def test_a_merchant_changes_prep_time_and_pauses_only_their_own_location(client: TestClient, db: Database) -> None:
    mine = make_partner(db)
    theirs = make_partner(db)
    sign_in(client, make_user(db, role="merchant", partners=(mine,)))
    my_loc, their_loc = location_pk(db, mine), location_pk(db, theirs)
    token = csrf_of(client.get(f"/dashboard/locations/{my_loc}").text)

    saved = client.post(f"/dashboard/locations/{my_loc}/prep-time", data={"csrf_token": token, "prep_time_minutes": 25})
    paused = client.post(f"/dashboard/locations/{my_loc}/pause", data={"csrf_token": token}, follow_redirects=True)
    foreign = client.post(f"/dashboard/locations/{their_loc}/pause", data={"csrf_token": token})
    invalid = client.post(
        f"/dashboard/locations/{my_loc}/prep-time", data={"csrf_token": token, "prep_time_minutes": 5000}
    )

    assert saved.status_code == 200
    assert 'data-status="paused"' in paused.text
    assert foreign.status_code == 404
    assert client.get(f"/dashboard/locations/{their_loc}").status_code == 404
    assert invalid.status_code == 422
    assert "invalid_prep_time" in invalid.text
    with db.read() as conn:
        rows = dict(conn.execute(sa.select(locations.c.id, locations.c.status)).all())
        prep = conn.execute(sa.select(locations.c.prep_time_minutes).where(locations.c.id == my_loc)).scalar_one()
    assert (rows[my_loc], rows[their_loc], prep) == ("paused", "active", 25)
    listing = client.get("/dashboard/locations").text
    assert f"/dashboard/locations/{my_loc}" in listing
    assert f"/dashboard/locations/{their_loc}" not in listing


def test_sections_of_a_missing_feature_say_so(
    client: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    absent = features.Feature("dispatch", "orderstream.not_installed_here", ("delivery_attempts",))
    monkeypatch.setattr(features, "DISPATCH", absent)
    sign_in(client, make_user(db))

    location = client.get(f"/dashboard/locations/{location_pk(db, partner)}").text
    order = client.get(f"/dashboard/orders/{order_id}").text
    charts_page = client.get("/dashboard/charts").text
    token = csrf_of(order)
    refused = client.post(f"/dashboard/orders/{order_id}/redispatch", data={"csrf_token": token, "confirmed": "yes"})

    missing = "dispatch is not installed on this server yet (orderstream.not_installed_here or its tables are missing)"
    assert missing in location
    assert missing in order
    assert missing in charts_page
    assert 'id="redispatch-form"' not in order
    assert refused.status_code == 409
    assert missing in refused.text
    assert 'name="provider" disabled' in client.get("/dashboard/board").text


def test_a_feature_is_present_only_with_its_module_and_its_tables(db: Database) -> None:
    with db.read() as conn:
        assert features.available(conn, features.DISPATCH)
        assert not features.available(conn, features.Feature("a", "orderstream.not_installed_here", ("jobs",)))
        assert not features.available(conn, features.Feature("b", "orderstream.jobs", ("no_such_table",)))


def test_admin_rotates_a_secret_and_sees_the_overlap(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    sign_in(client, make_user(db))
    token = csrf_of(client.get("/dashboard/admin").text)

    resp = client.post(
        f"/dashboard/admin/partners/{partner.slug}/rotate-secret", data={"csrf_token": token, "overlap_hours": 2}
    )

    assert resp.status_code == 200
    shown = re.search(r'<code id="secret-value">(whsec_[^<]+)</code>', resp.text)
    assert shown is not None
    with db.read() as conn:
        rows = (
            conn.execute(sa.select(partner_secrets).where(partner_secrets.c.partner_id == partner.partner_id))
            .mappings()
            .all()
        )
        assert set(tenancy.active_secrets(conn, partner_id=partner.partner_id)) == {partner.secret, shown.group(1)}
    assert len(rows) == 2
    section = resp.text.split(f'data-slug="{partner.slug}"')[1].split("</details>")[0]
    assert 'data-state="current"' in section
    assert 'data-state="overlap"' in section
    assert "(overlap: still accepted)" in section
    assert partner.secret not in resp.text  # existing secrets are never shown


def test_admin_creates_and_revokes_api_keys_that_the_order_api_honours(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    sign_in(client, make_user(db))
    token = csrf_of(client.get("/dashboard/admin").text)

    created = client.post(
        f"/dashboard/admin/partners/{partner.slug}/api-keys", data={"csrf_token": token, "name": "ops"}
    )
    key = re.search(r'<code id="secret-value">(osk_[^<]+)</code>', created.text)
    assert key is not None
    assert client.get("/v1/orders", headers={"Authorization": f"Bearer {key.group(1)}"}).status_code == 200
    key_id = re.search(r'data-key="(\d+)"><td><code>' + re.escape(key.group(1)[:12]), created.text)
    assert key_id is not None

    client.post(f"/dashboard/admin/api-keys/{key_id.group(1)}/revoke", data={"csrf_token": token})

    assert client.get("/v1/orders", headers={"Authorization": f"Bearer {key.group(1)}"}).status_code == 401
    assert client.get("/v1/orders", headers={"Authorization": f"Bearer {partner.api_key}"}).status_code == 200
    again = client.post(f"/dashboard/admin/api-keys/{key_id.group(1)}/revoke", data={"csrf_token": token})
    assert again.status_code == 404


def test_admin_retries_a_dead_job(client: TestClient, db: Database) -> None:
    with db.write() as conn:
        outbox.enqueue(conn, kind="dashboard.test", key=None, payload={"n": 1})
        job_id = conn.execute(sa.select(sa.func.max(jobs.c.id)).where(jobs.c.kind == "dashboard.test")).scalar_one()
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(status="dead", attempts=10, last_error="boom"))
    sign_in(client, make_user(db))
    page = client.get("/dashboard/admin").text
    assert f'data-job="{job_id}"' in page

    resp = client.post(f"/dashboard/admin/jobs/{job_id}/retry", data={"csrf_token": csrf_of(page)})
    again = client.post(f"/dashboard/admin/jobs/{job_id}/retry", data={"csrf_token": csrf_of(page)})

    assert resp.status_code == 200  # after the redirect back to the admin page
    assert again.status_code == 409
    with db.read() as conn:
        row = conn.execute(sa.select(jobs.c.status, jobs.c.attempts).where(jobs.c.id == job_id)).one()
    assert (row.status, row.attempts) == ("pending", 0)


def test_admin_pages_do_not_exist_for_merchants(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))
    token = csrf_of(client.get("/dashboard/board").text)

    assert client.get("/dashboard/admin").status_code == 404
    rotate = client.post(f"/dashboard/admin/partners/{partner.slug}/rotate-secret", data={"csrf_token": token})
    key = client.post(f"/dashboard/admin/partners/{partner.slug}/api-keys", data={"csrf_token": token})
    assert rotate.status_code == key.status_code == 404
    with db.read() as conn:
        assert len(tenancy.active_secrets(conn, partner_id=partner.partner_id)) == 1


def test_numbers_count_todays_orders_per_local_hour(client: TestClient, db: Database) -> None:
    now = utcnow()
    # a zone where it is past 01:00 now, so that this hour and the one before are both today
    tz = "Etc/GMT-12" if now.hour < 12 else "Etc/GMT+11"
    partner = make_partner(db, timezone=tz)
    hour = now.astimezone(ZoneInfo(tz)).replace(minute=0, second=0, microsecond=0)
    for _ in range(3):
        seed_order(db, partner, created_at=hour)
    seed_order(db, partner, created_at=hour - timedelta(minutes=30))
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))

    html = client.get("/dashboard/charts").text

    assert f"<title>{hour:%H}: 3</title>" in html
    assert f"<title>{hour - timedelta(hours=1):%H}: 1</title>" in html
    assert 'id="on-time"' in html


def test_bar_chart_scales_bars_to_the_largest_value() -> None:
    svg = str(charts.bar_chart([("a", 1), ("b", 4), ("c", 0)], title="t", height=120))
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[1] == max(heights)
    assert heights[0] == pytest.approx(heights[1] / 4)
    assert heights[2] == 0


def test_rate_bar_says_no_data_without_a_denominator() -> None:
    assert "no data yet" in str(charts.rate_bar(0, 0, title="x"))
    assert "75% (3/4)" in str(charts.rate_bar(3, 4, title="x"))


def test_partners_overview_gives_each_partner_its_own_secrets_and_keys_newest_first(db: Database) -> None:
    first, second = make_partner(db), make_partner(db)
    with db.write() as conn:
        tenancy.rotate_secret(conn, slug=first.slug, overlap=timedelta(hours=1))
        tenancy.create_api_key(conn, partner_id=second.partner_id, name="second-extra")

    with db.read() as conn:
        overview = {p["partner"]["slug"]: p for p in admin.partners_overview(conn)}

    assert [s["state"] for s in overview[first.slug]["secrets"]] == ["current", "overlap"]
    assert [s["state"] for s in overview[second.slug]["secrets"]] == ["current"]
    assert [k["name"] for k in overview[second.slug]["api_keys"]][0] == "second-extra"
    assert len(overview[second.slug]["api_keys"]) == len(overview[first.slug]["api_keys"]) + 1
    assert all("partner_id" not in k for k in overview[first.slug]["api_keys"])
