"""Masks for customer contact details: enough to recognise, not enough to call or write."""

from __future__ import annotations


def mask_phone(phone: str | None) -> str:
    """Only the last two digits stay visible."""
    if not phone:
        return "—"
    digits = [c for c in phone if c.isdigit()]
    return "•••• ••" + "".join(digits[-2:]) if len(digits) >= 4 else "••••"


def mask_email(email: str | None) -> str:
    """The first letter of the local part and the top-level domain stay visible."""
    if not email or "@" not in email:
        return "—" if not email else "•••"
    local, _, domain = email.partition("@")
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    return f"{local[:1]}•••@•••.{tld}" if tld else f"{local[:1]}•••@•••"


def mask_address(address: dict[str, object] | None) -> str:
    """Only the city stays visible."""
    if not address:
        return "—"
    city = address.get("city")
    return f"••• {city}" if city else "•••"


def full_address(address: dict[str, object] | None) -> str:
    """The delivery address on one line."""
    if not address:
        return "—"
    keys = ("street", "unit", "city", "state", "postal_code", "country")
    return ", ".join(str(address[k]) for k in keys if address.get(k))
