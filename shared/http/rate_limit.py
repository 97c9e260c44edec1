"""Per-caller request rate limits: over the budget, a 429 problem with `Retry-After`.

The caller is the verified token's role and subject, so one customer's runaway app
cannot slow the others; without a valid token it is the client address (a flood of
bad tokens must not be free). Counting is a moving window in this process's memory:
each replica counts on its own, so a deployment's effective limit is the configured
one times its replicas, and a restart forgets the counts.

The `limits` package parses the setting; its in-memory storage is not used on the
request path: it started a timer thread to expire entries whenever the last one had
ended (10 ms after it began), i.e. a thread start and a sweep of every caller's
entries almost every request under load (about 0.5 ms of CPU a request, profiled).
Here a caller's window is pruned when that caller is counted, and callers idle for a
whole window are dropped by a sweep at most once a window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Final

from limits import parse_many
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


class MovingWindow:
    """`amount` requests per caller in any `seconds`-long window (no threads).

    Each caller's arrivals are kept oldest first, one per request counted, and only
    while they are inside the window; the most a caller holds is `amount`.
    """

    def __init__(
        self,
        amount: int,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.amount = amount
        self.seconds = seconds
        self._clock = clock
        self._arrivals: dict[str, deque[float]] = {}
        self._next_sweep = clock() + seconds

    def _window(self, caller: str, now: float) -> deque[float] | None:
        arrivals = self._arrivals.get(caller)
        if arrivals is not None:
            start = now - self.seconds
            while arrivals and arrivals[0] <= start:
                arrivals.popleft()
        return arrivals

    def fits(self, caller: str, cost: int) -> bool:
        """Whether `cost` more requests stay within the limit (nothing counted)."""
        arrivals = self._window(caller, self._clock())
        return (0 if arrivals is None else len(arrivals)) + cost <= self.amount

    def count(self, caller: str, cost: int) -> None:
        """Count `cost` requests now (the caller checked `fits` first)."""
        now = self._clock()
        arrivals = self._window(caller, now)
        if arrivals is None:
            arrivals = self._arrivals[caller] = deque()
        arrivals.extend([now] * cost)
        if now >= self._next_sweep:
            self._sweep(now)

    def seconds_until_reset(self, caller: str) -> float:
        """When the oldest request in the caller's window leaves it (from now).

        A whole window for an empty one: a cost over `amount` never fits.
        """
        now = self._clock()
        arrivals = self._window(caller, now)
        return arrivals[0] + self.seconds - now if arrivals else self.seconds

    def _sweep(self, now: float) -> None:
        # Callers with nothing in the window; at most once a window, so the cost per
        # request stays constant however many callers came and went.
        start = now - self.seconds
        idle = [c for c, a in self._arrivals.items() if not a or a[-1] <= start]
        for caller in idle:
            del self._arrivals[caller]
        self._next_sweep = now + self.seconds


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
        self.limits: list[MovingWindow] = [
            MovingWindow(item.amount, item.get_expiry())
            for item in (
                parse_many(settings.rate_limit) if settings.rate_limit.strip() else []
            )
        ]

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
        exceeded = [window for window in self.limits if not window.fits(caller, cost)]
        if not exceeded:
            for window in self.limits:
                window.count(caller, cost)
            return None
        wait = max(window.seconds_until_reset(caller) for window in exceeded)
        return max(1, math.ceil(wait))
