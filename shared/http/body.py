"""Request bodies: size-limited before buffering, parsed strictly from JSON bytes.

FastAPI validates bodies in pydantic's Python mode, where strict models would refuse
RFC 3339 strings for datetimes; lax models would accept "5" for 5 and numbers for
datetimes. Parsing the raw bytes in JSON mode gives strictness without either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http.problems import (
    Problem,
    StartTrackingSend,
    problem_body,
    send_problem,
    validation_errors,
)

ModelT = TypeVar("ModelT", bound=BaseModel)

_TOO_LARGE: Final = "request_too_large"


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, counted while streaming.

    FastAPI and Starlette have no limit and would buffer any body in memory; a
    declared Content-Length is refused up front, a chunked body as soon as it passes
    the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        per_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Larger limits for named paths (an offline batch of 500 events).
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, limit)
            return
        received = 0
        tracking_send = StartTrackingSend(send)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not tracking_send.started:
                await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        body = problem_body(
            413,
            _TOO_LARGE,
            f"The request body is larger than {limit} bytes.",
            instance=scope.get("path"),
        )
        # The unread rest of the body would otherwise be taken for the next request.
        await send_problem(send, body, headers={"Connection": "close"})


def parse_json(model: type[ModelT], raw: bytes) -> ModelT:
    """Validate raw JSON bytes strictly; 422 problem with per-field errors."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as err:
        raise Problem(
            422,
            "validation_error",
            f"The request body is not a valid {model.__name__}.",
            errors=validation_errors(err),
        ) from None


def json_body(
    model: type[ModelT], *, optional: bool = False
) -> Callable[..., Awaitable[ModelT]]:
    """A FastAPI dependency that parses the request body as `model`.

    With `optional`, an empty body means `{}` (every field at its default).
    """

    async def parse(request: Request) -> ModelT:
        raw = await request.body()
        return parse_json(model, b"{}" if optional and not raw.strip() else raw)

    parse.__name__ = f"parse_{model.__name__}"
    return parse


def openapi_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting a body parsed by `json_body` instead of FastAPI."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    )
                }
            },
        }
    }
