"""CORS_ALLOW_ORIGINS: the dashboard's page may read intake and the ledger from the
browser; no other page may, and by default no page at all.

The ledger app is the one the dashboard calls with an auditor token; the headers come
from the shared application (`shared.http.application.build_app`), so every service
answers alike. A refused origin gets a plain answer without CORS headers (the browser
then hides it from the page); a refused preflight is a 400.
"""

from __future__ import annotations

from typing import Final

import httpx
import pytest
from pydantic import ValidationError

from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings

DASHBOARD: Final = "http://127.0.0.1:8004"
STRANGER: Final = "https://evil.example"
ALLOW_ORIGIN: Final = "access-control-allow-origin"
LEDGER_READ: Final = "/v1/ledger/completeness"


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }


async def test_an_allowed_origin_gets_the_headers_and_others_do_not(
    settings: CommonSettings,
) -> None:
    ledger = service_settings(
        settings,
        LedgerSettings,
        cors_allow_origins=f"{DASHBOARD}, http://localhost:8004",
    )
    token = bearer(settings)(Role.AUDITOR, "auditor-cors")
    async with running(create_ledger(ledger)) as client:
        allowed = await client.get(LEDGER_READ, headers={**token, "Origin": DASHBOARD})
        refused = await client.get(LEDGER_READ, headers={**token, "Origin": STRANGER})
        asked = await client.options(LEDGER_READ, headers=preflight(DASHBOARD))
        asked_by_stranger = await client.options(
            LEDGER_READ, headers=preflight(STRANGER)
        )
        # Refusals are readable by the page too: it can say "log in again".
        unauthorized = await client.get(LEDGER_READ, headers={"Origin": DASHBOARD})
    assert allowed.headers[ALLOW_ORIGIN] == DASHBOARD
    assert ALLOW_ORIGIN not in refused.headers
    assert asked.status_code == 200
    assert asked.headers[ALLOW_ORIGIN] == DASHBOARD
    assert "authorization" in asked.headers["access-control-allow-headers"].lower()
    assert "GET" in asked.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in asked.headers
    assert asked_by_stranger.status_code == 400
    assert ALLOW_ORIGIN not in asked_by_stranger.headers
    assert unauthorized.status_code == 401
    assert unauthorized.headers[ALLOW_ORIGIN] == DASHBOARD


async def test_by_default_no_origin_gets_cors_headers(settings: CommonSettings) -> None:
    ledger = service_settings(settings, LedgerSettings)
    token = bearer(settings)(Role.AUDITOR, "auditor-cors")
    async with running(create_ledger(ledger)) as client:
        read = await client.get(LEDGER_READ, headers={**token, "Origin": DASHBOARD})
        asked = await client.options(LEDGER_READ, headers=preflight(DASHBOARD))
    assert read.status_code == 200
    assert ALLOW_ORIGIN not in read.headers
    assert ALLOW_ORIGIN not in asked.headers
    assert asked.status_code == 405


@pytest.mark.parametrize(
    "origins",
    [
        "*",
        "http://127.0.0.1:8004/",
        "127.0.0.1:8004",
        "http://127.0.0.1:8004/dashboard",
        "ftp://example.com",
        "http://a.example, *",
        "http://exa mple.com",
    ],
)
def test_anything_but_exact_origins_is_refused_at_start(origins: str) -> None:
    with pytest.raises(ValidationError, match="CORS_ALLOW_ORIGINS"):
        CommonSettings(cors_allow_origins=origins)


async def test_the_dashboard_is_told_where_intake_and_the_ledger_are(
    settings: CommonSettings,
) -> None:
    configured = service_settings(
        settings,
        MetricsSettings,
        run_consumer=False,
        dashboard_intake_url="http://127.0.0.1:8001/",
        dashboard_ledger_url="http://127.0.0.1:8003",
    )
    bare = service_settings(settings, MetricsSettings, run_consumer=False)
    async with (
        running(create_metrics(configured)) as client,
        running(create_metrics(bare)) as unconfigured,
    ):
        told: httpx.Response = await client.get("/dashboard/config")
        untold = await unconfigured.get("/dashboard/config")
    assert told.json() == {
        "intake_url": "http://127.0.0.1:8001",
        "ledger_url": "http://127.0.0.1:8003",
    }
    assert untold.json() == {"intake_url": None, "ledger_url": None}
