"""RFC 9457 problem details: every failure of every service renders here.

Domain errors carry only a code; the one table below gives each its HTTP status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.domain.errors import DomainError, VersionConflict

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
DATABASE_UNREACHABLE: Final[tuple[type[Exception], ...]] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

STATUS_BY_CODE: Final[Mapping[str, int]] = {
    "validation_error": 422,
    "unknown_event_type": 422,
    "unsupported_event_type": 422,
    "unknown_schema": 422,
    "transition_not_allowed": 409,
    "price_exceeds_approved_quote": 422,
    "event_time_before_previous": 422,
    "event_time_in_future": 422,
    "event_time_too_old": 422,
    # The order is full, not the request wrong: the same event fits another order.
    "order_event_limit_reached": 409,
    "unreadable_event": 422,
    "unknown_contact_ref": 422,
    "order_not_found": 404,
    "actor_not_allowed": 403,
    "forbidden": 403,
    "version_conflict": 409,
    "duplicate_event_conflict": 409,
    "quote_not_current": 409,
    "already_rated": 409,
    "warranty_window_expired": 409,
    "technician_declined_order": 409,
    "currency_mismatch": 422,
    "duplicate_complaint": 409,
    "complaint_not_open": 409,
    "invalid_cursor": 422,
    "tree_size_out_of_range": 422,
    "ledger_empty": 404,
    "unknown_indicator": 422,
    "technician_not_found": 404,
    "no_technician_available": 409,
    "alert_not_found": 404,
    # The case is full, not the request wrong (as order_event_limit_reached).
    "alert_case_full": 409,
}


class Problem(Exception):
    """An HTTP-level refusal raised by the edge (auth, body size, parsing)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[Mapping[str, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of one problem."""
    body: dict[str, Any] = {
        "type": f"urn:servicetrail:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors:
        body["errors"] = list(errors)
    body.update(extra or {})
    return body


def problem_response(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    *,
    errors: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(
            status,
            code,
            detail,
            instance=None if request is None else request.url.path,
            errors=errors,
            extra=extra,
        ),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def validation_errors(
    err: ValidationError | RequestValidationError,
) -> list[dict[str, str]]:
    """Pydantic errors as `{field, message}` pairs with dotted field paths."""
    return [
        {
            "field": ".".join(str(part) for part in e["loc"] if part != "body")
            or "body",
            "message": e["msg"],
        }
        for e in err.errors()
    ]


def domain_problem(err: DomainError) -> tuple[int, dict[str, Any]]:
    """The status and problem body of a domain refusal (HTTP and batch results)."""
    status = STATUS_BY_CODE.get(err.code, 422)
    extra = (
        {"current_version": err.current_version}
        if isinstance(err, VersionConflict)
        else None
    )
    errors = [{"field": e.field, "message": e.message} for e in err.errors]
    return status, problem_body(
        status, err.code, err.detail, errors=errors, extra=extra
    )


async def send_problem(
    send: Send,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer a problem from ASGI middleware, which runs outside FastAPI's handlers."""
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["status"],
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(content)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status, body = domain_problem(exc)
    logger.info("refused %s %s: %s", request.method, request.url.path, exc.code)
    return JSONResponse(
        {**body, "instance": request.url.path},
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
    )


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request,
        exc.status,
        exc.code,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(
        request,
        422,
        "validation_error",
        "The request is not valid.",
        errors=validation_errors(exc),
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return problem_response(
        request, exc.status_code, code, str(exc.detail), headers=exc.headers
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database (or broker) is unreachable: the client should retry, and nothing
    # was acknowledged, so nothing is lost. Never a 500 for an outage.
    logger.warning("unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request,
        503,
        "service_unavailable",
        "A backing service is unreachable; retry shortly.",
        headers={"Retry-After": "1"},
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return await _unavailable(request, exc)
    return await _unexpected(request, exc)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    # Leaving a transaction whose connection just died raises a plain InterfaceError
    # ("the underlying connection is closed") with the real cause as its context.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (*DATABASE_UNREACHABLE, OSError)):
            return await _unavailable(request, exc)
        cause = cause.__cause__ or cause.__context__
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        request, 500, "internal_error", "An unexpected error occurred."
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of `app` as application/problem+json."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _unavailable)
    # The hot path's raw asyncpg errors when the server goes away or restarts: a
    # connection dropped mid-statement, shutdown / starting up (57P01-57P03).
    for unreachable in DATABASE_UNREACHABLE:
        app.add_exception_handler(unreachable, _unavailable)
    app.add_exception_handler(asyncpg.InterfaceError, _driver_error)
    app.add_exception_handler(TimeoutError, _unavailable)
    # Every other exception is answered by `UnexpectedErrors` (see there for why not
    # here).


class StartTrackingSend:
    """An ASGI `send` that remembers whether the response has started."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class UnexpectedErrors:
    """ASGI middleware: an unexpected error is a 500 problem, and only that.

    Starlette hands `Exception` handlers to its outermost middleware, which sends the
    handler's response and then re-raises; uvicorn then logs the error again and
    closes the connection, so a keep-alive client's next request fails too. Here the
    error ends at the 500 answer. A client that went away while its body was read
    is not an error of ours: nothing is answered and nothing is logged as one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracking_send = StartTrackingSend(send)
        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            logger.info("client went away during %s %s", scope["method"], scope["path"])
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if tracking_send.started:
                # Part of an answer is out: the only honest end is the closed
                # connection the server makes of an unfinished response.
                return
            body = problem_body(
                500,
                "internal_error",
                "An unexpected error occurred.",
                instance=scope["path"],
            )
            await send_problem(send, body)
