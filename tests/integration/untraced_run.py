"""`python -m tests.integration.untraced_run SETTINGS_JSON`: post one order through
intake to the ledger in a fresh interpreter, then print what tracing left behind.

A fresh interpreter, because the test process imports the OpenTelemetry SDK itself:
only here can "an untraced service never imports the SDK" be seen.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import TEST_JWT_SECRET, service_settings
from tests.http_bodies import new_order_body


async def post_one_order(settings: CommonSettings) -> dict[str, object]:
    """Post an order with the app's traceparent; wait until the ledger holds it."""
    auth = bearer(settings)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    intake_app = create_intake(service_settings(settings, IntakeSettings))
    ledger_app = create_ledger(service_settings(settings, LedgerSettings))
    async with running(intake_app) as intake, running(ledger_app) as ledger:
        created = await intake.post(
            "/v1/orders",
            json=new_order_body(),
            headers={**auth(Role.CUSTOMER, "alice"), "traceparent": traceparent},
        )
        order_id = created.json()["order_id"]
        auditor = auth(Role.AUDITOR, "audit-1")
        async with asyncio.timeout(30):
            while True:
                history = await ledger.get(
                    f"/v1/orders/{order_id}/history", headers=auditor
                )
                if history.status_code == 200 and history.json()["entries"]:
                    break
                await asyncio.sleep(0.05)
    return {
        "status": created.status_code,
        "sent": traceparent,
        "stored": created.json()["event"]["traceparent"],
        "tracing": [repr(intake_app.state.tracing), repr(ledger_app.state.tracing)],
        "sdk_modules": sorted(
            name
            for name in sys.modules
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))
        ),
    }


if __name__ == "__main__":
    # The secret does not survive the JSON (masked): it is the tests' one.
    base = CommonSettings.model_validate_json(sys.argv[1]).model_copy(
        update={"jwt_secret": TEST_JWT_SECRET}
    )
    print(json.dumps(asyncio.run(post_one_order(base))))  # noqa: T201
