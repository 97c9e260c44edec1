"""FastAPI dependencies as `Annotated` aliases; nothing below the edge sees `Request`.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, which
cost about 1 ms per request here. And each takes the `Request` rather than other
dependencies: FastAPI's cost is per dependency solved (tens of microseconds each),
so the caller's chain (settings -> caller -> actor -> role check) is one function.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Final, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.domain.actors import Actor, Role
from shared.http.auth import (
    Caller,
    authenticate,
    authorization_header,
    require_role,
)
from shared.http.body import json_body
from shared.http.rate_limit import BUDGET_STATE, Budget
from shared.orders.writer import OrderWriter
from shared.settings import CommonSettings


async def get_settings(request: Request) -> CommonSettings:
    settings: CommonSettings = request.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.state.engine
    return engine


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled connection; commands open their own explicit transaction on it."""
    engine: AsyncEngine = request.state.engine
    async with engine.connect() as conn:
        yield conn


async def get_writer(request: Request) -> OrderWriter:
    writer: OrderWriter = request.state.writer
    return writer


AppSettings = Annotated[CommonSettings, Depends(get_settings)]
Writer = Annotated[OrderWriter, Depends(get_writer)]
Engine = Annotated[AsyncEngine, Depends(get_engine)]
DbConnection = Annotated[AsyncConnection, Depends(get_connection)]


async def get_caller(request: Request) -> Caller:
    # The raw header list, not `Header()`: two `Authorization` headers must be a
    # 400, not whichever one a mapping happens to keep.
    settings: CommonSettings = request.state.settings
    return await authenticate(settings, authorization_header(request.scope["headers"]))


CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_actor(request: Request) -> Actor:
    return (await get_caller(request)).actor


CurrentActor = Annotated[Actor, Depends(get_actor)]


def actor_with_role(*roles: Role) -> Callable[[Request], Awaitable[Actor]]:
    """A dependency: the caller, who must have one of `roles` (or be an admin)."""
    allowed = frozenset(roles)

    async def check(request: Request) -> Actor:
        actor = (await get_caller(request)).actor
        require_role(actor, allowed)
        return actor

    return check


async def get_rate_budget(request: Request) -> Budget:
    budget: Budget = getattr(request.state, BUDGET_STATE, UNLIMITED)
    return budget


# What a request costing more than one (a batch of events) spends beyond the first.
RateBudget = Annotated[Budget, Depends(get_rate_budget)]
UNLIMITED: Final = Budget()


_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


async def get_traceparent(request: Request) -> str:
    """The caller's W3C trace context, or a new one so every event can be traced.

    With several `traceparent` headers the first counts (as `Header()` took it).
    """
    traceparent = request.headers.get("traceparent")
    if traceparent is not None and _TRACEPARENT.match(traceparent):
        return traceparent
    # One read of the system's randomness for trace and span id (each is a syscall).
    ids = secrets.token_hex(24)
    return f"00-{ids[:32]}-{ids[32:]}-01"


TraceParent = Annotated[str, Depends(get_traceparent)]


BodyT = TypeVar("BodyT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class WriteCall(Generic[BodyT]):
    """What a write route needs, solved as one dependency (see the module doc)."""

    writer: OrderWriter
    actor: Actor
    body: BodyT
    traceparent: str


def write_call(
    model: type[BodyT], *roles: Role
) -> Callable[[Request], Awaitable[WriteCall[BodyT]]]:
    """A dependency: `Writer`, `actor_with_role(*roles)`, `json_body(model)` and
    `TraceParent` in one, checked in that order (an unauthenticated caller gets
    401 whatever the body)."""
    caller = actor_with_role(*roles)
    parse = json_body(model)

    async def solve(request: Request) -> WriteCall[BodyT]:
        writer: OrderWriter = request.state.writer
        actor = await caller(request)
        body = await parse(request)
        return WriteCall(writer, actor, body, await get_traceparent(request))

    return solve
