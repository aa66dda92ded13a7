"""Run the real `orderstream` CLI in-process for tests."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from orderstream.cli import app

runner = CliRunner()


def cli_json(*args: str) -> Any:
    """Run `orderstream ARGS...`; the parsed JSON output, or the failing result."""
    result = runner.invoke(app, list(args))
    if result.exit_code != 0:
        return result
    return json.loads(result.stdout)
