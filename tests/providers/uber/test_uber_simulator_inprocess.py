"""The simulator run in process, as the sandbox default does: on a background thread, and mounted under a prefix."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from orderstream.deliveries.protocol import DeliveryRef, DeliveryStatus
from orderstream.deliveries.providers.uber import UberDirectProvider, UberSettings
from orderstream.deliveries.providers.uber.simulator import (
    SimulatorConfig,
    create_app,
    parse_markers,
    start_in_thread,
)
from tests.factories import random_ref
from tests.providers.uber.uber_helpers import make_request, wait_for, webhook_receiver


def _request(**overrides: object) -> object:
    order_id = random_ref("ord")
    return make_request(external_id=f"os-{order_id}-1", order_id=order_id, **overrides)


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        ("Ring twice", {}),
        ("[sim:no_courier]", {"no_courier": None}),
        ("Gate 4 [sim:http_500*2, cancel_fee] thanks", {"http_500": 2, "cancel_fee": None}),
        ("[sim:teleport]", {}),  # unknown modes are ignored
        ("[sim:return,rate_limit*1]", {"return_to_store": None, "http_429": 1}),  # aliases
    ],
)
def test_fault_markers(notes: str, expected: dict[str, int | None]) -> None:
    assert parse_markers(notes) == expected


def test_background_simulator_runs_a_delivery_to_the_door_even_after_a_tip_change() -> None:
    with webhook_receiver() as receiver:
        background = start_in_thread(SimulatorConfig(webhook_url=receiver.url, step_seconds=0.1))
        try:
            provider = UberDirectProvider(UberSettings.for_simulator(background.base_url))
            request = _request()
            booked = provider.book(request, provider.quote(request))
            ref = DeliveryRef(request.external_id, booked.provider_delivery_id)
            # ETAs follow the simulator's pace: seven steps of 0.1 s, not real-world minutes
            assert booked.pickup_eta is not None
            assert booked.dropoff_eta is not None
            assert booked.pickup_eta < booked.dropoff_eta < datetime.now(UTC) + timedelta(seconds=5)
            provider.update(ref, tip=700)
            wait_for(lambda: provider.get(ref).status is DeliveryStatus.COMPLETED, timeout=20, message="delivered")
            assert provider.get(ref).tip == 700
            wait_for(
                lambda: any(
                    r.payload["status"] == "delivered" for r in receiver.for_delivery(booked.provider_delivery_id)
                ),
                timeout=20,
                message="the delivered webhook",
            )
            assert len(background.simulator.create_requests) == 1
        finally:
            background.stop()


def test_simulator_mounted_under_a_prefix() -> None:
    parent = Starlette(routes=[Mount("/sim/uber", app=create_app(SimulatorConfig(step_seconds=0.1)))])
    server = uvicorn.Server(uvicorn.Config(parent, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, message="server start")
        port = server.servers[0].sockets[0].getsockname()[1]
        provider = UberDirectProvider(UberSettings.for_simulator(f"http://127.0.0.1:{port}/sim/uber"))
        request = _request()
        booked = provider.book(request, provider.quote(request))
        assert booked.tracking_url is not None
        assert f"127.0.0.1:{port}/sim/uber/_sim/track/" in booked.tracking_url
        # the lifecycle runs although a mounted app gets no lifespan events
        ref = DeliveryRef(request.external_id, booked.provider_delivery_id)
        wait_for(lambda: provider.get(ref).status is not DeliveryStatus.PENDING, timeout=10, message="courier assigned")
    finally:
        server.should_exit = True
        thread.join(10)
