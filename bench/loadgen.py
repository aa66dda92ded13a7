"""Load generator: unique, signed `order.created` events (the docs' example) against a POS webhook URL.

Closed loop (default): `--concurrency` connections each post the next event as soon as the last answer
came, for `--duration` seconds after a `--warmup`. Paced (`--rate R`): events start at a fixed R per
second whatever the answers do (open loop, up to `--concurrency` in flight); latency is measured from
each event's scheduled start, so a stall shows up in p99 instead of slowing the generator down.

    python bench/loadgen.py --url http://127.0.0.1:8000/pos/acme/webhook --secret whsec_... --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# the in-store order example of Stream's docs (the legacy envelope, as is) and its signing, as the tests use them
from tests.pos_helpers import DOC_ORDER_CREATED, signed_headers  # noqa: E402

DOCS_EXAMPLE: dict[str, Any] = json.loads(DOC_ORDER_CREATED.read_bytes())


class EventFactory:
    """Signed bodies of the docs' example, each with a provider_id (POS order id) never used before."""

    def __init__(self, secret: str, location_id: str, *, standard_webhooks: bool = False) -> None:
        self.secret = secret
        self.location_id = location_id
        self.standard_webhooks = standard_webhooks
        self.run = uuid.uuid4().hex[:10]
        self.count = 0

    def next(self) -> tuple[str, bytes, dict[str, str]]:
        """(POS order id, body, headers) of the next event."""
        self.count += 1
        pos_id = f"bench-{self.run}-{self.count}"
        event = copy.deepcopy(DOCS_EXAMPLE)
        order = event["data"]["order"]
        order["provider_id"] = pos_id
        order["location_id"] = self.location_id
        order["line_items"][0]["provider_id"] = f"item-{self.count}"
        order["customer"]["phone"] = f"+1415555{self.count % 10000:04d}"
        body = json.dumps(event, separators=(",", ":")).encode()
        msg_id = f"msg_{self.run}_{self.count}" if self.standard_webhooks else None
        headers = signed_headers(self.secret, body, msg_id=msg_id)
        return pos_id, body, headers


@dataclass
class Result:
    """What one load run measured."""

    mode: str
    concurrency: int
    seconds: float
    sent: int = 0
    accepted: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rate: float | None = None
    first_errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"{self.mode:<7} accepted/s={self.accepted_per_s:8.1f}  p50={self.p50_ms:6.1f} ms  "
            f"p99={self.p99_ms:6.1f} ms  max={self.max_ms:6.1f} ms  sent={self.sent}  errors={self.errors}  "
            f"statuses={self.statuses}"
        )


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: list[str] = []
        self.accepted_ids: list[str] = []
        self.measuring = False

    def record(self, pos_id: str, status: str, latency: float, error: str | None) -> None:
        if status == "200":
            self.accepted_ids.append(pos_id)  # warm-up included: the caller checks every 200 was stored
        if not self.measuring:
            return
        self.statuses[status] += 1
        self.latencies.append(latency)
        if status != "200" and error is not None and len(self.errors) < 5:
            self.errors.append(error)


async def _post(client: httpx.AsyncClient, url: str, factory: EventFactory, rec: _Recorder, started: float) -> None:
    pos_id, body, headers = factory.next()
    error = None
    try:
        resp = await client.post(url, content=body, headers=headers)
        status = str(resp.status_code)
        if resp.status_code != 200:
            error = f"{status}: {resp.text[:200]}"
    except httpx.HTTPError as err:
        status, error = type(err).__name__, f"{type(err).__name__}: {err}"
    rec.record(pos_id, status, time.perf_counter() - started, error)


async def _closed_loop(
    client: httpx.AsyncClient, url: str, factory: EventFactory, rec: _Recorder, concurrency: int, until: float
) -> None:
    async def one_connection() -> None:
        while time.perf_counter() < until:
            await _post(client, url, factory, rec, time.perf_counter())

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))


async def _paced(
    client: httpx.AsyncClient, url: str, factory: EventFactory, rec: _Recorder, rate: float, until: float
) -> None:
    interval = 1.0 / rate
    next_at = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    while next_at < until:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_post(client, url, factory, rec, next_at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
    if tasks:
        await asyncio.gather(*tasks)


async def run_load(
    url: str,
    factory: EventFactory,
    *,
    duration: float,
    warmup: float = 2.0,
    concurrency: int = 32,
    rate: float | None = None,
) -> tuple[Result, list[str]]:
    """Warm up, then measure for duration seconds; returns the result and every POS id answered 200."""
    # idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under our feet
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=4.0)
    rec = _Recorder()
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, pool=None)) as client:
        if warmup > 0:
            await _closed_loop(client, url, factory, rec, min(concurrency, 8), time.perf_counter() + warmup)
        rec.measuring = True
        begin = time.perf_counter()
        if rate:
            await _paced(client, url, factory, rec, rate, begin + duration)
        else:
            await _closed_loop(client, url, factory, rec, concurrency, begin + duration)
        elapsed = time.perf_counter() - begin
    lat = sorted(x * 1000 for x in rec.latencies)
    accepted = rec.statuses.get("200", 0)
    result = Result(
        mode="paced" if rate else "closed",
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        sent=len(lat),
        accepted=accepted,
        errors=len(lat) - accepted,
        statuses=dict(rec.statuses),
        accepted_per_s=round(accepted / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(percentile(lat, 0.50), 2),
        p90_ms=round(percentile(lat, 0.90), 2),
        p99_ms=round(percentile(lat, 0.99), 2),
        max_ms=round(lat[-1], 2) if lat else 0.0,
        rate=rate,
        first_errors=rec.errors,
    )
    return result, rec.accepted_ids


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (it comes with uvicorn[standard]), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    """Command line: one run against one URL, printed as a line (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the POS webhook URL, e.g. http://127.0.0.1:8000/pos/acme/webhook")
    parser.add_argument("--secret", default=os.environ.get("BENCH_SECRET"), help="the partner's whsec_... secret")
    parser.add_argument("--location", default="location_456", help="the partner's location_id")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=None, help="paced mode: events per second")
    parser.add_argument("--standard-webhooks", action="store_true", help="also send webhook-id/-timestamp/-signature")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if not args.secret:
        parser.error("--secret (or BENCH_SECRET) is required")
    factory = EventFactory(args.secret, args.location, standard_webhooks=args.standard_webhooks)
    result, _ids = run_async(
        run_load(
            args.url,
            factory,
            duration=args.duration,
            warmup=args.warmup,
            concurrency=args.concurrency,
            rate=args.rate,
        )
    )
    print(json.dumps(asdict(result)) if args.json else result.line())
    for error in result.first_errors:
        print("  error:", error)


if __name__ == "__main__":
    main()
