"""Tenancy: partners (POS integrators), their secrets and API keys, and their locations."""
