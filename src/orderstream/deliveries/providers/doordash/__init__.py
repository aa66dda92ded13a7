"""DoorDash Drive v2: adapter (client, mapping, statuses, settings) and a local simulator."""

from orderstream.deliveries.providers.doordash.provider import DoorDashProvider
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings

__all__ = ["DoorDashProvider", "DoorDashSettings"]
