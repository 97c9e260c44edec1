"""Demo traffic through the public HTTP API only (what a customer app would send)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final
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


def post_demo_orders(
    intake_url: str,
    customer_token: Callable[[str], str],
    *,
    count: int,
    seed: int = 7,
    on_progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Create `count` orders as different customers; returns their order ids."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    order_ids = []
    with httpx.Client(base_url=intake_url, timeout=10.0) as client:
        for n in range(count):
            customer = f"demo-customer-{rng.randrange(1, 50)}"
            response = client.post(
                "/v1/orders",
                headers={"Authorization": f"Bearer {customer_token(customer)}"},
                json={
                    "id": str(uuid4()),
                    "category": rng.choice(CATEGORIES),
                    "region": rng.choice(REGIONS),
                    "urgency": rng.choice(("normal", "normal", "urgent", "emergency")),
                    "description": rng.choice(DESCRIPTIONS),
                    "warranty": rng.random() < 0.3,
                    "channel": rng.choice(("app", "web", "phone", "mini_program")),
                    "contact": {
                        "name": f"Demo Customer {n}",
                        "phone": f"+86 138{rng.randrange(10**7, 10**8)}",
                        "address": "1 Demo Road",
                    },
                },
            )
            response.raise_for_status()
            order_ids.append(response.json()["order_id"])
            if on_progress is not None:
                on_progress(n + 1)
    return order_ids
