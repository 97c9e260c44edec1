"""Post the demo history (`services.demo_history`) to a running stack, over HTTP.

Every step is a request the apps send (`POST /v1/orders`, `/v1/orders/{id}/events`,
dispatch's `/assign`), with the step's past `time`; each order's steps go in order,
many orders at once. A refusal stops that order only and is reported.

Backdated events need two things only the demo stack gets
(`DEMO_STACK_ENVIRONMENT`, set by `servicetrail up --demo`):

- MAX_EVENT_AGE of 32 days: the default (72 h, the offline-sync grace) would refuse
  the history's first four weeks. A stack started without `--demo` keeps it.
- dispatch without auto-assignment while the history is posted: it would assign each
  new order *now*, and no backdated event of the order could follow that. `seed`
  restarts dispatch with it once the history is in; its consumer then reads the
  history (nothing there waits but the orders meant to) and its sweep expires the
  assignments nobody answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from services.demo_history import (
    DEFAULT_ORDERS,
    DEMO_MAX_EVENT_AGE,
    DISPATCHER,
    EXCELLENT,
    HISTORY_DAYS,
    POOR,
    SILENT_ORDERS_MINUTES_AGO,
    SILENT_TECHNICIAN,
    SLOW_AT_PEAK_REGION,
    TECHNICIANS,
    UNCOVERED_ORDERS_HOURS_AGO,
    History,
    PlannedOrder,
    Route,
    Step,
    plan_history,
)
from services.simulator import UNCOVERED_REGION, Endpoints, Tokens
from services.stack import Stack

# Only while the history is posted (see the module's docstring).
SEEDING_ONLY: Final = {"RUN_ASSIGNMENT_CONSUMER": "false"}
DEMO_STACK_ENVIRONMENT: Final = {"MAX_EVENT_AGE": DEMO_MAX_EVENT_AGE, **SEEDING_ONLY}
# Orders posted at once: enough to keep two cores busy, few enough for the pools.
CONCURRENT_ORDERS: Final = 16
# How long to wait for metrics to count the history and raise its alerts.
SHOWN_TIMEOUT_SECONDS: Final = 60.0
RETRIES: Final = 3
TECHNICIAN: Final = "technician"


@dataclass
class Posted:
    """What posting the history did."""

    orders: int = 0  # posted to their last step
    created: int = 0  # orders whose `created` was stored
    events: int = 0
    seconds: float = 0.0
    already_there: bool = False
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Seeded:
    """What `seed` did, for `up` to print."""

    history: History
    posted: Posted
    shown: Shown

    def story(self) -> list[str]:
        """What the dashboard will show, in a few lines."""
        posted = self.posted
        if posted.already_there:
            return [
                "Demo history: posted to this stack before (its data stays in "
                "SERVICETRAIL_HOME), so not posted again."
            ]
        best, worst = (
            ", ".join(t.technician_id for t in TECHNICIANS if t.profile is profile)
            for profile in (EXCELLENT, POOR)
        )
        lines = [
            f"Demo history: {posted.orders} orders over the past {HISTORY_DAYS} days "
            f"({posted.events} events, posted in {posted.seconds:.1f} s).",
            f"  {best} stand out; {worst} accept and arrive late, redo more work "
            "and charge above their quotes.",
            f"  {SLOW_AT_PEAK_REGION} answers slowly in the evenings and at "
            f"weekends; nobody covers {UNCOVERED_REGION}, where "
            f"{len(UNCOVERED_ORDERS_HOURS_AGO)} orders wait.",
            f"  {len(SILENT_ORDERS_MINUTES_AGO)} emergency orders wait on "
            f"{SILENT_TECHNICIAN.technician_id}, who does not answer: dispatch "
            "expires each assignment and offers the order to someone else.",
            f"  Open alerts: {self.shown.open_alerts}"
            + (
                "."
                if self.shown.counted
                else " (metrics is still counting the history)."
            ),
        ]
        lines += [f"  an order stopped: {failure}" for failure in posted.failures[:5]]
        return lines


class _Refused(Exception):
    def __init__(self, step: Step, detail: str) -> None:
        super().__init__(f"{step.type}: {detail}")


def _runs(steps: Sequence[Step]) -> list[list[Step]]:
    """The steps in runs: consecutive technician steps of one technician together,
    every other step alone."""
    runs: list[list[Step]] = []
    for step in steps:
        previous = runs[-1][-1] if runs else None
        if (
            previous is not None
            and step.role == previous.role == TECHNICIAN
            and step.subject == previous.subject
        ):
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


class _Poster:
    def __init__(
        self, client: httpx.AsyncClient, endpoints: Endpoints, tokens: Tokens
    ) -> None:
        self._client = client
        self._endpoints = endpoints
        self._tokens = functools.cache(tokens)
        self.posted = Posted()

    def headers(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens(role, subject)}"}

    async def send(self, url: str, body: dict[str, Any], step: Step) -> httpx.Response:
        """One request as `step`'s caller; a lost connection or a 503 is retried
        with the same body (the event ids make it a retry, never a copy)."""
        headers = self.headers(step.role, step.subject)
        for attempt in range(RETRIES):
            try:
                response = await self._client.post(url, json=body, headers=headers)
            except httpx.TransportError:
                if attempt == RETRIES - 1:
                    raise
            else:
                if response.status_code != 503 or attempt == RETRIES - 1:
                    return response
            await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def url(self, step: Step, order_id: str) -> str:
        intake, dispatch = self._endpoints.intake, self._endpoints.dispatch
        match step.route:
            case Route.CREATE:
                return f"{intake}/v1/orders"
            case Route.ASSIGN:
                return f"{dispatch}/v1/orders/{order_id}/assign"
            case Route.CUSTOMER:
                return f"{intake}/v1/orders/{order_id}/events"
            case Route.FIELD:
                return f"{dispatch}/v1/orders/{order_id}/events"

    async def post_run(self, run: list[Step], order_id: str) -> str:
        """Post a run of one caller's steps of one order; returns the order's id.

        A technician's run goes as one offline batch (as their app syncs), which
        costs one request instead of several.

        Raises:
            _Refused: a step was refused; the order goes no further.
        """
        step = run[0]
        if step.role != TECHNICIAN:
            response = await self.send(self.url(step, order_id), step.body, step)
            if response.status_code != 201:
                raise _Refused(step, f"{response.status_code} {response.text[:300]}")
            return str(response.json()["order_id"])
        items = [s.body | {"order_id": order_id} for s in run]
        response = await self.send(
            f"{self._endpoints.dispatch}/v1/events:batch", {"events": items}, step
        )
        if response.status_code != 200:
            raise _Refused(step, f"{response.status_code} {response.text[:300]}")
        for item, result in zip(run, response.json()["results"], strict=True):
            if result["status"] == "rejected":
                raise _Refused(item, str(result["problem"])[:300])
        return order_id

    async def post_order(self, order: PlannedOrder) -> None:
        order_id = ""
        for run in _runs(order.steps):
            try:
                order_id = await self.post_run(run, order_id)
            except _Refused as refused:
                self.posted.failures.append(f"order {order.number} {refused}")
                return
            except httpx.HTTPError as err:
                self.posted.failures.append(f"order {order.number}: {err!r}")
                return
            if run[0].route is Route.CREATE:
                self.posted.created += 1
            self.posted.events += len(run)
        self.posted.orders += 1

    async def history_is_there(self, history: History) -> bool:
        """Whether a history was posted before (its technicians are registered)."""
        response = await self._client.get(
            f"{self._endpoints.dispatch}/v1/technicians",
            headers=self.headers("dispatcher", DISPATCHER),
        )
        response.raise_for_status()
        known = {t["technician_id"] for t in response.json()["items"]}
        return any(t.technician_id in known for t in history.technicians)

    async def register(self, history: History) -> None:
        for technician in history.technicians:
            response = await self._client.post(
                f"{self._endpoints.dispatch}/v1/technicians",
                json=technician.registration(),
                headers=self.headers("dispatcher", DISPATCHER),
            )
            response.raise_for_status()


async def post_history(
    history: History,
    endpoints: Endpoints,
    tokens: Tokens,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Posted:
    """Register the technicians and post every order's steps, unless a history is
    there already (a restarted demo stack keeps its data)."""
    started = time.monotonic()
    limits = httpx.Limits(max_connections=2 * CONCURRENT_ORDERS)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        poster = _Poster(client, endpoints, tokens)
        if await poster.history_is_there(history):
            return Posted(already_there=True)
        await poster.register(history)
        slots = asyncio.Semaphore(CONCURRENT_ORDERS)
        done = 0

        async def one(order: PlannedOrder) -> None:
            nonlocal done
            async with slots:
                await poster.post_order(order)
            done += 1
            if on_progress is not None:
                on_progress(done)

        await asyncio.gather(*(one(order) for order in history.orders))
    poster.posted.seconds = time.monotonic() - started
    return poster.posted


@dataclass
class Shown:
    """How far metrics shows the history."""

    counted: bool = False  # every order posted is counted
    open_alerts: int = 0


async def wait_until_shown(metrics: str, tokens: Tokens, *, orders: int) -> Shown:
    """Wait (up to `SHOWN_TIMEOUT_SECONDS`) until metrics counted `orders` orders
    and raised an alert."""
    shown = Shown()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SHOWN_TIMEOUT_SECONDS):
            await _watch(metrics, tokens, orders=orders, shown=shown)
    return shown


async def _watch(metrics: str, tokens: Tokens, *, orders: int, shown: Shown) -> None:
    headers = {"Authorization": f"Bearer {tokens('dispatcher', DISPATCHER)}"}
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not (shown.counted and shown.open_alerts):
            try:
                shown.counted = await _counted(client, metrics, headers) >= orders
                shown.open_alerts = await _open_alerts(client, metrics, headers)
            except httpx.HTTPError:
                pass  # metrics restarting or busy: look again
            await asyncio.sleep(1.0)


async def _counted(client: httpx.AsyncClient, metrics: str, headers: Any) -> int:
    response = await client.get(
        f"{metrics}/v1/indicators", params={"window": "all"}, headers=headers
    )
    response.raise_for_status()
    return int(response.json()["indicators"]["orders_created"]["value"] or 0)


async def _open_alerts(client: httpx.AsyncClient, metrics: str, headers: Any) -> int:
    response = await client.get(
        f"{metrics}/v1/alerts", params={"state": "open", "limit": 1000}, headers=headers
    )
    response.raise_for_status()
    return len(response.json()["items"])


def resume_auto_assignment(stack: Stack) -> None:
    """Restart dispatch without the seeding-only settings, and wait for it."""
    for name in SEEDING_ONLY:
        stack.extra_env.pop(name, None)
    stack.stop_service("dispatch")
    stack.start_service("dispatch")
    stack.wait_until_healthy()


def seed(
    stack: Stack,
    tokens: Tokens,
    *,
    orders: int | None = None,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Seeded:
    """Post the history to a stack started with `DEMO_STACK_ENVIRONMENT`, turn
    auto-assignment back on, and wait until the dashboard shows it."""
    history = plan_history(now or datetime.now(UTC), orders=orders or DEFAULT_ORDERS)
    endpoints = Endpoints(
        intake=stack.services["intake"].url, dispatch=stack.services["dispatch"].url
    )
    try:
        posted = asyncio.run(
            post_history(history, endpoints, tokens, on_progress=on_progress)
        )
    finally:
        resume_auto_assignment(stack)
    shown = asyncio.run(
        wait_until_shown(stack.services["metrics"].url, tokens, orders=posted.created)
    )
    return Seeded(history, posted, shown)
