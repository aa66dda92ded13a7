"""orderstream: a self-hostable order hub for restaurants."""

__version__ = "0.1.0"
