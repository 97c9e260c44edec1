"""RS256 tokens against a real JWKS endpoint served on the loopback interface.

The identity provider here is an HTTP server in a thread: its keys can be rotated,
it can be slowed down or switched off, and it counts how often it is asked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from uuid import uuid4

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.settings import CommonSettings, JwtAlgorithm
from tests.api.conftest import running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body
from tests.http_events import assert_problem, count_rows

ISSUER: Final = "https://idp.example.test/"
AUDIENCE: Final = "servicetrail-api"
ORDERS: Final = "/v1/orders"


@dataclass
class IdentityProvider:
    """Signing keys by `kid`, published as a JWKS; `delay` slows every answer."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    delay: float = 0.0
    requests: int = 0

    def add_key(self) -> str:
        kid = uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> bytes:
        keys = []
        for kid, key in self.keys.items():
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": keys}).encode()

    def token(self, kid: str, **claims: Any) -> str:
        body = {
            "sub": "rs-customer",
            "role": "customer",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": datetime.now(UTC) + timedelta(minutes=5),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@dataclass
class Served:
    provider: IdentityProvider
    url: str
    server: ThreadingHTTPServer


@pytest.fixture
def idp() -> Iterator[Served]:
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.requests += 1
            time.sleep(provider.delay)
            body = provider.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(provider, f"http://127.0.0.1:{server.server_port}/jwks", server)
    finally:
        server.shutdown()
        server.server_close()


def rs256(settings: CommonSettings, idp: Served, **overrides: Any) -> IntakeSettings:
    return service_settings(
        settings,
        IntakeSettings,
        run_outbox_relay=False,
        jwt_algorithm=JwtAlgorithm.RS256,
        jwt_jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_secret=None,
        **overrides,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def intake(
    settings: CommonSettings, idp: Served
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_intake(rs256(settings, idp))) as client:
        yield client


async def create_order(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        ORDERS, json=new_order_body(), headers={"Authorization": f"Bearer {token}"}
    )


async def test_a_token_signed_by_a_published_key_is_accepted(
    intake: httpx.AsyncClient, idp: Served
) -> None:
    kid = idp.provider.add_key()
    response = await create_order(intake, idp.provider.token(kid))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iss": "https://elsewhere.example.test/"}, id="wrong-iss"),
        pytest.param({"iss": None}, id="missing-iss"),
        pytest.param({"aud": "another-api"}, id="wrong-aud"),
        pytest.param({"aud": None}, id="missing-aud"),
        pytest.param({"role": "system", "sub": "dispatch"}, id="system-role"),
        pytest.param({"sub": "a" * 129}, id="long-subject"),
    ],
)
async def test_a_token_with_wrong_claims_is_a_401_and_stores_nothing(
    intake: httpx.AsyncClient, idp: Served, engine: AsyncEngine, claims: dict[str, Any]
) -> None:
    kid = idp.provider.add_key()
    before = await count_rows(engine)
    response = await create_order(intake, idp.provider.token(kid, **claims))
    assert_problem(response, 401, "invalid_token")
    assert await count_rows(engine) == before


async def test_a_token_with_an_unknown_kid_is_a_401_and_stores_nothing(
    intake: httpx.AsyncClient, idp: Served, engine: AsyncEngine
) -> None:
    idp.provider.add_key()
    unpublished = idp.provider.add_key()
    token = idp.provider.token(unpublished)
    del idp.provider.keys[unpublished]
    before = await count_rows(engine)
    response = await create_order(intake, token)
    assert_problem(response, 401, "invalid_token")
    assert await count_rows(engine) == before


async def test_an_unreachable_jwks_is_a_503_and_stores_nothing(
    intake: httpx.AsyncClient, idp: Served, engine: AsyncEngine
) -> None:
    kid = idp.provider.add_key()
    token = idp.provider.token(kid)
    idp.server.shutdown()
    idp.server.server_close()
    before = await count_rows(engine)
    response = await create_order(intake, token)
    problem = assert_problem(response, 503, "identity_provider_unavailable")
    assert response.headers["Retry-After"].isdigit()
    assert "Fail to fetch" not in problem["detail"]
    assert await count_rows(engine) == before


async def test_a_slow_jwks_times_out_as_a_503_without_blocking_other_requests(
    settings: CommonSettings, idp: Served, engine: AsyncEngine
) -> None:
    kid = idp.provider.add_key()
    idp.provider.delay = 3.0
    app = create_intake(rs256(settings, idp, jwt_jwks_timeout_seconds=1.0))
    async with running(app) as client:
        before = await count_rows(engine)
        began = time.monotonic()
        slow = asyncio.create_task(create_order(client, idp.provider.token(kid)))
        await asyncio.sleep(0.2)
        health_began = time.monotonic()
        assert (await client.get("/healthz")).status_code == 200
        health_took = time.monotonic() - health_began
        response = await slow
        took = time.monotonic() - began
    assert health_took < 0.5  # the event loop was free while the keys were fetched
    assert_problem(response, 503, "identity_provider_unavailable")
    assert took < 2.9
    assert await count_rows(engine) == before


async def test_a_key_rotated_out_stops_verifying_after_the_key_set_lifespan(
    settings: CommonSettings, idp: Served
) -> None:
    old = idp.provider.add_key()
    app = create_intake(rs256(settings, idp, jwt_jwks_cache_seconds=1.0))
    async with running(app) as client:
        old_token = idp.provider.token(old)
        assert (await create_order(client, old_token)).status_code == 201
        new = idp.provider.add_key()
        del idp.provider.keys[old]
        await asyncio.sleep(1.1)
        refused = await create_order(client, old_token)
        accepted = await create_order(client, idp.provider.token(new))
    assert_problem(refused, 401, "invalid_token")
    assert accepted.status_code == 201, accepted.text


async def test_keys_are_fetched_once_for_many_requests(
    intake: httpx.AsyncClient, idp: Served
) -> None:
    kid = idp.provider.add_key()
    tokens = [idp.provider.token(kid, sub=f"rs-customer-{n}") for n in range(5)]
    for token in tokens * 2:
        assert (await create_order(intake, token)).status_code == 201
    assert idp.provider.requests == 1
