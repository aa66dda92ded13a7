"""Worker entry points of dispatch: quote and book, acceptance check, cancel, reconcile by polling, fail.

Every provider call happens outside a database transaction; each step records its result in its own
short transaction. Booking is idempotent on the attempt's external id, which is stored (state
`booking`) before the provider is called: a worker killed mid-booking leaves that row, and the
job's next run books again with the same id, so the provider returns the one delivery it has.
"""

from __future__ import annotations

import logging
from concurrent.futures import wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orderstream.db import utcnow
from orderstream.deliveries import policy as rules
from orderstream.deliveries import service
from orderstream.deliveries.protocol import (
    DeliveryProvider,
    DeliveryRef,
    DeliveryRequest,
    DeliverySnapshot,
    DeliveryStatus,
    Item,
    ProviderError,
    ProviderRejected,
    Quote,
    WebhookUpdate,
)
from orderstream.deliveries.registry import ProviderRegistry, UnknownProvider, providers
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryableError, RetryPolicy
from orderstream.jobs.runtime import URGENT
from orderstream.orders import domain
from orderstream.orders import service as orders_service
from orderstream.prepared import Row, deferred_writes

log = logging.getLogger("orderstream.deliveries")

DISPATCH_RETRY = RetryPolicy(max_attempts=8, base_seconds=1.0, cap_seconds=60.0)
EXPIRED_QUOTE_CODES = frozenset({"quote_expired", "expired_quote", "used_quote", "mismatched_quote"})


def _retryable(err: ProviderError) -> RetryableError:
    return RetryableError(f"{err.code}: {err.message}", retry_after=err.retry_after)


def _last_try(ctx: JobContext) -> bool:
    return ctx.attempts >= DISPATCH_RETRY.max_attempts


# -- dispatch ------------------------------------------------------------------------------------


@dataclass
class _Round:
    """One dispatch round of an order, as read before any provider call."""

    order: Row
    location: Row
    policy: rules.Policy
    number: int
    pickup_ready_at: Any
    dropoff_deadline: Any
    exclude: list[str]
    only: str | None
    actor: str
    items: tuple[Item, ...] | None  # the order's line items when read with the facts (else each request reads them)
    reasons: list[str] = field(default_factory=list)
    quotes: dict[str, int] = field(default_factory=dict)  # provider -> fee of this round's quotes

    def request(self, conn: Any, number: int) -> DeliveryRequest:
        return service.delivery_request(
            conn,
            order=self.order,
            location=self.location,
            external_id=rules.external_id(self.order["id"], number),
            pickup_ready_at=self.pickup_ready_at,
            dropoff_deadline=self.dropoff_deadline,
            items=self.items,
        )


def dispatch(ctx: JobContext) -> None:
    """Find a courier for an order: resume an unfinished booking, or quote, choose and book with fallback."""
    order_id = str(ctx.payload["order_id"])
    registry = providers(ctx.services, ctx.settings, ctx.db)
    with ctx.db.read() as conn:
        facts = service.dispatch_facts(conn, order_id, settings=ctx.settings)
        if facts is None or not service.is_dispatchable(facts.order):
            log.info("dispatch skipped", extra={"order_id": order_id, "status": facts and facts.order["status"]})
            return
        order, location = facts.order, facts.location
        active = None if facts.active_attempt_id is None else service.get_attempt(conn, facts.active_attempt_id)
        due = service.dispatch_time(order, location, ctx.settings)
        if active is None and due is not None and due - utcnow() > timedelta(seconds=1):
            # enqueued with a generic lead; the precise lead needs the location's prep time
            _defer(ctx, order_id=order_id, due=due)
            return
        pickup, dropoff = service.planned_times(order, ctx.settings)
        rnd = _Round(
            order=order,
            location=location,
            policy=facts.policy,
            number=facts.next_number,
            pickup_ready_at=pickup,
            dropoff_deadline=dropoff,
            exclude=[str(p) for p in ctx.payload.get("exclude") or []],
            only=ctx.payload.get("only"),
            actor=str(ctx.payload.get("actor") or domain.Actor.SYSTEM.value),
            items=facts.items,
        )
        if active is None:
            request = rnd.request(conn, rnd.number)
    if active is not None:
        if active["state"] == service.BOOKING:
            _resume_booking(ctx, registry, rnd, active)
        return
    _new_round(ctx, registry, rnd, request)


def _defer(ctx: JobContext, *, order_id: str, due: Any) -> None:
    with ctx.db.write() as conn:
        enqueue(conn, kind=service.DISPATCH_KIND, key=f"{order_id}:at", payload=dict(ctx.payload), run_at=due)
    log.info("future order: dispatch scheduled", extra={"order_id": order_id, "dispatch_at": due.isoformat()})


def _candidates(registry: ProviderRegistry, rnd: _Round) -> list[DeliveryProvider]:
    names = rnd.policy.candidates(only=rnd.only, exclude=rnd.exclude)
    found: list[DeliveryProvider] = []
    for name in names:
        try:
            provider = registry.get(name)
        except UnknownProvider:
            rnd.reasons.append(f"{name}: unknown provider")
            continue
        if rnd.order["unpaid"] and not provider.capabilities().cash_collection:
            rnd.reasons.append(f"{name}: cannot collect cash")
            continue
        found.append(provider)
    return found


def _quote_all(
    ctx: JobContext,
    registry: ProviderRegistry,
    candidates: list[DeliveryProvider],
    request: DeliveryRequest,
    rnd: _Round,
) -> tuple[list[Quote], bool]:
    """Quotes from every candidate in parallel, within the timeout; and whether a retry could help."""
    quotes: list[Quote] = []
    retry = False
    futures = {registry.quote_pool().submit(p.quote, request): p.name for p in candidates}
    done, late = wait(futures, timeout=ctx.settings.dispatch_quote_timeout_seconds, return_when="ALL_COMPLETED")
    for future in late:
        future.cancel()  # still queued: never asked; already running: its answer is left out
        retry = True
        rnd.reasons.append(f"{futures[future]}: no quote within {ctx.settings.dispatch_quote_timeout_seconds}s")
    for future in done:
        name = futures[future]
        try:
            quotes.append(future.result())
        except ProviderError as err:
            retry = retry or err.retryable
            rnd.reasons.append(f"{name}: {err.code}")
        except Exception as err:  # noqa: BLE001 - one broken adapter must not stop the others
            retry = True
            rnd.reasons.append(f"{name}: {type(err).__name__}")
            log.exception("quote crashed", extra={"order_id": request.order_id, "provider": name})
    return quotes, retry


def _new_round(ctx: JobContext, registry: ProviderRegistry, rnd: _Round, request: DeliveryRequest) -> None:
    order_id = rnd.order["id"]
    candidates = _candidates(registry, rnd)
    if not candidates:
        _exhausted(ctx, rnd, "no allowed provider" if not rnd.reasons else "; ".join(rnd.reasons))
        return
    quotes, retry = _quote_all(ctx, registry, candidates, request, rnd)
    ranked, rejected = rules.rank_quotes(quotes, rnd.policy, now=utcnow())
    rnd.reasons += [f"{r.provider}: {r.reason}" for r in rejected]
    log.info(
        "delivery quoted",
        extra={
            "order_id": order_id,
            "quotes": {q.provider: q.fee for q in quotes},
            "chosen_order": [q.provider for q in ranked],
        },
    )
    rnd.quotes = {q.provider: q.fee for q in quotes}
    number = rnd.number
    for quote in ranked:
        outcome = _book_new(ctx, registry.get(quote.provider), rnd, quote, number, request)
        if outcome != "failed":
            return
        number += 1
    if not ranked and retry and not _last_try(ctx):
        raise RetryableError("no quote yet: " + "; ".join(rnd.reasons))
    _exhausted(ctx, rnd, "; ".join(rnd.reasons) or "no provider could take the delivery")


def _book_new(
    ctx: JobContext, provider: DeliveryProvider, rnd: _Round, quote: Quote, number: int, request: DeliveryRequest
) -> str:
    """Start attempt `number` with this quote and book it: booked, stopped (someone else is active) or failed.

    request is the round's (attempt rnd.number); a later attempt number gets its own external id.
    """
    if number != rnd.number:
        with ctx.db.read() as conn:
            request = rnd.request(conn, number)
    if quote.external_id != request.external_id:
        try:
            quote = provider.quote(request)  # a quote is bound to the attempt's external id at some providers
        except ProviderError as err:
            rnd.reasons.append(f"{provider.name}: {err.code}")
            return "failed"
    context = {
        "actor": rnd.actor,
        "exclude": rnd.exclude,
        "only": rnd.only,
        "strategy": rnd.policy.strategy.value,
        "quotes": rnd.quotes,
    }
    values = service.attempt_values(
        order_id=rnd.order["id"], number=number, provider=provider.name, quote=quote, request=request, context=context
    )
    attempt = service.start_attempt(ctx.db, values)
    if attempt is None:
        return "stopped"
    return _book(ctx, provider, rnd, attempt, request, quote)


def _resume_booking(ctx: JobContext, registry: ProviderRegistry, rnd: _Round, attempt: Row) -> None:
    """A booking left unfinished (crash, timeout): book again with the same external id."""
    log.info(
        "resuming delivery booking", extra={"order_id": attempt["order_id"], "external_id": attempt["external_id"]}
    )
    provider = registry.get(attempt["provider"])
    with ctx.db.read() as conn:
        request = service.delivery_request(
            conn,
            order=rnd.order,
            location=rnd.location,
            external_id=attempt["external_id"],
            pickup_ready_at=attempt["pickup_ready_at"],
            dropoff_deadline=attempt["dropoff_deadline"],
            items=rnd.items,
        )
    rnd.exclude = service.excluded(attempt)
    rnd.only = (attempt["context"] or {}).get("only")
    if _book(ctx, provider, rnd, attempt, request, service.stored_quote(attempt)) == "failed":
        with ctx.db.read() as conn:
            rnd.number = service.next_number(conn, rnd.order["id"])
            request = rnd.request(conn, rnd.number)
        rnd.exclude = [*rnd.exclude, provider.name]
        _new_round(ctx, registry, rnd, request)


def _call_book(provider: DeliveryProvider, request: DeliveryRequest, quote: Quote | None) -> DeliverySnapshot:
    try:
        return provider.book(request, quote)
    except ProviderRejected as err:
        if quote is None or err.code not in EXPIRED_QUOTE_CODES:
            raise
    # the quote went stale while we waited: quote again under the same external id and book once more
    return provider.book(request, provider.quote(request))


def _book(
    ctx: JobContext,
    provider: DeliveryProvider,
    rnd: _Round,
    attempt: Row,
    request: DeliveryRequest,
    quote: Quote | None,
) -> str:
    order_id = attempt["order_id"]
    try:
        snapshot = _call_book(provider, request, quote)
    except ProviderError as err:
        if err.retryable and not _last_try(ctx):
            log.info(
                "delivery booking will be retried",
                extra={"order_id": order_id, "provider": provider.name, "error": err.code},
            )
            raise _retryable(err) from None
        with ctx.db.write() as conn:
            service.lock_attempt(conn, int(attempt["id"]))
            service.end_attempt(
                conn,
                attempt=attempt,
                outcome=rules.Ending.BOOKING_FAILED,
                reason=f"{err.code}: {err.message}"[:500],
                actor=domain.Actor.SYSTEM.value,
            )
        rnd.reasons.append(f"{provider.name}: {err.code}")
        return "failed"
    timeout = rnd.policy.acceptance_timeout(provider.name, ctx.settings.dispatch_acceptance_timeout_seconds)
    with ctx.db.write() as conn:
        locked = service.lock_order_and_attempt(conn, int(attempt["id"]), order_id=order_id)
        with deferred_writes(conn):  # what follows is writes only: one statement on PostgreSQL
            if locked is not None and locked[1]["state"] == service.BOOKING:
                service.record_booked(
                    conn,
                    order=locked[0],
                    attempt=locked[1],
                    snapshot=snapshot,
                    accept_within=timeout,
                    settings=ctx.settings,
                )
            ctx.finish_in(conn)  # a booked attempt ends the dispatch job (see _new_round, _resume_booking)
    log.info(
        "delivery booked",
        extra={
            "order_id": order_id,
            "provider": provider.name,
            "external_id": request.external_id,
            "fee": snapshot.fee,
            "delivery_status": snapshot.status.value,
        },
    )
    return "booked"


def _exhausted(ctx: JobContext, rnd: _Round, reason: str) -> None:
    with ctx.db.write() as conn:
        orders_service.lock_order(conn, order_id=rnd.order["id"])
        if service.active_attempt(conn, rnd.order["id"]) is None:
            service.schedule_failure(conn, order_id=rnd.order["id"], reason=reason[:500], settings=ctx.settings)


# -- after booking -------------------------------------------------------------------------------


def _ref(attempt: Row) -> DeliveryRef:
    return DeliveryRef(external_id=attempt["external_id"], provider_delivery_id=attempt["provider_delivery_id"])


def check_acceptance(ctx: JobContext) -> None:
    """No courier accepted within the acceptance timeout: cancel at that provider and fall back to the next."""
    attempt_id = int(ctx.payload["attempt_id"])
    with ctx.db.read() as conn:
        attempt = service.get_attempt(conn, attempt_id)
    if attempt is None or attempt["state"] != service.BOOKED:
        return
    if DeliveryStatus(attempt["delivery_status"]) in rules.COURIER_ASSIGNED or attempt["cancel_requested_at"]:
        return
    provider = providers(ctx.services, ctx.settings, ctx.db).get(attempt["provider"])
    with ctx.db.write() as conn:
        service.mark_cancel_purpose(conn, attempt_id=attempt_id, purpose="no_courier")
    try:
        outcome = provider.cancel(_ref(attempt))
    except ProviderError as err:
        if err.retryable:
            raise _retryable(err) from None
        log.warning("acceptance timeout: cancel failed", extra={"order_id": attempt["order_id"], "error": err.code})
        return
    with ctx.db.write() as conn:
        current = service.lock_attempt(conn, attempt_id)
        if current is None:
            return
        if not outcome.canceled:
            service.mark_cancel_purpose(conn, attempt_id=attempt_id, purpose=None)
            return  # a courier took it after all
        seconds = (attempt["accept_deadline"] - attempt["booked_at"]).total_seconds() if attempt["booked_at"] else 0
        service.end_attempt(
            conn,
            attempt=current,
            outcome=rules.Ending.NO_COURIER,
            reason=f"no courier accepted within {seconds:.0f}s",
            actor=domain.Actor.SYSTEM.value,
        )
        order = service.get_order(conn, attempt["order_id"])
        if order is not None and service.is_dispatchable(order) and service.active_attempt(conn, order["id"]) is None:
            service.request_redispatch(
                conn,
                order_id=order["id"],
                actor=domain.Actor.SYSTEM.value,
                reason=f"no courier at {attempt['provider']}",
                exclude=[*service.excluded(attempt), attempt["provider"]],
                automatic=True,
            )


def cancel_delivery(ctx: JobContext) -> None:
    """Cancel an attempt with its provider and record the outcome (canceled, fee, or refused after pickup)."""
    attempt_id = int(ctx.payload["attempt_id"])
    with ctx.db.read() as conn:
        attempt = service.get_attempt(conn, attempt_id)
    if attempt is None or attempt["state"] == service.ENDED:
        return
    if attempt["state"] == service.BOOKING:
        raise RetryableError("the booking is still in flight", retry_after=2.0)
    provider = providers(ctx.services, ctx.settings, ctx.db).get(attempt["provider"])
    try:
        outcome = provider.cancel(_ref(attempt))
    except ProviderError as err:
        if err.retryable and not _last_try(ctx):
            raise _retryable(err) from None
        with ctx.db.write() as conn:
            service.record_cancel_refused(conn, attempt_id=attempt_id, reason=f"{err.code}: {err.message}"[:500])
        return
    with ctx.db.write() as conn:
        service.record_cancel_outcome(conn, attempt_id=attempt_id, outcome=outcome, settings=ctx.settings)
        ctx.finish_in(conn)


def reconcile(ctx: JobContext) -> None:
    """Poll the provider for an active delivery whose webhooks went quiet; then check again later."""
    attempt_id = int(ctx.payload["attempt_id"])
    seq = int(ctx.payload.get("seq", 1))
    with ctx.db.read() as conn:
        attempt = service.get_attempt(conn, attempt_id)
    if attempt is None or attempt["state"] != service.BOOKED:
        return
    quiet = timedelta(seconds=ctx.settings.dispatch_quiet_seconds)
    if attempt["last_event_at"] is None or utcnow() - attempt["last_event_at"] >= quiet:
        provider = providers(ctx.services, ctx.settings, ctx.db).get(attempt["provider"])
        try:
            snapshot = provider.get(_ref(attempt))
        except ProviderError as err:
            log.info("reconcile poll failed", extra={"order_id": attempt["order_id"], "error": err.code})
            snapshot = None
        if snapshot is not None:
            stamp = snapshot.updated_at.isoformat() if snapshot.updated_at else utcnow().isoformat()
            update = WebhookUpdate(
                provider=provider.name,
                event_id=f"poll:{attempt['external_id']}:{snapshot.provider_status}:{stamp}",
                event_name="poll",
                snapshot=snapshot,
            )
            with ctx.db.write() as conn:
                result = service.apply_update(conn, update, actor=domain.Actor.COURIER.value, settings=ctx.settings)
            log.info("delivery reconciled by polling", extra={"order_id": attempt["order_id"], "result": result.result})
    with ctx.db.write() as conn:
        current = service.lock_attempt(conn, attempt_id)
        if current is not None and current["state"] == service.BOOKED:
            service.schedule_reconcile(conn, attempt_id=attempt_id, seq=seq + 1, settings=ctx.settings)
        ctx.finish_in(conn)


def fail_after_grace(ctx: JobContext) -> None:
    """The grace period after an exhausted dispatch ended: fail the order unless an operator re-dispatched."""
    order_id = str(ctx.payload["order_id"])
    with ctx.db.write() as conn:
        orders_service.lock_order(conn, order_id=order_id)
        if service.active_attempt(conn, order_id) is not None:
            return
        if service.next_number(conn, order_id) - 1 != int(ctx.payload.get("attempts", 0)):
            return  # a newer attempt was made since: that round decides
        if service.dispatch_pending(conn, order_id):
            return
        service.fail_order(conn, order_id=order_id, reason=f"no courier: {ctx.payload.get('reason')}")


def register_jobs(registry: JobRegistry) -> None:
    """Register the job kinds of dispatch."""
    # finding (or replacing) a courier and canceling one go before the worker's other jobs when it falls behind
    registry.register(JobKind(service.DISPATCH_KIND, dispatch, retry=DISPATCH_RETRY, priority=URGENT))
    registry.register(JobKind(service.ACCEPTANCE_KIND, check_acceptance, retry=DISPATCH_RETRY, priority=URGENT))
    registry.register(JobKind(service.CANCEL_KIND, cancel_delivery, retry=DISPATCH_RETRY, priority=URGENT))
    registry.register(JobKind(name=service.RECONCILE_KIND, handler=reconcile, retry=DISPATCH_RETRY))
    registry.register(JobKind(name=service.FAIL_KIND, handler=fail_after_grace, retry=DISPATCH_RETRY))
