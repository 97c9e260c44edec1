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
# Where the middleware leaves the caller's budget for handlers whose requests cost
# more than one (a batch costs its events): `request.state.rate_budget`.
BUDGET_STATE: Final = "rate_budget"


class Budget:
    """One caller's remaining budget; a handler spends what a request costs beyond one.

    Without a limiter (limiting off, or an exempt path) spending always succeeds.
    """

    def __init__(self, limiter: RateLimit | None = None, caller: str = "") -> None:
        self._limiter = limiter
        self._caller = caller

    def spend(self, cost: int) -> None:
        """Count `cost` more requests, or raise a 429 problem spending nothing."""
        if self._limiter is None or cost <= 0:
            return
        retry_after = self._limiter.spend(self._caller, cost=cost)
        if retry_after is not None:
            raise Problem(
                429,
                _TOO_MANY,
                f"This request counts as {cost + 1} (limit "
                f"{self._limiter.settings.rate_limit}); retry in {retry_after} s "
                "or send less at once.",
                headers={"Retry-After": str(retry_after)},
            )


class RateLimit:
    """ASGI middleware: refuses a caller's request over its budget before it runs.

    A refused request reaches no handler, so nothing of it is stored; nor does it
    count against the budget, so retrying too early does not push the reset away.
    Every request counts one on arrival; a handler spends the rest of a request
    that costs more through `Budget` (a batch refused there has still cost one).
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
        caller = await self._caller(scope)
        retry_after = self.spend(caller, cost=1)
        if retry_after is None:
            scope.setdefault("state", {})[BUDGET_STATE] = Budget(self, caller)
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

    def spend(self, caller: str, *, cost: int) -> int | None:
        """Count `cost` requests; None if allowed, else the seconds until it would be."""
        # Test every limit before hitting any: a request refused by the minute limit
        # must not use up the second's budget. No await between them, so no other
        # request of this event loop can interleave.
        exceeded = [
            item
            for item in self.limits
            if not self.limiter.test(item, caller, cost=cost)
        ]
        if not exceeded:
            for item in self.limits:
                self.limiter.hit(item, caller, cost=cost)
            return None
        reset_at = max(
            self.limiter.get_window_stats(item, caller).reset_time for item in exceeded
        )
        return max(1, math.ceil(reset_at - time.time()))
