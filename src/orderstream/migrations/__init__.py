"""Alembic migrations, shipped inside the package so `orderstream migrate` works anywhere."""
