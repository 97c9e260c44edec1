"""Who may call: token subjects, roles, secrets and the one `Authorization` header.

Each refusal is tried with the hostile value against a write path, and the event
store is shown unchanged afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.cli import app as cli
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.db.event_store import outbox_message
from shared.domain.actors import MAX_SUBJECT_LENGTH, PRODUCT_ROLES, Role
from shared.events.envelope import parse_envelope, to_order_event
from shared.http.auth import issue_token
from shared.settings import CommonSettings, InvalidSettings, JwtAlgorithm
from tests.fixtures.stack import TEST_JWT_SECRET, service_settings
from tests.http_bodies import new_order_body
from tests.http_events import (
    MANUAL_ONLY,
    Order,
    Services,
    assert_problem,
    count_rows,
    started,
)

ORDERS: Final = "/v1/orders"
LONGEST: Final = "a" * (MAX_SUBJECT_LENGTH - 2) + ".@"
BAD_SUBJECTS: Final = [
    pytest.param("a" * (MAX_SUBJECT_LENGTH + 1), id="129-characters"),
    pytest.param("", id="empty"),
    pytest.param("alice smith", id="space"),
    pytest.param("alice\n", id="trailing-newline"),
    pytest.param("al\nice", id="newline"),
    pytest.param("alicé", id="unicode"),
    pytest.param("\uff41lice", id="fullwidth"),
    pytest.param("alice/../bob", id="slash"),
    pytest.param("alice\x00", id="nul"),
]


@pytest_asyncio.fixture(loop_scope="session")
async def services(settings: CommonSettings) -> AsyncIterator[Services]:
    async with started(settings) as both:
        yield both


def signed(settings: CommonSettings, **claims: Any) -> dict[str, str]:
    """Headers with a token of exactly these claims (plus a future `exp`)."""
    body = {"exp": datetime.now(UTC) + timedelta(hours=1), **claims}
    token = jwt.encode(body, settings.hs256_secret(), algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def assert_order_refused(
    services: Services, engine: AsyncEngine, headers: dict[str, str]
) -> None:
    """Creating an order with `headers` is a 401 and leaves the event store as it was."""
    before = await count_rows(engine)
    response = await services.intake.post(
        ORDERS, json=new_order_body(), headers=headers
    )
    assert_problem(response, 401, "invalid_token")
    assert await count_rows(engine) == before


# --- subjects -------------------------------------------------------------------


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
async def test_a_token_with_a_malformed_subject_is_a_401_and_stores_nothing(
    services: Services, settings: CommonSettings, engine: AsyncEngine, subject: str
) -> None:
    headers = signed(settings, sub=subject, role="customer")
    await assert_order_refused(services, engine, headers)


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_issue_token_refuses_a_malformed_subject(
    settings: CommonSettings, subject: str
) -> None:
    with pytest.raises(ValueError, match="subject"):
        issue_token(settings, role=Role.CUSTOMER, subject=subject)


async def test_the_longest_subjects_create_and_accept_an_order_consumers_can_parse(
    services: Services, engine: AsyncEngine
) -> None:
    # The longest role (`technician`) with the longest subject is the longest actor.
    customer_id = "c" + LONGEST[1:]
    technician_id = "t" + LONGEST[1:]
    assert len(customer_id) == len(technician_id) == MAX_SUBJECT_LENGTH
    await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
    order_id = await services.create_order(customer_id)
    order = Order(services, order_id, customer_id, technician_id)
    await order.assign()
    await order.accept()

    async with engine.connect() as conn:
        values = (await conn.scalars(select(outbox_message.c.value))).all()
    events = [to_order_event(parse_envelope(value)) for value in values]
    actors = {str(event.actor) for event in events}
    assert f"customer:{customer_id}" in actors
    assert f"technician:{technician_id}" in actors
    assert [event.data.TYPE for event in events] == ["created", "assigned", "accepted"]


# --- roles ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["system", "superuser", "Customer", ""])
async def test_a_token_with_a_role_outside_the_six_is_a_401_and_stores_nothing(
    services: Services, settings: CommonSettings, engine: AsyncEngine, role: str
) -> None:
    headers = signed(settings, sub="dispatch", role=role)
    await assert_order_refused(services, engine, headers)


def test_issue_token_refuses_the_system_role(settings: CommonSettings) -> None:
    assert len(PRODUCT_ROLES) == 6
    with pytest.raises(ValueError, match="role"):
        issue_token(settings, role=Role.SYSTEM, subject="dispatch")


# --- the Authorization header ---------------------------------------------------


async def test_two_authorization_headers_are_a_400_and_store_nothing(
    services: Services, engine: AsyncEngine
) -> None:
    before = await count_rows(engine)
    valid = services.customer("customer-1")["Authorization"]
    for pair in ([valid, valid], [valid, "Bearer garbage"], ["Bearer garbage", valid]):
        response = await services.intake.post(
            ORDERS,
            json=new_order_body(),
            headers=[("Authorization", value) for value in pair],
        )
        assert_problem(response, 400, "ambiguous_authorization")
    assert await count_rows(engine) == before


# --- secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("x" * 31, id="31-bytes"),
    ],
)
def test_hs256_without_a_32_byte_secret_refuses_to_start(
    settings: CommonSettings, secret: str | None
) -> None:
    weak = service_settings(
        settings,
        IntakeSettings,
        jwt_secret=None if secret is None else SecretStr(secret),
    )
    with pytest.raises(InvalidSettings, match="JWT_SECRET"):
        create_intake(weak)
    with pytest.raises(InvalidSettings, match="JWT_SECRET"):
        issue_token(weak, role=Role.CUSTOMER, subject="alice")


def test_the_settings_have_no_default_secret() -> None:
    assert CommonSettings().jwt_secret is None


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("JWT_JWKS_URL", {"jwt_issuer": "https://idp", "jwt_audience": "api"}),
        ("JWT_ISSUER", {"jwt_jwks_url": "http://idp/jwks", "jwt_audience": "api"}),
        ("JWT_AUDIENCE", {"jwt_jwks_url": "http://idp/jwks", "jwt_issuer": "idp"}),
    ],
)
def test_rs256_without_jwks_url_issuer_and_audience_refuses_to_start(
    settings: CommonSettings, missing: str, present: dict[str, str]
) -> None:
    rs256 = service_settings(
        settings, IntakeSettings, jwt_algorithm=JwtAlgorithm.RS256, **present
    )
    with pytest.raises(InvalidSettings, match=missing):
        create_intake(rs256)


# --- the `servicetrail token` command -------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--role", "customer", "--sub", "a" * 129], id="129-characters"),
        pytest.param(["--role", "customer", "--sub", "alice smith"], id="space"),
        pytest.param(["--role", "customer", "--sub", "alice/bob"], id="slash"),
        pytest.param(["--role", "customer", "--sub", ""], id="empty"),
        pytest.param(["--role", "system", "--sub", "dispatch"], id="system-role"),
    ],
)
def test_servicetrail_token_refuses_what_the_services_would(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", TEST_JWT_SECRET.get_secret_value())
    result = CliRunner().invoke(cli, ["token", *args])
    assert result.exit_code == 2, result.output
    assert "eyJ" not in result.output


def test_servicetrail_token_prints_a_token_for_a_valid_subject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", TEST_JWT_SECRET.get_secret_value())
    result = CliRunner().invoke(cli, ["token", "--role", "customer", "--sub", LONGEST])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(
        result.output.strip(),
        TEST_JWT_SECRET.get_secret_value(),
        algorithms=["HS256"],
    )
    assert claims["sub"] == LONGEST


def test_servicetrail_token_refuses_a_short_jwt_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "x" * 31)
    result = CliRunner().invoke(cli, ["token", "--role", "customer", "--sub", "alice"])
    assert result.exit_code == 2, result.output
    assert "JWT_SECRET" in result.output
