"""HTTP I/O with DoorDash Drive v2 (httpx only): JWT auth, the six endpoints, typed failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote as urlquote

import httpx
import jwt

from orderstream.deliveries.protocol import ProviderError, ProviderUnavailable
from orderstream.deliveries.providers.doordash import mapping
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings, decode_signing_secret

JWT_HEADERS = {"alg": "HS256", "typ": "JWT", "dd-ver": "DD-JWT-V1"}


def make_jwt(settings: DoorDashSettings, *, now: float | None = None) -> str:
    """A short-lived Drive JWT: HS256 over the base64url-decoded signing secret, header `dd-ver`."""
    issued = int(now if now is not None else time.time())
    claims = {
        "aud": "doordash",
        "iss": settings.developer_id,
        "kid": settings.key_id,
        "iat": issued,
        "exp": issued + settings.jwt_ttl_seconds,
    }
    key = decode_signing_secret(settings.signing_secret.get_secret_value())
    return jwt.encode(claims, key, algorithm="HS256", headers=JWT_HEADERS)


class DoorDashResponse:
    """A 2xx DoorDash answer: its status and JSON object."""

    def __init__(self, status: int, data: dict[str, Any]) -> None:
        self.status = status
        self.data = data


class DoorDashError(Exception):
    """A non-2xx DoorDash answer, kept raw so the caller can decide (e.g. 409 -> fetch the delivery)."""

    def __init__(self, status: int, content: bytes, retry_after: str | None) -> None:
        super().__init__(f"DoorDash HTTP {status}")
        self.status = status
        self.content = content
        self.retry_after = retry_after

    def typed(self) -> ProviderError:
        """The typed provider error this answer means."""
        return mapping.provider_error(self.status, self.content, retry_after=self.retry_after)


class DoorDashClient:
    """Thin Drive v2 client; network failures become ProviderUnavailable, HTTP errors DoorDashError."""

    def __init__(
        self,
        settings: DoorDashSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._token: tuple[float, str] | None = None  # (issued at, JWT): reused for half its lifetime
        timeout = httpx.Timeout(
            settings.read_timeout_seconds,
            connect=settings.connect_timeout_seconds,
        )
        self._http = httpx.Client(
            base_url=settings.base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "orderstream-doordash/1"},
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def _bearer(self) -> str:
        """A Drive JWT, signed anew once half of its lifetime has passed (signing one per call cost CPU)."""
        now = self._clock()
        token = self._token
        if token is None or not token[0] <= now < token[0] + self.settings.jwt_ttl_seconds / 2:
            token = (now, make_jwt(self.settings, now=now))
            self._token = token
        return token[1]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> DoorDashResponse:
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException as err:
            raise ProviderUnavailable("timeout", f"DoorDash {method} {path} timed out: {err!r}") from err
        except httpx.TransportError as err:
            raise ProviderUnavailable("network_error", f"DoorDash {method} {path} failed: {err!r}") from err
        if response.status_code >= 300:
            raise DoorDashError(response.status_code, response.content, response.headers.get("Retry-After"))
        try:
            data = response.json()
        except ValueError as err:
            raise ProviderUnavailable(
                "bad_response", f"DoorDash {method} {path} answered non-JSON", status=response.status_code
            ) from err
        if not isinstance(data, dict):
            raise ProviderUnavailable("bad_response", f"DoorDash {method} {path} answered a non-object")
        return DoorDashResponse(response.status_code, data)

    def create_quote(self, body: dict[str, Any]) -> DoorDashResponse:
        """`POST /drive/v2/quotes`."""
        return self._request("POST", "/drive/v2/quotes", body)

    def accept_quote(self, external_delivery_id: str, body: dict[str, Any]) -> DoorDashResponse:
        """`POST /drive/v2/quotes/{external_delivery_id}/accept`."""
        return self._request("POST", f"/drive/v2/quotes/{_segment(external_delivery_id)}/accept", body)

    def create_delivery(self, body: dict[str, Any]) -> DoorDashResponse:
        """`POST /drive/v2/deliveries`."""
        return self._request("POST", "/drive/v2/deliveries", body)

    def get_delivery(self, external_delivery_id: str) -> DoorDashResponse:
        """`GET /drive/v2/deliveries/{external_delivery_id}`."""
        return self._request("GET", f"/drive/v2/deliveries/{_segment(external_delivery_id)}")

    def update_delivery(self, external_delivery_id: str, body: dict[str, Any]) -> DoorDashResponse:
        """`PATCH /drive/v2/deliveries/{external_delivery_id}`."""
        return self._request("PATCH", f"/drive/v2/deliveries/{_segment(external_delivery_id)}", body)

    def cancel_delivery(self, external_delivery_id: str) -> DoorDashResponse:
        """`PUT /drive/v2/deliveries/{external_delivery_id}/cancel`."""
        return self._request("PUT", f"/drive/v2/deliveries/{_segment(external_delivery_id)}/cancel")

    def now(self) -> datetime:
        """The client's clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self._clock(), UTC)


def _segment(value: str) -> str:
    return urlquote(value, safe="")
