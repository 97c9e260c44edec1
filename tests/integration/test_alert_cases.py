"""Alert cases (issue 14.1): acknowledge, own, act, close, each step an event kept by
metrics and published on the quality topic; the measured effect of an action
(hand-computed z-test and Mann-Whitney U); alert_ack_time_s / alert_close_time_s;
the case served equals the fold of its events, before and after a rebuild."""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime, timedelta
from math import erfc, sqrt
from typing import Any, Final
from uuid import UUID, uuid4

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured_event
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.metrics import alerts, cases
from services.metrics.alerts import AlertRule
from services.metrics.rebuild import rebuild_from_ledger
from services.metrics.store import alert, alert_case
from shared.db.roles import SERVICE_ROLES, url_as
from shared.domain.actors import Role
from shared.domain.alert_case import (
    Acknowledged,
    ActionClosed,
    ActionOpened,
    CaseStep,
    Closed,
    fold,
)
from shared.events.topics import QUALITY_ALERTS
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.integration.kafka_io import read_topic
from tests.integration.metrics_io import (
    JsonDict,
    all_events,
    dispatcher,
    metrics_client,
    publish_events,
    wait_caught_up,
)
from tests.integration.test_metrics_alerts_and_stream import finished, responded

pytestmark = pytest.mark.integration

NOW: Final = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PROBLEM: Final = "application/problem+json"
# Any response in the last hour breaches it: one alert per region with a response.
ANY_RESPONSE: Final = AlertRule(
    "slow_response",
    "response_time_s",
    "p90",
    "region",
    timedelta(hours=1),
    above=True,
    threshold=0.0,
    min_samples=1,
)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


async def raise_alerts(
    settings: CommonSettings,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    *regions: str,
) -> list[UUID]:
    """One response in each region and an alert on each, raised at NOW (once per
    test: the catch-up counts every record of the test's topic)."""
    headers = dispatcher(settings)
    orders = [responded(r, NOW - minutes(30), NOW - minutes(20)) for r in regions]
    published = await publish_events(settings, all_events(orders))
    await wait_caught_up(client, headers, published)
    async with engine.begin() as conn:
        raised = await alerts.evaluate(conn, NOW, rules=[ANY_RESPONSE])
    ids = {e["subject"]: UUID(e["data"]["alert_id"]) for e in raised}
    return [ids[f"region:{region}"] for region in regions]


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == f"urn:servicetrail:problem:{code}"


async def post(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    path: str,
    body: JsonDict | None = None,
) -> httpx.Response:
    return await client.post(path, json=body, headers=headers)


def soon(days: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def projected(engine: AsyncEngine) -> dict[UUID, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(alert_case))
        return {row.alert_id: dict(row._mapping) for row in rows}


async def refolded(engine: AsyncEngine) -> dict[UUID, dict[str, Any]]:
    """What the projection must be: the fold of each alert's stored events."""
    async with engine.connect() as conn:
        events = await cases.load_case_events(conn)
        found = {}
        for row in await conn.execute(select(alert)):
            if row.alert_id in events:
                case = fold(row.alert_id, row.raised_at, events[row.alert_id])
                found[row.alert_id] = cases.projection_row(case, scope=row.scope)
        return found


def without_effects(case: JsonDict) -> JsonDict:
    """A case view minus the effects (their open windows end at the server's now)."""
    return case | {"actions": [a | {"effect": None} for a in case["actions"]]}


async def test_a_case_runs_from_raised_to_closed_with_every_step_published(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        (alert_id,) = await raise_alerts(settings, engine, client, "r-case")
        base = f"/v1/alerts/{alert_id}"
        fresh = await client.get(base, headers=headers)
        assert fresh.status_code == 200, fresh.text
        assert (fresh.json()["state"], fresh.json()["version"]) == ("unacknowledged", 0)
        assert fresh.json()["history"] == []

        owned = await post(client, headers, f"{base}/owner", {"owner": "lead@ops"})
        assert owned.status_code == 200, owned.text
        assert owned.json()["owner"] == "lead@ops"
        action = {"text": "Add a shift", "due": soon(), "owner": "lead@ops"}
        # Plan after acknowledging: no action, no close on an unacknowledged case.
        assert_problem(
            await post(client, headers, f"{base}/actions", action),
            409,
            "transition_not_allowed",
        )
        acknowledged = await post(client, headers, f"{base}/acknowledge")
        assert acknowledged.status_code == 200, acknowledged.text
        assert (
            acknowledged.json()["acknowledged_by"]
            == "dispatcher:dispatcher-metrics-tests"
        )
        assert acknowledged.json()["ack_time_s"] > 0
        assert_problem(
            await post(client, headers, f"{base}/acknowledge"),
            409,
            "transition_not_allowed",
        )
        for due in (
            (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            soon(days=367),
        ):
            assert_problem(
                await post(client, headers, f"{base}/actions", action | {"due": due}),
                422,
                "validation_error",
            )
        created = await post(client, headers, f"{base}/actions", action)
        assert created.status_code == 201, created.text
        (opened,) = created.json()["actions"]
        assert (opened["text"], opened["owner"], opened["closed_at"]) == (
            "Add a shift",
            "lead@ops",
            None,
        )
        assert opened["effect"] is None
        action_path = f"{base}/actions/{opened['action_id']}/close"
        assert_problem(
            await post(client, headers, f"{base}/close", {"resolution": "done"}),
            409,
            "transition_not_allowed",
        )
        assert_problem(
            await post(
                client, headers, f"{base}/actions/{uuid4()}/close", {"result": "x"}
            ),
            409,
            "transition_not_allowed",
        )
        done = await post(client, headers, action_path, {"result": "Shift added"})
        assert done.status_code == 200, done.text
        (closed_action,) = done.json()["actions"]
        assert closed_action["result"] == "Shift added"
        effect = closed_action["effect"]
        # Steps at the server's clock, months after the test's responses: both
        # windows are empty, and the after window has not passed yet.
        assert (effect["indicator"], effect["test"]) == (
            "response_time_s",
            "mann_whitney_u",
        )
        assert (effect["p_value"], effect["reason"], effect["complete"]) == (
            None,
            "empty sample",
            False,
        )
        assert_problem(
            await post(client, headers, action_path, {"result": "again"}),
            409,
            "transition_not_allowed",
        )
        closed = await post(client, headers, f"{base}/close", {"resolution": "Fixed"})
        assert closed.status_code == 200, closed.text
        case = closed.json()
        assert (case["state"], case["resolution"], case["version"]) == (
            "closed",
            "Fixed",
            5,
        )
        assert case["close_time_s"] >= case["ack_time_s"]
        for path, body in (
            (f"{base}/actions", action),
            (f"{base}/owner", {"owner": "other"}),
            (f"{base}/close", {"resolution": "again"}),
            (f"{base}/acknowledge", None),
        ):
            assert_problem(
                await post(client, headers, path, body), 409, "transition_not_allowed"
            )
        assert [step["type"] for step in case["history"]] == [
            "servicetrail.quality.alert_owned",
            "servicetrail.quality.alert_acknowledged",
            "servicetrail.quality.alert_action_opened",
            "servicetrail.quality.alert_action_closed",
            "servicetrail.quality.alert_closed",
        ]
        listed = await client.get("/v1/alerts", headers=headers)
        (summary,) = listed.json()["items"]
        assert (
            summary["case_state"],
            summary["owner"],
            summary["actions"],
            summary["open_actions"],
        ) == ("closed", "lead@ops", 1, 0)
        assert case["alert"] == summary

        records = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_prefix + QUALITY_ALERTS,
            expected=6,
            timeout=20,
        )
    published = [
        from_structured_event(
            KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value)
        )
        for r in records
    ]
    assert [p.get_type() for p in published][1:] == [
        step["type"] for step in case["history"]
    ]
    assert [p.get_id() for p in published][1:] == [
        step["event_id"] for step in case["history"]
    ]
    assert {r.key for r in records} == {b"region:r-case"}
    action_data = published[3].get_data()
    assert isinstance(action_data, dict)
    assert action_data == {
        "alert_id": str(alert_id),
        "rule": "slow_response",
        "scope": "region:r-case",
        "version": 3,
        "actor": "dispatcher:dispatcher-metrics-tests",
        **case["history"][2]["data"],
    }
    assert action_data["text"] == "Add a shift"


async def test_of_two_concurrent_acknowledgements_exactly_one_wins(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    as_role = bearer(settings)
    async with metrics_client(settings) as client:
        (alert_id,) = await raise_alerts(settings, engine, client, "r-race")
        listed = (await client.get("/v1/alerts", headers=dispatcher(settings))).json()
        assert [
            (a["case_state"], a["owner"], a["actions"]) for a in listed["items"]
        ] == [("unacknowledged", None, 0)]
        path = f"/v1/alerts/{alert_id}/acknowledge"
        answers = await asyncio.gather(
            *(
                client.post(path, headers=as_role(Role.DISPATCHER, f"d-{n}"))
                for n in range(4)
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    (won,) = [a.json() for a in answers if a.status_code == 200]
    assert won["version"] == 1
    assert (await projected(engine))[alert_id]["version"] == 1


async def test_a_cleared_alert_can_still_be_acknowledged_and_closed(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        (alert_id,) = await raise_alerts(settings, engine, client, "r-recovered")
        async with engine.begin() as conn:
            cleared = await alerts.evaluate(
                conn, NOW + minutes(90), rules=[ANY_RESPONSE]
            )
        assert [e["type"] for e in cleared] == ["servicetrail.quality.alert_cleared"]
        base = f"/v1/alerts/{alert_id}"
        assert (await post(client, headers, f"{base}/acknowledge")).status_code == 200
        closed = await post(
            client, headers, f"{base}/close", {"resolution": "recovered"}
        )
    assert closed.status_code == 200, closed.text
    assert (closed.json()["state"], closed.json()["alert"]["state"]) == (
        "closed",
        "cleared",
    )


async def test_an_actions_effect_is_measured_before_opening_and_after_closing(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    """Durations: 10 responses of 15 000 + 120 i s before, 300 / 360 / 420 s after;
    csat: 15 of 20 satisfied before, 9 of 10 after. The steps are taken by the
    command at fixed instants; the view reads them at the server's clock, long
    after both windows."""
    slow = [
        responded("r-slow", NOW - timedelta(hours=5), NOW - minutes(50 - 2 * i))
        for i in range(10)
    ]
    quick = [
        responded("r-slow", NOW + minutes(65), NOW + minutes(70 + i)) for i in range(3)
    ]
    unhappy = [
        finished(
            f"tc-{i % 4}",
            "r-csat",
            NOW - timedelta(hours=20) + minutes(i),
            score=5 if i < 15 else 2,
        )
        for i in range(20)
    ]
    happy = [
        finished("tc-0", "r-csat", NOW + minutes(70 + i), score=5 if i < 9 else 2)
        for i in range(10)
    ]
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        published = await publish_events(settings, all_events([*slow, *unhappy]))
        await wait_caught_up(client, headers, published)
        async with engine.begin() as conn:
            raised = {e["subject"]: e for e in await alerts.evaluate(conn, NOW)}
        ids = {
            scope: UUID(raised[scope]["data"]["alert_id"])
            for scope in ("region:r-slow", "region:r-csat")
        }
        published += await publish_events(settings, all_events([*quick, *happy]))
        await wait_caught_up(client, headers, published)
        action_ids = {}
        for scope, alert_id in ids.items():
            action_ids[scope] = uuid4()
            steps: list[tuple[timedelta, CaseStep]] = [
                (minutes(1), Acknowledged()),
                (
                    minutes(2),
                    ActionOpened(
                        action_id=action_ids[scope],
                        text="coach the team",
                        due=NOW + timedelta(days=2),
                        owner="lead-1",
                    ),
                ),
                (
                    minutes(65),
                    ActionClosed(action_id=action_ids[scope], result="coached"),
                ),
                (minutes(90), Closed(resolution="better")),
            ]
            for offset, step in steps:
                async with engine.connect() as conn:
                    await cases.record_step(
                        conn, alert_id, step, actor="dispatcher:d-1", now=NOW + offset
                    )
        views = {}
        for scope, alert_id in ids.items():
            response = await client.get(f"/v1/alerts/{alert_id}", headers=headers)
            assert response.status_code == 200, response.text
            views[scope] = response.json()
        window = {
            "from": (NOW - minutes(10)).isoformat(),
            "to": (NOW + minutes(100)).isoformat(),
        }
        everything = await client.get("/v1/indicators", params=window, headers=headers)
        one_region = await client.get(
            "/v1/indicators", params=window | {"region": "r-slow"}, headers=headers
        )
        by_category = await client.get(
            "/v1/indicators",
            params=window | {"category": "washing_machine"},
            headers=headers,
        )

    durations = views["region:r-slow"]["actions"][0]["effect"]
    # U of the before sample: all 30 pairs have the before value larger; mean 15,
    # variance 10 x 3 x 14 / 12 = 35, continuity: z = (15 - 0.5) / sqrt(35).
    assert (durations["test"], durations["statistic"]) == ("mann_whitney_u", "median")
    assert durations["before"] == statistics.median(15_000 + 120 * i for i in range(10))
    assert (
        durations["after"],
        durations["samples_before"],
        durations["samples_after"],
    ) == (
        360.0,
        10,
        3,
    )
    assert durations["difference"] == 360.0 - 15_540.0
    assert durations["p_value"] == pytest.approx(erfc(14.5 / sqrt(35) / sqrt(2)))
    assert durations["p_value"] == pytest.approx(0.014248, abs=1e-6)
    assert datetime.fromisoformat(durations["before_window"]["start"]) == NOW - minutes(
        58
    )
    assert datetime.fromisoformat(durations["before_window"]["end"]) == NOW + minutes(2)
    assert datetime.fromisoformat(durations["after_window"]["start"]) == NOW + minutes(
        65
    )
    assert datetime.fromisoformat(durations["after_window"]["end"]) == NOW + minutes(
        125
    )
    assert durations["complete"] is True

    rates = views["region:r-csat"]["actions"][0]["effect"]
    # Pooled 24 / 30 = 0.8; se = sqrt(0.8 x 0.2 x (1/20 + 1/10)) = sqrt(0.024).
    assert (rates["test"], rates["statistic"]) == ("two_proportion_z", "rate")
    assert (rates["before"], rates["after"]) == (0.75, 0.9)
    assert rates["difference"] == pytest.approx(0.15)
    assert rates["p_value"] == pytest.approx(erfc(0.15 / sqrt(0.024) / sqrt(2)))
    assert (rates["samples_before"], rates["samples_after"]) == (20, 10)
    assert rates["complete"] is True

    for view in views.values():
        assert (view["ack_time_s"], view["close_time_s"]) == (60.0, 5400.0)
    ack = everything.json()["indicators"]["alert_ack_time_s"]
    assert (ack["count"], ack["p50"], ack["max"]) == (2, 60.0, 60.0)
    assert everything.json()["indicators"]["alert_close_time_s"]["count"] == 2
    assert one_region.json()["indicators"]["alert_close_time_s"]["count"] == 1
    # An alert has no category: a category slice holds none.
    assert by_category.json()["indicators"]["alert_ack_time_s"]["count"] == 0


async def test_rebuild_equals_live_for_alert_cases(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        kept, other = await raise_alerts(settings, engine, client, "r-kept", "r-other")
        base = f"/v1/alerts/{kept}"
        for path, body in (
            (f"{base}/owner", {"owner": "ops-1"}),
            (f"{base}/acknowledge", None),
            (f"{base}/actions", {"text": "a", "due": soon(), "owner": "ops-2"}),
            (f"{base}/actions", {"text": "b", "due": soon(2), "owner": "ops-2"}),
            (f"/v1/alerts/{other}/acknowledge", None),
        ):
            assert (await post(client, headers, path, body)).status_code in (200, 201)
        live = without_effects((await client.get(base, headers=headers)).json())
        first = live["actions"][0]["action_id"]
        await post(client, headers, f"{base}/actions/{first}/close", {"result": "ok"})
        live = without_effects((await client.get(base, headers=headers)).json())
        listed = (await client.get("/v1/alerts", headers=headers)).json()
    before = await projected(engine)
    assert set(before) == {kept, other}
    assert before == await refolded(engine)

    async with engine.begin() as conn:
        await rebuild_from_ledger(conn)
    assert await projected(engine) == before
    async with metrics_client(settings) as client:
        again = without_effects((await client.get(base, headers=headers)).json())
        relisted = (await client.get("/v1/alerts", headers=headers)).json()
    assert again == live
    assert relisted == listed
    assert (again["state"], again["owner"], len(again["actions"])) == (
        "acknowledged",
        "ops-1",
        2,
    )


async def acknowledged_alert(
    settings: CommonSettings, engine: AsyncEngine, region: str
) -> UUID:
    """An alert raised on `region` and acknowledged; the app stopped again."""
    async with metrics_client(settings) as client:
        (alert_id,) = await raise_alerts(settings, engine, client, region)
        path = f"/v1/alerts/{alert_id}/acknowledge"
        assert (await post(client, dispatcher(settings), path)).status_code == 200
    return alert_id


async def test_a_lost_projection_is_folded_again_by_the_rebuild(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    alert_id = await acknowledged_alert(settings, engine, "r-lost")
    live = await projected(engine)
    async with engine.begin() as conn:
        await conn.execute(alert_case.delete())
        await rebuild_from_ledger(conn)
    assert await projected(engine) == live
    assert live[alert_id]["state"] == "acknowledged"


async def test_the_metrics_role_appends_case_steps_but_never_rewrites_one(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    alert_id = await acknowledged_alert(settings, engine, "r-kept-steps")
    metrics_role = create_async_engine(
        url_as(settings.sqlalchemy_url, SERVICE_ROLES["metrics"]), poolclass=NullPool
    )
    try:
        for sql in (
            "UPDATE metrics.alert_case_event SET actor = 'someone else'",
            "DELETE FROM metrics.alert_case_event",
        ):
            with pytest.raises(DBAPIError, match="permission denied"):
                async with metrics_role.begin() as conn:
                    await conn.execute(text(sql))
    finally:
        await metrics_role.dispose()
    async with engine.connect() as conn:
        (step,) = (await cases.load_case_events(conn))[alert_id]
    assert step.actor == "dispatcher:dispatcher-metrics-tests"


# --- the edge: roles, unknown alerts, hostile bodies ---------------------------------

HOSTILE: Final[list[tuple[str, JsonDict | None]]] = [
    ("owner", {"owner": ""}),
    ("owner", {"owner": "x" * 129}),
    ("owner", {"owner": "two words"}),
    ("owner", {"owner": "nul\x00"}),
    ("owner", {"owner": "ops-1", "extra": 1}),
    ("owner", None),
    ("actions", {"text": "t" * 2001, "due": "2027-01-01T00:00:00Z", "owner": "o"}),
    ("actions", {"text": "nul\x00", "due": "2027-01-01T00:00:00Z", "owner": "o"}),
    ("actions", {"text": "  ", "due": "2027-01-01T00:00:00Z", "owner": "o"}),
    ("actions", {"text": "t", "due": "tomorrow", "owner": "o"}),
    ("actions", {"text": "t", "due": "2027-01-01T00:00:00", "owner": "o"}),
    ("actions", {"text": "t", "due": "0001-01-01T00:00:00+14:00", "owner": "o"}),
    ("actions", {"text": "t", "owner": "o"}),
    ("close", {}),
    ("close", {"resolution": "r" * 2001}),
    ("close", {"resolution": 7}),
]


@pytest.mark.parametrize(
    ("step", "body"),
    HOSTILE,
    ids=[f"{step}-{n}" for n, (step, _) in enumerate(HOSTILE)],
)
async def test_hostile_bodies_are_422_problems(
    settings: CommonSettings, step: str, body: JsonDict | None
) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings, run_consumer=False) as client:
        response = await post(client, headers, f"/v1/alerts/{uuid4()}/{step}", body)
    assert_problem(response, 422, "validation_error")


async def test_unknown_alerts_are_404_and_wrong_roles_403(
    settings: CommonSettings,
) -> None:
    headers = dispatcher(settings)
    unknown = f"/v1/alerts/{uuid4()}"
    as_role = bearer(settings)
    async with metrics_client(settings, run_consumer=False) as client:
        assert_problem(
            await client.get(unknown, headers=headers), 404, "alert_not_found"
        )
        assert_problem(
            await post(client, headers, f"{unknown}/acknowledge"),
            404,
            "alert_not_found",
        )
        assert_problem(
            await post(
                client, headers, f"{unknown}/actions/{uuid4()}/close", {"result": "r"}
            ),
            404,
            "alert_not_found",
        )
        malformed = await client.get("/v1/alerts/not-a-uuid", headers=headers)
        assert_problem(malformed, 422, "validation_error")
        for role in (Role.AUDITOR, Role.TECHNICIAN, Role.CUSTOMER):
            refused = await post(
                client, as_role(role, "someone"), f"{unknown}/acknowledge"
            )
            assert_problem(refused, 403, "forbidden")
        for role in (Role.TECHNICIAN, Role.CUSTOMER):
            assert_problem(
                await client.get(unknown, headers=as_role(role, "someone")),
                403,
                "forbidden",
            )
        admin = await post(
            client, as_role(Role.ADMIN, "root"), f"{unknown}/acknowledge"
        )
        assert_problem(admin, 404, "alert_not_found")
        anonymous = await client.post(f"{unknown}/acknowledge")
        assert anonymous.status_code == 401
