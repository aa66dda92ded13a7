"""Imports every table module so that the metadata is complete (migrations, tests)."""

from orderstream.dashboard import models as dashboard_models
from orderstream.deliveries import models as deliveries_models
from orderstream.deliveries.providers.own_drivers import models as own_drivers_models
from orderstream.jobs import models as jobs_models
from orderstream.notifications import models as notifications_models
from orderstream.orders import models as orders_models
from orderstream.pos import models as pos_models
from orderstream.tenancy import models as tenancy_models
from orderstream.webhooks_out import models as webhooks_out_models

__all__ = [
    "dashboard_models",
    "deliveries_models",
    "jobs_models",
    "notifications_models",
    "orders_models",
    "own_drivers_models",
    "pos_models",
    "tenancy_models",
    "webhooks_out_models",
]
