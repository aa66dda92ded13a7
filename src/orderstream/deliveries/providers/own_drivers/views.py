"""Routes of the merchant's own drivers: fleet management per location, and the drivers' status endpoint.

The fleet routes exist twice with one implementation: for a partner (its API key, its own locations) under
`/v1/locations/{location_id}`, and for an operator (the admin token, any partner) under
`/admin/partners/{partner}/locations/{location_id}`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection, RowMapping

from orderstream.app_state import db_of, settings_of
from orderstream.auth import PartnerPrincipal, require_partner_key
from orderstream.deliveries import service as deliveries
from orderstream.deliveries.protocol import WebhookUpdate
from orderstream.deliveries.providers.own_drivers import service
from orderstream.deliveries.providers.own_drivers.schemas import (
    Assign,
    DriverCreate,
    DriverDelivery,
    DriverDeliveryList,
    DriverList,
    DriverWithToken,
    Fleet,
    FleetUpdate,
    Me,
    ShiftChange,
    StatusReport,
)
from orderstream.deliveries.providers.own_drivers.schemas import Driver as DriverOut
from orderstream.deliveries.providers.own_drivers.settings import OwnDriversSettings
from orderstream.errors import ERROR_RESPONSES, ApiError
from orderstream.webhooks_out.views import require_admin

LocationId = Annotated[str, Path(min_length=1, max_length=128)]
DriverId = Annotated[str, Path(max_length=40, pattern=r"^drv_[0-9a-z]+$")]
DeliveryId = Annotated[str, Path(max_length=40, pattern=r"^drd_[0-9a-z]+$")]

_driver_bearer = HTTPBearer(auto_error=False, description="A driver token issued when the driver was added.")


@contextmanager
def _tx(request: Request, *, write: bool) -> Iterator[Connection]:
    db = db_of(request)
    try:
        with db.write() if write else db.read() as conn:
            yield conn
    except service.DriversError as err:
        raise ApiError(err.status, err.code, err.message, err.details()) from err
    except deliveries.DispatchError as err:
        raise ApiError(err.status, err.code, err.message) from err


def _applier(request: Request, actor: str) -> service.Applier:
    """Hands each fleet change to dispatch, which moves the attempt and the order (same transaction)."""
    settings = settings_of(request)

    def apply(conn: Connection, update: WebhookUpdate) -> None:
        deliveries.apply_update(conn, update, actor=actor, settings=settings)

    return apply


def _fleet_defaults() -> OwnDriversSettings:
    return OwnDriversSettings()


def partner_location(
    request: Request, location_id: LocationId, principal: PartnerPrincipal = Depends(require_partner_key)
) -> RowMapping:
    """FastAPI dependency: one of the calling partner's locations, or 404."""
    with _tx(request, write=False) as conn:
        return service.location(conn, partner_id=principal.partner_id, external_id=location_id)


def admin_location(
    request: Request,
    location_id: LocationId,
    partner: Annotated[str, Path(min_length=1, max_length=64)],
    _admin: None = Depends(require_admin),
) -> RowMapping:
    """FastAPI dependency: any partner's location, for an operator holding the admin token."""
    with _tx(request, write=False) as conn:
        return service.partner_location(conn, partner_slug=partner, external_id=location_id)


def fleet_router(prefix: str, location: Callable[..., RowMapping], tags: list[str]) -> APIRouter:
    """The fleet routes under prefix, for the location the dependency resolves (and authorizes)."""
    router = APIRouter(prefix=prefix, tags=list(tags), responses=ERROR_RESPONSES)
    at = Depends(location)  # resolves and authorizes the location of every route below

    @router.get("/drivers", response_model=DriverList, summary="List drivers")
    def list_drivers(request: Request, *, loc: RowMapping = at, include_inactive: bool = False) -> dict[str, Any]:
        """The location's drivers with their open deliveries; deactivated ones only when asked."""
        with _tx(request, write=False) as conn:
            return {"data": service.list_drivers(conn, loc=loc, include_inactive=include_inactive)}

    @router.post("/drivers", response_model=DriverWithToken, status_code=201, summary="Add a driver")
    def add_driver(request: Request, *, loc: RowMapping = at, body: DriverCreate) -> dict[str, Any]:
        """Add a driver; the answer holds their token for the status endpoint, shown only this once."""
        with _tx(request, write=True) as conn:
            driver, token = service.add_driver(
                conn, loc=loc, name=body.name, phone=body.phone, vehicle=body.vehicle, on_shift=body.on_shift
            )
        return {**driver, "token": token}

    @router.patch("/drivers/{driver_id}", response_model=DriverOut, summary="Put a driver on or off shift")
    def change_shift(
        request: Request, *, loc: RowMapping = at, driver_id: DriverId, body: ShiftChange
    ) -> dict[str, Any]:
        """Only on-shift drivers are assigned automatically."""
        with _tx(request, write=True) as conn:
            return service.set_shift(conn, loc=loc, driver_id=driver_id, on_shift=body.on_shift)

    @router.post("/drivers/{driver_id}/deactivate", response_model=DriverOut, summary="Deactivate a driver")
    def deactivate(request: Request, *, loc: RowMapping = at, driver_id: DriverId) -> dict[str, Any]:
        """No more deliveries and the token stops working; refused (409) while the driver has open deliveries."""
        with _tx(request, write=True) as conn:
            return service.deactivate_driver(conn, loc=loc, driver_id=driver_id)

    @router.get("/driver-deliveries", response_model=DriverDeliveryList, summary="List own-driver deliveries")
    def list_deliveries(
        request: Request,
        loc: RowMapping = at,
        status: Annotated[
            str | None, Query(pattern=r"^(unassigned|assigned|at_pickup|picked_up|at_dropoff|delivered|canceled)$")
        ] = None,
    ) -> dict[str, Any]:
        """Newest first; `status=unassigned` lists the deliveries waiting for an operator."""
        with _tx(request, write=False) as conn:
            return {"data": service.list_deliveries(conn, loc=loc, status=status)}

    @router.post("/driver-deliveries/{delivery_id}/assign", response_model=DriverDelivery, summary="Assign a driver")
    def assign(request: Request, *, loc: RowMapping = at, delivery_id: DeliveryId, body: Assign) -> dict[str, Any]:
        """Give a waiting (or not yet picked up) delivery to a driver of the location."""
        with _tx(request, write=True) as conn:
            return service.assign(
                conn, loc=loc, delivery_id=delivery_id, driver_id=body.driver_id, apply=_applier(request, "operator")
            )

    @router.get("/fleet", response_model=Fleet, summary="Own-driver settings")
    def get_fleet(request: Request, *, loc: RowMapping = at) -> dict[str, Any]:
        """The delivery fee and whether deliveries are assigned automatically."""
        defaults = _fleet_defaults()
        with _tx(request, write=False) as conn:
            return service.fleet_dict(
                conn, loc=loc, default_fee=defaults.default_fee, default_auto_assign=defaults.default_auto_assign
            )

    @router.put("/fleet", response_model=Fleet, summary="Change own-driver settings")
    def put_fleet(request: Request, *, loc: RowMapping = at, body: FleetUpdate) -> dict[str, Any]:
        """Set the fee (minor units) and/or automatic assignment."""
        defaults = _fleet_defaults()
        with _tx(request, write=True) as conn:
            service.set_fleet(conn, loc=loc, fee=body.fee, auto_assign=body.auto_assign)
            return service.fleet_dict(
                conn, loc=loc, default_fee=defaults.default_fee, default_auto_assign=defaults.default_auto_assign
            )

    return router


router = fleet_router("/v1/locations/{location_id}", partner_location, ["own drivers"])
admin_router = fleet_router("/admin/partners/{partner}/locations/{location_id}", admin_location, ["admin"])
driver_router = APIRouter(prefix="/v1/drivers", tags=["drivers"], responses=ERROR_RESPONSES)


def require_driver(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_driver_bearer)
) -> RowMapping:
    """FastAPI dependency: the active driver holding the bearer token, or 401.

    A plain function, so FastAPI runs its database read in the thread pool, off the event loop.
    """
    token = credentials.credentials if credentials else ""
    db = db_of(request)
    driver = None
    if token:
        with db.read() as conn:
            driver = service.driver_for_token(conn, token=token)
    if driver is None:
        raise ApiError(
            401, "invalid_driver_token", "a valid driver token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return driver


DriverRow = Annotated[RowMapping, Depends(require_driver)]


@driver_router.get("/me", response_model=Me, summary="The driver and their open deliveries")
def me(request: Request, driver: DriverRow) -> dict[str, Any]:
    """Who the token belongs to, and the deliveries they still have to finish."""
    with _tx(request, write=False) as conn:
        return {"driver": service.driver_dict(driver), "deliveries": service.open_deliveries(conn, driver=driver)}


@driver_router.post("/me/shift", response_model=DriverOut, summary="Start or end a shift")
def my_shift(request: Request, driver: DriverRow, body: ShiftChange) -> dict[str, Any]:
    """A driver clocks in (gets deliveries automatically) or out."""
    with _tx(request, write=True) as conn:
        return service.set_own_shift(conn, driver=driver, on_shift=body.on_shift)


@driver_router.post("/deliveries/{delivery_id}/status", response_model=DriverDelivery, summary="Report progress")
def report_status(request: Request, driver: DriverRow, delivery_id: DeliveryId, body: StatusReport) -> dict[str, Any]:
    """The driver's status for one of their deliveries; the order follows (picked up: out for delivery, ...)."""
    proof = body.proof_of_delivery.model_dump(exclude_none=True) if body.proof_of_delivery else None
    with _tx(request, write=True) as conn:
        return service.report_status(
            conn,
            driver=driver,
            delivery_id=delivery_id,
            status=body.status,
            apply=_applier(request, "courier"),
            latitude=body.latitude,
            longitude=body.longitude,
            eta=body.eta,
            proof_of_delivery=proof or None,
            reason=body.reason,
        )
