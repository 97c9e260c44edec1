"""Realistic demo traffic through the public HTTP API only (as the apps would send it).

Technicians are registered by a dispatcher; customers create orders; dispatch assigns
them automatically; technicians accept (or decline), arrive, diagnose and price;
customers approve (or reject, then a revised quote follows); technicians complete
(sometimes a follow-up visit first); customers rate, complain and reopen now and
then. Times are the server's now: the demo plays in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

import httpx

REGIONS: Final = (
    "shanghai-pudong",
    "shanghai-minhang",
    "beijing-haidian",
    "shenzhen-nanshan",
)
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


@dataclass
class Endpoints:
    intake: str
    dispatch: str


class Simulator:
    """Drives orders through their lifecycle with the given randomness."""

    def __init__(self, endpoints: Endpoints, tokens: Tokens, *, seed: int = 7) -> None:
        self._endpoints = endpoints
        self._tokens = tokens
        self._rng = random.Random(seed)  # noqa: S311 - demo data, not security
        self.completed = 0

    def _auth(self, role: str, subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens(role, subject)}"}

    async def register_technicians(self, client: httpx.AsyncClient) -> None:
        headers = self._auth("dispatcher", "demo-dispatcher")
        for n, (technician_id, name) in enumerate(TECHNICIANS):
            response = await client.post(
                f"{self._endpoints.dispatch}/v1/technicians",
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

    async def _post(
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
            headers=self._auth(role, subject),
            json={"id": str(uuid4()), "type": type_, "data": data},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def _order(
        self, client: httpx.AsyncClient, order_id: str, customer: str
    ) -> Any:
        response = await client.get(
            f"{self._endpoints.intake}/v1/orders/{order_id}",
            headers=self._auth("customer", customer),
        )
        response.raise_for_status()
        return response.json()

    async def _wait_assigned(
        self,
        client: httpx.AsyncClient,
        order_id: str,
        customer: str,
        declined: set[str],
    ) -> str | None:
        for _ in range(100):
            order = await self._order(client, order_id, customer)
            technician = order["technician_id"]
            if order["status"] == "assigned" and technician not in declined:
                return str(technician)
            await asyncio.sleep(0.05)
        return None

    async def run_order(self, client: httpx.AsyncClient) -> None:
        """One order from creation to (usually) a rating."""
        rng = self._rng
        customer = f"demo-customer-{rng.randrange(1, 200)}"
        created = await client.post(
            f"{self._endpoints.intake}/v1/orders",
            headers=self._auth("customer", customer),
            json={
                "id": str(uuid4()),
                "category": rng.choice(CATEGORIES),
                "region": rng.choice(REGIONS),
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
        order_id = created.json()["order_id"]
        intake = f"{self._endpoints.intake}/v1/orders/{order_id}/events"
        dispatch = f"{self._endpoints.dispatch}/v1/orders/{order_id}/events"
        if rng.random() < 0.05:
            await self._post(
                client,
                intake,
                "customer",
                customer,
                "cancelled",
                {"reason": "fixed it myself"},
            )
            return
        declined: set[str] = set()
        technician = await self._wait_assigned(client, order_id, customer, declined)
        if technician is None:
            return
        if rng.random() < 0.15:
            await self._post(
                client,
                dispatch,
                "technician",
                technician,
                "declined",
                {"technician_id": technician, "reason": "fully booked today"},
            )
            declined.add(technician)
            technician = await self._wait_assigned(client, order_id, customer, declined)
            if technician is None:
                return
        await self._post(
            client,
            dispatch,
            "technician",
            technician,
            "accepted",
            {"technician_id": technician, "eta_minutes": rng.randrange(20, 120)},
        )
        await self._post(
            client,
            dispatch,
            "technician",
            technician,
            "arrived",
            {"technician_id": technician},
        )
        await self._post(
            client,
            dispatch,
            "technician",
            technician,
            "diagnosed",
            {
                "fault_code": rng.choice(("E4", "F1", "C7")),
                "summary": "部件老化",
                "parts_needed": ["valve"],
                "remote": False,
            },
        )
        items: list[dict[str, Any]] = [
            {
                "kind": "callout",
                "description": "上门费",
                "quantity": 1,
                "unit_price": 3000,
            },
            {
                "kind": "labor",
                "description": "维修",
                "quantity": 1,
                "unit_price": rng.randrange(50, 300) * 100,
            },
        ]
        quote = await self._post(
            client,
            dispatch,
            "technician",
            technician,
            "priced",
            {
                "currency": "CNY",
                "items": items,
                "total": sum(i["unit_price"] for i in items),
            },
        )
        if rng.random() < 0.15:
            await self._post(
                client,
                intake,
                "customer",
                customer,
                "quote_rejected",
                {"quote_event_id": quote["event"]["id"]},
            )
            items[1]["unit_price"] = int(items[1]["unit_price"] * 0.8)
            quote = await self._post(
                client,
                dispatch,
                "technician",
                technician,
                "priced",
                {
                    "currency": "CNY",
                    "items": items,
                    "total": sum(i["unit_price"] for i in items),
                },
            )
        await self._post(
            client,
            intake,
            "customer",
            customer,
            "quote_approved",
            {"quote_event_id": quote["event"]["id"]},
        )
        total = sum(i["unit_price"] for i in items)
        done = {
            "currency": "CNY",
            "final_items": items,
            "final_total": total,
            "parts_used": ["valve"],
            "notes": "",
            "evidence": [],
        }
        if rng.random() < 0.15:
            await self._post(
                client,
                dispatch,
                "technician",
                technician,
                "completed",
                {**done, "outcome": "follow_up_required"},
            )
            await self._post(
                client,
                dispatch,
                "technician",
                technician,
                "arrived",
                {"technician_id": technician},
            )
        outcome = "fixed" if rng.random() < 0.9 else "not_fixed"
        await self._post(
            client,
            dispatch,
            "technician",
            technician,
            "completed",
            {**done, "outcome": outcome},
        )
        self.completed += 1
        score = rng.choices((5, 4, 3, 2, 1), weights=(50, 30, 10, 6, 4))[0]
        stars = {
            name: max(1, min(5, score + rng.choice((-1, 0, 0, 1))))
            for name in (
                "attitude",
                "professionalism",
                "communication",
                "punctuality",
                "price_fairness",
            )
        }
        await self._post(
            client,
            intake,
            "customer",
            customer,
            "rated",
            {
                "score": score,
                "nps": min(10, score * 2 + rng.randrange(0, 2)),
                "dimensions": stars,
            },
        )
        if score <= 2:
            complaint_id = f"c-{uuid4().hex[:8]}"
            await self._post(
                client,
                intake,
                "customer",
                customer,
                "complaint_filed",
                {
                    "complaint_id": complaint_id,
                    "category": "quality",
                    "text": "问题没有解决",
                },
            )
            await self._post(
                client,
                dispatch,
                "dispatcher",
                "demo-dispatcher",
                "complaint_resolved",
                {"complaint_id": complaint_id, "resolution": "回访并免费复修"},
            )
        if outcome == "not_fixed" or rng.random() < 0.03:
            await self._post(
                client,
                intake,
                "customer",
                customer,
                "reopened",
                {"reason": "the fault came back"},
            )


async def simulate(
    endpoints: Endpoints,
    tokens: Tokens,
    *,
    orders: int,
    rate: float,
    seed: int = 7,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Run `orders` orders, starting `rate` per second; returns how many finished."""
    simulator = Simulator(endpoints, tokens, seed=seed)
    finished = 0
    async with httpx.AsyncClient(timeout=15.0) as client:
        await simulator.register_technicians(client)

        async def one() -> None:
            nonlocal finished
            # A demo order that meets a refusal or an outage just stops there.
            with contextlib.suppress(httpx.HTTPError):
                await simulator.run_order(client)
            finished += 1
            if on_progress is not None:
                on_progress(finished)

        tasks = []
        for _ in range(orders):
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*tasks)
    return simulator.completed
