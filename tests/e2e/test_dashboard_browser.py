"""The live dashboard in a real browser: numbers, live updates, filters, 中文.

The metrics service runs as its own process on the test's database and topics, fed
with order histories stored in the event store (metrics applies only what it holds)
and published straight to its topic. Debian's chromium, driven by Playwright, opens
`GET /#token=...`; every tile must show what `/v1/indicators` answers, formatted as
the page formats it. A new order must show up without a reload, a region filter must
show that slice's numbers, and the 中文 button must switch the labels. An alert whose
case was acknowledged, owned and acted on shows its case in the alerts panel and
opens its case view. The page must log no error or warning and throw nothing.
Screenshots are left in `test-artifacts/dashboard.png` and `dashboard-case.png`.

Playwright's own browser downloads are never used (`playwright install` is not
run): without /usr/bin/chromium (`apt-get install chromium`) the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from shared.domain import events
from shared.domain.actors import Actor, Role
from shared.domain.events import Outcome, Urgency
from shared.domain.lifecycle import OrderEvent
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.builders import Story, make_created
from tests.e2e.browser import (
    ARTIFACTS,
    NO_VALUE,
    WAIT_MS,
    Dashboard,
    TileTexts,
    chromium,
    failure_screenshot,
    human_seconds,
    needs_chromium,
    open_board,
    to_fixed,
)
from tests.e2e.processes import (
    any_response_rule,
    free_port_block,
    services_stack,
    wait_ready,
)
from tests.integration.metrics_io import publish_events

CATCH_UP_SECONDS: Final = 60.0

REGION_BUSY: Final = "shanghai-pudong"
REGION_QUIET: Final = "beijing-haidian"

# The page's TILES: indicator name and how the page formats it.
TILES: Final = (
    ("response_time_s", "duration"),
    ("arrival_time_s", "duration"),
    ("resolution_time_s", "duration"),
    ("first_time_fix_rate", "rate"),
    ("resolution_rate", "rate"),
    ("rework_rate", "rate"),
    ("complaint_rate", "rate"),
    ("cancellation_rate", "rate"),
    ("price_deviation_mean", "percent"),
    ("overrun_rate", "rate"),
    ("requote_rate", "rate"),
    ("rating_mean", "number"),
    ("csat", "rate"),
    ("nps", "number"),
    ("sla_accept_rate", "rate"),
    ("sla_arrival_rate", "rate"),
    ("orders_created", "count"),
    ("orders_open", "count"),
)

pytestmark = [pytest.mark.e2e, needs_chromium("DASHBOARD BROWSER TEST")]

JsonDict = dict[str, Any]


# --- the page's number formatting, in Python -----------------------------------------


def tile_value(kind: str, data: JsonDict, *, zh: bool = False) -> str:
    if kind == "duration":
        return NO_VALUE if data["p50"] is None else human_seconds(data["p50"], zh=zh)
    value = data["value"]
    if value is None:
        return NO_VALUE
    match kind:
        case "rate":
            return f"{to_fixed(100 * value, 1)}%"
        case "percent":
            return f"{to_fixed(100 * value, 2)}%"
        case "number":
            return to_fixed(value, 2)
        case _:
            return str(value)


def tile_detail(kind: str, data: JsonDict, *, zh: bool = False) -> str:
    if kind == "duration":
        p90 = NO_VALUE if data["p90"] is None else human_seconds(data["p90"], zh=zh)
        return f"n={data['count']} · p90 {p90}"
    if kind == "rate":
        return f"{data['numerator']}/{data['denominator']}"
    if data.get("count") is not None:
        return f"n={data['count']}"
    return ""


def expected_tiles(indicators: JsonDict, *, zh: bool = False) -> TileTexts:
    """What every tile must read for an API answer."""
    return {
        name: [
            tile_value(kind, indicators[name], zh=zh),
            tile_detail(kind, indicators[name], zh=zh),
        ]
        for name, kind in TILES
    }


# --- demo data ----------------------------------------------------------------------


def history(
    region: str,
    technician: str,
    *,
    start: datetime,
    urgency: Urgency = Urgency.NORMAL,
    outcome: Outcome | None = None,
    score: int | None = None,
    nps: int | None = None,
    cancel: bool = False,
) -> list[OrderEvent]:
    """One order: created, then cancelled, left open, or worked to `outcome`."""
    story = Story(technician=Actor(Role.TECHNICIAN, technician), clock=start)
    created = make_created(
        customer_id=story.customer.id, region=region, urgency=urgency
    )
    story.post(story.customer, created, at=start)
    if cancel:
        story.cancel()
    elif outcome is not None:
        story.assign()
        story.accept()
        story.arrive()
        story.diagnose()
        story.price(12_000)
        story.approve()
        story.complete(12_000, outcome=outcome)
        if score is not None:
            story.post(story.customer, events.Rated(score=score, nps=nps))
    return story.history


def demo_orders(now: datetime) -> list[list[OrderEvent]]:
    """Six orders in the busy region and two in the quiet one, all of the last hours."""
    start = now - timedelta(hours=5)
    plans: list[tuple[str, str, Urgency, Outcome | None, int | None, int | None]] = [
        (REGION_BUSY, "tech-zhang", Urgency.NORMAL, Outcome.FIXED, 5, 10),
        (REGION_BUSY, "tech-zhang", Urgency.URGENT, Outcome.FIXED, 4, 8),
        (REGION_BUSY, "tech-li", Urgency.EMERGENCY, Outcome.FIXED, 2, 3),
        (REGION_BUSY, "tech-li", Urgency.NORMAL, Outcome.NOT_FIXED, 3, None),
        (REGION_BUSY, "tech-wang", Urgency.NORMAL, None, None, None),
        (REGION_QUIET, "tech-wang", Urgency.URGENT, Outcome.FIXED, 5, 9),
        (REGION_QUIET, "tech-wang", Urgency.NORMAL, None, None, None),
    ]
    orders = [
        history(
            region,
            technician,
            start=start + timedelta(minutes=20 * n),
            urgency=urgency,
            outcome=outcome,
            score=score,
            nps=nps,
        )
        for n, (region, technician, urgency, outcome, score, nps) in enumerate(plans)
    ]
    orders.append(
        history(REGION_BUSY, "tech-li", start=start + timedelta(hours=2), cancel=True)
    )
    return orders


async def publish_orders(
    settings: CommonSettings, orders: Sequence[Sequence[OrderEvent]]
) -> int:
    """Store, then publish keyed by order, as intake's relay does; returns the records
    sent (metrics applies only records the event store holds)."""
    return await publish_events(
        settings, [event for order in orders for event in order]
    )


# --- the API, read directly ---------------------------------------------------------


def applied(payload: JsonDict) -> int:
    """Records the metrics consumer has applied, from the provenance offsets."""
    return sum(int(p["offset"]) + 1 for p in payload["as_of"]["positions"])


async def indicators(
    client: httpx.AsyncClient, headers: dict[str, str], **filters: str
) -> JsonDict:
    response = await client.get(
        "/v1/indicators", params={"window": "all", **filters}, headers=headers
    )
    assert response.status_code == 200, response.text
    payload: JsonDict = response.json()
    return payload


async def caught_up(
    client: httpx.AsyncClient, headers: dict[str, str], records: int
) -> JsonDict:
    """The all-time indicators once the consumer has applied `records` records."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_SECONDS
    while True:
        payload = await indicators(client, headers)
        if applied(payload) >= records:
            assert applied(payload) == records, payload["as_of"]
            return payload
        if loop.time() > deadline:
            raise AssertionError(
                f"metrics applied {applied(payload)} of {records} records "
                f"after {CATCH_UP_SECONDS:.0f} s: {payload['as_of']}"
            )
        await asyncio.sleep(0.1)


# --- the browser --------------------------------------------------------------------


@dataclass
class Feed:
    """The test's order topic and the metrics API that reads it."""

    settings: CommonSettings
    api: httpx.AsyncClient
    headers: dict[str, str]
    records: int = 0

    async def publish(self, orders: Sequence[Sequence[OrderEvent]]) -> JsonDict:
        """Publish, then the all-time indicators once metrics has applied it all."""
        self.records += await publish_orders(self.settings, orders)
        return await caught_up(self.api, self.headers, self.records)

    async def indicators(self, **filters: str) -> JsonDict:
        return await indicators(self.api, self.headers, **filters)


async def first_render(board: Dashboard, feed: Feed, url: str) -> None:
    """It loads with the API's numbers in every tile, the stream connected."""
    everything = await feed.indicators()
    await board.page.goto(url, wait_until="load", timeout=WAIT_MS)
    await board.wait_for("document.body.dataset.loaded === 'true'", "first render")
    assert set(await board.tiles()) == {name for name, _ in TILES}
    await board.expect_tiles(expected_tiles(everything["indicators"]), "first render")
    await board.wait_for(
        "document.getElementById('live').classList.contains('on')",
        "the live stream connects",
    )
    response = await feed.api.get(
        "/v1/technicians/scores", params={"window": "all"}, headers=feed.headers
    )
    ranked = await board.page.eval_on_selector_all(
        "#ranking tbody tr", "(rows) => rows.map((r) => r.cells[1].textContent)"
    )
    assert ranked == [s["technician_id"] for s in response.json()["items"]]
    assert {"tech-zhang", "tech-li", "tech-wang"} <= set(ranked)
    board.problems.assert_none("after the first render")


async def live_update(board: Dashboard, feed: Feed, now: datetime) -> None:
    """A new order shows up through the stream: no reload, one more update."""
    page = board.page
    await page.evaluate("() => { window.__sameDocument = true; }")
    # The stream's first snapshot may still be on its way: let it land first.
    before = await feed.indicators()
    await board.expect_tiles(expected_tiles(before["indicators"]), "before the order")
    updates_before = int(await board.dataset("updates") or 0)
    extra = history(REGION_BUSY, "tech-zhang", start=now - timedelta(minutes=1))
    after = await feed.publish([extra])
    created = before["indicators"]["orders_created"]["value"]
    assert after["indicators"]["orders_created"]["value"] == created + 1
    await board.expect_tiles(expected_tiles(after["indicators"]), "after a new order")
    assert await page.evaluate("() => window.__sameDocument === true"), (
        "the page reloaded instead of updating live"
    )
    updates_after = int(await board.dataset("updates") or 0)
    assert updates_after > updates_before, (updates_before, updates_after)
    board.problems.assert_none("after the live update")


async def region_filter(board: Dashboard, feed: Feed, now: datetime) -> JsonDict:
    """Region + Apply shows that slice, and follows new events of it; its answer."""
    everything = await feed.indicators()
    await board.page.fill("#region", REGION_QUIET)
    await board.page.click("#apply")
    quiet = await feed.indicators(region=REGION_QUIET)
    created = quiet["indicators"]["orders_created"]["value"]
    assert 0 < created < everything["indicators"]["orders_created"]["value"]
    await board.expect_tiles(
        expected_tiles(quiet["indicators"]), f"region {REGION_QUIET}"
    )
    extra = history(REGION_QUIET, "tech-wang", start=now - timedelta(minutes=1))
    await feed.publish([extra])
    quiet = await feed.indicators(region=REGION_QUIET)
    assert quiet["indicators"]["orders_created"]["value"] == created + 1
    await board.expect_tiles(
        expected_tiles(quiet["indicators"]),
        f"region {REGION_QUIET} after a new order there",
    )
    board.problems.assert_none("after filtering")
    return quiet


async def chinese(board: Dashboard, shown: JsonDict) -> None:
    """中文 switches the labels; the numbers stay those of the slice shown."""
    await board.page.click("#lang")
    await board.wait_for(
        """() => document.documentElement.lang === "zh-CN"
            && document.querySelector('[data-indicator="orders_created"] .name')
                 .textContent === "新建工单"
            && document.getElementById("lang").textContent === "English"
        """,
        "Chinese labels",
    )
    assert await board.text("h1") == "服务质量看板"
    assert await board.text("#apply") == "应用"
    assert await board.text('[data-indicator="csat"] .name') == "满意度"
    assert await board.text('[data-indicator="first_time_fix_rate"] .name') == (
        "一次修复率"
    )
    await board.expect_tiles(
        expected_tiles(shown["indicators"], zh=True), "after switching to Chinese"
    )
    board.problems.assert_none("after switching to Chinese")


# The service's alert rule here: any response in the last day breaches it, so the
# service's own evaluation raises an alert per region with demo responses.
ANY_RESPONSE: Final = any_response_rule("dashboard_any_response")


async def raised_alert(feed: Feed, scope: str) -> str:
    """The id of the open alert on `scope`, once the service has raised it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_SECONDS
    while True:
        response = await feed.api.get(
            "/v1/alerts", params={"state": "open"}, headers=feed.headers
        )
        assert response.status_code == 200, response.text
        found = [a for a in response.json()["items"] if a["scope"] == scope]
        if found:
            return str(found[0]["alert_id"])
        if loop.time() > deadline:
            raise AssertionError(f"no alert on {scope} after {CATCH_UP_SECONDS} s")
        await asyncio.sleep(0.5)


async def take_case_steps(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    alert_id: str,
    *,
    action_owner: str,
    result: str,
) -> None:
    """Acknowledge, own (lead-chen), open an action (晚高峰加派技师) and close it,
    as a quality lead would."""
    base = f"/v1/alerts/{alert_id}"
    due = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    steps: list[tuple[str, JsonDict | None]] = [
        ("acknowledge", None),
        ("owner", {"owner": "lead-chen"}),
        ("actions", {"text": "晚高峰加派技师", "due": due, "owner": action_owner}),
    ]
    for step, body in steps:
        response = await api.post(f"{base}/{step}", json=body, headers=headers)
        assert response.status_code in (200, 201), response.text
    (action,) = response.json()["actions"]
    closed = await api.post(
        f"{base}/actions/{action['action_id']}/close",
        json={"result": result},
        headers=headers,
    )
    assert closed.status_code == 200, closed.text


async def alert_case(board: Dashboard, feed: Feed) -> None:
    """An alert acknowledged, owned, with a closed action: its row shows the case,
    and a click opens the case view with the owner, the action and its effect."""
    alert_id = await raised_alert(feed, f"region:{REGION_BUSY}")
    await take_case_steps(
        feed.api, feed.headers, alert_id, action_owner="tech-li", result="done"
    )
    row = f'#alerts tr[data-alert-id="{alert_id}"]'
    await board.page.click("#apply")
    await board.wait_for(
        "(row) => document.querySelector(row)?.dataset.caseState === 'acknowledged'",
        "the alert's row shows its case",
        row,
    )
    summary = await board.text(f"{row} .case")
    assert "lead-chen" in summary
    assert "1/1" in summary
    await board.page.click(row)
    await board.wait_for(
        """(id) => { const c = document.getElementById("case");
             return !c.hidden && c.dataset.alertId === id
               && c.querySelector(".case-actions tr[data-action-id]") !== null; }""",
        "the case view opens",
        alert_id,
    )
    assert await board.text("#case .case-owner") == "lead-chen"
    assert "晚高峰加派技师" in await board.text("#case .case-actions")
    # The rule's window before the action holds the demo responses; the one after
    # it closed has none yet: the test names itself and says why it has no p-value.
    effect = await board.text("#case .effect")
    assert "mann_whitney_u" in effect
    assert "empty sample" in effect
    history = await board.page.eval_on_selector_all(
        "#case .case-history li", "(items) => items.map((i) => i.textContent)"
    )
    assert [h.split(" · ")[1] for h in history] == [
        "alert_acknowledged",
        "alert_owned",
        "alert_action_opened",
        "alert_action_closed",
    ]
    board.problems.assert_none("after opening an alert case")
    await board.page.screenshot(
        path=str(ARTIFACTS / "dashboard-case.png"), full_page=True, timeout=WAIT_MS
    )


async def test_dashboard_shows_live_filtered_bilingual_numbers(
    settings: CommonSettings, tmp_path: Path
) -> None:
    stack = services_stack(settings, tmp_path, ALERT_RULES=json.dumps([ANY_RESPONSE]))
    token = issue_token(settings, role=Role.DISPATCHER, subject="dashboard-e2e")
    now = datetime.now(UTC)
    metrics = stack.start_service("metrics", free_port_block(1))
    try:
        await asyncio.to_thread(wait_ready, metrics.url, timeout=60.0)
        async with (
            httpx.AsyncClient(base_url=metrics.url, timeout=10.0) as api,
            chromium() as browser,
        ):
            feed = Feed(settings, api, {"Authorization": f"Bearer {token}"})
            everything = await feed.publish(demo_orders(now))
            assert everything["indicators"]["orders_created"]["value"] == 8
            board = await open_board(browser)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            try:
                await first_render(board, feed, f"{metrics.url}/#token={token}")
                await live_update(board, feed, now)
                shown = await region_filter(board, feed, now)
                await chinese(board, shown)
                await alert_case(board, feed)
            except BaseException:
                await failure_screenshot(board, "dashboard-failure")
                raise
            await board.page.screenshot(
                path=str(ARTIFACTS / "dashboard.png"), full_page=True, timeout=WAIT_MS
            )
            # Closed before the service stops: an open stream holds its shutdown.
            await board.page.context.close()
    finally:
        stack.stop()
