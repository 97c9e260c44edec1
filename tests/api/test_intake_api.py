"""`POST /v1/orders` of intake against a real database: events, vault, refusals."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.intake.store import contact
from shared.db.event_store import order_event, outbox_message
from shared.domain.actors import Role
from shared.events.topics import ORDER_EVENTS
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

ORDERS: Final = "/v1/orders"
PROBLEM_JSON: Final = "application/problem+json"
RFC3339_UTC: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TRACEPARENT: Final = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
MAX_BODY: Final = 64 * 1024

Auth = Callable[[Role, str], dict[str, str]]


@dataclass(frozen=True, slots=True)
class Stored:
    """How many rows the write path has left behind."""

    events: int
    outbox: int
    contacts: int


async def stored(engine: AsyncEngine) -> Stored:
    async with engine.connect() as conn:
        events = await conn.scalar(select(func.count()).select_from(order_event))
        outbox = await conn.scalar(select(func.count()).select_from(outbox_message))
        contacts = await conn.scalar(select(func.count()).select_from(contact))
    return Stored(int(events or 0), int(outbox or 0), int(contacts or 0))


NOTHING: Final = Stored(0, 0, 0)
ONE_ORDER: Final = Stored(1, 1, 1)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:servicetrail:problem:{code}"
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


def error_fields(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem["errors"]]


@pytest.fixture
def auth(settings: CommonSettings) -> Auth:
    return bearer(settings)


@pytest.fixture
def customer(auth: Auth) -> dict[str, str]:
    return auth(Role.CUSTOMER, "customer-1")


@pytest_asyncio.fixture(loop_scope="session")
async def intake(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service_settings(settings, IntakeSettings, run_outbox_relay=False))
    async with running(app) as client:
        yield client


# --- a successful create -----------------------------------------------------------


async def test_a_customer_creates_an_order_and_gets_the_stored_cloudevent(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    body = new_order_body()
    response = await intake.post(ORDERS, json=body, headers=customer)

    assert response.status_code == 201, response.text
    created = response.json()
    order_id = created["order_id"]
    assert UUID(order_id)
    assert created["orderversion"] == 1
    event = created["event"]
    assert event["specversion"] == "1.0"
    assert event["id"] == body["id"]
    assert event["type"] == "servicetrail.order.created"
    assert event["subject"] == order_id
    assert event["source"] == "/servicetrail/intake"
    assert event["dataschema"] == "urn:servicetrail:order.created:1"
    assert event["datacontenttype"] == "application/json"
    assert event["orderversion"] == 1
    assert RFC3339_UTC.match(event["time"]), event["time"]
    assert RFC3339_UTC.match(event["recordedtime"]), event["recordedtime"]
    assert event["actor"] == "customer:customer-1"
    assert TRACEPARENT.match(event["traceparent"]), event["traceparent"]
    assert event["data"]["customer_id"] == "customer-1"
    assert event["data"]["category"] == body["category"]
    assert event["data"]["region"] == body["region"]
    assert event["data"]["urgency"] == body["urgency"]
    assert event["data"]["warranty"] is False
    assert event["data"]["channel"] == "app"


async def test_a_valid_incoming_traceparent_is_kept_in_the_event(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    response = await intake.post(
        ORDERS, json=new_order_body(), headers={**customer, "traceparent": traceparent}
    )
    assert response.status_code == 201, response.text
    assert response.json()["event"]["traceparent"] == traceparent


async def test_a_malformed_incoming_traceparent_is_replaced_by_a_new_one(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    response = await intake.post(
        ORDERS,
        json=new_order_body(),
        headers={**customer, "traceparent": "00-not-a-trace-01"},
    )
    assert response.status_code == 201, response.text
    traceparent = response.json()["event"]["traceparent"]
    assert traceparent != "00-not-a-trace-01"
    assert TRACEPARENT.match(traceparent)


async def test_the_contact_goes_to_the_vault_and_only_its_reference_into_the_event(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    body = new_order_body()
    response = await intake.post(ORDERS, json=body, headers=customer)
    assert response.status_code == 201, response.text
    event = response.json()["event"]

    async with engine.connect() as conn:
        rows = (await conn.execute(select(contact))).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.customer_id == "customer-1"
    assert row.name == body["contact"]["name"]
    assert row.phone == body["contact"]["phone"]
    assert row.address == body["contact"]["address"]
    assert event["data"]["contact_ref"] == str(row.contact_ref)
    assert "contact" not in event["data"]
    text = json.dumps(event, ensure_ascii=False)
    for personal in body["contact"].values():
        assert personal not in text


async def test_the_event_is_stored_with_exactly_one_outbox_message(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    response = await intake.post(ORDERS, json=new_order_body(), headers=customer)
    assert response.status_code == 201, response.text
    created = response.json()

    async with engine.connect() as conn:
        events = (await conn.execute(select(order_event))).all()
        messages = (await conn.execute(select(outbox_message))).all()
    assert len(events) == 1
    assert str(events[0].order_id) == created["order_id"]
    assert events[0].version == 1
    assert str(events[0].event_id) == created["event"]["id"]
    assert events[0].type == "created"
    assert events[0].actor == "customer:customer-1"
    assert events[0].envelope == created["event"]
    assert len(messages) == 1
    assert messages[0].topic == ORDER_EVENTS
    assert messages[0].key == created["order_id"]
    assert messages[0].published_at is None
    assert json.loads(bytes(messages[0].value)) == created["event"]


async def test_chinese_and_other_non_ascii_text_round_trips_exactly(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    # Decomposed accents must not be normalised; astral-plane characters kept whole.
    description = "空调不制冷\uff0c滴水严重。Cafe\u0301 𠀀 🧊 «引号» \uff21\uff22\uff23"
    name = "欧阳娜娜"
    address = "广东省深圳市南山区科技园南区 8 栋 1203 室"
    body = new_order_body(
        description=description,
        category="空调",
        region="深圳-南山",
        contact={"name": name, "phone": "+86 755 1234 5678", "address": address},
    )
    response = await intake.post(ORDERS, json=body, headers=customer)
    assert response.status_code == 201, response.text
    data = response.json()["event"]["data"]
    assert data["description"] == description
    assert data["category"] == "空调"
    assert data["region"] == "深圳-南山"

    async with engine.connect() as conn:
        envelope = (await conn.execute(select(order_event.c.envelope))).scalar_one()
        value = (await conn.execute(select(outbox_message.c.value))).scalar_one()
        vault = (await conn.execute(select(contact))).one()
    assert envelope["data"]["description"] == description
    # The published bytes are UTF-8, not \u escapes.
    assert description.encode() in bytes(value)
    assert vault.name == name
    assert vault.address == address


# --- idempotency --------------------------------------------------------------------


async def test_a_retry_with_the_same_id_and_body_returns_the_first_result(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    body = new_order_body()
    first = await intake.post(ORDERS, json=body, headers=customer)
    assert first.status_code == 201, first.text
    again = await intake.post(ORDERS, json=body, headers=customer)

    assert again.status_code == 201, again.text
    assert again.json()["order_id"] == first.json()["order_id"]
    assert again.json()["orderversion"] == 1
    assert again.json()["event"] == first.json()["event"]
    assert await stored(engine) == ONE_ORDER


async def test_a_retry_without_time_still_returns_the_first_event_time(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    body = new_order_body()
    first = await intake.post(ORDERS, json=body, headers=customer)
    assert first.status_code == 201, first.text
    again = await intake.post(ORDERS, json=body, headers=customer)
    assert again.status_code == 201, again.text
    assert again.json()["event"]["time"] == first.json()["event"]["time"]
    assert await stored(engine) == ONE_ORDER


async def test_the_same_id_with_a_different_body_is_a_409_conflict(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    body = new_order_body()
    first = await intake.post(ORDERS, json=body, headers=customer)
    assert first.status_code == 201, first.text

    changed = {**body, "description": "a different fault"}
    response = await intake.post(ORDERS, json=changed, headers=customer)

    assert_problem(response, 409, "duplicate_event_conflict")
    assert await stored(engine) == ONE_ORDER


async def test_another_customer_reusing_an_event_id_gets_a_conflict_not_the_order(
    intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
) -> None:
    body = new_order_body()
    first = await intake.post(ORDERS, json=body, headers=auth(Role.CUSTOMER, "alice"))
    assert first.status_code == 201, first.text

    response = await intake.post(ORDERS, json=body, headers=auth(Role.CUSTOMER, "bob"))

    assert response.status_code == 409, response.text
    assert first.json()["order_id"] not in response.text
    assert await stored(engine) == ONE_ORDER


# --- time ---------------------------------------------------------------------------


async def test_an_omitted_time_defaults_to_the_servers_now(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    body = new_order_body()
    assert "time" not in body
    before = datetime.now(UTC)
    response = await intake.post(ORDERS, json=body, headers=customer)
    after = datetime.now(UTC)

    assert response.status_code == 201, response.text
    event = response.json()["event"]
    assert before <= parse_time(event["time"]) <= after
    assert event["time"] == event["recordedtime"]


async def test_an_explicit_time_with_an_offset_is_stored_in_utc(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    # An hour ago, written in Beijing time, with half a second.
    utc = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=500_000)
    beijing = utc.astimezone(timezone(timedelta(hours=8)))
    body = new_order_body(time=beijing.isoformat())
    response = await intake.post(ORDERS, json=body, headers=customer)
    assert response.status_code == 201, response.text
    expected = utc.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert response.json()["event"]["time"] == expected


async def test_a_time_slightly_ahead_of_the_server_clock_is_accepted(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    response = await intake.post(
        ORDERS, json=new_order_body(time=ahead.isoformat()), headers=customer
    )
    assert response.status_code == 201, response.text
    assert parse_time(response.json()["event"]["time"]) == ahead


async def test_a_time_more_than_five_minutes_in_the_future_is_refused(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    future = datetime.now(UTC) + timedelta(minutes=6)
    response = await intake.post(
        ORDERS, json=new_order_body(time=future.isoformat()), headers=customer
    )
    assert_problem(response, 422, "event_time_in_future")
    assert await stored(engine) == NOTHING


# --- invalid bodies -----------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    body = new_order_body()
    del body[key]
    return body


_CONTACT: Final = {"name": "李雷", "phone": "13800000000", "address": "北京"}

INVALID_BODIES: Final = [
    pytest.param(
        json.dumps(new_order_body(priority="high")), "priority", id="unknown-field"
    ),
    pytest.param(
        json.dumps(new_order_body(contact={**_CONTACT, "email": "a@b.c"})),
        "contact.email",
        id="unknown-contact-field",
    ),
    pytest.param(
        json.dumps(new_order_body(warranty="true")), "warranty", id="warranty-string"
    ),
    pytest.param(
        json.dumps(new_order_body(warranty=1)), "warranty", id="warranty-number"
    ),
    pytest.param(
        json.dumps(new_order_body(urgency="asap")), "urgency", id="unknown-urgency"
    ),
    pytest.param(
        json.dumps(new_order_body(description="修" * 2001)),
        "description",
        id="description-2001-chars",
    ),
    pytest.param(json.dumps(new_order_body(time=1700000000)), "time", id="time-number"),
    pytest.param(
        json.dumps(new_order_body(time="2025-03-01T08:00:00")), "time", id="naive-time"
    ),
    pytest.param(json.dumps(new_order_body(id="order-1")), "id", id="id-not-uuid"),
    pytest.param(json.dumps(_without("category")), "category", id="missing-category"),
    pytest.param(
        json.dumps(_without("contact")), "contact", id="neither-contact-nor-ref"
    ),
    pytest.param(
        json.dumps(new_order_body(contact_ref="00000000-0000-4000-8000-000000000001")),
        "contact",
        id="both-contact-and-ref",
    ),
    pytest.param(
        json.dumps(new_order_body())[:-1].encode() + b', "x": NaN}', "x", id="nan-extra"
    ),
    pytest.param(
        json.dumps(new_order_body()).replace('"warranty": false', '"warranty": NaN'),
        "warranty",
        id="nan-value",
    ),
    pytest.param(b'{"category": "air_conditioner",', "body", id="invalid-json"),
    pytest.param(b"", "body", id="empty-body"),
    pytest.param(b"[]", "body", id="json-array"),
]


@pytest.mark.parametrize(("content", "field"), INVALID_BODIES)
async def test_an_invalid_body_is_a_422_problem_naming_the_field_and_stores_nothing(
    intake: httpx.AsyncClient,
    customer: dict[str, str],
    engine: AsyncEngine,
    content: str | bytes,
    field: str,
) -> None:
    response = await intake.post(
        ORDERS,
        content=content,
        headers={**customer, "content-type": "application/json"},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert field in error_fields(problem), problem
    assert all(error["message"] for error in problem["errors"])
    assert problem["instance"] == ORDERS
    assert await stored(engine) == NOTHING


BODIES_THE_EVENT_CANNOT_HOLD: Final = [
    pytest.param(new_order_body(description=""), id="empty-description"),
    pytest.param(new_order_body(description="   "), id="blank-description"),
    pytest.param(new_order_body(category=" "), id="blank-category"),
    pytest.param(new_order_body(description="a\x00b"), id="nul-in-description"),
    pytest.param(
        new_order_body(contact={**_CONTACT, "name": "李\x00雷"}), id="nul-in-contact"
    ),
    pytest.param(
        _without("contact") | {"contact_ref": "ref with spaces"}, id="ref-with-space"
    ),
]


@pytest.mark.parametrize("body", BODIES_THE_EVENT_CANNOT_HOLD)
async def test_a_body_the_created_event_cannot_hold_is_a_422_not_a_500(
    intake: httpx.AsyncClient,
    customer: dict[str, str],
    engine: AsyncEngine,
    body: dict[str, Any],
) -> None:
    response = await intake.post(ORDERS, json=body, headers=customer)
    assert_problem(response, 422, "validation_error")
    assert await stored(engine) == NOTHING


# --- body size ----------------------------------------------------------------------


def _oversized_body() -> bytes:
    body = json.dumps(new_order_body(description="x" * (MAX_BODY + 1)))
    return body.encode()


async def test_a_body_over_64_kib_with_content_length_is_a_413_problem(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    content = _oversized_body()
    response = await intake.post(
        ORDERS,
        content=content,
        headers={**customer, "content-type": "application/json"},
    )
    assert response.request.headers["content-length"] == str(len(content))
    problem = assert_problem(response, 413, "request_too_large")
    assert problem["instance"] == ORDERS
    assert await stored(engine) == NOTHING


async def test_a_streamed_body_over_64_kib_is_a_413_problem(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    content = _oversized_body()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 4096):
            yield content[start : start + 4096]

    response = await intake.post(
        ORDERS,
        content=chunks(),
        headers={**customer, "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "request_too_large")
    assert await stored(engine) == NOTHING


async def test_a_streamed_body_under_the_limit_is_accepted(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    content = json.dumps(new_order_body()).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 16):
            yield content[start : start + 16]

    response = await intake.post(
        ORDERS,
        content=chunks(),
        headers={**customer, "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text


# --- authentication and authorisation -----------------------------------------------


@pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.AUDITOR, Role.SERVICE])
async def test_roles_other_than_customer_and_dispatcher_are_forbidden(
    intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, role: Role
) -> None:
    response = await intake.post(
        ORDERS, json=new_order_body(), headers=auth(role, "someone-1")
    )
    assert_problem(response, 403, "forbidden")
    assert await stored(engine) == NOTHING


async def test_no_token_is_a_401_with_a_bearer_challenge(
    intake: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await intake.post(ORDERS, json=new_order_body())
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await stored(engine) == NOTHING


async def test_a_garbage_token_is_a_401(
    intake: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await intake.post(
        ORDERS, json=new_order_body(), headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await stored(engine) == NOTHING


async def test_an_expired_token_is_a_401(
    intake: httpx.AsyncClient, settings: CommonSettings, engine: AsyncEngine
) -> None:
    token = issue_token(
        settings,
        role=Role.CUSTOMER,
        subject="customer-1",
        lifetime=timedelta(hours=1),
        now=datetime.now(UTC) - timedelta(hours=2),
    )
    response = await intake.post(
        ORDERS, json=new_order_body(), headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "invalid_token")
    assert await stored(engine) == NOTHING


async def test_a_token_signed_with_another_secret_is_a_401(
    intake: httpx.AsyncClient, settings: CommonSettings, engine: AsyncEngine
) -> None:
    other = settings.model_copy(
        update={"jwt_secret": SecretStr("another-secret-of-sufficient-length-987654")}
    )
    token = issue_token(other, role=Role.CUSTOMER, subject="customer-1")
    response = await intake.post(
        ORDERS, json=new_order_body(), headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "invalid_token")
    assert await stored(engine) == NOTHING


async def test_a_customer_creating_an_order_for_another_customer_is_forbidden(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    response = await intake.post(
        ORDERS, json=new_order_body(customer_id="customer-2"), headers=customer
    )
    assert_problem(response, 403, "actor_not_allowed")
    assert await stored(engine) == NOTHING


async def test_a_customer_may_name_themselves_as_the_customer(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    response = await intake.post(
        ORDERS, json=new_order_body(customer_id="customer-1"), headers=customer
    )
    assert response.status_code == 201, response.text
    assert response.json()["event"]["data"]["customer_id"] == "customer-1"


async def test_a_dispatcher_without_customer_id_is_a_422(
    intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
) -> None:
    response = await intake.post(
        ORDERS, json=new_order_body(), headers=auth(Role.DISPATCHER, "dispatcher-1")
    )
    problem = assert_problem(response, 422, "validation_error")
    assert error_fields(problem) == ["customer_id"]
    assert await stored(engine) == NOTHING


async def test_a_dispatcher_creates_an_order_for_a_named_customer(
    intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
) -> None:
    response = await intake.post(
        ORDERS,
        json=new_order_body(customer_id="customer-9"),
        headers=auth(Role.DISPATCHER, "dispatcher-1"),
    )
    assert response.status_code == 201, response.text
    event = response.json()["event"]
    assert event["actor"] == "dispatcher:dispatcher-1"
    assert event["data"]["customer_id"] == "customer-9"
    async with engine.connect() as conn:
        owner = (await conn.execute(select(contact.c.customer_id))).scalar_one()
    assert owner == "customer-9"


async def test_an_admin_creates_an_order_for_a_named_customer(
    intake: httpx.AsyncClient, auth: Auth
) -> None:
    response = await intake.post(
        ORDERS,
        json=new_order_body(customer_id="customer-7", channel="phone"),
        headers=auth(Role.ADMIN, "admin-1"),
    )
    assert response.status_code == 201, response.text
    event = response.json()["event"]
    assert event["actor"] == "admin:admin-1"
    assert event["data"]["customer_id"] == "customer-7"


async def test_an_order_may_reference_an_existing_contact_instead(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    first = await intake.post(ORDERS, json=new_order_body(), headers=customer)
    assert first.status_code == 201, first.text
    ref = first.json()["event"]["data"]["contact_ref"]

    body = new_order_body()
    del body["contact"]
    body["contact_ref"] = ref
    second = await intake.post(ORDERS, json=body, headers=customer)

    assert second.status_code == 201, second.text
    assert second.json()["event"]["data"]["contact_ref"] == ref
    assert second.json()["order_id"] != first.json()["order_id"]
    assert await stored(engine) == Stored(events=2, outbox=2, contacts=1)


async def _vault(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(contact).order_by(contact.c.contact_ref))
    return [tuple(row) for row in rows]


# A contact_ref is an id the vault holds for the same customer, nothing else.
FOREIGN_REFS: Final = [
    pytest.param("+86 138 0000 0000", "validation_error", id="phone-number"),
    pytest.param("call my wife after 6pm", "validation_error", id="free-text"),
    pytest.param("", "validation_error", id="empty"),
    pytest.param(str(uuid4()), "unknown_contact_ref", id="random-uuid"),
    pytest.param(None, "unknown_contact_ref", id="another-customers-ref"),
]


@pytest.mark.parametrize(("ref", "code"), FOREIGN_REFS)
async def test_a_contact_ref_the_vault_does_not_hold_for_the_customer_is_a_422(
    intake: httpx.AsyncClient,
    auth: Auth,
    customer: dict[str, str],
    engine: AsyncEngine,
    ref: str | None,
    code: str,
) -> None:
    # Another customer's real reference: stored by their own order.
    other = await intake.post(
        ORDERS, json=new_order_body(), headers=auth(Role.CUSTOMER, "customer-2")
    )
    theirs = other.json()["event"]["data"]["contact_ref"]
    before, vault = await stored(engine), await _vault(engine)
    body = _without("contact") | {"contact_ref": theirs if ref is None else ref}

    response = await intake.post(ORDERS, json=body, headers=customer)

    problem = assert_problem(response, 422, code)
    if code == "validation_error":
        assert error_fields(problem) == ["contact_ref"]
    assert await stored(engine) == before
    assert await _vault(engine) == vault
    # A retry of the same id gets the same answer.
    again = await intake.post(ORDERS, json=body, headers=customer)
    assert again.json() == response.json()


async def test_a_dispatcher_may_reuse_only_the_named_customers_contact(
    intake: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
) -> None:
    dispatcher = auth(Role.DISPATCHER, "dispatcher-1")
    first = await intake.post(
        ORDERS, json=new_order_body(customer_id="customer-5"), headers=dispatcher
    )
    ref = first.json()["event"]["data"]["contact_ref"]
    reused = _without("contact") | {"contact_ref": ref}

    mine = await intake.post(
        ORDERS, json=reused | {"customer_id": "customer-5"}, headers=dispatcher
    )
    assert mine.status_code == 201, mine.text
    before = await stored(engine)
    theirs = await intake.post(
        ORDERS,
        json=reused | {"id": str(uuid4()), "customer_id": "customer-6"},
        headers=dispatcher,
    )
    assert_problem(theirs, 422, "unknown_contact_ref")
    assert await stored(engine) == before


async def test_an_id_refused_for_its_contact_ref_stores_no_contact_when_reused(
    intake: httpx.AsyncClient, customer: dict[str, str], engine: AsyncEngine
) -> None:
    # The contact is written in the append's statement: a refused id writes nothing.
    refused = _without("contact") | {"contact_ref": str(uuid4())}
    assert_problem(
        await intake.post(ORDERS, json=refused, headers=customer),
        422,
        "unknown_contact_ref",
    )
    with_contact = new_order_body(id=refused["id"])

    reused = await intake.post(ORDERS, json=with_contact, headers=customer)

    assert_problem(reused, 409, "duplicate_event_conflict")
    assert await stored(engine) == NOTHING
    assert await _vault(engine) == []


async def test_two_orders_without_ids_get_distinct_event_ids(
    intake: httpx.AsyncClient, customer: dict[str, str]
) -> None:
    bodies = [_without("id"), _without("id")]
    responses = [await intake.post(ORDERS, json=b, headers=customer) for b in bodies]
    assert [r.status_code for r in responses] == [201, 201]
    ids = {r.json()["event"]["id"] for r in responses}
    assert len(ids) == 2
    assert all(UUID(i) for i in ids)
