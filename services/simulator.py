"""Realistic demo traffic through the public HTTP API only (as the apps would send it).

Technicians are registered by a dispatcher; customers create orders; dispatch assigns
them automatically; technicians accept (or decline), arrive, diagnose and price;
customers approve (or reject, then a revised quote follows); technicians complete
(sometimes a follow-up visit first, which charges its part of the approved quote);
customers rate, complain and reopen now and then.

Some orders go wrong the way they do in the field: a technician never answers (dispatch
expires the assignment when the urgency's accept target passes and offers the order
to the next technician), an order comes from a district nobody covers (dispatch
raises `unassignable`; it stays unaccepted past its target), and a technician
promises to be there in a minute and turns up late (a missed ETA).

Times are the server's now: the demo plays in real time, so the expiries and the late
arrivals show up minutes after the rest (the stack keeps running meanwhile).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import uuid4

import httpx

REGIONS: Final = (
    "shanghai-pudong",
    "shanghai-minhang",
    "beijing-haidian",
    "shenzhen-nanshan",
)
# Orders come from here too, but no technician covers it.
UNCOVERED_REGION: Final = "chongqing-yuzhong"
# A late technician promises to arrive in this many minutes...
LATE_ETA_MINUTES: Final = 1
# ...and arrives after this long: past indicators.md's 15-minute tolerance.
LATE_ARRIVAL_S: Final = 17 * 60
CATEGORIES: Final = (
    "air_conditioner",
    "washing_machine",
    "refrigerator",
    "water_heater",
)
DESCRIPTIONS: Final = (
    "空调不制冷，外机有异响",  # noqa: RUF001 - Chinese punctuation is intended
    "Washing machine will not drain",
    "冰箱冷藏室温度过高",
    "Water heater shows error E4",
)
TECHNICIANS: Final = (
    ("tech-zhang", "张师傅"),
    ("tech-li", "李师傅"),
    ("tech-wang", "王师傅"),
    ("tech-chen", "陈师傅"),
    ("tech-zhao", "赵师傅"),
    ("tech-liu", "刘师傅"),
)

Tokens = Callable[[str, str], str]  # (role, subject) -> bearer token
RATING_DIMENSIONS: Final = (
    "attitude",
    "professionalism",
    "communication",
    "punctuality",
    "price_fairness",
)


def price_item(kind: str, description: str, unit_price: int) -> dict[str, Any]:
    """One line of a quote or a bill: a single unit at `unit_price` fen."""
    return {
        "kind": kind,
        "description": description,
        "quantity": 1,
        "unit_price": unit_price,
    }


def diagnosed_data(fault_code: str, summary: str = "部件老化") -> dict[str, Any]:
    """A `diagnosed` payload of an on-site visit."""
    return {
        "fault_code": fault_code,
        "summary": summary,
        "parts_needed": ["valve"],
        "remote": False,
    }


def items_total(items: list[dict[str, Any]]) -> int:
    """What a list of price items comes to, in fen."""
    return sum(int(item["quantity"]) * int(item["unit_price"]) for item in items)


def priced_data(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A `priced` payload: the items and their total."""
    return {"currency": "CNY", "items": items, "total": items_total(items)}


def completed_data(outcome: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A `completed` payload charging `items`."""
    return {
        "outcome": outcome,
        "currency": "CNY",
        "final_items": items,
        "final_total": items_total(items),
        "parts_used": ["valve"],
        "notes": "",
        "evidence": [],
    }


def rated_data(
    rng: random.Random, score: int, *, attitude_shift: int = 0
) -> dict[str, Any]:
    """A `rated` payload: each dimension near the overall score (the attitude
    shifted by `attitude_shift`), and the NPS that usually goes with it."""
    stars = {
        name: max(1, min(5, score + rng.choice((-1, 0, 0, 1))))
        for name in RATING_DIMENSIONS
    }
    stars["attitude"] = max(1, min(5, stars["attitude"] + attitude_shift))
    return {
        "score": score,
        "nps": min(10, score * 2 + rng.randrange(0, 2)),
        "dimensions": stars,
    }


@dataclass
class Endpoints:
    intake: str
    dispatch: str


class Simulator:
    """Drives orders through their lifecycle with the given randomness."""

    def __init__(
        self,
        endpoints: Endpoints,
        tokens: Tokens,
        *,
        seed: int = 7,
        late_arrival_s: float = LATE_ARRIVAL_S,
    ) -> None:
        self.endpoints = endpoints
        self._tokens = tokens
        self._rng = random.Random(seed)  # noqa: S311 - demo data, not security
        self._late_arrival_s = late_arrival_s
        self.completed = 0
        # What went wrong on purpose, for the summary.
        self.silent = 0
        self.uncovered = 0
        self.late = 0
        self.follow_ups = 0
        # Orders stopped by a refusal or an outage: a demo that works has none.
        self.failures: list[str] = []
        self.lingering: list[asyncio.Task[None]] = []

    def summary(self, orders: int) -> Summary:
        return Summary(
            orders=orders,
            completed=self.completed,
            follow_ups=self.follow_ups,
            silent=self.silent,
            uncovered=self.uncovered,
            late=self.late,
            failures=tuple(self.failures),
            late_arrival_s=self._late_arrival_s,
        )

    def auth(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens(role, subject)}"}

    async def register_technicians(self, client: httpx.AsyncClient) -> None:
        headers = self.auth("dispatcher", "demo-dispatcher")
        for n, (technician_id, name) in enumerate(TECHNICIANS):
            response = await client.post(
                f"{self.endpoints.dispatch}/v1/technicians",
                headers=headers,
                json={
                    "technician_id": technician_id,
                    "name": name,
                    "skills": list(CATEGORIES),
                    "regions": [
                        REGIONS[n % len(REGIONS)],
                        REGIONS[(n + 1) % len(REGIONS)],
                    ],
                    "certifications": ["refrigerant-handling"],
                },
            )
            response.raise_for_status()

    async def post(
        self,
        client: httpx.AsyncClient,
        url: str,
        role: str,
        subject: str,
        type_: str,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        response = await client.post(
            url,
            headers=self.auth(role, subject),
            json={"id": str(uuid4()), "type": type_, "data": data},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def run_order(self, client: httpx.AsyncClient) -> None:
        """One order from creation to (usually) a rating.

        A late technician's visit is left running in `lingering`: it arrives long
        after the rest of the demo has finished.
        """
        rng = self._rng
        customer = f"demo-customer-{rng.randrange(1, 200)}"
        uncovered = rng.random() < 0.03
        created = await client.post(
            f"{self.endpoints.intake}/v1/orders",
            headers=self.auth("customer", customer),
            json={
                "id": str(uuid4()),
                "category": rng.choice(CATEGORIES),
                "region": UNCOVERED_REGION if uncovered else rng.choice(REGIONS),
                "urgency": rng.choice(("normal", "normal", "urgent", "emergency")),
                "description": rng.choice(DESCRIPTIONS),
                "warranty": rng.random() < 0.2,
                "channel": rng.choice(("app", "web", "phone", "mini_program")),
                "contact": {
                    "name": "Demo Customer",
                    "phone": f"+86 138{rng.randrange(10**7, 10**8)}",
                    "address": "1 Demo Road",
                },
            },
        )
        created.raise_for_status()
        order = _Order(self, client, created.json()["order_id"], customer)
        if rng.random() < 0.05:
            await order.customer_posts("cancelled", {"reason": "fixed it myself"})
            return
        if uncovered:
            self.uncovered += 1  # dispatch finds nobody: it stays unaccepted
            return
        technician = await order.wait_assigned()
        if technician is None:
            return
        if rng.random() < 0.15:
            await order.technician_posts(
                "declined", {"technician_id": technician, "reason": "fully booked"}
            )
            order.declined.add(technician)
            technician = await order.wait_assigned()
            if technician is None:
                return
        if rng.random() < 0.05:
            # Never answers: dispatch expires the assignment at the accept target.
            self.silent += 1
            return
        late = rng.random() < 0.08
        eta_minutes = LATE_ETA_MINUTES if late else rng.randrange(20, 120)
        await order.technician_posts(
            "accepted", {"technician_id": technician, "eta_minutes": eta_minutes}
        )
        if late:
            self.late += 1
            self.lingering.append(
                asyncio.create_task(self._later(self._late_arrival_s, order))
            )
            return
        await self._visit(order)

    async def _later(self, delay_s: float, order: _Order) -> None:
        await asyncio.sleep(delay_s)
        await self.survive(self._visit(order))

    async def survive(self, call: Awaitable[None]) -> None:
        """Run one order's calls; a refusal or an outage stops that order only."""
        try:
            await call
        except httpx.HTTPStatusError as err:
            self.failures.append(f"{err.response.status_code} {err.response.text}")
        except httpx.HTTPError as err:
            self.failures.append(repr(err))

    async def _visit(self, order: _Order) -> None:
        """From the arrival on: diagnosis, quote, completion, rating, aftermath."""
        rng = self._rng
        technician = order.technician
        await order.technician_posts("arrived", {"technician_id": technician})
        await order.technician_posts(
            "diagnosed",
            diagnosed_data(rng.choice(("E4", "F1", "C7"))),
        )
        callout = price_item("callout", "上门费", 3000)
        labor = price_item("labor", "维修", rng.randrange(50, 300) * 100)
        quote = await order.price([callout, labor])
        if rng.random() < 0.15:
            await order.customer_posts(
                "quote_rejected", {"quote_event_id": quote["event"]["id"]}
            )
            labor["unit_price"] = int(labor["unit_price"] * 0.8)
            quote = await order.price([callout, labor])
        await order.customer_posts(
            "quote_approved", {"quote_event_id": quote["event"]["id"]}
        )
        if rng.random() < 0.15:
            # The first visit charges the callout; the follow-up visit the rest,
            # under the quote the customer already approved.
            self.follow_ups += 1
            await order.complete("follow_up_required", [callout])
            await order.technician_posts("arrived", {"technician_id": technician})
            charged = [labor]
        else:
            charged = [callout, labor]
        outcome = "fixed" if rng.random() < 0.9 else "not_fixed"
        await order.complete(outcome, charged)
        self.completed += 1
        await self._aftermath(order, reopen=outcome == "not_fixed")

    async def _aftermath(self, order: _Order, *, reopen: bool) -> None:
        """The customer's rating, a complaint now and then, and rework after a reopen."""
        rng = self._rng
        score = rng.choices((5, 4, 3, 2, 1), weights=(50, 30, 10, 6, 4))[0]
        await order.customer_posts("rated", rated_data(rng, score))
        if score <= 2:
            complaint_id = f"c-{uuid4().hex[:8]}"
            await order.customer_posts(
                "complaint_filed",
                {
                    "complaint_id": complaint_id,
                    "category": "quality",
                    "text": "问题没有解决",
                },
            )
            await order.dispatcher_posts(
                "complaint_resolved",
                {"complaint_id": complaint_id, "resolution": "回访并免费复修"},
            )
        if not (reopen or rng.random() < 0.03):
            return
        await order.customer_posts("reopened", {"reason": "the fault came back"})
        # Dispatch assigns the rework like a new order, to the same technician
        # when they have room; the rework is warranty work, charged nothing.
        order.declined.clear()
        technician = await order.wait_assigned()
        if technician is None:
            return
        await order.technician_posts(
            "accepted", {"technician_id": technician, "eta_minutes": 30}
        )
        await order.technician_posts("arrived", {"technician_id": technician})
        await order.technician_posts(
            "diagnosed",
            diagnosed_data("R1", "返修更换同一部件"),
        )
        await order.complete("fixed", [])


@dataclass
class _Order:
    """One demo order and the calls its participants make on it."""

    simulator: Simulator
    client: httpx.AsyncClient
    order_id: str
    customer: str
    technician: str = ""
    declined: set[str] = field(default_factory=set)

    async def _posts(
        self, service: str, role: str, subject: str, type_: str, data: dict[str, Any]
    ) -> Any:
        url = f"{service}/v1/orders/{self.order_id}/events"
        return await self.simulator.post(self.client, url, role, subject, type_, data)

    async def customer_posts(self, type_: str, data: dict[str, Any]) -> Any:
        intake = self.simulator.endpoints.intake
        return await self._posts(intake, "customer", self.customer, type_, data)

    async def technician_posts(self, type_: str, data: dict[str, Any]) -> Any:
        dispatch = self.simulator.endpoints.dispatch
        return await self._posts(dispatch, "technician", self.technician, type_, data)

    async def dispatcher_posts(self, type_: str, data: dict[str, Any]) -> Any:
        dispatch = self.simulator.endpoints.dispatch
        return await self._posts(dispatch, "dispatcher", "demo-dispatcher", type_, data)

    async def price(self, items: list[dict[str, Any]]) -> Any:
        return await self.technician_posts("priced", priced_data(items))

    async def complete(self, outcome: str, items: list[dict[str, Any]]) -> Any:
        return await self.technician_posts("completed", completed_data(outcome, items))

    async def wait_assigned(self) -> str | None:
        """The technician dispatch assigned (not one who declined), or None."""
        intake = self.simulator.endpoints.intake
        headers = self.simulator.auth("customer", self.customer)
        for _ in range(100):
            response = await self.client.get(
                f"{intake}/v1/orders/{self.order_id}", headers=headers
            )
            response.raise_for_status()
            order = response.json()
            technician = order["technician_id"]
            if order["status"] == "assigned" and technician not in self.declined:
                self.technician = str(technician)
                return self.technician
            await asyncio.sleep(0.05)
        return None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a simulation did, for its report."""

    orders: int
    completed: int
    follow_ups: int
    silent: int
    uncovered: int
    late: int
    failures: tuple[str, ...]
    late_arrival_s: float


async def simulate(
    endpoints: Endpoints,
    tokens: Tokens,
    *,
    orders: int,
    rate: float,
    seed: int = 7,
    on_progress: Callable[[int], None] | None = None,
    on_posted: Callable[[Summary], None] | None = None,
    late_arrival_s: float = LATE_ARRIVAL_S,
) -> Summary:
    """Run `orders` orders, starting `rate` per second.

    `on_posted` is called once every order got as far as it goes now; the late
    technicians' visits are awaited after it, so the call returns only when the last
    of them arrived (run it where it may outlive the caller's patience).
    """
    simulator = Simulator(endpoints, tokens, seed=seed, late_arrival_s=late_arrival_s)
    finished = 0
    async with httpx.AsyncClient(timeout=15.0) as client:
        await simulator.register_technicians(client)

        async def one() -> None:
            nonlocal finished
            await simulator.survive(simulator.run_order(client))
            finished += 1
            if on_progress is not None:
                on_progress(finished)

        tasks = []
        for _ in range(orders):
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*tasks)
        if on_posted is not None:
            on_posted(simulator.summary(orders))
        await asyncio.gather(*simulator.lingering)
    return simulator.summary(orders)
