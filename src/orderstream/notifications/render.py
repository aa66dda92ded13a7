"""Message text: Jinja2 templates per kind, channel and fulfillment type, formatted for the location's locale."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from babel.dates import format_skeleton, format_time
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from orderstream.notifications.domain import Channel, Kind

TEMPLATES_DIR = Path(__file__).parent / "templates"
_LINK = re.compile(r"https?://[^\s<>\"']+")

_files = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
# SMS text is one line: keep the line breaks of the files as spaces
_sms_files = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=False, undefined=StrictUndefined)
# operators' overrides are text from the database: no attribute access beyond the context
_overrides = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


@dataclass(frozen=True)
class Rendered:
    """One message, ready to send."""

    text: str
    subject: str | None = None
    html: str | None = None


def money(amount_minor: int | None, currency: str, locale: str) -> str | None:
    """Minor units as the locale writes money: 2808 usd -> $28.08."""
    if amount_minor is None:
        return None
    code = currency.upper()
    value = Decimal(amount_minor).scaleb(-get_currency_precision(code))
    return format_currency(value, code, locale=locale)


def local_time(moment: datetime | None, tz: str, locale: str) -> str | None:
    """A time of day in the location's zone: 7:45 PM."""
    if moment is None:
        return None
    return format_time(moment.astimezone(ZoneInfo(tz)), format="short", locale=locale)


def local_datetime(moment: datetime | None, tz: str, locale: str) -> str | None:
    """A day and time in the location's zone: Thu, Nov 26, 7:45 PM."""
    if moment is None:
        return None
    local = moment.astimezone(ZoneInfo(tz))
    return f"{format_skeleton('MMMEd', local, locale=locale)}, {format_time(local, format='short', locale=locale)}"


def display_phone(phone: str, country: str) -> str:
    """The location's phone as people there write it: (415) 555-0100."""
    try:
        parsed = phonenumbers.parse(phone, country.upper() or None)
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def _template_name(channel: Channel, kind: Kind, fulfillment_type: str) -> str:
    specific = f"{channel.value}/{kind.value}.{fulfillment_type}.txt"
    try:
        _files.get_template(specific)
    except TemplateNotFound:
        return f"{channel.value}/{kind.value}.txt"
    return specific


def _block(template: Any, name: str, context: dict[str, Any]) -> str:
    return "".join(template.blocks[name](template.new_context(context))).strip()


def _text_to_html(text: str) -> str:
    """Paragraphs of escaped text; web links become anchors."""
    out = []
    for paragraph in text.split("\n\n"):
        if not paragraph.strip():
            continue
        escaped = html.escape(paragraph.strip())
        escaped = _LINK.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
        out.append("<p>" + escaped.replace("\n", "<br>") + "</p>")
    return "\n".join(out)


def render(
    channel: Channel,
    kind: Kind,
    fulfillment_type: str,
    context: dict[str, Any],
    override: dict[str, str] | None = None,
) -> Rendered:
    """The message for this kind on this channel, from the location's override text when it has one."""
    env = _sms_files if channel is Channel.SMS else _files
    template = env.get_template(_template_name(channel, kind, fulfillment_type))
    override = override or {}
    if channel is Channel.SMS:
        text = _overrides.from_string(override["text"]).render(context) if override.get("text") else None
        return Rendered(text=" ".join((text or template.render(context)).split()))
    subject = (
        _overrides.from_string(override["subject"]).render(context)
        if override.get("subject")
        else _block(template, "subject", context)
    )
    if override.get("text"):
        text = _overrides.from_string(override["text"]).render(context).strip()
    else:
        text = _block(template, "text", context)
    body_html = _files.get_template("email/layout.html").render(
        {**context, "subject": subject, "content": Markup(_text_to_html(text))}
    )
    return Rendered(text=text, subject=" ".join(subject.split()), html=body_html)


def check_override(text: str) -> None:
    """Raise jinja2.TemplateSyntaxError when an operator's override text does not compile."""
    _overrides.from_string(text)
