"""Screenshots of browser tests: kept as test artifacts; docs/screenshots is rewritten only on request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def update_docs_screenshot(path: Path) -> None:
    """Copy a screenshot over its docs/screenshots namesake when ORDERSTREAM_UPDATE_SCREENSHOTS=1.

    A plain test run must leave the checkout as it found it (CI runs on a clean clone)."""
    if os.environ.get("ORDERSTREAM_UPDATE_SCREENSHOTS") != "1":
        return
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
