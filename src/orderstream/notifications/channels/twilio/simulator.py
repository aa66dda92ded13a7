"""A local Twilio Messages API simulator: the same endpoints, auth, errors and signed status callbacks.

Run it with `orderstream simulate twilio --port N`, or embed it with `start_in_thread` (the sandbox
default does, when no Twilio account is configured).

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (basic auth SID:token; form `To`, `Body`,
  `From` or `MessagingServiceSid`, `StatusCallback`) answers 201 with the message resource. A repeated
  `I-Twilio-Idempotency-Token` returns the first message and sends nothing more.
- `GET .../Messages.json?To=...` lists messages, newest first; `GET .../Messages/{Sid}.json` fetches one.
- Status callbacks go to `StatusCallback`: `sent`, then `delivered` (or `undelivered` with an error
  code), signed with `X-Twilio-Signature` under the auth token.
- Magic recipients, as Twilio's test credentials: +15005550001 invalid (21211), +15005550009 not
  mobile (21614), +15005550004 unsubscribed (21610); +15005550003 is accepted but `undelivered` (30003).

Control: `GET /_sim/messages`, `POST /_sim/faults {"mode": "http_500"|"http_429"|"timeout", "count": N}`,
`POST /_sim/inbound {"from": "+1...", "body": "STOP", "url": "..."}` (a signed inbound SMS webhook).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orderstream import simulators
from orderstream.notifications.channels.twilio.client import IDEMPOTENCY_HEADER
from orderstream.notifications.channels.twilio.signature import compute
from orderstream.simulators import RunningSimulator

SANDBOX_ACCOUNT_SID = "AC00000000000000000000000000000000"
SANDBOX_AUTH_TOKEN = "sim-auth-token"
MAGIC_REJECT = {"+15005550001": (21211, "The 'To' number is not a valid phone number."),
                "+15005550009": (21614, "'To' number is not a valid mobile number"),
                "+15005550004": (21610, "Attempt to send to unsubscribed recipient")}  # fmt: skip
MAGIC_UNDELIVERED = {"+15005550003": 30003}


@dataclass
class SimulatorConfig:
    """How the simulator behaves."""

    account_sid: str = SANDBOX_ACCOUNT_SID
    auth_token: str = SANDBOX_AUTH_TOKEN
    callback_delay_seconds: float = 0.2
    request_delay_seconds: float = 0.0  # every send answers this much later (crash tests)


@dataclass
class _Fault:
    mode: str
    count: int


@dataclass
class SimState:
    """Everything the simulator remembers."""

    config: SimulatorConfig
    messages: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _problem(status: int, code: int, message: str) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


def _authorized(state: SimState, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return False
    return user == state.config.account_sid and password == state.config.auth_token


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _take_fault(state: SimState) -> str | None:
    with state.lock:
        for fault in state.faults:
            if fault.count > 0:
                fault.count -= 1
                return fault.mode
    return None


async def _callback(state: SimState, client: httpx.AsyncClient, message: dict[str, Any], status: str) -> None:
    url = message["_status_callback"]
    params = {
        "AccountSid": state.config.account_sid,
        "MessageSid": message["sid"],
        "SmsSid": message["sid"],
        "MessageStatus": status,
        "SmsStatus": status,
        "To": message["to"],
        "From": message["from"] or "",
        "ApiVersion": "2010-04-01",
    }
    if message.get("error_code"):
        params["ErrorCode"] = str(message["error_code"])
    headers = {"X-Twilio-Signature": compute(state.config.auth_token, url, params)}
    entry: dict[str, Any] = {"sid": message["sid"], "status": status, "url": url, "response": None}
    try:
        response = await client.post(url, data=params, headers=headers, timeout=10)
        entry["response"] = response.status_code
    except httpx.HTTPError as err:
        entry["response"] = type(err).__name__
    with state.lock:
        state.callbacks.append(entry)


async def _lifecycle(state: SimState, client: httpx.AsyncClient, message: dict[str, Any]) -> None:
    delay = state.config.callback_delay_seconds
    await asyncio.sleep(delay)
    message["status"] = "sent"
    if message["_status_callback"]:
        await _callback(state, client, message, "sent")
    await asyncio.sleep(delay)
    code = MAGIC_UNDELIVERED.get(message["to"])
    message["status"] = "undelivered" if code else "delivered"
    message["error_code"] = code
    if message["_status_callback"]:
        await _callback(state, client, message, message["status"])


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app."""
    state = SimState(config or SimulatorConfig())
    tasks: set[asyncio.Task[None]] = set()
    clients: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        clients.append(httpx.AsyncClient())
        yield
        for task in list(tasks):
            task.cancel()
        await clients[0].aclose()

    async def create(request: Request) -> Response:
        if request.path_params["account_sid"] != state.config.account_sid or not _authorized(state, request):
            return _problem(401, 20003, "Authenticate")
        if state.config.request_delay_seconds:
            await asyncio.sleep(state.config.request_delay_seconds)
        fault = _take_fault(state)
        if fault == "http_500":
            return _problem(500, 20500, "Internal Server Error")
        if fault == "http_429":
            return _problem(429, 20429, "Too Many Requests")
        if fault == "timeout":
            await asyncio.sleep(60)
        form = await request.form()
        to, body = str(form.get("To") or ""), str(form.get("Body") or "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not body:
            return _problem(400, 21602, "Message body is required.")
        if not sender and not service:
            return _problem(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if to in MAGIC_REJECT:
            code, text = MAGIC_REJECT[to]
            return _problem(400, code, text)
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(to, None))
        except phonenumbers.NumberParseException:
            valid = False
        if not valid:
            return _problem(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        with state.lock:
            if key and key in state.by_key:
                return JSONResponse(_public(state.by_key[key]), status_code=201)
            now = datetime.now(UTC)
            sid = "SM" + uuid.uuid4().hex
            message: dict[str, Any] = {
                "sid": sid,
                "account_sid": state.config.account_sid,
                "to": to,
                "from": str(sender) if sender else None,
                "messaging_service_sid": str(service) if service else None,
                "body": body,
                "status": "queued",
                "num_segments": str(1 + len(body) // 160),
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": format_datetime(now),
                "date_updated": format_datetime(now),
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "price": None,
                "uri": f"/2010-04-01/Accounts/{state.config.account_sid}/Messages/{sid}.json",
                "_status_callback": str(form.get("StatusCallback") or "") or None,
                "_idempotency_key": key,
                "_created": time.time(),
            }
            state.messages.append(message)
            if key:
                state.by_key[key] = message
        task = asyncio.create_task(_lifecycle(state, clients[0], message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return JSONResponse(_public(message), status_code=201)

    async def listing(request: Request) -> Response:
        if request.path_params["account_sid"] != state.config.account_sid or not _authorized(state, request):
            return _problem(401, 20003, "Authenticate")
        to = request.query_params.get("To")
        with state.lock:
            found = [_public(m) for m in reversed(state.messages) if to is None or m["to"] == to]
        return JSONResponse({"messages": found[:1000], "page": 0, "page_size": len(found)})

    async def fetch(request: Request) -> Response:
        if not _authorized(state, request):
            return _problem(401, 20003, "Authenticate")
        with state.lock:
            found = [m for m in state.messages if m["sid"] == request.path_params["sid"]]
        if not found:
            return _problem(404, 20404, "The requested resource was not found")
        return JSONResponse(_public(found[0]))

    async def sim_messages(_request: Request) -> Response:
        with state.lock:
            found = [{**_public(m), "idempotency_key": m["_idempotency_key"]} for m in state.messages]
        return JSONResponse({"messages": found, "callbacks": list(state.callbacks)})

    async def sim_faults(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.faults.append(_Fault(str(body["mode"]), int(body.get("count", 1))))
        return JSONResponse({"ok": True})

    async def sim_inbound(request: Request) -> Response:
        body = await request.json()
        params = {
            "AccountSid": state.config.account_sid,
            "MessageSid": "SM" + uuid.uuid4().hex,
            "From": str(body["from"]),
            "To": str(body.get("to") or "+15005550006"),
            "Body": str(body["body"]),
            "NumMedia": "0",
        }
        url = str(body["url"])
        headers = {"X-Twilio-Signature": compute(state.config.auth_token, url, params)}
        response = await clients[0].post(url, data=params, headers=headers, timeout=10)
        return JSONResponse({"status": response.status_code, "body": response.text})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    base = "/2010-04-01/Accounts/{account_sid}/Messages"
    routes = [
        Route(base + ".json", create, methods=["POST"]),
        Route(base + ".json", listing, methods=["GET"]),
        Route(base + "/{sid}.json", fetch, methods=["GET"]),
        Route("/_sim/messages", sim_messages, methods=["GET"]),
        Route("/_sim/faults", sim_faults, methods=["POST"]),
        Route("/_sim/inbound", sim_inbound, methods=["POST"]),
        Route("/_sim/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.simulator = state
    return app


def start_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
) -> RunningSimulator:
    """Serve the simulator on a daemon thread; port 0 picks a free port (see `.base_url`)."""
    return simulators.start_in_thread(
        create_app(config), name="twilio-simulator", host=host, port=port, timeout=timeout
    )


def serve(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8720) -> None:
    """Run the simulator in the foreground (the CLI command)."""
    simulators.serve(create_app(config), host=host, port=port)
