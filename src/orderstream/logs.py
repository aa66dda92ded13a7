"""Structured logging: JSON or text lines, a request id per request, and PII masked in every record.

Every record that reaches the handler installed by `configure()` goes through `PiiFilter` first:
phone numbers, e-mail addresses and street addresses are masked in the message, in every `extra`
value (recursively) and in exception text. Values under keys that name contact data (`phone`,
`email`, `street`, `address`, ...) are masked whole, whatever they look like.

The request id comes from the `X-Request-ID` header when it is a short safe token, else it is
generated; it is answered in `X-Request-ID`, added to every record logged while the request runs,
and stored with the jobs the request enqueues so that their logs carry it too (see `jobs.outbox`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

# The request id of the request (or job) being handled in this context; None outside one.
REQUEST_ID: ContextVar[str | None] = ContextVar("orderstream_request_id", default=None)
# Further fields added to every record logged in this context (job_id, kind, ...).
LOG_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("orderstream_log_context", default=MappingProxyType({}))

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

LogFormat = Literal["json", "text"]

# LogRecord attributes that are not `extra` fields.
_RESERVED = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "request_id", "color_message"}
)

# --- PII masking ---------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9][A-Za-z0-9._%+-]*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
# +<country><number>, separators allowed: +1 415-555-0100, +44 (20) 7946 0958, +1234567890
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d(?:[\s().-]{0,2}\d){6,14}(?!\d)")
# national formats with separators: (415) 555-0100, 415-555-0100, 415.555.0100, 415 555 0100
_PHONE_NATIONAL = re.compile(r"(?<![\w+.-])(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w.-]*\d)")
# a house number, up to four words, then a street type: 123 Main St, 1600 Amphitheatre Parkway
_STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|drive|dr|lane|ln|way|court|ct|place|pl|terrace|ter|"
    "parkway|pkwy|highway|hwy|square|sq|circle|cir|alley|aly|plaza|plz|trail|trl|route|rte"
)
_STREET = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?(?:\s+[A-Za-z][\w.'-]*){{1,4}}?\s+(?:{_STREET_TYPES})\b\.?"
    r"(?:,?\s+(?:apt|apartment|suite|ste|unit|#)\.?\s*[\w-]+)?",
    re.IGNORECASE,
)
# keys whose values are contact data whatever they look like
_PII_KEY = re.compile(
    r"phone|e_?mail|street|address|postal_code|zip|^line[12]$|^customers?$|^recipient$|^dropoff_contact$",
    re.IGNORECASE,
)
_MAX_DEPTH = 6


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)[0]}***@{match.group(2)}"


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"[phone ***{digits[-2:]}]"


def mask_text(text: str) -> str:
    """The text with e-mail addresses, phone numbers and street addresses masked."""
    if "@" in text:
        text = _EMAIL.sub(_mask_email, text)
    if any(c.isdigit() for c in text):
        text = _PHONE_INTL.sub(_mask_phone, text)
        text = _PHONE_NATIONAL.sub(_mask_phone, text)
        text = _STREET.sub("[address]", text)
    return text


def _redact_all(value: Any) -> Any:
    """Every leaf replaced, the shape kept (so a log still shows which fields were there)."""
    if value is None or value == "":
        return value
    if isinstance(value, Mapping):
        return {str(k): _redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_all(v) for v in value]
    return "[redacted]"


def mask_value(value: Any, *, key: str | None = None, depth: int = 0) -> Any:
    """A copy of value with PII masked: whole values under contact-data keys, patterns in any string."""
    if key is not None and _PII_KEY.search(key):
        return _redact_all(value)
    if isinstance(value, str):
        return mask_text(value)
    if depth >= _MAX_DEPTH:
        return "[...]"
    if isinstance(value, Mapping):
        return {str(k): mask_value(v, key=str(k), depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v, key=key, depth=depth + 1) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return mask_text(str(value))


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class PiiFilter(logging.Filter):
    """Masks PII in the message, the extras and the exception text of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_pii_masked", False):
            return True
        record.msg = mask_text(record.getMessage())
        record.args = None
        for key, value in record_extras(record).items():
            setattr(record, key, mask_value(value, key=key))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        record._pii_masked = True
        return True


class ContextFilter(logging.Filter):
    """Adds the current request id and log context (job id, kind) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        for key, value in LOG_CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# --- formatting ----------------------------------------------------------------------------------


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, every extra, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            out["request_id"] = request_id
        for key, value in record_extras(record).items():
            out.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A human-readable line: time, level, logger, message, then key=value extras."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), record.levelname, record.name, record.getMessage()]
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            parts.append(f"request_id={request_id}")
        parts.extend(f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in record_extras(record).items())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def make_handler(fmt: LogFormat, stream: Any = None) -> logging.Handler:
    """A stream handler with the context and PII filters and the chosen formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(PiiFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._orderstream = True  # type: ignore[attr-defined]
    return handler


def configure(level: str = "INFO", fmt: LogFormat = "json", stream: Any = None) -> logging.Handler:
    """Route every logger through one masked handler on the root logger (replaces an earlier one)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_orderstream", False):
            root.removeHandler(old)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers would otherwise print unmasked lines of their own
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # httpx logs every request with its full URL at INFO (a POS webhook URL may carry a token in its query):
    # our own lines say what was called and why; httpx's come back with DEBUG
    quiet = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    return handler


# --- request ids ---------------------------------------------------------------------------------


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def accept_request_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is a short safe token, else a new id."""
    if header and _SAFE_REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


@contextmanager
def log_context(*, request_id: str | None = None, **fields: Any) -> Iterator[None]:
    """Within the block, records carry this request id (when given) and these fields."""
    rid_token = REQUEST_ID.set(request_id) if request_id is not None else None
    ctx_token = LOG_CONTEXT.set(MappingProxyType({**LOG_CONTEXT.get(), **fields})) if fields else None
    try:
        yield
    finally:
        if ctx_token is not None:
            LOG_CONTEXT.reset(ctx_token)
        if rid_token is not None:
            REQUEST_ID.reset(rid_token)


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (bounded cardinality), or "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestLogMiddleware:
    """ASGI middleware: a request id per request (context, response header) and one access line."""

    def __init__(self, app: Any, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.log = logging.getLogger("orderstream.access")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                header = value.decode("latin-1")
                break
        request_id = accept_request_id(header)
        raw_id = request_id.encode("latin-1")
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw_id)]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log and self.log.isEnabledFor(logging.INFO):
                self.log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "route": route_template(scope),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            REQUEST_ID.reset(token)
