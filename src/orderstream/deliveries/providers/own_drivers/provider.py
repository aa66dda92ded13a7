"""The merchant's own drivers behind the DeliveryProvider interface: bookings are rows, drivers report by API."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import Database, utcnow
from orderstream.deliveries.protocol import (
    CancelOutcome,
    Capabilities,
    DeliveryProvider,
    DeliveryRef,
    DeliveryRequest,
    DeliverySnapshot,
    ProviderRejected,
    Quote,
    WebhookRejected,
    WebhookUpdate,
)
from orderstream.deliveries.providers.own_drivers import mapping, store
from orderstream.deliveries.providers.own_drivers.settings import OwnDriversSettings
from orderstream.deliveries.providers.own_drivers.statuses import (
    BEFORE_PICKUP,
    CANCELED_BY_MERCHANT,
    TERMINAL,
    DriverStatus,
)
from orderstream.ids import new_id
from orderstream.orders.domain import FulfillmentType

log = logging.getLogger(__name__)

NONCANCELABLE = "noncancelable_delivery"


class OwnDriversProvider:
    """Own drivers of the order's location. The attempt's external_id is the idempotency key of a booking.

    Every call is one short database transaction of its own; like any provider, it must not be called
    inside another transaction (on SQLite that would wait on the single writer).
    """

    name = mapping.PROVIDER

    def __init__(
        self,
        db: Database,
        settings: OwnDriversSettings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db  # the process's shared Database (the registry passes it)
        self.settings = settings or OwnDriversSettings()
        self.now = clock

    def capabilities(self) -> Capabilities:
        """Drivers collect cash, take scheduled runs and tips; proof of delivery (photo/signature URL) is optional."""
        return Capabilities(scheduling=True, cash_collection=True, tips=True, proof_of_delivery=True)

    # -- quote and book ------------------------------------------------------------------------------

    def quote(self, request: DeliveryRequest) -> Quote:
        """The location's fee (0 unless configured) and ETAs from its prep time; refused without any driver."""
        now = self.now()
        with self.db.read() as conn:
            where = self._where(conn, request)
            fee, _ = self._fleet(conn, location_id=where["location_id"])
        eta = self._etas(where, request, now)
        return mapping.quote(request, fee=fee, eta=eta, now=now, validity_seconds=self.settings.quote_validity_seconds)

    def book(self, request: DeliveryRequest, quote: Quote | None = None) -> DeliverySnapshot:
        """Create the driver delivery, given to the least busy on-shift driver or left for an operator.

        A second call with the same external_id returns the first booking unchanged.
        """
        if quote is not None:
            if quote.provider != self.name or quote.quote_id != request.external_id:
                raise ProviderRejected("mismatched_quote", "the quote belongs to another provider or delivery")
            if quote.expires_at is not None and self.now() >= quote.expires_at:
                raise ProviderRejected("quote_expired", f"the quote expired at {quote.expires_at.isoformat()}")
        existing = self._existing(request.external_id)
        if existing is not None:
            return existing
        try:
            with self.db.write() as conn:
                return self._book(conn, request, quote)
        except sa.exc.IntegrityError:
            # a concurrent call with the same external_id won the insert: that booking is the answer
            existing = self._existing(request.external_id)
            if existing is None:
                raise
            return existing

    def _book(self, conn: Connection, request: DeliveryRequest, quote: Quote | None) -> DeliverySnapshot:
        row = store.get_delivery(conn, external_id=request.external_id)
        if row is not None:
            return self._snapshot(conn, row)
        now = self.now()
        where = self._where(conn, request)
        location_id = where["location_id"]
        eta = self._etas(where, request, now)
        fee, auto_assign = self._fleet(conn, location_id=location_id)
        driver_id = None
        if auto_assign:
            driver_id = mapping.least_busy(store.on_shift_candidates(conn, location_id=location_id))
        delivery_id = new_id("drd")
        store.insert_delivery(
            conn,
            id=delivery_id,
            external_id=request.external_id,
            order_id=request.order_id,
            location_id=location_id,
            driver_id=driver_id,
            status=(DriverStatus.ASSIGNED if driver_id else DriverStatus.UNASSIGNED).value,
            fee=quote.fee if quote is not None else fee,
            currency=request.currency,
            tip=request.tip,
            cash_to_collect=request.cash_to_collect,
            pickup_ready_at=request.pickup_ready_at,
            dropoff_deadline=request.dropoff_deadline,
            pickup_eta=eta.pickup,
            dropoff_eta=eta.dropoff,
            assigned_at=now if driver_id else None,
        )
        row = store.get_delivery(conn, delivery_id=delivery_id)
        assert row is not None
        log.info(
            "own-driver delivery booked",
            extra={"order_id": request.order_id, "delivery_id": delivery_id, "driver_id": driver_id},
        )
        return self._snapshot(conn, row)

    # -- after booking -------------------------------------------------------------------------------

    def get(self, ref: DeliveryRef) -> DeliverySnapshot:
        """The stored truth, which drivers and operators keep current."""
        with self.db.read() as conn:
            return self._snapshot(conn, self._require(conn, ref))

    def cancel(self, ref: DeliveryRef) -> CancelOutcome:
        """Cancel before pickup (never a fee); refused once the food left the store, or after the end."""
        with self.db.write() as conn:
            row = self._require(conn, ref, lock=True)
            status = DriverStatus(row["status"])
            if status is DriverStatus.CANCELED:
                return CancelOutcome(canceled=True, fee_charged=0, reason=row["cancel_reason"])
            if status not in BEFORE_PICKUP:
                return CancelOutcome(canceled=False, reason=NONCANCELABLE)
            store.update_delivery(
                conn,
                delivery_id=row["id"],
                status=DriverStatus.CANCELED.value,
                canceled_by=CANCELED_BY_MERCHANT,
                cancel_reason="cancelled_by_merchant",
                ended_at=self.now(),
            )
        return CancelOutcome(canceled=True, fee_charged=0, reason="cancelled_by_merchant")

    def update(
        self,
        ref: DeliveryRef,
        *,
        tip: int | None = None,
        pickup_ready_at: datetime | None = None,
        dropoff_deadline: datetime | None = None,
    ) -> DeliverySnapshot:
        """Change the tip or times of a delivery that is not finished."""
        values: dict[str, Any] = {}
        if tip is not None:
            if tip < 0:
                raise ProviderRejected("invalid_tip", "the tip must be zero or more")
            values["tip"] = tip
        if pickup_ready_at is not None:
            values["pickup_ready_at"] = pickup_ready_at
        if dropoff_deadline is not None:
            values["dropoff_deadline"] = dropoff_deadline
        with self.db.write() as conn:
            row = self._require(conn, ref, lock=True)
            if values:
                if DriverStatus(row["status"]) in TERMINAL:
                    raise ProviderRejected("delivery_finished", f"the delivery is already {row['status']}")
                if pickup_ready_at is not None and row["picked_up_at"] is None:
                    values["pickup_eta"] = max(pickup_ready_at, row["pickup_eta"] or pickup_ready_at)
                store.update_delivery(conn, delivery_id=row["id"], **values)
                row = self._require(conn, ref)
            return self._snapshot(conn, row)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookUpdate:
        """Own drivers send no webhooks: they report through `POST /v1/drivers/deliveries/{id}/status`."""
        raise WebhookRejected(404, "no_webhooks", "own drivers report through /v1/drivers/deliveries/{id}/status")

    # -- helpers -------------------------------------------------------------------------------------

    def _existing(self, external_id: str) -> DeliverySnapshot | None:
        with self.db.read() as conn:
            row = store.get_delivery(conn, external_id=external_id)
            return self._snapshot(conn, row) if row is not None else None

    def _where(self, conn: Connection, request: DeliveryRequest) -> RowMapping:
        where = store.order_and_location(conn, order_id=request.order_id)
        if where is None:
            raise ProviderRejected("unknown_order", f"no order {request.order_id!r}")
        if store.count_active_drivers(conn, location_id=where["location_id"]) == 0:
            if where["fulfillment_type"] != FulfillmentType.MERCHANT_MANAGED_DELIVERY.value:
                raise ProviderRejected("no_drivers", "this location has no drivers of its own")
            # nobody else may take a merchant-managed order: it waits unassigned until a driver is added and assigned
        return where

    def _etas(self, where: RowMapping, request: DeliveryRequest, now: datetime) -> mapping.Etas:
        prep = where["order_prep_time_minutes"]
        if prep is None:
            prep = where["location_prep_time_minutes"]
        return mapping.etas(
            now=now,
            prep_minutes=int(prep or 0),
            travel_minutes=self.settings.travel_minutes,
            pickup_ready_at=request.pickup_ready_at,
        )

    def _fleet(self, conn: Connection, *, location_id: int) -> tuple[int, bool]:
        return mapping.fleet_values(
            store.fleet(conn, location_id=location_id),
            default_fee=self.settings.default_fee,
            default_auto_assign=self.settings.default_auto_assign,
        )

    def _require(self, conn: Connection, ref: DeliveryRef, *, lock: bool = False) -> RowMapping:
        row = store.get_delivery(conn, external_id=ref.external_id, lock=lock)
        if row is None:
            raise ProviderRejected("not_found", f"no own-driver delivery {ref.external_id!r}", status=404)
        return row

    def _snapshot(self, conn: Connection, row: RowMapping) -> DeliverySnapshot:
        driver = store.get_driver(conn, driver_id=row["driver_id"]) if row["driver_id"] else None
        return mapping.snapshot(row, driver)


if TYPE_CHECKING:  # mypy proves the class satisfies the shared interface
    _conforms: DeliveryProvider = OwnDriversProvider(Database(sa.create_engine("sqlite://")))
