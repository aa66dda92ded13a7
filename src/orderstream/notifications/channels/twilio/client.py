"""A Twilio Messages API adapter over httpx: send, look up what was sent, classify errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

API_VERSION = "2010-04-01"
# Twilio error codes after which the same message can never be delivered to this recipient
PERMANENT_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614, 30003, 30004, 30005, 30006, 30007})
OPTED_OUT_CODES = frozenset({21610, 30004})  # the recipient replied STOP (or blocked us)
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class TwilioError(Exception):
    """A send that did not work: permanent (never retry), retryable, or unknown (the message may have gone out)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        permanent: bool = False,
        unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.permanent = permanent
        self.unknown = unknown
        self.retry_after = retry_after

    @property
    def opted_out(self) -> bool:
        """The recipient unsubscribed at the carrier / Twilio level."""
        return self.code in OPTED_OUT_CODES


@dataclass(frozen=True)
class SentMessage:
    """A message Twilio accepted."""

    sid: str
    status: str


@dataclass(frozen=True)
class TwilioConfig:
    """Credentials and sender."""

    base_url: str
    account_sid: str
    auth_token: str
    from_number: str | None = None
    messaging_service_sid: str | None = None


def _error(response: httpx.Response) -> TwilioError:
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    message = (body.get("message") if isinstance(body, dict) else None) or f"HTTP {response.status_code}"
    retry_after = response.headers.get("Retry-After")
    retryable = response.status_code >= 500 or response.status_code == 429 or code == 20429
    return TwilioError(
        f"twilio {response.status_code} {code}: {message}",
        code=int(code) if isinstance(code, int) else None,
        status=response.status_code,
        permanent=not retryable and isinstance(code, int) and code in PERMANENT_CODES,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


class TwilioClient:
    """Messages API calls with basic auth (Account SID : auth token)."""

    def __init__(self, http: httpx.Client, config: TwilioConfig) -> None:
        self.http = http
        self.config = config
        self.url = f"{config.base_url.rstrip('/')}/{API_VERSION}/Accounts/{config.account_sid}/Messages.json"

    @property
    def _auth(self) -> tuple[str, str]:
        return (self.config.account_sid, self.config.auth_token)

    def send(self, *, to: str, body: str, status_callback: str | None, idempotency_key: str) -> SentMessage:
        """POST a message; raises TwilioError (unknown=True when the request may have reached Twilio)."""
        form = {"To": to, "Body": body}
        if self.config.messaging_service_sid:
            form["MessagingServiceSid"] = self.config.messaging_service_sid
        elif self.config.from_number:
            form["From"] = self.config.from_number
        if status_callback:
            form["StatusCallback"] = status_callback
        try:
            response = self.http.post(
                self.url, data=form, auth=self._auth, headers={IDEMPOTENCY_HEADER: idempotency_key}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise TwilioError(f"twilio unreachable: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise TwilioError(f"twilio call interrupted: {type(err).__name__}", unknown=True) from err
        if response.status_code not in (200, 201):
            raise _error(response)
        data = response.json()
        return SentMessage(sid=str(data["sid"]), status=str(data.get("status") or "queued"))

    def find_sent(self, *, to: str, body: str, since: datetime) -> SentMessage | None:
        """A message with this recipient and body created since `since` (to recover a send cut off by a crash)."""
        params = {"To": to, "DateSent>": (since - timedelta(days=1)).date().isoformat(), "PageSize": "100"}
        try:
            response = self.http.get(self.url, params=params, auth=self._auth)
        except httpx.HTTPError as err:
            raise TwilioError(f"twilio lookup failed: {type(err).__name__}") from err
        if response.status_code != 200:
            raise _error(response)
        for message in response.json().get("messages", []):
            created = message.get("date_created")
            when = parsedate_to_datetime(created) if isinstance(created, str) else None
            if message.get("body") == body and message.get("to") == to and (when is None or when >= since):
                return SentMessage(sid=str(message["sid"]), status=str(message.get("status") or "queued"))
        return None
