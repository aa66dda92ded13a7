"""How long a POS order takes to appear on an open dashboard board, in a real browser.

A real `orderstream serve` (a fresh SQLite file, or a fresh database created on the PostgreSQL server
given with --postgres and dropped afterwards), a merchant user, Chromium
through Playwright with the board open; then N orders posted through the signed POS webhook, one at
a time. For each: the time from the webhook's 200 to the card being in the page (no reload). Prints
min / median / p90 / max in milliseconds.

    .venv/bin/python bench/dashboard_latency.py --orders 20
    .venv/bin/python bench/dashboard_latency.py --orders 20 --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.e2e import harness  # noqa: E402
from tests.e2e.test_dashboard_browser import add_user, pos_order, sign_in  # noqa: E402


@contextmanager
def fresh_database(pg_server: str | None, tmp: str) -> Iterator[str]:
    """A new SQLite file, or a new database on the PostgreSQL server (dropped at the end)."""
    if pg_server is None:
        yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"orderstream_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        pg_server.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0, help="ORDERSTREAM_DASHBOARD_SSE_POLL_SECONDS")
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.postgres, tmp) as db_url:
        harness.run_cli(["migrate"], db_url=db_url)
        partner = harness.create_partner(db_url)
        email = f"bench_{uuid.uuid4().hex[:8]}@example.com"
        add_user(db_url, email, role="merchant", locations=f"{partner.slug}/{partner.location_id}")
        server = harness.start_server(
            db_url, log_dir=Path(tmp), env={"ORDERSTREAM_DASHBOARD_SSE_POLL_SECONDS": str(args.poll)}
        )
        latencies: list[float] = []
        try:
            with sync_playwright() as pw, server.client() as client:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page()
                sign_in(page, server.base_url, email)
                page.wait_for_selector("#live[data-state=live]")
                for n in range(args.orders):
                    pos_order_id = f"bench_{n}_{uuid.uuid4().hex[:4]}"
                    body = json.dumps(pos_order(partner.location_id, pos_order_id)).encode()
                    resp = client.post(
                        f"/pos/{partner.slug}/webhook",
                        content=body,
                        headers=harness.signed_headers(partner.secret, body),
                    )
                    assert resp.status_code == 200, resp.text
                    accepted = time.monotonic()
                    page.wait_for_function(
                        "id => [...document.querySelectorAll('.card strong')].some(e => e.textContent === '#' + id)",
                        arg=pos_order_id,
                        polling="raf",
                        timeout=30_000,
                    )
                    latencies.append((time.monotonic() - accepted) * 1000)
                browser.close()
        finally:
            server.stop()
    latencies.sort()
    p90 = latencies[max(0, int(len(latencies) * 0.9) - 1)]
    print(f"orders={len(latencies)} poll={args.poll}s db={'postgresql' if args.postgres else 'sqlite'}")
    median = statistics.median(latencies)
    print(f"min={latencies[0]:.0f}ms median={median:.0f}ms p90={p90:.0f}ms max={latencies[-1]:.0f}ms")


if __name__ == "__main__":
    main()
