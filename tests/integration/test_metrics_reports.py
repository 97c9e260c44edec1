"""Period reports (`GET /v1/reports`, `servicetrail report`), weekly and monthly
time series, and the control-chart alerts (issue 14, indicators.md v2 Stability).

Hand-computed fixtures: November 2026 against October in Asia/Shanghai (UTC+8), so
a completion at 2026-10-31T16:00Z is November's and one a second earlier October's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from math import erfc
from typing import Any, Final
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.cli import app as cli
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from services.metrics import cases, stability
from services.metrics.catalog import CATALOG_DEFAULT
from services.metrics.consumer import IndicatorProjector
from services.metrics.rebuild import rebuild_from_ledger
from services.metrics.store import alert, metrics_outbox
from shared.domain.actors import Role
from shared.domain.alert_case import (
    Acknowledged,
    ActionClosed,
    ActionOpened,
    CaseStep,
)
from shared.domain.events import Outcome
from shared.domain.lifecycle import OrderEvent
from shared.domain.quality_stats import chi_square_homogeneity
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.fixtures.stack import service_settings
from tests.integration.metrics_io import (
    JsonDict,
    Timed,
    all_events,
    dispatcher,
    metrics_client,
    publish_events,
    wait_caught_up,
)
from tests.integration.test_metrics_properties import ledger_size

pytestmark = pytest.mark.integration

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
NOVEMBER_START: Final = datetime(2026, 10, 31, 16, tzinfo=UTC)  # Nov 1, 00:00 local


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def done(
    technician: str, region: str, completed: datetime, *, fixed: bool, category: str
) -> Timed:
    """Created an hour before `completed`, accepted after 5 min (response 300 s),
    on site, quoted 10 000 and approved, completed at `completed` for that."""
    created = completed - timedelta(hours=1)
    outcome = Outcome.FIXED if fixed else Outcome.NOT_FIXED
    return (
        Timed(technician, region=region, category=category)
        .created(created)
        .assigned(created + minutes(1))
        .accepted(created + minutes(5))
        .arrived(created + minutes(30))
        .diagnosed(created + minutes(35))
        .priced(created + minutes(40), 10_000)
        .approved(created + minutes(45))
        .completed(completed, 10_000, outcome)
    )


def month_orders() -> list[Timed]:
    """November: north 3 of 4 fixed first time, south 1 of 4 (0.5 overall).
    October: north 2 of 2, south 1 of 2 (0.75). The first November order is
    completed at the very first instant of November in Shanghai, the last October
    one a second before it."""
    mid_november = datetime(2026, 11, 18, 4, tzinfo=UTC)
    mid_october = datetime(2026, 10, 14, 4, tzinfo=UTC)
    orders = [
        done("tech-n", "north", NOVEMBER_START, fixed=True, category="fridge"),
        *(
            done("tech-n", "north", mid_november + minutes(i), fixed=fixed, category=c)
            for i, (fixed, c) in enumerate(
                [(True, "fridge"), (True, "washer"), (False, "washer")]
            )
        ),
        *(
            done("tech-s", "south", mid_november + minutes(i), fixed=i == 0, category=c)
            for i, c in enumerate(["fridge", "washer", "washer", "washer"])
        ),
        done("tech-n", "north", mid_october, fixed=True, category="fridge"),
        done(
            "tech-n",
            "north",
            NOVEMBER_START - timedelta(seconds=1),
            fixed=True,
            category="fridge",
        ),
        done("tech-s", "south", mid_october, fixed=True, category="washer"),
        done(
            "tech-s", "south", mid_october + minutes(1), fixed=False, category="washer"
        ),
    ]
    return orders


async def apply(engine: AsyncEngine, order_events: list[OrderEvent]) -> None:
    async with engine.begin() as conn:
        await IndicatorProjector().apply(order_events, conn)


def line(lines: list[JsonDict], indicator: str, statistic: str = "value") -> JsonDict:
    (found,) = [
        x for x in lines if x["indicator"] == indicator and x["statistic"] == statistic
    ]
    return found


async def test_a_monthly_report_compares_the_month_with_the_previous_one(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    await apply(engine, all_events(month_orders()))
    headers = dispatcher(settings)
    async with metrics_client(settings, run_consumer=False) as client:
        response = await client.get(
            "/v1/reports", params={"period": "month", "at": "2026-11"}, headers=headers
        )
        assert response.status_code == 200, response.text
        report = response.json()
        # A day in the month names the same month.
        by_day = await client.get(
            "/v1/reports",
            params={"period": "month", "at": "2026-11-30"},
            headers=headers,
        )
    assert by_day.json()["indicators"] == report["indicators"]

    period, previous = report["period"], report["previous_period"]
    assert (period["kind"], period["label"], period["time_zone"]) == (
        "month",
        "2026-11",
        "Asia/Shanghai",
    )
    assert datetime.fromisoformat(period["start"]) == NOVEMBER_START
    assert datetime.fromisoformat(period["end"]) == datetime(
        2026, 11, 30, 16, tzinfo=UTC
    )
    assert previous["label"] == "2026-10"
    assert datetime.fromisoformat(previous["end"]) == NOVEMBER_START

    ftf = line(report["indicators"], "first_time_fix_rate")
    assert (ftf["current"], ftf["previous"]) == (0.5, 0.75)
    assert ftf["change"] == pytest.approx(-0.25)
    assert (ftf["current_samples"], ftf["previous_samples"]) == (8, 4)
    assert line(report["indicators"], "orders_completed")["current"] == 8
    assert line(report["indicators"], "orders_completed")["previous"] == 4
    response_p50 = line(report["indicators"], "response_time_s", "p50")
    assert (response_p50["current"], response_p50["change"]) == (300.0, 0.0)
    assert response_p50["unit"] == "seconds"
    # "Now" counts are no period's figure.
    assert not [x for x in report["indicators"] if x["indicator"] == "orders_open"]

    regions = {b["member"]: b["indicators"] for b in report["by_region"]}
    assert set(regions) == {"north", "south"}
    north = line(regions["north"], "first_time_fix_rate")
    assert (north["current"], north["previous"]) == (0.75, 1.0)
    south = line(regions["south"], "first_time_fix_rate")
    assert (south["current"], south["previous"]) == (0.25, 0.5)
    categories = {b["member"]: b["indicators"] for b in report["by_category"]}
    assert set(categories) == {"fridge", "washer"}
    # fridge: north's boundary order + 1 north + 1 south, all fixed.
    fridge = line(categories["fridge"], "first_time_fix_rate")
    assert (fridge["current"], fridge["current_samples"]) == (1.0, 3)

    # Chi-square across regions, by hand: north (3, 1), south (1, 3); expected 2
    # in every cell, so chi2 = 4 x 1 / 2 = 2 with 1 df; p = erfc(1).
    (regional,) = [
        h
        for h in report["homogeneity"]
        if (h["indicator"], h["across"]) == ("first_time_fix_rate", "region")
    ]
    assert regional["statistic"] == pytest.approx(2.0)
    assert regional["degrees_of_freedom"] == 1
    assert regional["p_value"] == pytest.approx(erfc(1.0))
    expected = chi_square_homogeneity({"north": (3, 1), "south": (1, 3)})
    assert regional["p_value"] == pytest.approx(expected.p_value)
    assert regional["rows"] == [
        {"member": "north", "successes": 3, "failures": 1},
        {"member": "south", "successes": 1, "failures": 3},
    ]
    by_technician = [h for h in report["homogeneity"] if h["across"] == "technician_id"]
    assert by_technician[0]["statistic"] == pytest.approx(2.0)

    technicians = {t["technician_id"]: t for t in report["technicians"]}
    assert set(technicians) == {"tech-n", "tech-s"}
    # 4 final completions each, under the 5 needed to rank.
    assert technicians["tech-n"]["final_completions"] == 4
    assert technicians["tech-n"]["insufficient_data"] is True
    # November's weeks (local Mondays Nov 2 .. 30) with data: Nov 16 only. Its
    # baseline (the 12 weeks before) holds October's 5 completions, 4 first-time
    # fixes: centre 0.8, limits 0.8 +- 3 sqrt(0.16 / 7) = [0.346, 1]; 3 / 7 is
    # inside. The weekly median needs 12 earlier weekly medians: no point.
    charts = {c["indicator"]: c for c in report["control_charts"]}
    assert list(charts) == list(stability.CHARTED)
    (point,) = charts["first_time_fix_rate"]["points"]
    assert point["week_start"] == "2026-11-16"
    assert point["value"] == pytest.approx(3 / 7)
    assert (point["centre"], point["samples"], point["signal"]) == (0.8, 7, False)
    assert point["lower"] == pytest.approx(0.8 - 3 * (0.16 / 7) ** 0.5)
    assert charts["response_time_s"]["points"] == []
    # North alone had every October completion fixed first time: centre 1, zero
    # width limits, and 2 of 3 is below them.
    assert [
        (s["indicator"], s["scope"], s["week_start"], s["reason"])
        for s in report["signals"]
    ] == [
        (
            "first_time_fix_rate",
            "region:north",
            "2026-11-16",
            "below the lower limit",
        )
    ]


async def test_reports_render_as_csv_and_html_and_refuse_bad_periods_and_roles(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    await apply(engine, all_events(month_orders()))
    headers = dispatcher(settings)
    as_role = bearer(settings)
    async with metrics_client(settings, run_consumer=False) as client:

        async def get(**params: str) -> Any:
            return await client.get("/v1/reports", params=params, headers=headers)

        as_csv = await get(period="month", at="2026-11", format="csv")
        assert as_csv.status_code == 200, as_csv.text
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert "2026-11" in as_csv.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(as_csv.text)))
        assert rows[0][:3] == ["section", "kind", "label"]
        assert rows[1][:3] == ["period", "month", "2026-11"]
        ftf = [
            r
            for r in rows
            if r[:5] == ["indicators", "all", "", "first_time_fix_rate", "value"]
        ]
        assert ftf == [
            [
                *("indicators", "all", "", "first_time_fix_rate", "value", "rate"),
                *("0.5", "0.75", "-0.25", "8", "4"),
            ]
        ]
        assert next(r[:3] for r in rows if r[:2] == ["indicators", "region"]) == [
            "indicators",
            "region",
            "north",
        ]

        as_html = await get(period="month", at="2026-11", format="html")
        assert as_html.status_code == 200
        assert as_html.headers["content-type"].startswith("text/html")
        page = as_html.text
        assert "<script" not in page
        assert "http://" not in page
        assert "https://" not in page
        assert page.count("<section") == 6
        assert "break-before: page" in page
        for shown in ("50.0 %", "75.0 %", "\u221225.0 pp"):
            assert shown in page
        assert "5 min 00 s" in page  # the median response time

        # An auditor and an admin may read it; a technician or customer may not.
        for role in (Role.AUDITOR, Role.ADMIN):
            allowed = await client.get(
                "/v1/reports",
                params={"period": "week", "at": "2026-W47"},
                headers=as_role(role, "reader"),
            )
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["period"]["label"] == "2026-W47"
        for role in (Role.TECHNICIAN, Role.CUSTOMER):
            refused = await client.get(
                "/v1/reports",
                params={"period": "month"},
                headers=as_role(role, "tech-n"),
            )
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
        unauthenticated = await client.get("/v1/reports", params={"period": "month"})
        assert unauthenticated.status_code == 401

        for params in (
            {"period": "decade"},
            {},
            {"period": "month", "at": "2026-13"},
            {"period": "month", "at": "2026-00"},
            {"period": "week", "at": "2026-W54"},
            {"period": "week", "at": "2026-11"},  # a month's form for a week
            {"period": "quarter", "at": "2026-Q5"},
            {"period": "year", "at": "0000"},
            {"period": "month", "at": "2026-02-30"},
            {"period": "month", "at": "2026-11'; DROP TABLE x"},
            {"period": "month", "at": "\u0662\u0660\u0662\u0666-11"},
            {"period": "month", "at": "2026-11\n"},
            {"period": "month", "at": "2026-11", "format": "pdf"},
        ):
            bad = await get(**params)
            assert bad.status_code == 422, (params, bad.text)
            assert bad.headers["content-type"] == "application/problem+json"
            problem = bad.json()
            assert problem["status"] == 422
            assert problem["errors"], problem

        # Without `at`: the last complete period (in the report time zone).
        latest = await get(period="year")
        assert latest.status_code == 200
        today = datetime.now(UTC).astimezone(SHANGHAI).date()
        assert latest.json()["period"]["label"] == str(today.year - 1)


async def test_hostile_names_stay_text_in_csv_and_html(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # Regions and categories come from events: a spreadsheet must not run one as
    # a formula, a browser must not run one as markup.
    hostile = [
        done(
            "tech-x",
            "=2+3",
            NOVEMBER_START + timedelta(days=3),
            fixed=True,
            category="<script>alert(1)</script>",
        ),
    ]
    await apply(engine, all_events([*month_orders(), *hostile]))
    headers = dispatcher(settings)
    async with metrics_client(settings, run_consumer=False) as client:
        params = {"period": "month", "at": "2026-11"}
        as_csv = await client.get(
            "/v1/reports", params={**params, "format": "csv"}, headers=headers
        )
        as_html = await client.get(
            "/v1/reports", params={**params, "format": "html"}, headers=headers
        )
    members = {r[2] for r in csv.reader(io.StringIO(as_csv.text)) if len(r) > 2}
    assert "'=2+3" in members
    assert "=2+3" not in members
    assert "<script>" not in as_html.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in as_html.text


async def test_time_series_have_weekly_and_monthly_buckets(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    await apply(engine, all_events(month_orders()))
    headers = dispatcher(settings)
    async with metrics_client(settings, run_consumer=False) as client:

        async def series(bucket: str) -> JsonDict:
            response = await client.get(
                "/v1/indicators/timeseries",
                params={
                    "indicator": "first_time_fix_rate",
                    "bucket": bucket,
                    "from": "2026-10-01T00:00:00Z",
                    "to": "2026-12-01T00:00:00Z",
                },
                headers=headers,
            )
            assert response.status_code == 200, response.text
            payload: JsonDict = response.json()
            assert payload["bucket"] == bucket
            return payload

        weekly = {
            datetime.fromisoformat(p["bucket_start"]): p["value"]
            for p in (await series("week"))["points"]
        }
        monthly = {
            datetime.fromisoformat(p["bucket_start"]): p["value"]
            for p in (await series("month"))["points"]
        }
        bad = await client.get(
            "/v1/indicators/timeseries",
            params={"indicator": "first_time_fix_rate", "bucket": "fortnight"},
            headers=headers,
        )
        assert bad.status_code == 422
    # UTC weeks from Monday 00:00: Oct 14 (Wed) -> Oct 12; Oct 31 (Sat) -> Oct 26;
    # Nov 18 (Wed) -> Nov 16.
    assert {k: (v["numerator"], v["denominator"]) for k, v in weekly.items()} == {
        datetime(2026, 10, 12, tzinfo=UTC): (2, 3),
        datetime(2026, 10, 26, tzinfo=UTC): (2, 2),
        datetime(2026, 11, 16, tzinfo=UTC): (3, 7),
    }
    # UTC months: both boundary orders (Oct 31, 15:59:59 and 16:00 UTC) are
    # October's in UTC.
    assert {k: (v["numerator"], v["denominator"]) for k, v in monthly.items()} == {
        datetime(2026, 10, 1, tzinfo=UTC): (4, 5),
        datetime(2026, 11, 1, tzinfo=UTC): (3, 7),
    }


# --- control charts ------------------------------------------------------------------

FIRST_WEEK: Final = date(2026, 6, 1)  # a Monday


def week_orders(week: int, fixed: int, *, total: int = 10) -> list[Timed]:
    """`total` completions on the Wednesday of week `week` after FIRST_WEEK (noon in
    Shanghai), `fixed` of them fixed first time."""
    wednesday = FIRST_WEEK + timedelta(weeks=week, days=2)
    noon = datetime(
        wednesday.year, wednesday.month, wednesday.day, 12, tzinfo=SHANGHAI
    ).astimezone(UTC)
    return [
        done("tech-c", "north", noon + minutes(i), fixed=i < fixed, category="fridge")
        for i in range(total)
    ]


def week_start(week: int) -> datetime:
    day = FIRST_WEEK + timedelta(weeks=week)
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)


async def test_a_jump_after_twelve_stable_weeks_raises_a_control_chart_alert(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    # 12 weeks of 8 in 10 first-time fixes, then a week of 2 in 10. Centre 0.8,
    # limits 0.8 +- 3 sqrt(0.8 x 0.2 / 10) = [0.4205, 1] (clipped): 0.2 is below.
    stable = [o for week in range(12) for o in week_orders(week, 8)]
    await apply(engine, all_events([*stable, *week_orders(12, 2)]))
    now = week_start(13) + timedelta(hours=1)  # week 12 is complete
    async with engine.begin() as conn:
        raised = await stability.evaluate_control_charts(
            conn, now, catalog=CATALOG_DEFAULT, zone=SHANGHAI
        )
    assert sorted(e["subject"] for e in raised) == ["all", "region:north"]
    for event in raised:
        assert event["type"] == "servicetrail.quality.alert_raised"
        data = event["data"]
        assert data["rule"] == "control_chart:first_time_fix_rate"
        assert data["indicator"] == "first_time_fix_rate"
        assert data["value"] == pytest.approx(0.2)
        assert data["threshold"] == pytest.approx(0.8 - 3 * (0.016**0.5))
        assert data["samples"] == 10
        assert data["window_seconds"] == 7 * 86_400
    async with engine.connect() as conn:
        rows = (await conn.execute(select(alert).where(alert.c.state == "open"))).all()
        outbox = (await conn.execute(select(metrics_outbox))).all()
    assert {(r.rule, r.scope) for r in rows} == {
        ("control_chart:first_time_fix_rate", "all"),
        ("control_chart:first_time_fix_rate", "region:north"),
    }
    assert {json.loads(r.value)["id"] for r in outbox} == {e["id"] for e in raised}

    # Judged again the same week: no duplicate.
    async with engine.begin() as conn:
        assert (
            await stability.evaluate_control_charts(
                conn, now + timedelta(hours=5), catalog=CATALOG_DEFAULT, zone=SHANGHAI
            )
            == []
        )

    headers = dispatcher(settings)
    async with metrics_client(settings, run_consumer=False) as client:
        response = await client.get(
            "/v1/reports",
            params={"period": "week", "at": week_start(12).date().isoformat()},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        report = response.json()
    signals = {(s["indicator"], s["scope"]): s for s in report["signals"]}
    assert set(signals) == {
        ("first_time_fix_rate", "all"),
        ("first_time_fix_rate", "region:north"),
    }
    signal = signals[("first_time_fix_rate", "all")]
    assert signal["reason"] == "below the lower limit"
    assert (signal["value"], signal["centre"], signal["samples"]) == (0.2, 0.8, 10)
    assert signal["lower"] == pytest.approx(0.8 - 3 * (0.016**0.5))
    assert signal["upper"] == 1.0
    charts = {c["indicator"]: c for c in report["control_charts"]}
    assert [p["signal"] for p in charts["first_time_fix_rate"]["points"]] == [True]
    # The other charts have a point and no signal: complaints 0 of 10 against a
    # centre of 0, every accept within its target, the median response 300 s.
    assert [p["value"] for p in charts["complaint_rate"]["points"]] == [0.0]
    assert [p["value"] for p in charts["response_time_s"]["points"]] == [300.0]
    opened = [a for a in report["alerts"] if a["opened_in_period"]]
    assert opened == []  # raised at `now`, in the week after the report's week

    # Week 13 back to 8 in 10: baseline weeks 1..12 pool to 90 / 120 = 0.75,
    # limits [0.339, 1]; 0.8 is inside and above the centre (a run of 1): cleared.
    await apply(engine, all_events(week_orders(13, 8)))
    async with engine.begin() as conn:
        cleared = await stability.evaluate_control_charts(
            conn,
            week_start(14) + timedelta(hours=1),
            catalog=CATALOG_DEFAULT,
            zone=SHANGHAI,
        )
    assert sorted((e["type"], e["subject"]) for e in cleared) == [
        ("servicetrail.quality.alert_cleared", "all"),
        ("servicetrail.quality.alert_cleared", "region:north"),
    ]
    assert {e["data"]["alert_id"] for e in cleared} == {
        e["data"]["alert_id"] for e in raised
    }
    async with metrics_client(settings, run_consumer=False) as client:
        month = await client.get(
            "/v1/reports", params={"period": "month", "at": "2026-09"}, headers=headers
        )
    listed = month.json()["alerts"]
    # Raised on Monday Aug 31 (week 13 starts then) ... the month of September
    # holds week 14's Monday, when they cleared.
    assert {(a["scope"], a["closed_in_period"], a["effect"]) for a in listed} == {
        ("all", True, None),
        ("region:north", True, None),
    }

    # A case on the chart's alert: its action is measured on the charted rate over
    # a week before it opened (week 12: 2 of 10) against a week after it closed
    # (week 14: 9 of 10). Pooled 11 / 20; se = sqrt(0.55 x 0.45 x (1/10 + 1/10)).
    await apply(engine, all_events(week_orders(14, 9)))
    chart_alert = next(a for a in listed if a["scope"] == "all")
    action_id = uuid4()
    raised_at = week_start(13) + timedelta(hours=1)
    steps: list[tuple[datetime, CaseStep]] = [
        (raised_at + minutes(1), Acknowledged()),
        (
            raised_at + minutes(2),
            ActionOpened(
                action_id=action_id,
                text="retrain on fridge compressors",
                due=raised_at + timedelta(days=7),
                owner="lead-1",
            ),
        ),
        (
            week_start(14) + timedelta(hours=2),
            ActionClosed(action_id=action_id, result="retrained"),
        ),
    ]
    for at, step in steps:
        async with engine.connect() as conn:
            await cases.record_step(
                conn,
                UUID(chart_alert["alert_id"]),
                step,
                actor="dispatcher:d-1",
                now=at,
            )
    async with metrics_client(settings, run_consumer=False) as client:
        case = await client.get(
            f"/v1/alerts/{chart_alert['alert_id']}", headers=headers
        )
        month = await client.get(
            "/v1/reports", params={"period": "month", "at": "2026-09"}, headers=headers
        )
    effect = case.json()["actions"][0]["effect"]
    expected_p = erfc(0.7 / (0.55 * 0.45 * 0.2) ** 0.5 / 2**0.5)
    assert (effect["indicator"], effect["test"]) == (
        "first_time_fix_rate",
        "two_proportion_z",
    )
    assert (effect["before"], effect["after"]) == (0.2, 0.9)
    assert (effect["samples_before"], effect["samples_after"]) == (10, 10)
    assert effect["p_value"] == pytest.approx(expected_p)
    in_report = next(a for a in month.json()["alerts"] if a["scope"] == "all")
    assert in_report["effect"]["case_state"] == "acknowledged"
    [reported] = in_report["effect"]["actions"]
    assert reported["result"] == "retrained"
    assert reported["effect"]["p_value"] == pytest.approx(expected_p)
    assert "retrain on fridge compressors" in await _html_month(settings, headers)


async def _html_month(settings: CommonSettings, headers: dict[str, str]) -> str:
    async with metrics_client(settings, run_consumer=False) as client:
        response = await client.get(
            "/v1/reports",
            params={"period": "month", "at": "2026-09", "format": "html"},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    return response.text


async def test_a_report_after_a_rebuild_equals_the_live_one(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Any
) -> None:
    order_events = all_events(month_orders())
    headers = dispatcher(settings)
    params = {"period": "month", "at": "2026-11"}
    async with (
        running(create_ledger(service_settings(settings, LedgerSettings))),
        metrics_client(settings) as client,
    ):
        published = await publish_events(settings, order_events)
        await wait_caught_up(client, headers, published)
        async with asyncio.timeout(30):
            while await ledger_size(engine) < len(order_events):
                await asyncio.sleep(0.1)
        live = (await client.get("/v1/reports", params=params, headers=headers)).json()
        async with engine.begin() as conn:
            assert await rebuild_from_ledger(conn) == len(order_events)
        rebuilt = (
            await client.get("/v1/reports", params=params, headers=headers)
        ).json()
    assert live["indicators"], live
    assert {k: v for k, v in rebuilt.items() if k != "as_of"} == {
        k: v for k, v in live.items() if k != "as_of"
    }

    # The command writes the same report (its format from the file's suffix).
    out = tmp_path / "november.json"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        [
            *("report", "--period", "month", "--at", "2026-11"),
            *("--out", str(out), "--database-url", settings.database_url),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert {k: v for k, v in written.items() if k != "as_of"} == {
        k: v for k, v in live.items() if k != "as_of"
    }
    refused = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        [
            *("report", "--period", "month", "--at", "2026-13"),
            *("--out", str(out), "--database-url", settings.database_url),
        ],
    )
    assert refused.exit_code == 2
