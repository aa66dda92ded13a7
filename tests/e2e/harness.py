"""End-to-end harness: real `orderstream` processes on free ports, CLI set-up and webhook signing.

Every e2e test talks HTTP to processes started here. Typical use (see tests/e2e/conftest.py for the
fixtures that clean up after a test)::

    server = start_server(db_url, log_dir=tmp_path)
    partner = create_partner(db_url)
    body = json.dumps(event).encode()
    httpx.post(f"{server.base_url}/pos/{partner.slug}/webhook", content=body,
               headers=signed_headers(partner.secret, body))
    server.kill()       # kill -9
    server.restart()    # same port, same database, logs appended
    server.stop()       # SIGTERM, then SIGKILL after a grace period
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT = 60.0  # a 2-core machine shared with other test runs can be slow to start Python


def free_port() -> int:
    """A TCP port that the OS just reported free on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orderstream_command() -> list[str]:
    """The command that runs the `orderstream` CLI of the interpreter running the tests."""
    script = Path(sys.executable).parent / "orderstream"
    if script.exists():
        return [str(script)]
    found = shutil.which("orderstream")
    if found:
        return [found]
    return [sys.executable, "-c", "from orderstream.cli import main; main()"]


def process_env(db_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours without ORDERSTREAM_* settings, plus the database and extras."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_") or k.startswith("ORDERSTREAM_TEST_")}
    env["ORDERSTREAM_DATABASE_URL"] = db_url
    env["ORDERSTREAM_LOG_JSON"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], *, db_url: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Any:
    """Run `orderstream <args>`; returns the parsed JSON of stdout when it is JSON, else the text."""
    proc = subprocess.run(
        [*orderstream_command(), *args],
        env=process_env(db_url, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"orderstream {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = proc.stdout.strip()
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return out


@dataclass
class Partner:
    """A partner created through the CLI, with its only copy of the secret and API key."""

    slug: str
    secret: str
    api_key: str
    location_id: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header for the order API."""
        return {"Authorization": f"Bearer {self.api_key}"}


def create_partner(
    db_url: str,
    *,
    slug: str | None = None,
    location_id: str = "location_456",
    allow_unpaid_delivery: bool = False,
    extra_partner_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Partner:
    """Create a partner and one location through `orderstream partners add --json` / `locations add --json`."""
    slug = slug or f"pos_{uuid.uuid4().hex[:10]}"
    record = run_cli(["partners", "add", slug, "--json", *extra_partner_args], db_url=db_url, env=env)
    add_location(db_url, partner=slug, location_id=location_id, allow_unpaid_delivery=allow_unpaid_delivery, env=env)
    return Partner(
        slug=slug, secret=record["secret"], api_key=record["api_key"], location_id=location_id, record=record
    )


def add_location(
    db_url: str,
    *,
    partner: str,
    location_id: str,
    allow_unpaid_delivery: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Add a location (in Anytown, CA) for a partner through the CLI."""
    args = [
        "locations",
        "add",
        "--partner",
        partner,
        "--id",
        location_id,
        "--name",
        "Main Street Burgers",
        "--street",
        "1 Main St",
        "--city",
        "Anytown",
        "--state",
        "CA",
        "--postal-code",
        "12345",
        "--country",
        "US",
        "--phone",
        "+14155550100",
        "--timezone",
        "America/Los_Angeles",
        "--json",
    ]
    if allow_unpaid_delivery:
        args.append("--allow-unpaid-delivery")
    result: dict[str, Any] = run_cli(args, db_url=db_url, env=env)
    return result


# --- signing -------------------------------------------------------------------------------------


def sign_hex(secret: str, body: bytes) -> str:
    """`Stream-Webhook-Signature`: lowercase hex HMAC-SHA256 of the body, keyed with the secret's UTF-8 bytes."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` value: v1,<base64 HMAC-SHA256 over id.timestamp.body> keyed with the decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    secret: str,
    body: bytes,
    *,
    standard: bool = False,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Headers for a signed POS webhook: the hex signature, plus Standard Webhooks headers when asked."""
    headers = {"Content-Type": "application/json", "Stream-Webhook-Signature": sign_hex(secret, body)}
    if standard or msg_id is not None:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        ts = int(time.time()) if timestamp is None else timestamp
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = standard_webhook_signature(secret, msg_id, ts, body)
    return headers


# --- processes -----------------------------------------------------------------------------------


class ProcessError(RuntimeError):
    """A child process did not become ready; the message carries the end of its log."""


class ManagedProcess:
    """A child process with its output appended to a log file, started and stopped on demand."""

    def __init__(self, name: str, args: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.forced = False  # the last stop() had to SIGKILL

    def start(self) -> None:
        """Start the process (again); output goes to the end of the log file."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.name}: {' '.join(self.args)}\n".encode())
            log.flush()
            # a new session: signals to the test runner's group never reach it, and kill() reaches it only
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The operating-system id of the running process."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        """Graceful stop: SIGTERM, then SIGKILL after timeout seconds (sets `forced`). Returns the exit code.

        uvicorn finishes its shutdown and then re-raises SIGTERM, so a clean stop exits with -15.
        """
        self.forced = False
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.forced = True
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> int | None:
        """kill -9, no clean-up of any kind. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])


class ServerProcess(ManagedProcess):
    """`orderstream serve` on a port of its own."""

    def __init__(self, *, db_url: str, port: int, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        full_env = process_env(db_url, {"ORDERSTREAM_PUBLIC_BASE_URL": self.base_url, **(env or {})})
        args = [*orderstream_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        super().__init__("orderstream serve", args, env=full_env, log_path=log_path)
        self.db_url = db_url

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll /readyz until it answers 200; raise with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessError(f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ProcessError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Start again on the same port and database (after stop() or kill()) and wait until ready."""
        self.start()
        self.wait_ready(timeout)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client pointed at this server."""
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 30), **kwargs)


class WorkerProcess(ManagedProcess):
    """`orderstream worker`."""

    def __init__(self, *, db_url: str, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            "orderstream worker", [*orderstream_command(), "worker"], env=process_env(db_url, env), log_path=log_path
        )
        self.db_url = db_url


def start_server(
    db_url: str,
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    embedded_worker: bool = False,
    wait: bool = True,
) -> ServerProcess:
    """Start `orderstream serve` on a free port and wait for /readyz (the embedded worker is off unless asked)."""
    extra = {"ORDERSTREAM_EMBEDDED_WORKER": "true" if embedded_worker else "false", **(env or {})}
    server = ServerProcess(db_url=db_url, port=port or free_port(), log_path=log_dir / "server.log", env=extra)
    server.start()
    if wait:
        try:
            server.wait_ready()
        except ProcessError:
            server.kill()
            raise
    return server


def start_worker(
    db_url: str, *, log_dir: Path, env: Mapping[str, str] | None = None, name: str = "worker"
) -> WorkerProcess:
    """Start `orderstream worker` with its log in log_dir/<name>.log."""
    worker = WorkerProcess(db_url=db_url, log_path=log_dir / f"{name}.log", env=env)
    worker.start()
    return worker


def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition") -> Any:
    """Poll predicate() until it returns something truthy; returns it, or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s")
        time.sleep(interval)
