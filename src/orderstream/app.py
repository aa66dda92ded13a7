"""The composition root: builds the web application from settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from orderstream import __version__, bootstrap, logs, metrics
from orderstream.config import Settings, load_settings
from orderstream.dashboard import views as dashboard_views
from orderstream.db import Database
from orderstream.deliveries import views as deliveries_views
from orderstream.deliveries.providers.own_drivers import views as own_drivers_views
from orderstream.errors import install_error_handlers
from orderstream.jobs.registry import JobRegistry
from orderstream.jobs.worker import Worker
from orderstream.notifications import tracking_views as notifications_tracking
from orderstream.notifications import views as notifications_views
from orderstream.orders import views as orders_views
from orderstream.pos import views as pos_views
from orderstream.webhooks_out import views as webhooks_out_views


def create_app(
    settings: Settings | None = None, *, db: Database | None = None, registry: JobRegistry | None = None
) -> FastAPI:
    """The FastAPI application, with its database and (optionally) an embedded worker."""
    settings = settings or load_settings()
    database = db or Database.from_url(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = bootstrap.build_services(settings)
        app.state.services = services
        worker = None
        if settings.embedded_worker:
            worker = Worker(database, settings, registry or bootstrap.build_registry(settings), services)
            worker.start()
        app.state.worker = worker
        yield
        if worker is not None:
            await asyncio.to_thread(worker.stop, settings.worker_shutdown_timeout_seconds)
        bootstrap.close_services(services)
        if db is None:
            database.dispose()

    app = FastAPI(
        title="orderstream",
        version=__version__,
        description="Order hub for restaurants: Stream-compatible POS webhooks, dispatch and tracking.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = database
    install_error_handlers(app)
    pos_views.add_plain_route(app)  # first: the busiest route is matched before any other
    app.include_router(pos_views.router)
    app.include_router(orders_views.router)
    app.include_router(webhooks_out_views.router)
    app.include_router(webhooks_out_views.admin_router)
    app.include_router(deliveries_views.router)
    app.include_router(deliveries_views.admin_router)
    app.include_router(notifications_views.router)
    app.include_router(notifications_tracking.router)
    app.include_router(dashboard_views.router)
    app.include_router(own_drivers_views.router)
    app.include_router(own_drivers_views.admin_router)
    app.include_router(own_drivers_views.driver_router)
    app.state.metrics = metrics.CombinedRegistry(database)
    app.include_router(metrics.router)
    app.add_middleware(metrics.HttpMetricsMiddleware)
    app.add_middleware(logs.RequestLogMiddleware, access_log=settings.log_access)  # outermost: ids first

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """The database answers."""
        if database.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"error": {"code": "database_unavailable", "message": "database unreachable", "details": []}},
            status_code=503,
        )

    return app
