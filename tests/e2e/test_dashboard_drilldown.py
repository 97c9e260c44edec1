"""The dashboard's drill-down paths in a real browser, with screenshots compared.

Intake, the ledger and metrics run as their own processes (as `servicetrail up`
runs them, with CORS_ALLOW_ORIGINS and DASHBOARD_*_URL set the same way) on the
test's database and topics. A fixed set of orders of the last two weeks (three
technicians: one fast and liked, one average, one slow and poorly rated; one order
still open, one cancelled) is stored in the event store; intake's relay publishes
it, and the ledger and metrics apply it. Debian's chromium, driven by Playwright,
opens `GET /#token=<dispatcher>&auditor=<auditor>` and walks:

- overview -> a tile -> the orders behind it (the rows `/v1/indicators/orders`
  lists, durations in human units) -> one order: its timeline (intake), SLA clocks
  (metrics), ledger entries with the verify result and an inclusion proof that the
  page checks itself against the signed root;
- a technician row -> the scorecard;
- an alert -> its case (acknowledged, owned, an action closed: its measured effect);
- the chart's bucket picker (hour, week, day: the bars are the API's points, hover says
  the value); 中文 for the new views.

The page must log no error or warning, throw nothing and get no HTTP error.

Screenshots: `test-artifacts/drill-overview.png`, `drill-order.png`,
`drill-scorecard.png` and `drill-alert-case.png`, each compared with
`tests/e2e/screenshots/<name>.png` (at most 1 % of the pixels may differ). The
orders sit at fixed offsets from today's midnight (UTC), so every number, bar and
duration is the same each day; what still depends on the clock or on random ids
(timestamps, order ids, hashes, offsets: the page marks them `.ts`, `.oid`,
`.hash`) is painted over. Regenerate the references after a deliberate change with
`SERVICETRAIL_UPDATE_SCREENSHOTS=1 pytest tests/e2e/test_dashboard_drilldown.py`,
and look at them before committing.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from playwright.async_api import Locator

from services.stack import dashboard_environment
from shared.domain.actors import Role
from shared.domain.events import Outcome, Urgency
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.browser import (
    WAIT_MS,
    Dashboard,
    chromium,
    failure_screenshot,
    human_seconds,
    needs_chromium,
    open_board,
    screenshot,
)
from tests.e2e.processes import free_port_block, services_stack, wait_ready
from tests.e2e.test_dashboard_browser import expected_tiles, take_case_steps
from tests.integration.metrics_io import Timed, all_events
from tests.integration.store_io import store_events

pytestmark = [pytest.mark.e2e, needs_chromium("DASHBOARD DRILL-DOWN TEST")]

JsonDict = dict[str, Any]
CATCH_UP_SECONDS: Final = 90.0
PUDONG, HAIDIAN = "shanghai-pudong", "beijing-haidian"
ZHANG, LI, WANG = "tech-zhang", "tech-li", "tech-wang"
# Slow responses in a region over the last 30 days: Wang's orders raise it in Pudong.
SLOW_RESPONSE: Final = {
    "name": "slow_response_30d",
    "indicator": "response_time_s",
    "statistic": "p90",
    "scope": "region",
    "window": "P30D",
    "above": True,
    "threshold": 1800.0,
    "min_samples": 3,
}


@dataclass(frozen=True)
class Plan:
    """One worked order: minutes after creation for each step."""

    technician: str
    region: str
    days_ago: int
    hour: int
    accept: int
    arrive: int
    work: int
    outcome: Outcome
    score: int
    nps: int
    urgency: Urgency = Urgency.NORMAL


PLANS: Final = (
    Plan(ZHANG, PUDONG, 13, 9, 8, 75, 50, Outcome.FIXED, 5, 10),
    Plan(ZHANG, HAIDIAN, 12, 14, 11, 92, 45, Outcome.FIXED, 5, 9),
    Plan(ZHANG, PUDONG, 9, 10, 9, 70, 55, Outcome.FIXED, 5, 10),
    Plan(ZHANG, HAIDIAN, 6, 16, 12, 88, 60, Outcome.FIXED, 4, 9, Urgency.URGENT),
    Plan(ZHANG, PUDONG, 2, 11, 10, 80, 48, Outcome.FIXED, 5, 10),
    Plan(LI, HAIDIAN, 11, 9, 22, 160, 80, Outcome.FIXED, 4, 8),
    Plan(LI, PUDONG, 8, 13, 28, 190, 85, Outcome.NOT_FIXED, 3, 7),
    Plan(LI, HAIDIAN, 5, 15, 25, 175, 75, Outcome.FIXED, 4, 8),
    Plan(LI, HAIDIAN, 3, 10, 20, 150, 90, Outcome.FIXED, 4, 7),
    Plan(LI, PUDONG, 1, 9, 24, 165, 70, Outcome.FIXED, 4, 8),
    Plan(WANG, PUDONG, 12, 10, 55, 330, 120, Outcome.NOT_FIXED, 2, 3),
    Plan(WANG, PUDONG, 10, 15, 70, 400, 130, Outcome.FIXED, 3, 5),
    Plan(WANG, PUDONG, 7, 9, 48, 310, 110, Outcome.FIXED, 3, 6, Urgency.URGENT),
    Plan(WANG, PUDONG, 4, 14, 62, 420, 140, Outcome.NOT_FIXED, 2, 2),
    Plan(WANG, PUDONG, 1, 15, 52, 360, 125, Outcome.FIXED, 3, 7),
)


def worked(plan: Plan, anchor: datetime) -> Timed:
    created = anchor - timedelta(days=plan.days_ago) + timedelta(hours=plan.hour)

    def at(minutes: int) -> datetime:
        return created + timedelta(minutes=minutes)

    return (
        Timed(plan.technician, region=plan.region, urgency=plan.urgency)
        .created(created)
        .assigned(at(1))
        .accepted(at(plan.accept), eta_minutes=plan.arrive - plan.accept - 10)
        .arrived(at(plan.arrive))
        .diagnosed(at(plan.arrive + 15))
        .priced(at(plan.arrive + 25), 18_000)
        .approved(at(plan.arrive + 40))
        .completed(at(plan.arrive + 40 + plan.work), 18_000, plan.outcome)
        .rated(
            at(plan.arrive + 40 + plan.work + 180),
            plan.score,
            nps=plan.nps,
            attitude=plan.score,
            professionalism=min(5, plan.score + 1),
            communication=plan.score,
            punctuality=max(1, plan.score - 1),
            price_fairness=4,
        )
    )


def fixed_orders(anchor: datetime) -> list[Timed]:
    """The worked orders, one still open (accepted, not visited: its arrival is
    long overdue) and one cancelled before anyone accepted it."""
    open_since = anchor - timedelta(days=3, hours=-9)
    cancelled_at = anchor - timedelta(days=6, hours=-17)
    return [
        *(worked(plan, anchor) for plan in PLANS),
        Timed(LI, region=PUDONG)
        .created(open_since)
        .assigned(open_since + timedelta(minutes=1))
        .accepted(open_since + timedelta(minutes=18), eta_minutes=120),
        Timed(WANG, region=HAIDIAN)
        .created(cancelled_at)
        .assigned(cancelled_at + timedelta(minutes=1))
        .cancelled(cancelled_at + timedelta(minutes=12)),
    ]


# --- the services, read directly ------------------------------------------------------


@dataclass
class Services:
    metrics: httpx.AsyncClient
    ledger: httpx.AsyncClient
    dispatcher: dict[str, str]
    auditor: dict[str, str]

    async def get(self, path: str, **params: str) -> Any:
        response = await self.metrics.get(path, params=params, headers=self.dispatcher)
        assert response.status_code == 200, response.text
        return response.json()

    async def caught_up(self, records: int, order_id: str, versions: int) -> None:
        """Metrics applied `records` records and the ledger holds the order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_SECONDS
        while True:
            applied = sum(
                int(p["offset"]) + 1
                for p in (await self.get("/v1/indicators"))["as_of"]["positions"]
            )
            history = await self.ledger.get(
                f"/v1/orders/{order_id}/history", headers=self.dispatcher
            )
            held = len(history.json()["entries"]) if history.status_code == 200 else 0
            if applied >= records and held == versions:
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"metrics applied {applied} of {records} records, the ledger "
                    f"holds {held} of {versions} entries after {CATCH_UP_SECONDS} s"
                )
            await asyncio.sleep(0.25)

    async def alert_on(self, scope: str) -> JsonDict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_SECONDS
        while True:
            found = [
                a
                for a in (await self.get("/v1/alerts", state="open"))["items"]
                if a["scope"] == scope
            ]
            if found:
                alert: JsonDict = found[0]
                return alert
            if loop.time() > deadline:
                raise AssertionError(f"no alert on {scope}")
            await asyncio.sleep(0.5)


def clock_dependent(board: Dashboard) -> list[Locator]:
    """What differs from run to run: times, random ids, hashes, and ledger
    positions (the relay interleaves the orders' events differently each run)."""
    return [board.page.locator(".ts, .oid, .hash, .pos")]


async def texts(board: Dashboard, selector: str) -> list[str]:
    found: list[str] = await board.page.eval_on_selector_all(
        selector, "(nodes) => nodes.map((n) => n.textContent)"
    )
    return found


# --- the paths --------------------------------------------------------------------------


async def overview(board: Dashboard, api: Services, url: str) -> None:
    """Every tile as the API says, durations in human units; the chart's bars are
    the API's points for the bucket picked, with axes and a hover value."""
    everything = await api.get("/v1/indicators")
    await board.page.goto(url, wait_until="load", timeout=WAIT_MS)
    await board.wait_for("document.body.dataset.loaded === 'true'", "first render")
    await board.expect_tiles(expected_tiles(everything["indicators"]), "overview")
    response = everything["indicators"]["response_time_s"]
    assert await board.text('[data-indicator="response_time_s"] .value') == (
        human_seconds(response["p50"])
    )
    assert re.fullmatch(r"\d+ min( \d+ s)?", human_seconds(response["p50"]))
    for bucket, window in (("hour", "7d"), ("week", "all"), ("day", "all")):
        await board.page.select_option("#bucket", bucket)
        series = await api.get(
            "/v1/indicators/timeseries",
            indicator="orders_created",
            bucket=bucket,
            window=window,
        )
        await board.wait_for(
            """([title, bars]) => document.getElementById("trend-title").textContent
                 === title && document.querySelectorAll("#chart rect.bar").length
                 === bars""",
            f"the chart by {bucket}",
            [f"Orders created per {bucket}", len(series["points"])],
        )
    last = series["points"][-1]
    await board.page.hover(f"#chart rect.bar[data-i='{len(series['points']) - 1}']")
    tip = await board.text("#tip")
    assert tip == f"{last['bucket_start'][:10]}: {last['value']['value']} orders"
    axis = await texts(board, "#chart text")
    assert "orders" in axis
    assert "0" in axis
    await board.wait_for(
        "document.getElementById('live').classList.contains('on')", "live stream"
    )
    await board.wait_for(
        "document.querySelector('#alerts tr[data-alert-id]') !== null", "the alert"
    )
    board.problems.assert_none("overview")
    await screenshot(board, "drill-overview", mask=clock_dependent(board))


async def tile_to_order(board: Dashboard, api: Services, orders: list[Timed]) -> None:
    """A tile opens its orders; an order its timeline, SLA clocks and ledger."""
    await board.page.click('[data-indicator="response_time_s"]')
    await board.wait_for(
        "document.getElementById('orders').dataset.ready === 'response_time_s'",
        "the orders behind the tile",
    )
    listed = await api.get(
        "/v1/indicators/orders", indicator="response_time_s", limit="20"
    )
    shown = await board.page.eval_on_selector_all(
        "#orders-table tbody tr",
        "(rows) => rows.map((r) => [r.dataset.orderId, "
        "r.querySelector('.contribution').textContent])",
    )
    assert shown == [
        [row["order_id"], human_seconds(row["value"])] for row in listed["items"]
    ]
    assert len(shown) == len(PLANS) + 1  # every accepted order
    assert await board.text("#orders-title") == "Orders behind: Response time"
    # Zhang's order of two days ago.
    chosen = str(orders[4].order_id)
    await board.page.click(f'#orders-table tr[data-order-id="{chosen}"] td.link')
    await board.wait_for(
        """(id) => document.getElementById("order").dataset.orderId === id
             && document.querySelector("#order-ledger .proof-check") !== null""",
        "the order's views",
        chosen,
    )
    timeline = await board.page.eval_on_selector_all(
        "#order-timeline li", "(items) => items.map((i) => i.dataset.type)"
    )
    assert timeline == [e.data.TYPE for e in orders[4].events]
    assert await board.text("#order-timeline .order-status") == "completed"
    assert await texts(board, "#order-sla .verdict") == ["met", "met"]
    # Accepted 10 min and arrived 80 min after creation.
    assert await texts(board, "#order-sla .elapsed") == ["10 min", "1 h 20 min"]
    entries = await board.page.eval_on_selector_all(
        "#order-ledger .ledger-entries tbody tr", "(rows) => rows.length"
    )
    assert entries == len(orders[4].events)
    assert await board.page.get_attribute("#order-ledger .verify", "data-valid") == (
        "true"
    )
    assert await board.page.get_attribute("#order-ledger .proof", "data-checked") == (
        "true"
    )
    assert "proof checks against the signed root" in await board.text(
        "#order-ledger .proof-check"
    )
    board.problems.assert_none("an order's views")
    await screenshot(board, "drill-order", mask=clock_dependent(board))
    await board.page.click('[data-close="order"]')
    await board.page.click('[data-close="orders"]')


async def technician_scorecard(board: Dashboard, api: Services) -> None:
    """A ranking row opens the technician's scorecard, as the API scores them."""
    card = await api.get(f"/v1/technicians/{WANG}/scorecard", window="30d")
    await board.page.click(f'#ranking tr[data-technician="{WANG}"]')
    await board.wait_for(
        """(id) => document.getElementById("scorecard").dataset.technician === id
             && !document.getElementById("scorecard").hidden""",
        "the scorecard",
        WANG,
    )
    assert await board.text("#scorecard .composite") == (
        f"{card['score']['composite']:.1f}"
    )
    bars = await board.page.eval_on_selector_all(
        "#scorecard-chart rect.bar", "(bars) => bars.length"
    )
    assert bars == sum(v is not None for v in card["score"]["sub_scores"].values())
    await board.page.hover("#scorecard-chart rect.bar[data-i='0']")
    quality = card["score"]["sub_scores"]["quality"]
    assert await board.text("#tip") == f"Quality: {quality:.1f} points"
    board.problems.assert_none("the scorecard")
    await screenshot(board, "drill-scorecard", mask=clock_dependent(board))
    await board.page.click('[data-close="scorecard"]')


async def alert_to_case(board: Dashboard, api: Services) -> JsonDict:
    """An alert opens its case; its value is a duration in human units."""
    alert = await api.alert_on(f"region:{PUDONG}")
    await take_case_steps(
        api.metrics,
        api.dispatcher,
        alert["alert_id"],
        action_owner=WANG,
        result="second technician on evening shifts",
    )
    await board.page.click("#apply")
    row = f'#alerts tr[data-alert-id="{alert["alert_id"]}"]'
    await board.wait_for(
        "(row) => document.querySelector(row)?.dataset.caseState === 'acknowledged'",
        "the alert's case state",
        row,
    )
    assert await board.text(f"{row} .alert-value") == human_seconds(alert["value"])
    await board.page.click(row)
    await board.wait_for(
        """(id) => { const c = document.getElementById("case");
             return !c.hidden && c.dataset.alertId === id
               && c.querySelector(".case-actions tr[data-action-id]") !== null; }""",
        "the alert's case",
        alert["alert_id"],
    )
    assert await board.text("#case .case-owner") == "lead-chen"
    assert "mann_whitney_u" in await board.text("#case .effect")
    board.problems.assert_none("the alert's case")
    await screenshot(board, "drill-alert-case", mask=clock_dependent(board))
    return alert


async def chinese(board: Dashboard, api: Services, alert: JsonDict) -> None:
    """中文: the new views' labels and durations in Chinese."""
    await board.page.click("#lang")
    await board.wait_for(
        """() => document.body.dataset.lang === "zh"
             && document.getElementById("trend-title").textContent === "每天新建工单"
        """,
        "the chart's title in Chinese",
    )
    assert await board.text(
        f'#alerts tr[data-alert-id="{alert["alert_id"]}"] .alert-value'
    ) == human_seconds(alert["value"], zh=True)
    await board.page.click('[data-indicator="sla_arrival_rate"]')
    await board.wait_for(
        """() => document.getElementById("orders").dataset.ready === "sla_arrival_rate"
             && document.getElementById("orders-title").textContent
             === "明细工单: 上门达标率" """,
        "the orders' title in Chinese",
    )
    flags = await texts(board, "#orders-table .contribution")
    number = (await api.get("/v1/indicators"))["indicators"]["sla_arrival_rate"]
    assert len(flags) == number["denominator"]
    assert sum(f.startswith("✓ 计入") for f in flags) == number["numerator"]
    await board.page.click(f'#ranking tr[data-technician="{ZHANG}"]')
    await board.wait_for(
        "document.getElementById('scorecard').dataset.technician === 'tech-zhang'",
        "Zhang's scorecard",
    )
    assert "分项得分" in await board.text("#scorecard")
    board.problems.assert_none("in Chinese")


async def test_every_drill_down_path_in_the_browser(
    settings: CommonSettings, tmp_path: Path
) -> None:
    base = free_port_block(3)
    ports = {"intake": base, "ledger": base + 1, "metrics": base + 2}
    stack = services_stack(
        settings,
        tmp_path,
        ALERT_RULES=json.dumps([SLOW_RESPONSE]),
        **dashboard_environment({**ports, "dispatch": 0}),
    )
    dispatcher = issue_token(settings, role=Role.DISPATCHER, subject="drill-e2e")
    auditor = issue_token(settings, role=Role.AUDITOR, subject="drill-auditor")
    anchor = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    orders = fixed_orders(anchor)
    order_events = all_events(orders)
    await store_events(settings, order_events)
    services = {name: stack.start_service(name, port) for name, port in ports.items()}
    try:
        for service in services.values():
            await asyncio.to_thread(wait_ready, service.url, timeout=60.0)
        async with (
            httpx.AsyncClient(base_url=services["metrics"].url, timeout=10.0) as m,
            httpx.AsyncClient(base_url=services["ledger"].url, timeout=10.0) as led,
            chromium() as browser,
        ):
            api = Services(
                m,
                led,
                {"Authorization": f"Bearer {dispatcher}"},
                {"Authorization": f"Bearer {auditor}"},
            )
            await api.caught_up(
                len(order_events), str(orders[4].order_id), len(orders[4].events)
            )
            await api.alert_on(f"region:{PUDONG}")
            board = await open_board(browser)
            url = f"{services['metrics'].url}/#token={dispatcher}&auditor={auditor}"
            try:
                await overview(board, api, url)
                await tile_to_order(board, api, orders)
                await technician_scorecard(board, api)
                alert = await alert_to_case(board, api)
                await chinese(board, api, alert)
            except BaseException:
                await failure_screenshot(board, "drill-failure")
                raise
            # Closed before the services stop: an open stream holds their shutdown.
            await board.page.context.close()
    finally:
        stack.stop()
