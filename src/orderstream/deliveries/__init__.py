"""Deliveries: couriers from delivery providers, booked, tracked and recovered."""
