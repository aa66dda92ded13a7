"""Pydantic input and output models of the own-drivers API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

HttpUrl = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriverCreate(_In):
    """A new driver of the location."""

    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(min_length=3, max_length=32, description="E.164, or national in the location's country")
    vehicle: str | None = Field(default=None, max_length=100, examples=["car", "e-bike"])
    on_shift: bool = False


class ShiftChange(_In):
    """Put a driver on or off shift (only on-shift drivers are assigned automatically)."""

    on_shift: bool


class Assign(_In):
    """The driver who takes the delivery."""

    driver_id: str = Field(max_length=40, pattern=r"^drv_[0-9a-z]+$")


class FleetUpdate(_In):
    """The location's own-driver settings; a field left out keeps its value."""

    fee: int | None = Field(default=None, ge=0, description="delivery fee in minor units (0 = free)")
    auto_assign: bool | None = Field(default=None, description="false: every delivery waits for an operator")


class ProofOfDelivery(_In):
    """Links to the photo and/or signature taken at the door."""

    photo_url: str | None = HttpUrl
    signature_url: str | None = HttpUrl


class StatusReport(_In):
    """A driver's progress on one delivery, with an optional position and ETA of the next stop."""

    status: Literal["assigned", "at_pickup", "picked_up", "at_dropoff", "delivered", "canceled"]
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    eta: AwareDatetime | None = Field(default=None, description="pickup ETA before pickup, drop-off ETA after")
    proof_of_delivery: ProofOfDelivery | None = None
    reason: str | None = Field(default=None, max_length=200, description="why, when canceling")

    @model_validator(mode="after")
    def _position_is_a_pair(self) -> StatusReport:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude go together")
        return self


class Driver(BaseModel):
    """A driver (the token is shown only when the driver is added)."""

    id: str
    name: str
    phone: str
    vehicle: str | None
    active: bool
    on_shift: bool
    token_prefix: str
    created_at: str
    deactivated_at: str | None
    open_deliveries: int | None = None


class DriverWithToken(Driver):
    """A new driver with the only copy of their token for `/v1/drivers/...`."""

    token: str


class DriverList(BaseModel):
    """Drivers of a location."""

    data: list[Driver]


class DriverDelivery(BaseModel):
    """One delivery run by the location's own drivers."""

    id: str
    external_id: str
    order_id: str
    driver_id: str | None
    status: str
    canceled_by: str | None
    cancel_reason: str | None
    fee: int
    currency: str
    tip: int
    cash_to_collect: int | None
    pickup_eta: str | None
    dropoff_eta: str | None
    latitude: float | None
    longitude: float | None
    proof_of_delivery: dict[str, Any] | None
    assigned_at: str | None
    picked_up_at: str | None
    ended_at: str | None
    updated_at: str | None


class DriverDeliveryList(BaseModel):
    """Deliveries of a location or of a driver, newest first."""

    data: list[DriverDelivery]


class Fleet(BaseModel):
    """The location's own-driver settings, defaults filled in."""

    location_id: str
    fee: int
    auto_assign: bool


class Me(BaseModel):
    """The driver holding the token, and their open deliveries."""

    driver: Driver
    deliveries: list[DriverDelivery]
