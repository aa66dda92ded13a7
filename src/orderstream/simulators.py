"""Serve a simulator's ASGI app with uvicorn on a daemon thread of this process (the sandbox default, tests)."""

from __future__ import annotations

import threading
import time
from typing import Any, TypeVar

R = TypeVar("R", bound="RunningSimulator")


class RunningSimulator:
    """A simulator served by uvicorn on a background thread."""

    def __init__(self, app: Any, server: Any, thread: threading.Thread, host: str, port: int) -> None:
        self.app = app
        self.server = server
        self.thread = thread
        self.base_url = f"http://{host}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def close(self) -> None:
        """Stop (the services protocol of bootstrap.close_services)."""
        self.stop()


def start_in_thread(
    app: Any,
    *,
    name: str,
    kind: type[R] = RunningSimulator,  # type: ignore[assignment]
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 10.0,
    **uvicorn_options: Any,
) -> R:
    """Serve app on a daemon thread named name; port 0 picks a free port (see `.base_url`)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", **uvicorn_options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the {name} did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return kind(app, server, thread, host, int(bound))


def serve(app: Any, *, host: str, port: int) -> None:
    """Serve app in the foreground until interrupted (the `orderstream simulate ...` commands)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
