"""Every metric the Grafana dashboard (deploy/grafana/servicetrail.json) queries is one
the services really expose on /metrics: a renamed figure fails here, not as an empty
panel in production."""

from __future__ import annotations

import pytest

from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.deploy_files import dashboard_queries, exposed_names, metric_names
from tests.http_bodies import new_order_body
from tests.integration.services_io import traced

pytestmark = pytest.mark.integration


async def test_every_metric_the_dashboard_reads_is_exposed_by_a_service(
    settings: CommonSettings,
) -> None:
    exposed: set[str] = set()
    # Untraced (no provider, no OTEL_* variable): the figures are Prometheus's.
    async with traced(
        settings, None, "intake", "dispatch", "ledger", "metrics"
    ) as clients:
        created = await clients["intake"].post(
            "/v1/orders",
            json=new_order_body(),
            headers=bearer(settings)(Role.CUSTOMER, "alice"),
        )
        assert created.status_code == 201, created.text
        for client in clients.values():
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200
            exposed |= exposed_names(scraped.text)
    wanted = {name for expr in dashboard_queries() for name in metric_names(expr)}
    assert wanted, "the dashboard queries no metric"
    assert wanted - exposed == set()
