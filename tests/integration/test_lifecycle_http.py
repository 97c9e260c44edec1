"""An order's whole happy path over HTTP: customer app, auto-assignment, technician app."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import httpx
import pytest

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.integration


async def order_of(
    intake: httpx.AsyncClient, order_id: str, headers: dict[str, str]
) -> Any:
    response = await intake.get(f"/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_order_goes_from_request_to_rating_with_auto_assignment(
    settings: CommonSettings,
) -> None:
    auth = bearer(settings)
    customer = auth(Role.CUSTOMER, "alice")
    dispatcher = auth(Role.DISPATCHER, "disp-1")
    technician = auth(Role.TECHNICIAN, "tech-zhang")
    async with (
        running(create_intake(service_settings(settings, IntakeSettings))) as intake,
        running(
            create_dispatch(service_settings(settings, DispatchSettings))
        ) as dispatch,
    ):
        registered = await dispatch.post(
            "/v1/technicians",
            headers=dispatcher,
            json={
                "technician_id": "tech-zhang",
                "name": "张师傅",
                "skills": ["air_conditioner"],
                "regions": ["shanghai-pudong"],
                "certifications": ["refrigerant-handling"],
            },
        )
        assert registered.status_code == 201, registered.text
        created = await intake.post(
            "/v1/orders", json=new_order_body(), headers=customer
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["order_id"]

        async with asyncio.timeout(20):
            while (await order_of(intake, order_id, customer))["status"] != "assigned":
                await asyncio.sleep(0.05)
        order = await order_of(intake, order_id, customer)
        assert order["technician_id"] == "tech-zhang"

        async def technician_posts(type_: str, data: dict[str, Any]) -> Any:
            response = await dispatch.post(
                f"/v1/orders/{order_id}/events",
                headers=technician,
                json={"id": str(uuid4()), "type": type_, "data": data},
            )
            assert response.status_code == 201, response.text
            return response.json()

        async def customer_posts(type_: str, data: dict[str, Any]) -> Any:
            response = await intake.post(
                f"/v1/orders/{order_id}/events",
                headers=customer,
                json={"id": str(uuid4()), "type": type_, "data": data},
            )
            assert response.status_code == 201, response.text
            return response.json()

        await technician_posts(
            "accepted", {"technician_id": "tech-zhang", "eta_minutes": 30}
        )
        await technician_posts("arrived", {"technician_id": "tech-zhang"})
        await technician_posts(
            "diagnosed",
            {
                "fault_code": "E4",
                "summary": "冷媒不足",
                "parts_needed": [],
                "remote": False,
            },
        )
        items = [
            {
                "kind": "labor",
                "description": "加氟",
                "quantity": 1,
                "unit_price": 15000,
            },
            {
                "kind": "part",
                "description": "R32 冷媒",
                "quantity": 2,
                "unit_price": 2500,
            },
        ]
        quote = await technician_posts(
            "servicetrail.order.priced",
            {"currency": "CNY", "items": items, "total": 20000},
        )
        await customer_posts("quote_approved", {"quote_event_id": quote["event"]["id"]})
        await technician_posts(
            "completed",
            {
                "outcome": "fixed",
                "currency": "CNY",
                "final_items": items,
                "final_total": 20000,
                "parts_used": ["R32"],
                "notes": "",
                "evidence": [],
            },
        )
        rated = await customer_posts("rated", {"score": 5, "nps": 10})
        assert rated["orderversion"] == 9

        order = await order_of(intake, order_id, customer)
        assert order["status"] == "completed"
        assert order["final_price"] == {
            "currency": "CNY",
            "total": 20000,
            "outcome": "fixed",
        }
        assert order["rated"] is True
        listed = await dispatch.get(
            "/v1/technicians/tech-zhang/orders", headers=technician
        )
        assert [o["order_id"] for o in listed.json()["items"]] == [order_id]
        mine = await intake.get("/v1/orders", headers=customer)
        assert [o["order_id"] for o in mine.json()["items"]] == [order_id]
