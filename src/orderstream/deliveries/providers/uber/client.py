"""Uber Direct HTTP client: OAuth2 client credentials with a cached token, and the delivery endpoints (httpx only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote as urlquote

import httpx

from orderstream.deliveries.providers.uber import mapping
from orderstream.deliveries.providers.uber.settings import UberSettings


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UberClient:
    """Talks to one Uber Direct customer. Thread-safe; one token shared by all threads."""

    def __init__(
        self,
        settings: UberSettings,
        *,
        http: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self._http = http or httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False)
        self._owns_http = http is None
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self.token_fetches = 0  # how many times we asked for a token (tests and metrics)

    def close(self) -> None:
        """Release the connection pool when this client created it."""
        if self._owns_http:
            self._http.close()

    # --- OAuth ---------------------------------------------------------------------------------

    def _fetch_token(self) -> tuple[str, float]:
        form = mapping.token_form(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            scope=self.settings.scope,
        )
        try:
            response = self._http.post(self.settings.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise mapping.UberUnavailable("timeout", f"Uber token endpoint timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise mapping.UberUnavailable(
                "network_error", f"Uber token endpoint unreachable: {type(exc).__name__}"
            ) from exc
        self.token_fetches += 1
        if response.status_code != 200:
            raise mapping.error_from_response(response.status_code, response.content, response.headers, now=self._now())
        try:
            payload = response.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise mapping.UberUnavailable("bad_response", "Uber token response without access_token") from exc
        margin = min(self.settings.token_refresh_margin_seconds, lifetime / 10)
        return token, self._monotonic() + max(0.0, lifetime - margin)

    def access_token(self, *, stale: str | None = None) -> str:
        """A valid bearer token: cached, refreshed shortly before expiry, or renewed when `stale` was refused."""
        with self._lock:
            if self._token is not None and self._token != stale and self._monotonic() < self._token_refresh_at:
                return self._token
            token, refresh_at = self._fetch_token()
            self._token, self._token_refresh_at = token, refresh_at
            return token

    # --- calls ---------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/customers/{urlquote(self.settings.customer_id, safe='')}{path}"

    def _send(
        self, method: str, url: str, token: str, json_body: Any, params: Mapping[str, Any] | None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            return self._http.request(method, url, json=json_body, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise mapping.UberUnavailable("timeout", f"Uber Direct timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise mapping.UberUnavailable("network_error", f"Uber Direct unreachable: {type(exc).__name__}") from exc

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One authenticated call; a 401 renews the token and retries once. Raises UberRejected / UberUnavailable."""
        url = self._url(path)
        token = self.access_token()
        response = self._send(method, url, token, json_body, params)
        if response.status_code == 401:
            token = self.access_token(stale=token)
            response = self._send(method, url, token, json_body, params)
        if not 200 <= response.status_code < 300:
            raise mapping.error_from_response(response.status_code, response.content, response.headers, now=self._now())
        try:
            payload = response.json()
        except ValueError as exc:
            raise mapping.UberUnavailable("bad_response", "Uber Direct answered with a body that is not JSON") from exc
        if not isinstance(payload, dict):
            raise mapping.UberUnavailable("bad_response", "Uber Direct answered with a body that is not an object")
        return payload

    def create_quote(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /customers/{customer_id}/delivery_quotes."""
        return self.request("POST", "/delivery_quotes", json_body=dict(body))

    def create_delivery(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /customers/{customer_id}/deliveries."""
        return self.request("POST", "/deliveries", json_body=dict(body))

    def get_delivery(self, delivery_id: str) -> dict[str, Any]:
        """GET /customers/{customer_id}/deliveries/{delivery_id}."""
        return self.request("GET", f"/deliveries/{urlquote(delivery_id, safe='')}")

    def list_deliveries(self, *, filter: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:  # noqa: A002 - Uber's name
        """GET /customers/{customer_id}/deliveries (newest first)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if filter:
            params["filter"] = filter
        return self.request("GET", "/deliveries", params=params)

    def update_delivery(self, delivery_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /customers/{customer_id}/deliveries/{delivery_id}."""
        return self.request("POST", f"/deliveries/{urlquote(delivery_id, safe='')}", json_body=dict(body))

    def cancel_delivery(self, delivery_id: str) -> dict[str, Any]:
        """POST /customers/{customer_id}/deliveries/{delivery_id}/cancel."""
        return self.request("POST", f"/deliveries/{urlquote(delivery_id, safe='')}/cancel")

    def proof_of_delivery(
        self, delivery_id: str, *, waypoint: str = "dropoff", kind: str = "picture"
    ) -> dict[str, Any]:
        """POST /customers/{customer_id}/deliveries/{delivery_id}/proof-of-delivery."""
        body = {"waypoint": waypoint, "type": kind}
        return self.request("POST", f"/deliveries/{urlquote(delivery_id, safe='')}/proof-of-delivery", json_body=body)
