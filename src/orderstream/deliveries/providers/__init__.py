"""One package per delivery provider, each behind the DeliveryProvider interface."""
