"""Fixtures for end-to-end tests: every process a test starts is stopped when it ends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness


class Launcher:
    """Starts orderstream processes for one test and remembers them for clean-up."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[harness.ManagedProcess] = []

    def server(self, db_url: str, *, env: Mapping[str, str] | None = None, **kwargs: Any) -> harness.ServerProcess:
        """`orderstream serve` on a free port, ready."""
        server = harness.start_server(db_url, log_dir=self.log_dir, env=env, **kwargs)
        self.processes.append(server)
        return server

    def worker(
        self, db_url: str, *, env: Mapping[str, str] | None = None, name: str = "worker"
    ) -> harness.WorkerProcess:
        """`orderstream worker`."""
        worker = harness.start_worker(db_url, log_dir=self.log_dir, env=env, name=name)
        self.processes.append(worker)
        return worker

    def close(self) -> None:
        """Stop everything still running (gracefully, then kill -9)."""
        for proc in reversed(self.processes):
            proc.stop(timeout=10)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """Start servers and workers; their logs are under tmp_path; all are stopped at the end of the test."""
    launcher = Launcher(tmp_path / "logs")
    yield launcher
    launcher.close()
