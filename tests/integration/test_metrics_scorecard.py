"""GET /v1/technicians/{id}/scorecard (api.md v2) on hand-computed orders.

Technician "tech-sc" (TS) has five orders, each created at a time before now and
run by `scored_order` (accepted 10 min after creation, arrived 60, completed 90,
rated 120, all in minutes, unless said otherwise); "tech-other" (TO) one:

| order | created | story |
|---|---|---|
| S1 | 2 days ago | ETA 45 (promised at 55): arrived 300 s late; fixed; rated 5, attitude 5 |
| S2 | 3 days ago | ETA 20 (promised at 30): 1 800 s late; fixed; rated 4, attitude 4 |
| S3 | 10 days ago | accepted after 300 min (accept SLA 240 missed), ETA 45 (promised at 345), arrived at 360: 900 s late; not fixed |
| S4 | 60 days ago | ETA 60 (promised at 70): 600 s early; fixed |
| S5 | 100 days ago | fixed (outside every window) |
| T1 | 30 hours ago | TO's; fixed |
| D1 | 1 day ago | assigned to TS, declined after 5 min |
| E1 | 1 day ago | assigned to TS, expired after 20 min, assigned to TS again, expired again |
| E2 | 20 days ago | assigned to TS, expired after 20 min |
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics.consumer import IndicatorProjector
from services.metrics.policy import IndicatorPolicy
from services.metrics.schemas import ScorecardWindow
from services.metrics.scorecard import ORDER_IDS_MAX, get_scorecard
from shared.domain.actors import Role
from shared.domain.events import Outcome
from shared.domain.scoring import SubScore
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    all_events,
    dispatcher,
    metrics_client,
    publish_and_catch_up,
)
from tests.integration.test_metrics_indicators import dist, rate, scored_order

pytestmark = pytest.mark.integration

TS, TO = "tech-sc", "tech-other"
P = "shanghai-pudong"


def scorecard_orders(now: datetime) -> dict[str, Timed]:
    def ago(hours: float) -> datetime:
        return now - timedelta(hours=hours)

    return {
        "S1": scored_order(TS, ago(48), rating=(5, {"attitude": 5})),
        "S2": scored_order(TS, ago(72), eta_minutes=20, rating=(4, {"attitude": 4})),
        "S3": scored_order(
            TS, ago(240), accept_after=300, arrive_after=360, outcome=Outcome.NOT_FIXED
        ),
        "S4": scored_order(TS, ago(24 * 60), eta_minutes=60),
        "S5": scored_order(TS, ago(24 * 100)),
        "T1": scored_order(TO, ago(30)),
        "D1": Timed(TS, region=P)
        .created(ago(24))
        .assigned(ago(24) + timedelta(minutes=1))
        .declined(ago(24) + timedelta(minutes=5)),
        "E1": Timed(TS, region=P)
        .created(ago(24))
        .assigned(ago(24) + timedelta(minutes=1))
        .expired(ago(24) + timedelta(minutes=20))
        .assigned(ago(24) + timedelta(minutes=21))
        .expired(ago(24) + timedelta(minutes=40)),
        "E2": Timed(TS, region=P)
        .created(ago(480))
        .assigned(ago(480) + timedelta(minutes=1))
        .expired(ago(480) + timedelta(minutes=20)),
    }


async def get_scorecard_json(
    client: httpx.AsyncClient, headers: dict[str, str], technician: str, **params: str
) -> httpx.Response:
    # Percent-encoded: hostile ids reach the server as they are.
    return await client.get(
        f"/v1/technicians/{quote(technician, safe='')}/scorecard",
        params=params,
        headers=headers,
    )


def sub_scores(*in_order: float) -> Any:
    """quality, attitude, response, efficiency, satisfaction (approximately)."""
    return pytest.approx(dict(zip(SubScore, in_order, strict=True)))


def ids(orders: dict[str, Timed], *names: str) -> list[str]:
    return [str(orders[name].order_id) for name in names]


def listed(card: JsonDict) -> dict[str, list[str]]:
    assert not any(figure["truncated"] for figure in card["orders"].values())
    return {name: figure["order_ids"] for name, figure in card["orders"].items()}


async def test_a_technician_reads_their_own_scorecard_over_7_30_and_90_days(
    settings: CommonSettings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    orders = scorecard_orders(now)
    as_ts = bearer(settings)(Role.TECHNICIAN, TS)
    async with metrics_client(settings) as client:
        await publish_and_catch_up(client, settings, all_events(orders.values()))
        week = await get_scorecard_json(client, as_ts, TS, window="7d")
        month = await get_scorecard_json(client, as_ts, TS, window="30d")
        quarter = await get_scorecard_json(client, as_ts, TS, window="90d")
        default = await get_scorecard_json(client, as_ts, TS)
        scores = await client.get(
            "/v1/technicians/scores",
            params={"window": "7d"},
            headers=dispatcher(settings),
        )
    for response in (week, month, quarter, default):
        assert response.status_code == 200, response.text

    # 7 days: S1 and S2.
    card = week.json()
    assert (card["technician_id"], card["window"]) == (TS, "7d")
    start, end = (datetime.fromisoformat(card[k]) for k in ("start", "end"))
    assert end - start == timedelta(days=7)
    assert now <= end <= datetime.now(UTC)
    score = card["score"]
    # quality 2/2 first-time fixes; attitude (5 + 4) / 2 = 4.5 -> 100 x 3.5 / 4 =
    # 87.5; accepts after 10 min <= 240 and arrivals after 60 <= 2 880; csat 2/2.
    assert score["sub_scores"] == sub_scores(100.0, 87.5, 100.0, 100.0, 100.0)
    # 0.45 x 100 + 0.25 x 87.5 + 0.15 x 100 + 0.10 x 100 + 0.05 x 100 = 96.875
    assert score["composite"] == pytest.approx(96.875)
    # attitude rated 5 and 4, no other dimension: B = (1/2, 1/2, 0, 0, 0), a tie
    # -> the better grade; score 100 x 1/2 + 80 x 1/2 = 90.
    assert score["fuzzy"]["grade"] == "very_satisfied"
    assert score["fuzzy"]["score"] == pytest.approx(90.0)
    # 2 < 5 final completions: listed, not ranked.
    assert (score["final_completions"], score["insufficient_data"]) == (2, True)
    assert score["rank"] is None
    # The same item as the scores listing over the same days.
    (listed_ts,) = [i for i in scores.json()["items"] if i["technician_id"] == TS]
    assert listed_ts == score
    # ETA errors [300, 1 800]: 300 kept (<= 900), 1 800 not -> 1/2.
    assert card["eta"] == {
        "eta_kept_rate": rate(1, 2),
        "eta_error_s": dist(2, 1050.0, 300.0, 1800.0, 1800.0, 1800.0),
    }
    # D1 declined; E1's two assignments expired.
    assert card["counts"] == {
        "orders_accepted": 2,
        "orders_arrived": 2,
        "orders_completed": 2,
        "ratings": 2,
        "assignments_declined": 1,
        "assignments_expired": 2,
    }
    # Newest measurement first: S1 (2 days ago) before S2 (3 days ago).
    newest = ids(orders, "S1", "S2")
    assert listed(card) == dict.fromkeys(
        (
            "quality",
            "attitude",
            "response",
            "efficiency",
            "satisfaction",
            "fuzzy",
            "eta",
            "accepted",
            "arrived",
            "completed",
        ),
        newest,
    ) | {"declined": ids(orders, "D1"), "expired": ids(orders, "E1", "E1")}
    assert card["as_of"]["policy_version"]

    # 30 days: + S3 (not fixed, accepted late, 900 s late: exactly kept).
    card = month.json()
    assert default.json()["window"] == "30d"
    assert default.json()["score"] == card["score"]
    # quality 2/3, response 2/3, efficiency 3/3; ratings unchanged:
    # 0.45 x 200/3 + 0.25 x 87.5 + 0.15 x 200/3 + 10 + 5 = 30 + 21.875 + 10 + 15
    assert card["score"]["sub_scores"]["quality"] == pytest.approx(200 / 3)
    assert card["score"]["sub_scores"]["response"] == pytest.approx(200 / 3)
    assert card["score"]["composite"] == pytest.approx(76.875)
    # ETA errors [300, 900, 1 800]: kept 2/3; mean 1 000; p50 rank 2 -> 900.
    assert card["eta"] == {
        "eta_kept_rate": rate(2, 3),
        "eta_error_s": dist(3, 1000.0, 900.0, 1800.0, 1800.0, 1800.0),
    }
    assert listed(card)["quality"] == ids(orders, "S1", "S2", "S3")
    assert listed(card)["attitude"] == ids(orders, "S1", "S2")
    assert card["counts"]["assignments_expired"] == 3  # + E2
    assert listed(card)["expired"] == ids(orders, "E1", "E1", "E2")

    # 90 days: + S4 (600 s early); S5 is older.
    card = quarter.json()
    # quality 3/4 -> 75, response 3/4 -> 75:
    # 33.75 + 21.875 + 11.25 + 10 + 5 = 81.875
    assert card["score"]["composite"] == pytest.approx(81.875)
    assert card["score"]["final_completions"] == 4
    # [-600, 300, 900, 1 800]: kept 3/4; mean 600; p50 rank 2 -> 300; p90 rank 4.
    assert card["eta"] == {
        "eta_kept_rate": rate(3, 4),
        "eta_error_s": dist(4, 600.0, 300.0, 1800.0, 1800.0, 1800.0),
    }
    assert listed(card)["eta"] == ids(orders, "S1", "S2", "S3", "S4")
    assert card["counts"]["orders_completed"] == 4


async def test_only_that_technician_and_dispatchers_read_a_scorecard(
    settings: CommonSettings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    orders = scorecard_orders(now)
    as_role = bearer(settings)
    async with metrics_client(settings) as client:
        await publish_and_catch_up(client, settings, all_events(orders.values()))

        async def status(headers: dict[str, str], technician: str = TS) -> int:
            response = await get_scorecard_json(client, headers, technician)
            if response.status_code >= 400:
                problem = response.headers["content-type"]
                assert problem.startswith("application/problem+json"), response.text
            return response.status_code

        # Another technician is refused as for another technician's orders (403).
        assert await status(as_role(Role.TECHNICIAN, TO)) == 403
        assert await status(as_role(Role.TECHNICIAN, TO), TO) == 200
        assert await status(as_role(Role.DISPATCHER, "d-1")) == 200
        assert await status(as_role(Role.ADMIN, "a-1")) == 200
        for role in (Role.CUSTOMER, Role.AUDITOR, Role.SERVICE):
            assert await status(as_role(role, TS)) == 403, role
        assert await status({}) == 401

        # A dispatcher reads TS's figures (30 days by default: S1, S2, S3), and
        # those of a technician without data.
        seen = await get_scorecard_json(client, as_role(Role.DISPATCHER, "d"), TS)
        assert seen.json()["counts"]["orders_completed"] == 3
        nobody = await get_scorecard_json(
            client, as_role(Role.DISPATCHER, "d"), "tech-nobody"
        )
    assert nobody.status_code == 200, nobody.text
    card = nobody.json()
    assert card["score"]["composite"] is None
    assert card["score"]["insufficient_data"] is True
    assert card["eta"]["eta_kept_rate"] == rate(0, 0)
    assert all(figure["order_ids"] == [] for figure in card["orders"].values())


HOSTILE_IDS: Final = ("a" * 129, "tech one", "tech\x00", "技师", "tech'--", "a%2Fb")
HOSTILE_WINDOWS: Final = ("1h", "24h", "all", "365d", "", "7D", "30d\x00", "9" * 500)


async def test_hostile_technician_ids_and_windows_are_422(
    settings: CommonSettings,
) -> None:
    headers = dispatcher(settings)
    async with metrics_client(settings) as client:
        assert (await get_scorecard_json(client, headers, "a" * 128)).status_code == 200
        for technician in HOSTILE_IDS:
            response = await get_scorecard_json(client, headers, technician)
            assert response.status_code == 422, (technician, response.text)
        for window in HOSTILE_WINDOWS:
            response = await get_scorecard_json(client, headers, TS, window=window)
            assert response.status_code == 422, (window, response.text)
            assert response.headers["content-type"].startswith(
                "application/problem+json"
            )


async def test_at_most_200_order_ids_per_figure_and_a_truncated_flag(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    accepted = [
        Timed(TS, region="pudong")
        .created(now - timedelta(hours=5, minutes=n))
        .assigned(now - timedelta(hours=4, minutes=n))
        .accepted(now - timedelta(hours=3, minutes=n))
        for n in range(ORDER_IDS_MAX + 5)
    ]
    async with engine.begin() as conn:
        await IndicatorProjector().apply(all_events(accepted), conn)
    async with engine.connect() as conn:
        card = await get_scorecard(
            conn, TS, ScorecardWindow.WEEK, now=now, policy=IndicatorPolicy()
        )
    assert card.counts.orders_accepted == ORDER_IDS_MAX + 5
    figure: Any = card.orders["accepted"]
    assert figure.truncated is True
    # Newest accept first: the orders accepted 3 h, 3 h 1 min, ... ago.
    assert figure.order_ids == [o.order_id for o in accepted[:ORDER_IDS_MAX]]
    assert card.orders["completed"].order_ids == []
    assert card.orders["completed"].truncated is False
