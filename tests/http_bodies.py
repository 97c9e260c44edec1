"""Request bodies as a customer app would send them (unique ids per call)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4


def new_order_body(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /v1/orders` body with a fresh idempotency key."""
    body: dict[str, Any] = {
        "id": str(uuid4()),
        "category": "air_conditioner",
        "region": "shanghai-pudong",
        "urgency": "urgent",
        "description": "空调不制冷 - the air conditioner blows warm air",
        "warranty": False,
        "channel": "app",
        "contact": {
            "name": "王小明",
            "phone": "+86 138 0000 0000",
            "address": "上海市浦东新区世纪大道 100 号",
        },
    }
    body.update(overrides)
    return body
