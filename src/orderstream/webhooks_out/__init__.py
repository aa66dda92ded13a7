"""Signed webhooks back to the POS: events, endpoints, deliveries with retries, replay and a polling feed."""
