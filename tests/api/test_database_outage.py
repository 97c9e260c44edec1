"""A database outage answers 503 with Retry-After, never a 500."""

from __future__ import annotations

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.stack.servers import free_port
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body


async def test_a_post_while_the_database_is_unreachable_is_a_503_to_retry(
    settings: CommonSettings,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/servicetrail"
    app = create_app(
        service_settings(
            settings, IntakeSettings, database_url=nowhere, run_outbox_relay=False
        )
    )
    async with running(app) as intake:
        response = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers=bearer(settings)(Role.CUSTOMER, "c-1"),
        )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:servicetrail:problem:service_unavailable"
