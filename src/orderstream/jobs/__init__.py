"""The job runtime: a transactional outbox claimed by workers with leases."""
