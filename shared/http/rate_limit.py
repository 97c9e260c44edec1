"""Per-caller request rate limits: over the budget, a 429 problem with `Retry-After`.

The caller is the verified token's role and subject, so one customer's runaway app
cannot slow the others; without a valid token it is the client address (a flood of
bad tokens must not be free). Counting uses the `limits` package's moving window in
this process's memory: each replica counts on its own, so a deployment's effective
limit is the configured one times its replicas, and a restart forgets the counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Final

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.http.auth import authenticate, authorization_header
from shared.http.problems import Problem, problem_body, send_problem
from shared.settings import CommonSettings

_TOO_MANY: Final = "too_many_requests"


class RateLimit:
    """ASGI middleware: refuses a caller's request over its budget before it runs.

    A refused request reaches no handler, so nothing of it is stored; nor does it
    count against the budget, so retrying too early does not push the reset away.
    """

    def __init__(
        self, app: ASGIApp, *, settings: CommonSettings, exempt: Collection[str]
    ) -> None:
        self.app = app
        self.settings = settings
        self.exempt = frozenset(exempt)
        self.limits: list[RateLimitItem] = (
            parse_many(settings.rate_limit) if settings.rate_limit.strip() else []
        )
        # The synchronous flavour on purpose: its calls take microseconds and never
        # wait, whereas the asyncio one expires entries through a thread per key.
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.limits
            or scope.get("path", "") in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        retry_after = self._spend(await self._caller(scope))
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        body = problem_body(
            429,
            _TOO_MANY,
            f"Too many requests (limit {self.settings.rate_limit}); "
            f"retry in {retry_after} s.",
            instance=scope.get("path"),
        )
        await send_problem(send, body, headers={"Retry-After": str(retry_after)})

    async def _caller(self, scope: Scope) -> str:
        try:
            # The same single header the handlers authenticate (two are a 400 there).
            caller = await authenticate(
                self.settings, authorization_header(scope["headers"])
            )
        except Problem:
            client = scope.get("client")
            return f"address:{client[0] if client else 'unknown'}"
        return f"token:{caller.actor}"

    def _spend(self, caller: str) -> int | None:
        """Count one request; None if allowed, else the seconds until it would be."""
        # Test every limit before hitting any: a request refused by the minute limit
        # must not use up the second's budget. No await between them, so no other
        # request of this event loop can interleave.
        exceeded = [item for item in self.limits if not self.limiter.test(item, caller)]
        if not exceeded:
            for item in self.limits:
                self.limiter.hit(item, caller)
            return None
        reset_at = max(
            self.limiter.get_window_stats(item, caller).reset_time for item in exceeded
        )
        return max(1, math.ceil(reset_at - time.time()))
