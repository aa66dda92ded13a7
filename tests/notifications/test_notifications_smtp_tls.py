"""The SMTP channel against real aiosmtpd servers: STARTTLS and implicit TLS (certificate verified), login, bounce."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from orderstream.notifications.channels.smtp import Email, EmailError, SmtpConfig, SmtpSender
from tests.notifications_helpers import SmtpSink, free_port


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    folder = tmp_path_factory.mktemp("tls")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def _server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def _authenticator(_server: object, _session: object, _envelope: object, mechanism: str, data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"relay" and data.password == b"s3cret"
    return AuthResult(success=ok)


def _start(sink: SmtpSink, **kwargs: object) -> Controller:
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def trust(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The client trusts the test certificate (ssl.create_default_context reads SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))


def _email(to: str = "tls.user@example.com") -> Email:
    return Email(
        notification_id="ntf_tls",
        sender="orders@burgers.example",
        to=to,
        subject="Order #1 confirmed",
        text="Thanks!",
        html="<p>Thanks!</p>",
        unsubscribe_url="https://orders.example.com/notifications/unsubscribe/x",
    )


@pytest.fixture
def starttls_sink(cert: tuple[Path, Path]) -> Iterator[SmtpSink]:
    sink = SmtpSink()
    controller = _start(
        sink,
        tls_context=_server_context(cert),
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
    )
    yield sink
    controller.stop()


@pytest.mark.usefixtures("trust")
def test_starttls_with_login(starttls_sink: SmtpSink) -> None:
    config = SmtpConfig(host="127.0.0.1", port=starttls_sink.port, security="starttls", username="relay",
                        password="s3cret")  # fmt: skip
    assert SmtpSender(config).send(_email()) == "<ntf_tls@orderstream.local>"
    [msg] = starttls_sink.messages
    assert msg["From"] == "orders@burgers.example"
    bad = SmtpConfig(
        host="127.0.0.1", port=starttls_sink.port, security="starttls", username="relay", password="no", timeout=3
    )
    with pytest.raises(EmailError) as failed:
        SmtpSender(bad).send(_email())
    assert not failed.value.permanent  # the operator can fix the credentials: retried
    assert not failed.value.unknown  # nothing was handed over
    assert len(starttls_sink.messages) == 1


def test_plain_connection_is_refused_where_tls_is_required(starttls_sink: SmtpSink) -> None:
    with pytest.raises(EmailError) as failed:
        SmtpSender(SmtpConfig(host="127.0.0.1", port=starttls_sink.port)).send(_email())
    assert failed.value.permanent
    assert starttls_sink.messages == []


def test_an_untrusted_certificate_is_refused(starttls_sink: SmtpSink) -> None:
    config = SmtpConfig(host="127.0.0.1", port=starttls_sink.port, security="starttls")
    with pytest.raises(EmailError):
        SmtpSender(config).send(_email())
    assert starttls_sink.messages == []


@pytest.mark.usefixtures("trust")
def test_implicit_tls(cert: tuple[Path, Path]) -> None:
    sink = SmtpSink()
    controller = _start(sink, ssl_context=_server_context(cert))
    try:
        SmtpSender(SmtpConfig(host="127.0.0.1", port=sink.port, security="ssl")).send(_email())
    finally:
        controller.stop()
    [msg] = sink.messages
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(EmailError) as failed:
        SmtpSender(SmtpConfig(host="127.0.0.1", port=free_port(), timeout=2)).send(_email())
    assert not failed.value.permanent
    assert not failed.value.unknown
