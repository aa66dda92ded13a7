"""Uber Direct: adapter (client, mapping, statuses, settings) and a local simulator."""

from orderstream.deliveries.providers.uber.mapping import IgnoredWebhook, UberRejected, UberUnavailable
from orderstream.deliveries.providers.uber.provider import UberDirectProvider, sign_webhook
from orderstream.deliveries.providers.uber.settings import UberSettings

__all__ = ["IgnoredWebhook", "UberDirectProvider", "UberRejected", "UberSettings", "UberUnavailable", "sign_webhook"]
