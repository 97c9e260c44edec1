"""Event post bodies and an order driven over HTTP, for API and integration tests.

`tests/http_bodies.py` builds `POST /v1/orders` bodies; this module builds the
`POST /v1/orders/{id}/events` bodies of every other event type (the wire form a
mobile app sends), and `Services` drives an order through intake and dispatch.
Every call makes fresh ids, so tests sharing a database never collide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import uuid4

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.db.event_store import order_event, outbox_message
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import random_ref
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

PROBLEM_JSON: Final = "application/problem+json"
CATEGORY: Final = "air_conditioner"
REGION: Final = "shanghai-pudong"
CURRENCY: Final = "CNY"
# The skill of technicians that tests assign by hand. Registering a technician offers
# them every waiting order they fit; nobody orders this trade, so registering one of
# them never assigns an order behind a test's back (manual assignment checks only
# that the technician is active).
MANUAL_ONLY: Final = "manual-dispatch-only"

Headers = dict[str, str]
Auth = Callable[[Role, str], Headers]
Json = dict[str, Any]


# --- bodies ---------------------------------------------------------------------


def event_body(
    type_: str,
    data: Json,
    *,
    event_id: str | None = None,
    time: datetime | None = None,
    expected_version: int | None = None,
) -> Json:
    """An event post `{id, type, time?, expected_version?, data}` with a fresh id."""
    body: Json = {"id": event_id or str(uuid4()), "type": type_, "data": data}
    if time is not None:
        body["time"] = time.isoformat()
    if expected_version is not None:
        body["expected_version"] = expected_version
    return body


def technician_body(
    technician_id: str,
    *,
    skills: tuple[str, ...] = (CATEGORY,),
    regions: tuple[str, ...] = (REGION,),
    active: bool = True,
) -> Json:
    return {
        "technician_id": technician_id,
        "name": "张师傅",
        "skills": list(skills),
        "regions": list(regions),
        "certifications": ["refrigerant-handling"],
        "active": active,
    }


def accepted_data(technician_id: str) -> Json:
    return {"technician_id": technician_id, "eta_minutes": 30}


def declined_data(technician_id: str) -> Json:
    return {"technician_id": technician_id, "reason": "too far away today"}


def arrived_data(technician_id: str) -> Json:
    return {"technician_id": technician_id, "location": {"lat": 31.23, "lon": 121.47}}


def diagnosed_data(*, remote: bool = False) -> Json:
    return {
        "fault_code": "E4",
        "summary": "冷媒不足 (refrigerant low)",
        "parts_needed": ["R32"],
        "remote": remote,
    }


def price_items(total: int) -> list[Json]:
    """Items summing to `total`: a callout fee plus labor; none for 0."""
    if total == 0:
        return []
    callout = min(total, 3000)
    items: list[Json] = [
        {
            "kind": "callout",
            "description": "上门费",
            "quantity": 1,
            "unit_price": callout,
        }
    ]
    if total > callout:
        items.append(
            {
                "kind": "labor",
                "description": "加氟",
                "quantity": 1,
                "unit_price": total - callout,
            }
        )
    return items


def priced_data(total: int = 20_000, *, currency: str = CURRENCY) -> Json:
    return {"currency": currency, "items": price_items(total), "total": total}


def quote_decision_data(quote_event_id: str) -> Json:
    return {"quote_event_id": quote_event_id}


def completed_data(
    final_total: int = 20_000, *, outcome: str = "fixed", currency: str = CURRENCY
) -> Json:
    return {
        "outcome": outcome,
        "currency": currency,
        "final_items": price_items(final_total),
        "final_total": final_total,
        "parts_used": ["R32"] if final_total else [],
        "notes": "试机正常",
        "evidence": [f"s3://evidence/{uuid4()}.jpg"],
    }


def rated_data(score: int = 5, *, nps: int | None = 9) -> Json:
    data: Json = {"score": score}
    if nps is not None:
        data["nps"] = nps
    return data


def cancelled_data() -> Json:
    return {"reason": "no longer needed"}


def reopened_data() -> Json:
    return {"reason": "the noise is back"}


def complaint_filed_data(complaint_id: str) -> Json:
    return {"complaint_id": complaint_id, "category": "attitude", "text": "迟到两小时"}


def complaint_resolved_data(complaint_id: str) -> Json:
    return {"complaint_id": complaint_id, "resolution": "apologised, fee refunded"}


# --- the event store --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rows:
    """How many rows the write path has left in the event store."""

    events: int
    outbox: int


async def count_rows(engine: AsyncEngine) -> Rows:
    async with engine.connect() as conn:
        events = await conn.scalar(select(func.count()).select_from(order_event))
        outbox = await conn.scalar(select(func.count()).select_from(outbox_message))
    return Rows(int(events or 0), int(outbox or 0))


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    """The response is an RFC 9457 problem with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem: Json = response.json()
    assert problem["type"] == f"urn:servicetrail:problem:{code}", problem
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


def created(response: httpx.Response) -> Json:
    """The body of a 201."""
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


# --- intake and dispatch over HTTP -------------------------------------------------


@dataclass
class Services:
    """Clients of intake and dispatch plus tokens; drives orders over HTTP."""

    intake: httpx.AsyncClient
    dispatch: httpx.AsyncClient
    auth: Auth
    dispatcher: Headers = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = self.auth(Role.DISPATCHER, random_ref("disp"))

    def customer(self, customer_id: str) -> Headers:
        return self.auth(Role.CUSTOMER, customer_id)

    def technician(self, technician_id: str) -> Headers:
        return self.auth(Role.TECHNICIAN, technician_id)

    async def register_technician(self, technician_id: str, **kwargs: Any) -> None:
        response = await self.dispatch.post(
            "/v1/technicians",
            headers=self.dispatcher,
            json=technician_body(technician_id, **kwargs),
        )
        assert response.status_code == 201, response.text

    async def create_order(self, customer_id: str, **overrides: Any) -> str:
        response = await self.intake.post(
            "/v1/orders",
            headers=self.customer(customer_id),
            json=new_order_body(
                **{"category": CATEGORY, "region": REGION, **overrides}
            ),
        )
        order_id: str = created(response)["order_id"]
        return order_id

    async def assign(self, order_id: str, technician_id: str) -> httpx.Response:
        return await self.dispatch.post(
            f"/v1/orders/{order_id}/assign",
            headers=self.dispatcher,
            json={"technician_id": technician_id},
        )

    async def technician_posts(
        self, order_id: str, technician_id: str, body: Json
    ) -> httpx.Response:
        return await self.dispatch.post(
            f"/v1/orders/{order_id}/events",
            headers=self.technician(technician_id),
            json=body,
        )

    async def customer_posts(
        self, order_id: str, customer_id: str, body: Json
    ) -> httpx.Response:
        return await self.intake.post(
            f"/v1/orders/{order_id}/events",
            headers=self.customer(customer_id),
            json=body,
        )

    async def order(self, order_id: str) -> Json:
        """The order as a dispatcher sees it."""
        response = await self.intake.get(
            f"/v1/orders/{order_id}", headers=self.dispatcher
        )
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body


@dataclass
class Order:
    """One order with its customer and technician, moved along the happy path."""

    services: Services
    order_id: str
    customer_id: str
    technician_id: str
    quote_id: str | None = None

    @classmethod
    async def create(cls, services: Services, *, warranty: bool = False) -> Order:
        customer_id = random_ref("cust")
        technician_id = random_ref("tech")
        await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
        order_id = await services.create_order(customer_id, warranty=warranty)
        return cls(services, order_id, customer_id, technician_id)

    async def technician(self, type_: str, data: Json, **kwargs: Any) -> Json:
        body = event_body(type_, data, **kwargs)
        return created(
            await self.services.technician_posts(
                self.order_id, self.technician_id, body
            )
        )

    async def customer(self, type_: str, data: Json, **kwargs: Any) -> Json:
        body = event_body(type_, data, **kwargs)
        return created(
            await self.services.customer_posts(self.order_id, self.customer_id, body)
        )

    async def assign(self) -> Json:
        return created(await self.services.assign(self.order_id, self.technician_id))

    async def accept(self) -> Json:
        return await self.technician("accepted", accepted_data(self.technician_id))

    async def arrive(self) -> Json:
        return await self.technician("arrived", arrived_data(self.technician_id))

    async def diagnose(self) -> Json:
        return await self.technician("diagnosed", diagnosed_data())

    async def price(self, total: int = 20_000) -> Json:
        quote = await self.technician("priced", priced_data(total))
        self.quote_id = str(quote["event"]["id"])
        return quote

    async def approve(self) -> Json:
        assert self.quote_id is not None
        return await self.customer("quote_approved", quote_decision_data(self.quote_id))

    async def to_approved(self, total: int = 20_000) -> Json:
        """created -> assigned -> accepted -> on_site -> diagnosed -> quoted -> approved."""
        await self.assign()
        await self.accept()
        await self.arrive()
        await self.diagnose()
        await self.price(total)
        return await self.approve()

    async def to_follow_up_visit(self, *, total: int, first_visit: int) -> Json:
        """On to the second visit of a quote of `total`: the first charged
        `first_visit` and needed a follow-up; the technician is on site again."""
        await self.to_approved(total)
        await self.technician(
            "completed", completed_data(first_visit, outcome="follow_up_required")
        )
        return await self.arrive()

    async def state(self) -> Json:
        return await self.services.order(self.order_id)


@asynccontextmanager
async def started(
    settings: CommonSettings, *, kafka: bool = False, **dispatch_settings: object
) -> AsyncIterator[Services]:
    """Intake and dispatch with their lifespans; `kafka` adds relays, consumers and
    the assignment sweep; `dispatch_settings` override dispatch's settings."""
    intake_app = create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=kafka)
    )
    dispatch_app = create_dispatch(
        service_settings(
            settings,
            DispatchSettings,
            run_outbox_relay=kafka,
            run_assignment_consumer=kafka,
            **dispatch_settings,
        )
    )
    async with running(intake_app) as intake, running(dispatch_app) as dispatch:
        yield Services(intake, dispatch, bearer(settings))
