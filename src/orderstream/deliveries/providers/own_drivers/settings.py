"""Own-drivers knobs, read from ORDERSTREAM_OWN_DRIVERS_* variables (per-location values live in the database)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OwnDriversSettings(BaseSettings):
    """Defaults for locations that did not configure their fleet."""

    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_OWN_DRIVERS_", extra="ignore")

    default_fee: int = Field(default=0, ge=0)  # minor units; a location's own fee wins
    default_auto_assign: bool = True  # False: every delivery waits for an operator to assign a driver
    travel_minutes: int = Field(default=20, ge=0, le=600)  # pickup to drop-off, for the drop-off ETA
    quote_validity_seconds: int = Field(default=900, ge=10)
