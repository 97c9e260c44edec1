"""Schemathesis against every service's own OpenAPI document.

Every operation of each service gets generated requests, valid and invalid, sent to
the real ASGI app with its lifespan running on a real database. The answers must
never be a 5xx, and must match what the OpenAPI document says of them.

Schemathesis generates and validates; the requests go through an `httpx` client on
the test's own event loop, where `LifespanManager` started the app, because the
app's database engine belongs to the loop its lifespan ran on (schemathesis' own
ASGI transport would run the app on a loop of its own).

Callers: intake is called as the seeded order's customer (an admin for the
admin-only contact erasure); dispatch as the assigned technician where technicians
act and as a dispatcher elsewhere; the ledger as an auditor; metrics as a dispatcher.
The ledger and metrics consume the seeded order from the broker (an intake relay
publishes it) before any request is generated, so requests naming it reach real
rows. The metrics stream is called with a token that expires within two seconds,
since a stream ends only with its token. No operation is excluded. One exemption:
/readyz answers 503 by design for intake and dispatch here, because their outbox
relay (the broker connection it reports on) is off; that 503 is not counted as a
server error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, TypeVar

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import random_ref
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body
from tests.http_events import (
    MANUAL_ONLY,
    Json,
    Services,
    accepted_data,
    complaint_filed_data,
    event_body,
    technician_body,
)
from tests.integration.metrics_io import consumed, metrics_settings

T = TypeVar("T")

BASE_URL: Final = "http://test"
EXAMPLES_PER_OPERATION: Final = 25

Auth = Callable[[Role, str], dict[str, str]]
# Who calls an operation: its method and path template -> auth headers.
HeadersFor = Callable[[str, str], dict[str, str]]
# Per operation, a body the service accepts. Generated bodies satisfy the schema but
# rarely the rules it cannot express (exactly one of `contact` and `contact_ref`, an
# event type the service takes, ...), and successful answers need checking too.
ValidBodies = Mapping[str, Callable[[], Json]]


@dataclass(frozen=True, slots=True)
class Seed:
    """Ids that exist in the database, so generated requests reach real rows too."""

    customer_id: str
    technician_id: str
    order_id: str


@dataclass(frozen=True, slots=True)
class Target:
    """One running service: its schema, a client, who calls each operation."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    schema: schemathesis.BaseSchema
    headers_for: HeadersFor
    seed: Seed
    valid_bodies: ValidBodies

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)


async def seed_database(settings: CommonSettings) -> Seed:
    """An order of a customer, assigned to a registered technician."""
    customer_id = random_ref("cust")
    technician_id = random_ref("tech")
    intake_app = create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=False)
    )
    dispatch_app = create_dispatch(
        service_settings(
            settings,
            DispatchSettings,
            run_outbox_relay=False,
            run_assignment_consumer=False,
        )
    )
    async with running(intake_app) as intake, running(dispatch_app) as dispatch:
        services = Services(intake, dispatch, bearer(settings))
        await services.register_technician(technician_id, skills=(MANUAL_ONLY,))
        order_id = await services.create_order(customer_id)
        assert (await services.assign(order_id, technician_id)).status_code == 201
    return Seed(customer_id, technician_id, order_id)


def intake_headers(auth: Auth, seed: Seed) -> HeadersFor:
    """The order's customer everywhere; an admin for contact erasure (admin-only)."""

    def headers(method: str, path: str) -> dict[str, str]:
        if method == "DELETE":
            return auth(Role.ADMIN, "admin-1")
        return auth(Role.CUSTOMER, seed.customer_id)

    return headers


def dispatch_headers(auth: Auth, seed: Seed) -> HeadersFor:
    """The assigned technician where technicians act; a dispatcher elsewhere."""

    def headers(method: str, path: str) -> dict[str, str]:
        if path in ("/v1/events:batch", "/v1/orders/{order_id}/events") or (
            path.startswith("/v1/technicians/{")
        ):
            return auth(Role.TECHNICIAN, seed.technician_id)
        return auth(Role.DISPATCHER, "disp-1")

    return headers


def auditor_headers(auth: Auth, seed: Seed) -> HeadersFor:
    def headers(method: str, path: str) -> dict[str, str]:
        return auth(Role.AUDITOR, "auditor-1")

    return headers


def metrics_headers(settings: CommonSettings) -> Callable[[Auth, Seed], HeadersFor]:
    """A dispatcher; on the stream, one whose token ends it within two seconds."""

    def for_seed(auth: Auth, seed: Seed) -> HeadersFor:
        def headers(method: str, path: str) -> dict[str, str]:
            if path == "/v1/stream":
                token = issue_token(
                    settings,
                    role=Role.DISPATCHER,
                    subject="disp-1",
                    lifetime=timedelta(seconds=1),
                )
                return {"Authorization": f"Bearer {token}"}
            return auth(Role.DISPATCHER, "disp-1")

        return headers

    return for_seed


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the seeded order did not reach {what} in 30 s")


async def ledger_has_seed(client: httpx.AsyncClient, auth: Auth, seed: Seed) -> None:
    async def seeded() -> bool:
        response = await client.get(
            f"/v1/orders/{seed.order_id}/history",
            headers=auth(Role.AUDITOR, "auditor-1"),
        )
        return response.status_code == 200 and len(response.json()["entries"]) == 2

    await until(seeded, "the ledger")


async def metrics_has_seed(client: httpx.AsyncClient, auth: Auth, seed: Seed) -> None:
    async def seeded() -> bool:
        response = await client.get(
            "/v1/indicators",
            params={"window": "all"},
            headers=auth(Role.DISPATCHER, "disp-1"),
        )
        return response.status_code == 200 and consumed(response.json()) >= 2

    await until(seeded, "metrics")


def intake_bodies(seed: Seed) -> ValidBodies:
    return {
        "POST /v1/orders": new_order_body,
        "POST /v1/orders/{order_id}/events": lambda: event_body(
            "complaint_filed", complaint_filed_data(random_ref("cmp"))
        ),
    }


def dispatch_bodies(seed: Seed) -> ValidBodies:
    # One `accepted`, always the same id: stored once, then answered as a retry
    # (201) by the events endpoint and as a duplicate by the batch endpoint.
    accept = event_body("accepted", accepted_data(seed.technician_id))
    return {
        "POST /v1/technicians": lambda: technician_body(
            random_ref("tech"), skills=(MANUAL_ONLY,)
        ),
        "POST /v1/orders/{order_id}/events": lambda: accept,
        "POST /v1/events:batch": lambda: {
            "events": [{**accept, "order_id": seed.order_id}]
        },
    }


def _with_body(pair: tuple[schemathesis.Case[Any], Json]) -> schemathesis.Case[Any]:
    case, body = pair
    case.body = body
    return case


def cases(operation: Any, target: Target) -> st.SearchStrategy[schemathesis.Case[Any]]:
    """Valid and invalid requests, some naming the seeded rows; and, half of the
    time where there is one, a body the service accepts."""
    seed = target.seed
    names = {p.name for p in operation.path_parameters}
    known = {
        name: value
        for name, value in {
            "order_id": seed.order_id,
            "technician_id": seed.technician_id,
            "customer_id": seed.customer_id,
        }.items()
        if name in names
    }
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        if known:
            strategies.append(
                operation.as_strategy(generation_mode=mode, path_parameters=known)
            )
    generated = st.one_of(strategies)
    valid = target.valid_bodies.get(operation.label)
    if valid is None:
        return generated
    positive = operation.as_strategy(path_parameters=known or None)
    return st.one_of(generated, st.tuples(positive, st.builds(valid)).map(_with_body))


def send(target: Target, case: schemathesis.Case[Any]) -> httpx.Response:
    """The generated request, through the test's client."""
    headers = target.headers_for(case.method, case.path)
    request = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    if "json" in request:
        content: bytes | None = json.dumps(request["json"]).encode()
    else:
        content = request.get("data")
        assert content is None or isinstance(content, bytes), content
    return target.run(
        target.client.request(
            request["method"],
            request["url"],
            headers=request["headers"],
            params=request.get("params"),
            content=content,
        )
    )


def exercise(target: Target, checks: list[CheckFunction]) -> None:
    """Every operation, up to EXAMPLES_PER_OPERATION generated requests each; then
    one assertion naming every operation that failed a check, and how."""
    failed: dict[str, list[str]] = {}
    for result in target.schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(
                f"schemathesis could not load an operation: {result.err()}"
            )
        operation = result.ok()

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(operation, target))
        def call(case: schemathesis.Case[Any]) -> None:
            response = send(target, case)
            case.validate_response(
                response,
                checks=checks,
                headers=target.headers_for(case.method, case.path),
            )

        try:
            call()
        except FailureGroup as group:
            failed[operation.label] = sorted(
                {
                    f"{failure.title}: {failure.message}"[:300]
                    for failure in group.exceptions
                }
            )
    assert not failed, json.dumps(failed, indent=2, ensure_ascii=False)


# --- checks ---------------------------------------------------------------------------

CONFORMANCE: Final[list[CheckFunction]] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def no_server_error(
    ctx: Any, response: Any, case: schemathesis.Case[Any]
) -> bool | None:
    """not_a_server_error, except for /readyz's 503: with the outbox relay off (no
    broker connection, on purpose) "not ready" is its right answer."""
    if case.path == "/readyz" and response.status_code == 503:
        return None
    return not_a_server_error(ctx, response, case)


def successes_conform(
    ctx: Any, response: Any, case: schemathesis.Case[Any]
) -> bool | None:
    """Every 2xx answer has a documented status, content type, headers and schema."""
    if not 200 <= response.status_code < 300:
        return None
    for check in CONFORMANCE:
        check(ctx, response, case)
    return True


def no_bodies(seed: Seed) -> ValidBodies:
    return {}


Consumed = Callable[[httpx.AsyncClient, Auth, Seed], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Service:
    """How to build one service under test, who calls it, what it accepts; for a
    consumer, how to tell that the seeded order has reached it."""

    app: Callable[[CommonSettings], FastAPI]
    headers: Callable[[CommonSettings], Callable[[Auth, Seed], HeadersFor]]
    bodies: Callable[[Seed], ValidBodies] = no_bodies
    consumed: Consumed | None = field(default=None)


def _intake_app(settings: CommonSettings) -> FastAPI:
    return create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=False)
    )


def _dispatch_app(settings: CommonSettings) -> FastAPI:
    return create_dispatch(
        service_settings(
            settings,
            DispatchSettings,
            run_outbox_relay=False,
            run_assignment_consumer=False,
        )
    )


def _ledger_app(settings: CommonSettings) -> FastAPI:
    return create_ledger(service_settings(settings, LedgerSettings))


def _metrics_app(settings: CommonSettings) -> FastAPI:
    return create_metrics(metrics_settings(settings))


def _relay_app(settings: CommonSettings) -> FastAPI:
    return create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=True)
    )


def _same(
    headers: Callable[[Auth, Seed], HeadersFor],
) -> Callable[[CommonSettings], Callable[[Auth, Seed], HeadersFor]]:
    return lambda settings: headers


SERVICES: Final = [
    pytest.param(
        Service(_intake_app, _same(intake_headers), intake_bodies), id="intake"
    ),
    pytest.param(
        Service(_dispatch_app, _same(dispatch_headers), dispatch_bodies),
        id="dispatch",
    ),
    pytest.param(
        Service(_ledger_app, _same(auditor_headers), consumed=ledger_has_seed),
        id="ledger",
    ),
    pytest.param(
        Service(_metrics_app, metrics_headers, consumed=metrics_has_seed),
        id="metrics",
    ),
]


@contextlib.contextmanager
def serving(service: Service, settings: CommonSettings) -> Iterator[Target]:
    """The seeded database; the app on a loop of the test's own with its lifespan
    running; its OpenAPI document loaded into schemathesis."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        seed = loop.run_until_complete(seed_database(settings))
        app = service.app(settings)
        client = loop.run_until_complete(stack.enter_async_context(running(app)))
        if service.consumed is not None:
            loop.run_until_complete(
                stack.enter_async_context(running(_relay_app(settings)))
            )
            loop.run_until_complete(service.consumed(client, bearer(settings), seed))
        document = loop.run_until_complete(client.get("/openapi.json")).json()
        yield Target(
            loop=loop,
            client=client,
            schema=schemathesis.openapi.from_dict(document),
            headers_for=service.headers(settings)(bearer(settings), seed),
            seed=seed,
            valid_bodies=service.bodies(seed),
        )
    finally:
        loop.run_until_complete(stack.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("service", SERVICES)
def test_no_generated_request_gets_a_5xx_and_every_success_matches_its_schema(
    settings: CommonSettings, service: Service
) -> None:
    with serving(service, settings) as target:
        exercise(target, [no_server_error, successes_conform])


@pytest.mark.parametrize("service", SERVICES)
def test_every_response_matches_the_documented_responses(
    settings: CommonSettings, service: Service
) -> None:
    with serving(service, settings) as target:
        exercise(target, [no_server_error, *CONFORMANCE])
