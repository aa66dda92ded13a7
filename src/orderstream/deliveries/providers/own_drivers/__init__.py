"""The merchant's own drivers: a DeliveryProvider backed by our database instead of an HTTP API."""
