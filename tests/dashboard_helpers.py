"""Dashboard test helpers: users, signing in through the real form, and reading CSRF tokens from pages."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from orderstream.dashboard import users
from orderstream.db import Database
from tests.factories import PartnerFixture, random_ref

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_user(db: Database, *, role: str = "admin", partners: tuple[PartnerFixture, ...] = ()) -> str:
    """Create a user (a merchant gets the first location of each partner); returns the e-mail."""
    email = f"{random_ref('user')}@example.com"
    refs = [f"{p.slug}/{p.location_id}" for p in partners]
    with db.write() as conn:
        users.add_user(conn, email=email, password=PASSWORD, role=users.Role(role), location_refs=refs)
    return email


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match is not None, "no csrf_token on the page"
    return match.group(1)


def sign_in(client: TestClient | httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    """Sign in through the form (GET for its token and cookie, then POST); returns the POST response."""
    form = client.get("/dashboard/signin")
    return client.post(
        "/dashboard/signin",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text), "next": "/dashboard/board"},
        follow_redirects=False,
    )
