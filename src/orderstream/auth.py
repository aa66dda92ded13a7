"""Partner authentication for the read APIs: a bearer API key, scoped to one partner."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orderstream.app_state import db_of
from orderstream.errors import ApiError
from orderstream.tenancy import service as tenancy

bearer = HTTPBearer(auto_error=False, description="An API key issued by `orderstream partners add`.")


@dataclass(frozen=True)
class PartnerPrincipal:
    """The partner a request acts for; every query filters on partner_id."""

    partner_id: int
    slug: str


def require_partner_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
) -> PartnerPrincipal:
    """FastAPI dependency: the partner owning the bearer API key, or 401.

    Declared through Security() so that the bearer scheme appears in the OpenAPI document; a plain
    function, so FastAPI runs its database read in the thread pool, off the event loop.
    """
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "missing_api_key",
            "send an API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    db = db_of(request)
    with db.read() as conn:
        row = tenancy.partner_for_api_key(conn, key=credentials.credentials)
    if row is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return PartnerPrincipal(partner_id=int(row["id"]), slug=str(row["slug"]))
