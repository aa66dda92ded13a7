"""The composition root: feature job kinds through register_jobs, and the shared HTTP client."""

from __future__ import annotations

import httpx

from orderstream import bootstrap
from orderstream.config import Settings
from tests import jobs_sample_feature


def test_build_registry_calls_each_feature_register_jobs() -> None:
    registry = bootstrap.build_registry(Settings(), modules=("tests.jobs_sample_feature",))
    assert registry.names() == [jobs_sample_feature.KIND]
    kind = registry.get(jobs_sample_feature.KIND)
    assert kind is not None
    assert kind.retry.max_attempts == 4


def test_default_registry_builds_from_the_feature_list() -> None:
    registry = bootstrap.build_registry(Settings())
    assert sorted(registry.names()) == registry.names()
    assert "dispatch" not in registry.names() or "orderstream.deliveries.jobs" in bootstrap.JOB_MODULES


def test_services_share_one_http_client_with_timeouts() -> None:
    services = bootstrap.build_services(Settings(http_timeout_seconds=12, http_connect_timeout_seconds=3))
    http = services["http"]
    assert isinstance(http, httpx.Client)
    assert http.timeout == httpx.Timeout(12, connect=3)
    assert http.follow_redirects is False
    bootstrap.close_services(services)
    assert http.is_closed
