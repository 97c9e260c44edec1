"""What every service shares: health, readiness, metrics, OpenAPI, problems, auth."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

import httpx
import jwt
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics.app import create_app as create_metrics
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.postgres import unique_database_name
from tests.fixtures.stack import service_settings

PROBLEM_JSON: Final = "application/problem+json"
READY_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class Service:
    """How to build one service's app; `background` names its broker-needing task."""

    name: str
    build: Callable[[CommonSettings, bool], FastAPI]

    def app(self, settings: CommonSettings, *, background: bool = False) -> FastAPI:
        return self.build(settings, background)


def _intake(settings: CommonSettings, background: bool) -> FastAPI:
    return create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=background)
    )


def _dispatch(settings: CommonSettings, background: bool) -> FastAPI:
    return create_dispatch(
        service_settings(settings, DispatchSettings, run_outbox_relay=background)
    )


def _ledger(settings: CommonSettings, background: bool) -> FastAPI:
    return create_ledger(
        service_settings(settings, LedgerSettings, run_consumer=background)
    )


def _metrics(settings: CommonSettings, background: bool) -> FastAPI:
    return create_metrics(
        service_settings(settings, MetricsSettings, run_consumer=background)
    )


INTAKE: Final = Service("intake", _intake)
LEDGER: Final = Service("ledger", _ledger)
METRICS: Final = Service("metrics", _metrics)
SERVICES: Final = [
    pytest.param(INTAKE, id="intake"),
    pytest.param(Service("dispatch", _dispatch), id="dispatch"),
    pytest.param(LEDGER, id="ledger"),
    pytest.param(METRICS, id="metrics"),
]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem["type"] == f"urn:servicetrail:problem:{code}"
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["instance"] == response.request.url.path
    return problem


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# --- operations endpoints of every service ------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_healthz_answers_200_while_the_process_is_up(
    service: Service, settings: CommonSettings
) -> None:
    async with running(service.app(settings)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("service", SERVICES)
async def test_readyz_answers_200_once_database_and_broker_are_reachable(
    service: Service, settings: CommonSettings
) -> None:
    async with running(service.app(settings, background=True)) as client:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_SECONDS
        while True:
            response = await client.get("/readyz")
            if response.status_code == 200:
                break
            assert response.status_code == 503, response.text
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never ready: {response.text}")
            await asyncio.sleep(0.1)
    body = response.json()
    assert body["status"] == "ready"
    # Dispatch also reports its assignment consumer.
    assert {"database", "broker"} <= set(body["checks"])
    assert set(body["checks"].values()) == {"ok"}
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("service", SERVICES)
async def test_readyz_answers_503_naming_the_database_when_it_does_not_exist(
    service: Service, settings: CommonSettings
) -> None:
    missing = unique_database_name("missing")
    server, _, _ = settings.database_url.rpartition("/")
    broken = settings.model_copy(update={"database_url": f"{server}/{missing}"})

    async with running(service.app(broken, background=True)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"].startswith("unavailable")
    assert "type" not in body


@pytest.mark.parametrize("service", SERVICES)
async def test_metrics_serves_prometheus_text_with_the_request_counter(
    service: Service, settings: CommonSettings
) -> None:
    async with running(service.app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "servicetrail_http_requests_total" in response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = [
        s
        for s in families["servicetrail_http_requests"].samples
        if s.name == "servicetrail_http_requests_total"
    ]
    healthz = [
        s
        for s in samples
        if s.labels
        == {
            "service": service.name,
            "method": "GET",
            "route": "/healthz",
            "status": "200",
        }
    ]
    assert healthz
    assert healthz[0].value >= 1


@pytest.mark.parametrize("service", SERVICES)
async def test_metrics_label_unknown_paths_with_one_bounded_route_value(
    service: Service, settings: CommonSettings
) -> None:
    path = f"/no/such/{uuid4()}"
    async with running(service.app(settings)) as client:
        assert (await client.get(path)).status_code == 404
        text = (await client.get("/metrics")).text
    assert path not in text
    assert f'service="{service.name}"' in text
    assert 'route="unmatched"' in text


@pytest.mark.parametrize("service", SERVICES)
async def test_openapi_json_is_a_valid_openapi_document_whose_refs_resolve(
    service: Service, settings: CommonSettings
) -> None:
    async with running(service.app(settings)) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == f"ServiceTrail {service.name}"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "get" in document["paths"][path]
    schemas = document.get("components", {}).get("schemas", {})
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_intake_openapi_documents_the_create_order_body(
    settings: CommonSettings,
) -> None:
    async with running(INTAKE.app(settings)) as client:
        document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/v1/orders"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        assert schema["$ref"] == "#/components/schemas/CreateOrderRequest"
    else:
        assert schema["title"] == "CreateOrderRequest"
    schemas = document["components"]["schemas"]
    create = schemas["CreateOrderRequest"]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {
        "category",
        "region",
        "urgency",
        "description",
        "warranty",
        "channel",
    }
    assert {"id", "time", "contact", "contact_ref", "customer_id"} <= set(
        create["properties"]
    )
    assert "#/components/schemas/ContactIn" in set(
        refs(create["properties"]["contact"])
    )
    contact = schemas["ContactIn"]
    assert set(contact["required"]) == {"name", "phone", "address"}
    assert contact["additionalProperties"] is False
    assert "201" in operation["responses"]
    assert "OrderCreatedResponse" in schemas


# --- problem+json for routing failures ----------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_an_unknown_route_is_a_404_problem(
    service: Service, settings: CommonSettings
) -> None:
    async with running(service.app(settings)) as client:
        response = await client.get("/v1/nothing-here")
    assert_problem(response, 404, "not_found")


async def test_a_wrong_method_is_a_405_problem_with_allow(
    settings: CommonSettings,
) -> None:
    async with running(INTAKE.app(settings)) as client:
        response = await client.delete("/v1/orders")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


# --- ledger -------------------------------------------------------------------------


async def test_ledger_history_of_an_unknown_order_is_a_404_problem(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            f"/v1/orders/{uuid4()}/history", headers=auth(Role.AUDITOR, "auditor-1")
        )
    assert_problem(response, 404, "order_not_found")


async def test_ledger_history_with_a_malformed_order_id_is_a_422_problem(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            "/v1/orders/not-a-uuid/history", headers=auth(Role.AUDITOR, "auditor-1")
        )
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["path.order_id"]


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.TECHNICIAN, Role.SERVICE])
async def test_ledger_history_is_forbidden_to_roles_outside_audit(
    settings: CommonSettings, role: Role
) -> None:
    auth = bearer(settings)
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            f"/v1/orders/{uuid4()}/history", headers=auth(role, "someone-1")
        )
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.DISPATCHER, Role.ADMIN])
async def test_ledger_history_is_open_to_auditors_dispatchers_and_admins(
    settings: CommonSettings, role: Role
) -> None:
    auth = bearer(settings)
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            f"/v1/orders/{uuid4()}/history", headers=auth(role, "someone-1")
        )
    # Allowed through, and then told the order has no events.
    assert_problem(response, 404, "order_not_found")


# --- metrics ------------------------------------------------------------------------


async def test_indicators_are_forbidden_to_customers(settings: CommonSettings) -> None:
    auth = bearer(settings)
    async with running(METRICS.app(settings)) as client:
        response = await client.get(
            "/v1/indicators", headers=auth(Role.CUSTOMER, "customer-1")
        )
    assert_problem(response, 403, "forbidden")


async def test_indicators_with_an_unknown_window_are_a_422_problem_naming_it(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    async with running(METRICS.app(settings)) as client:
        response = await client.get(
            "/v1/indicators?window=bogus", headers=auth(Role.DISPATCHER, "d-1")
        )
    problem = assert_problem(response, 422, "validation_error")
    fields = [e["field"] for e in problem["errors"]]
    assert fields == ["query.window"]
    assert all(e["message"] for e in problem["errors"])


async def test_indicators_of_an_empty_store_answer_200_for_a_dispatcher(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    async with running(METRICS.app(settings)) as client:
        response = await client.get(
            "/v1/indicators?window=24h", headers=auth(Role.DISPATCHER, "d-1")
        )
    assert response.status_code == 200, response.text
    assert response.json()["indicators"]["orders_created"] == {"value": 0}


# --- authentication (on one protected route) ----------------------------------------


def _ledger_url() -> str:
    return f"/v1/orders/{uuid4()}/history"


async def test_no_token_is_a_401_problem_with_a_bearer_challenge(
    settings: CommonSettings,
) -> None:
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(_ledger_url())
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == 'Bearer realm="servicetrail"'


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param("Bearer ", id="bearer-with-blank-token"),
    ],
)
async def test_a_malformed_authorization_header_is_a_401_problem(
    settings: CommonSettings, authorization: str
) -> None:
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            _ledger_url(), headers={"Authorization": authorization}
        )
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def _token(settings: CommonSettings, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, settings.hs256_secret(), algorithm="HS256")


def _bad_token(settings: CommonSettings, kind: str) -> str:
    now = datetime.now(UTC)
    exp = now + timedelta(hours=1)
    claims = {"sub": "a-1", "role": "auditor", "exp": exp}
    secret = settings.hs256_secret()
    match kind:
        case "garbage":
            return "garbage"
        case "expired":
            return _token(settings, {**claims, "exp": now - timedelta(minutes=1)})
        case "other-secret":
            return jwt.encode(
                claims, "another-secret-of-sufficient-length-987654", algorithm="HS256"
            )
        case "unsigned":
            return jwt.encode(claims, "", algorithm="none")
        case "hs512":
            # The right secret, but only HS256 is configured (the key is short for
            # HS512, which PyJWT warns about; that is beside the point here).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return jwt.encode(claims, secret, algorithm="HS512")
        case "unknown-role":
            return _token(settings, {**claims, "role": "superuser"})
        case "no-role" | "no-sub" | "no-exp":
            missing = kind.removeprefix("no-")
            return _token(settings, {k: v for k, v in claims.items() if k != missing})
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "expired",
        "other-secret",
        "unsigned",
        "hs512",
        "unknown-role",
        "no-role",
        "no-sub",
        "no-exp",
    ],
)
async def test_an_invalid_token_is_a_401_problem(
    settings: CommonSettings, kind: str
) -> None:
    token = _bad_token(settings, kind)
    async with running(LEDGER.app(settings)) as client:
        response = await client.get(
            _ledger_url(), headers={"Authorization": f"Bearer {token}"}
        )
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_token_for_another_audience_is_a_401_when_an_audience_is_set(
    settings: CommonSettings,
) -> None:
    strict = settings.model_copy(update={"jwt_audience": "servicetrail-api"})
    other = settings.model_copy(update={"jwt_audience": "someone-else"})
    async with running(LEDGER.app(strict)) as client:
        refused = await client.get(
            _ledger_url(), headers=bearer(other)(Role.AUDITOR, "a-1")
        )
        accepted = await client.get(
            _ledger_url(), headers=bearer(strict)(Role.AUDITOR, "a-1")
        )
    assert_problem(refused, 401, "invalid_token")
    assert_problem(accepted, 404, "order_not_found")
