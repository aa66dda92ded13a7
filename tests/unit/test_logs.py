"""Log formatting and PII masking: phones, e-mails and street addresses never leave in clear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from orderstream import logs


@pytest.mark.parametrize(
    ("text", "secret", "shown"),
    [
        ("customer +1234567890 called", "1234567890", "[phone ***90]"),
        ("call +1 415-555-0100 now", "555-0100", "[phone ***00]"),
        ("call +44 (20) 7946 0958", "7946", "[phone ***58]"),
        ("tel (415) 555-0199.", "555-0199", "[phone ***99]"),
        ("tel 415-555-0123", "555-0123", "[phone ***23]"),
        ("tel 415.555.0123;", "555.0123", "[phone ***23]"),
        ("mail john.doe@example.com!", "john.doe@", "j***@example.com"),
        ("mail First.Last+tag@sub.example.co.uk", "Last+tag", "F***@sub.example.co.uk"),
        ("deliver to 123 Main St, Anytown", "Main St", "[address], Anytown"),
        ("deliver to 1600 Amphitheatre Parkway", "Amphitheatre", "[address]"),
        ("at 42 rue de la Paix Street Apt 5", "Paix", "[address]"),
        ("at 350 Fifth Ave Suite 3300, NY", "Fifth", "[address], NY"),
    ],
)
def test_mask_text_hides_contact_data(text: str, secret: str, shown: str) -> None:
    masked = logs.mask_text(text)
    assert secret not in masked
    assert shown in masked


@pytest.mark.parametrize(
    "text",
    [
        "order ord_01hx3k5m2q7r8s9t0v1w2x3y4z created",
        "at 2026-11-26T10:00:00+00:00 (epoch 1764151200000)",
        "took 12.5 ms, retry in 30.0 s, job 123456789",
        "request 3f2a9c1e0b7d4e6f8a9b0c1d2e3f4a5b from 10.0.0.12:5432",
        "total 2600 usd, 2 items, version 1.2.3",
        "quantity 2 of item_789 at location_456",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
    ],
)
def test_mask_text_leaves_ordinary_text_alone(text: str) -> None:
    assert logs.mask_text(text) == text


def test_mask_value_redacts_contact_keys_whole_and_scans_other_strings() -> None:
    value = {
        "order_id": "ord_1",
        "customer": {"name": "John Doe", "phone": "+1234567890", "email": "john.doe@example.com"},
        "delivery_address": {"street": "123 Main St", "zip": "12345"},
        "phone": "not even a number",
        "note": "ring +14155550100",
        "attempts": 3,
        "items": ["call 415-555-0100", 7, None],
    }
    masked = logs.mask_value(value)
    assert masked["order_id"] == "ord_1"
    assert masked["customer"] == {"name": "[redacted]", "phone": "[redacted]", "email": "[redacted]"}
    assert masked["delivery_address"] == {"street": "[redacted]", "zip": "[redacted]"}
    assert masked["phone"] == "[redacted]"
    assert masked["note"] == "ring [phone ***00]"
    assert masked["attempts"] == 3
    assert masked["items"] == ["call [phone ***00]", 7, None]
    assert "example.com" not in json.dumps(masked)


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("orderstream.test_logs")
    handler = logs.make_handler("json", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield stream
    logger.removeHandler(handler)
    logger.propagate = True


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_extras_request_id_and_masked_fields(capture: io.StringIO) -> None:
    log = logging.getLogger("orderstream.test_logs")
    with logs.log_context(request_id="req-1", job_id=7):
        log.warning("order from %s rejected", "john.doe@example.com", extra={"customer_phone": "+14155550100"})
    log.info("outside")
    first, second = _lines(capture)
    assert first["level"] == "warning"
    assert first["logger"] == "orderstream.test_logs"
    assert first["msg"] == "order from j***@example.com rejected"
    assert first["request_id"] == "req-1"
    assert first["job_id"] == 7
    assert first["customer_phone"] == "[redacted]"
    assert str(first["ts"]).endswith("Z")
    assert "request_id" not in second
    assert "job_id" not in second


def test_exception_text_is_masked(capture: io.StringIO) -> None:
    log = logging.getLogger("orderstream.test_logs")
    try:
        raise ValueError("duplicate key (phone)=(+14155550100) for jane@example.org")
    except ValueError:
        log.exception("insert failed")
    (line,) = _lines(capture)
    assert "ValueError" in str(line["exc"])
    assert "4155550100" not in capture.getvalue()
    assert "jane@" not in capture.getvalue()


def test_text_format_is_one_readable_line_with_masked_extras() -> None:
    stream = io.StringIO()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent to %s", ("a@b.example",), None)
    record.street = "1 Main St"
    handler = logs.make_handler("text", stream)
    handler.handle(record)
    line = stream.getvalue().strip()
    assert " INFO x sent to a***@b.example " in line
    assert 'street="[redacted]"' in line


@pytest.mark.parametrize(
    ("header", "kept"),
    [("abc-123", True), ("A.b_c:9", True), ("x" * 64, True), ("x" * 65, False), ("bad id", False), (None, False)],
)
def test_request_id_header_is_kept_only_when_safe(header: str | None, kept: bool) -> None:
    rid = logs.accept_request_id(header)
    assert (rid == header) is kept
    assert len(rid) <= 64


def test_configure_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        first = logs.configure("WARNING", "text", io.StringIO())
        second = logs.configure("INFO", "json", io.StringIO())
        assert first not in root.handlers
        assert second in root.handlers
        assert [h for h in root.handlers if h is not second] == before
        assert root.level == logging.INFO
    finally:
        root.removeHandler(second)
        root.setLevel(level)


def test_httpx_request_lines_only_at_debug() -> None:
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    try:
        handler = logs.configure("INFO", "text", out)
        logging.getLogger("httpx").info('HTTP Request: POST https://pos.example/hook?token=s3cret "HTTP/1.1 200 OK"')
        logging.getLogger("httpx").warning("httpx warning")
        assert "s3cret" not in out.getvalue()
        assert "httpx warning" in out.getvalue()
        root.removeHandler(handler)
        handler = logs.configure("DEBUG", "text", out)
        logging.getLogger("httpx").info("HTTP Request: GET https://example.test/ok")
        assert "example.test/ok" in out.getvalue()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)
