"""An unexpected error is one 500 problem, and the connection lives on.

Served by a real uvicorn on a real socket, because what is tested is what the server
does with the connection after the answer: Starlette's own `Exception` handling
re-raises into uvicorn, which then closes a keep-alive connection, so a mobile
app's next request on it failed too. A client that disconnects while its body is
read is not an error and is not logged as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Final

import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from pydantic import SecretStr

from services.stack.servers import free_port
from shared.http.application import build_app
from shared.settings import CommonSettings
from tests.http_raw import get_request, read_response

SECRET: Final = "x" * 32


class _PlantedBug(RuntimeError):
    pass


def _app() -> FastAPI:
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise _PlantedBug("a bug planted by the test")

    @router.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    settings = CommonSettings(rate_limit="", jwt_secret=SecretStr(SECRET))
    return build_app(
        service="test", settings=settings, lifespan=lifespan, routers=[router]
    )


@contextlib.asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await task


async def test_a_500_is_a_problem_and_the_same_connection_serves_the_next_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _served(_app()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(get_request("/boom"))
            status, body = await read_response(reader)
            problem = json.loads(body)
            assert status == 500
            assert problem["type"] == "urn:servicetrail:problem:internal_error"
            assert "planted" not in body.decode()  # no internals leak to the caller

            writer.write(get_request("/fine"))
            status, body = await asyncio.wait_for(read_response(reader), 5)
            assert (status, json.loads(body)) == (200, {"ok": "yes"})
        finally:
            writer.close()
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1, "the bug is logged once, with its traceback"
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is _PlantedBug


async def test_a_client_gone_while_its_body_is_read_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with _served(_app()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b"{" * 10
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is now waiting for the rest
        writer.close()
        await asyncio.sleep(0.3)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get_request("/fine"))
        status, _ = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
    assert status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("client went away" in r.getMessage() for r in caplog.records)
