"""Classifying POS webhook answers into order intake outcomes."""

from __future__ import annotations

import json

import pytest

from orderstream.metrics import classify_intake


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"accepted": True, "order": {"id": "ord_1", "status": "received"}}, ("accepted", "")),
        (200, {"accepted": True, "duplicate": True, "order": {"id": "ord_1"}}, ("duplicate", "")),
        (200, {"accepted": True, "order": {"id": "ord_1", "duplicate": True}}, ("duplicate", "")),
        (200, {"order": {"id": "ord_1", "status": "preparing"}}, None),
        (401, {"error": {"code": "invalid_signature", "message": "x"}}, ("rejected", "invalid_signature")),
        (422, {"error": {"code": "validation_error", "message": "x"}}, ("rejected", "validation_error")),
        (413, None, ("rejected", "unknown")),
    ],
)
def test_classify_intake(status: int, body: object, expected: tuple[str, str] | None) -> None:
    raw = b"" if body is None else json.dumps(body).encode()
    assert classify_intake(status, raw) == expected


def test_classify_intake_survives_a_body_that_is_not_json() -> None:
    assert classify_intake(500, b"<html>") == ("rejected", "unknown")
    assert classify_intake(200, b"\xff\xfe") is None
