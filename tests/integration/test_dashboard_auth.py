"""Dashboard sign-in, sessions, CSRF, the sign-in rate limit and authorization, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.dashboard.models import dashboard_audit, dashboard_sessions
from orderstream.db import Database
from orderstream.orders.models import orders
from tests.dashboard_helpers import PASSWORD, csrf_of, make_user, sign_in
from tests.factories import make_partner
from tests.orders_api_helpers import seed_order


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"dashboard_signin_max_failures": 3}), db=db)
    with TestClient(app) as c:
        yield c


def test_pages_redirect_to_sign_in_without_a_session(client: TestClient) -> None:
    resp = client.get("/dashboard/board?location=1", follow_redirects=False)

    assert resp.status_code == 303
    assert resp.headers["location"] == "/dashboard/signin?next=%2Fdashboard%2Fboard%3Flocation%3D1"
    assert client.get("/dashboard/board/events").status_code == 401


def test_sign_in_sets_a_hardened_session_cookie_and_stores_only_its_hash(client: TestClient, db: Database) -> None:
    email = make_user(db)

    resp = sign_in(client, email)

    assert resp.status_code == 303
    assert resp.headers["location"] == "/dashboard/board"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("os_session="))
    token = cookie.split(";")[0].split("=", 1)[1]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP in this test; see the HTTPS test below
    with db.read() as conn:
        stored = list(conn.execute(sa.select(dashboard_sessions.c.token_hash)).scalars())
    assert token not in stored
    assert client.get("/dashboard/board").status_code == 200


def test_the_cookie_is_secure_when_served_over_https(settings: Settings, db: Database) -> None:
    email = make_user(db)
    app = create_app(settings.model_copy(update={"public_base_url": "https://orders.example.test"}), db=db)
    with TestClient(app, base_url="https://testserver") as https_client:
        resp = sign_in(https_client, email)

    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("os_session="))
    assert "Secure" in cookie


def test_wrong_password_and_unknown_user_get_the_same_answer(client: TestClient, db: Database) -> None:
    email = make_user(db)

    wrong = sign_in(client, email, "not the password at all")
    unknown = sign_in(client, "nobody@example.com", PASSWORD)

    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong e-mail or password." in wrong.text
    assert "Wrong e-mail or password." in unknown.text
    assert client.get("/dashboard/board", follow_redirects=False).status_code == 303


def test_sign_in_is_rate_limited_per_ip_and_email(client: TestClient, db: Database) -> None:
    email = make_user(db)
    other = make_user(db)
    for _ in range(3):
        assert sign_in(client, email, "wrong password!").status_code == 401

    limited = sign_in(client, email)  # even the right password is refused now

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "900"
    assert sign_in(client, other).status_code == 303  # another e-mail from the same IP is not affected


def test_sign_in_form_without_its_csrf_token_is_refused(client: TestClient, db: Database) -> None:
    email = make_user(db)
    client.get("/dashboard/signin")

    resp = client.post("/dashboard/signin", data={"email": email, "password": PASSWORD}, follow_redirects=False)

    assert resp.status_code == 403
    assert 'data-code="csrf_failed"' in resp.text


def test_a_post_without_or_with_a_wrong_csrf_token_is_rejected(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    sign_in(client, make_user(db))

    missing = client.post(f"/dashboard/orders/{order_id}/cancel", data={"reason": "other", "confirmed": "yes"})
    wrong = client.post(
        f"/dashboard/orders/{order_id}/cancel", data={"reason": "other", "confirmed": "yes", "csrf_token": "x" * 43}
    )

    assert missing.status_code == wrong.status_code == 403
    with db.read() as conn:
        assert conn.execute(sa.select(orders.c.status).where(orders.c.id == order_id)).scalar_one() == "received"


def test_the_csrf_token_of_one_session_does_not_work_in_another(
    client: TestClient, settings: Settings, db: Database
) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    sign_in(client, make_user(db))
    foreign_token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)
    with TestClient(create_app(settings, db=db)) as second:
        sign_in(second, make_user(db))
        resp = second.post(
            f"/dashboard/orders/{order_id}/cancel",
            data={"reason": "other", "confirmed": "yes", "csrf_token": foreign_token},
        )
    assert resp.status_code == 403


def test_sign_out_ends_the_session_on_the_server(client: TestClient, db: Database) -> None:
    sign_in(client, make_user(db))
    cookie = client.cookies.get("os_session")
    token = csrf_of(client.get("/dashboard/board").text)

    assert client.post("/dashboard/signout", data={"csrf_token": token}, follow_redirects=False).status_code == 303

    client.cookies.set("os_session", cookie or "", path="/dashboard")  # a stolen copy of the cookie
    assert client.get("/dashboard/board", follow_redirects=False).status_code == 303


def test_a_merchant_sees_only_orders_of_their_locations(client: TestClient, db: Database) -> None:
    mine = make_partner(db)
    theirs = make_partner(db)
    my_order = seed_order(db, mine, pos_order_id="mine_1")
    their_order = seed_order(db, theirs, pos_order_id="theirs_1")
    sign_in(client, make_user(db, role="merchant", partners=(mine,)))

    board = client.get("/dashboard/board").text
    guessed = client.get(f"/dashboard/orders/{their_order}")
    token = csrf_of(client.get(f"/dashboard/orders/{my_order}").text)
    reveal = client.post(f"/dashboard/orders/{their_order}/reveal", data={"csrf_token": token})
    cancel = client.post(
        f"/dashboard/orders/{their_order}/cancel", data={"csrf_token": token, "reason": "other", "confirmed": "yes"}
    )

    assert "mine_1" in board
    assert "theirs_1" not in board
    assert guessed.status_code == reveal.status_code == cancel.status_code == 404
    assert client.get("/dashboard/orders/ord_doesnotexist").status_code == 404
    assert client.get("/dashboard/admin").status_code == 404
    with db.read() as conn:
        assert conn.execute(sa.select(orders.c.status).where(orders.c.id == their_order)).scalar_one() == "received"
        audited = sa.select(sa.func.count()).where(dashboard_audit.c.order_id == their_order)
        assert conn.execute(audited).scalar_one() == 0


def test_an_admin_sees_every_order(client: TestClient, db: Database) -> None:
    order_a = seed_order(db, make_partner(db))
    order_b = seed_order(db, make_partner(db))
    sign_in(client, make_user(db))

    assert client.get(f"/dashboard/orders/{order_a}").status_code == 200
    assert client.get(f"/dashboard/orders/{order_b}").status_code == 200
