"""The HTTP side of a webhook attempt: one POST to a checked, pinned address, no redirects, bounded reads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from orderstream.webhooks_out.ssrf import Resolver, TargetRefused, resolve_target

EXCERPT_BYTES = 1024
_KEPT_RESPONSE_HEADERS = ("content-type", "retry-after", "location", "content-length")


@dataclass(frozen=True)
class AttemptResult:
    """What happened on the wire; no status code means no answer (error_kind: blocked, timeout, network)."""

    status_code: int | None
    duration_ms: int
    address: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    excerpt: str | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def retry_after(self) -> str | None:
        """The raw Retry-After header of the answer, if any."""
        return self.response_headers.get("retry-after")


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def default_client() -> httpx.Client:
    """The process-wide client for webhooks: no proxies from the environment, no redirects."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(trust_env=False, follow_redirects=False, verify=True)
        return _client


def _read_excerpt(response: httpx.Response, deadline: float) -> str:
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= EXCERPT_BYTES or time.monotonic() > deadline:
            break
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def post(
    client: httpx.Client,
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> AttemptResult:
    """POST body to url: resolve and check the host, connect to a checked address only, never follow a redirect."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = resolve_target(url, allow_private=allow_private, resolver=resolver)
    except TargetRefused as exc:
        kind = "network" if exc.code == "unresolvable" else "blocked"
        return AttemptResult(status_code=None, duration_ms=elapsed(), error=f"{exc.code}: {exc}", error_kind=kind)
    deadline = started + timeout
    last_error: AttemptResult | None = None
    for address in target.addresses:
        request = client.build_request(
            "POST",
            target.pinned_url(address),
            content=body,
            headers={**headers, "Host": target.host_header},
            # TLS: SNI and certificate checks use the real host name, not the pinned address
            extensions={"sni_hostname": target.host},
            timeout=httpx.Timeout(timeout),
        )
        try:
            response = client.send(request, follow_redirects=False, stream=True)
        except httpx.ConnectError as exc:
            last_error = AttemptResult(
                status_code=None, duration_ms=elapsed(), address=address, error=f"connect: {exc}", error_kind="network"
            )
            continue  # another checked address of the same host may answer
        except httpx.TimeoutException as exc:
            return AttemptResult(
                status_code=None,
                duration_ms=elapsed(),
                address=address,
                error=f"timeout after {timeout:g}s: {type(exc).__name__}",
                error_kind="timeout",
            )
        except httpx.HTTPError as exc:
            return AttemptResult(
                status_code=None,
                duration_ms=elapsed(),
                address=address,
                error=f"{type(exc).__name__}: {exc}",
                error_kind="network",
            )
        try:
            kept = {k: response.headers[k] for k in _KEPT_RESPONSE_HEADERS if k in response.headers}
            try:
                excerpt = _read_excerpt(response, deadline)
            except httpx.HTTPError:
                excerpt = None  # the status line counts; a broken body does not change the outcome
            return AttemptResult(
                status_code=response.status_code,
                duration_ms=elapsed(),
                address=address,
                response_headers=kept,
                excerpt=excerpt,
            )
        finally:
            response.close()
    assert last_error is not None
    return last_error
