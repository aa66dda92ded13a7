"""E-mail over SMTP (smtplib): STARTTLS or implicit TLS, text + HTML parts, List-Unsubscribe, a stable Message-ID."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate


class EmailError(Exception):
    """A send that did not work: permanent (bounce: never retry), or retryable; unknown when it may have gone out."""

    def __init__(self, message: str, *, permanent: bool = False, unknown: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.unknown = unknown


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect."""

    host: str
    port: int
    security: str = "none"  # none | starttls | ssl
    username: str | None = None
    password: str | None = None
    timeout: float = 15.0
    domain: str = "orderstream.local"  # right-hand side of Message-IDs


@dataclass(frozen=True)
class Email:
    """One e-mail to send."""

    notification_id: str
    sender: str
    to: str
    subject: str
    text: str
    html: str | None
    unsubscribe_url: str


def message_id(notification_id: str, domain: str) -> str:
    """The Message-ID of a notification: the same on every attempt, so receivers can spot a repeat."""
    return f"<{notification_id}@{domain}>"


def build(email: Email, domain: str) -> EmailMessage:
    """The MIME message: multipart/alternative with a plain-text and an HTML part."""
    msg = EmailMessage()
    msg["From"] = email.sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(email.notification_id, domain)
    msg["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(email.text + f"\n\n--\nUnsubscribe: {email.unsubscribe_url}\n")
    if email.html:
        msg.add_alternative(email.html, subtype="html")
    return msg


class SmtpSender:
    """Sends one message per connection (a worker sends few; a pool is not worth its failure modes)."""

    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.security == "ssl":
            return smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context())
        client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        if cfg.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, email: Email) -> str:
        """Send; returns the Message-ID. Raises EmailError."""
        msg = build(email, self.config.domain)
        try:
            client = self._connect()
        except (OSError, smtplib.SMTPException) as err:
            raise EmailError(f"smtp connect failed: {type(err).__name__}") from err
        try:
            if self.config.username:
                try:
                    client.login(self.config.username, self.config.password or "")
                except (smtplib.SMTPException, OSError) as err:
                    # nothing was handed over yet; credentials are the operator's to fix: retry
                    raise EmailError(f"smtp login failed: {type(err).__name__}") from err
            refused = client.send_message(msg)
        except smtplib.SMTPRecipientsRefused as err:
            codes = [code for code, _ in err.recipients.values()]
            raise EmailError(f"recipient refused ({codes})", permanent=all(c >= 500 for c in codes)) from err
        except smtplib.SMTPResponseException as err:
            raise EmailError(f"smtp {err.smtp_code}", permanent=err.smtp_code >= 500) from err
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError) as err:
            raise EmailError(f"smtp interrupted: {type(err).__name__}", unknown=True) from err
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
        if refused:
            raise EmailError("recipient refused", permanent=True)
        return str(msg["Message-ID"])


class LogSender:
    """The sandbox sink: nothing leaves the process; the message stays in the database and order history."""

    name = "log"

    def __init__(self, domain: str = "orderstream.local") -> None:
        self.domain = domain

    def send(self, email: Email) -> str:
        """Accept the message; returns its Message-ID."""
        return message_id(email.notification_id, self.domain)
