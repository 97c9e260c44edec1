"""`servicetrail metrics whatif`: indicators, ranking and alerts from the ledger
under another policy, side by side with the live one, changing nothing.

The history is test_metrics_indicators' seven hand-computed orders. The live policy
is the environment's (the defaults, a lenient score_min_samples and one extra alert
rule); the what-if FILE moves the normal accept target to 245 minutes (O7, accepted
after 245 minutes, then meets it: 6 of 6 instead of 5 of 6), changes the weights,
and replaces the alert rules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.cli import app as cli
from services.ledger.app import create_app as create_ledger
from services.ledger.settings import LedgerSettings
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.fixtures.stack import service_settings
from tests.integration.metrics_io import (
    Timed,
    all_events,
    assert_indicators,
    dispatcher,
    get_indicators,
    metrics_client,
    publish_events,
    reference_indicators,
    wait_caught_up,
)
from tests.integration.test_metrics_indicators import d2, fixture_orders
from tests.integration.test_metrics_properties import ledger_size

pytestmark = pytest.mark.integration

AT: Final = "2026-04-01T00:00:00+00:00"  # after every target of the history passed
OVERRUN_RULE: Final = {
    "indicator": "overrun_rate",
    "statistic": "value",
    "scope": "category",
    "window": "P60D",
    "above": True,
    "threshold": 0.0,
    "min_samples": 1,
}
PROPOSED: Final = {
    "sla_accept_minutes": {"emergency": 15, "urgent": 60, "normal": 245},
    "score_weights": {
        "quality": 0.1,
        "attitude": 0.1,
        "response": 0.6,
        "efficiency": 0.1,
        "satisfaction": 0.1,
    },
    "score_min_samples": 1,
    "alert_rules": [{"name": "any_overrun", **OVERRUN_RULE}],
}


def whatif(*args: str, database_url: str) -> tuple[int, str]:
    """`servicetrail metrics whatif ARGS`: its exit code and output."""
    result = CliRunner().invoke(
        cli, ["metrics", "whatif", *args], env={"DATABASE_URL": database_url}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


async def dump(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every row of every metrics table (the outbox, alerts and offsets included),
    as PostgreSQL's text of the row, sorted."""
    async with engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'metrics' AND table_type = 'BASE TABLE'"
                )
            )
        ).scalars()
        found = {}
        for table in sorted(tables):
            rows = await conn.execute(
                text(
                    f'SELECT t::text FROM metrics."{table}" AS t ORDER BY 1'
                )  # names: the catalog's
            )
            found[table] = list(rows.scalars())
    return found


def ranks(items: Sequence[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {i["technician_id"]: (i["rank"], i["composite"]) for i in items}


async def test_whatif_shows_the_other_policy_and_changes_nothing(
    settings: CommonSettings,
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The live policy, from the environment as the service reads it.
    monkeypatch.setenv("SCORE_MIN_SAMPLES", "1")
    monkeypatch.setenv(
        "ALERT_RULES", json.dumps([{"name": "overrun_watch", **OVERRUN_RULE}])
    )
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(PROPOSED))
    order_events = all_events(fixture_orders())
    headers = dispatcher(settings)
    async with (
        running(create_ledger(service_settings(settings, LedgerSettings))),
        metrics_client(settings) as client,
    ):
        await publish_events(settings, order_events)
        await wait_caught_up(client, headers, len(order_events))
        async with asyncio.timeout(30):
            while await ledger_size(engine) < len(order_events):
                await asyncio.sleep(0.1)
        live_api = await get_indicators(client, headers, window="all")
        live_scores = (
            await client.get(
                "/v1/technicians/scores", params={"window": "all"}, headers=headers
            )
        ).json()
        before = await dump(engine)

        code, output = await asyncio.to_thread(
            whatif,
            *("--policy", str(policy_file), "--window", "all", "--at", AT, "--json"),
            database_url=settings.database_url,
        )
        assert code == 0, output
        report = json.loads(output)
        code, table = await asyncio.to_thread(
            whatif,
            *("--policy", str(policy_file), "--window", "all", "--at", AT),
            database_url=settings.database_url,
        )
        assert code == 0, table

        # Nothing live changed: not a fact, a rollup, an offset, an alert, nor an
        # outbox message (none escaped to be published either).
        assert await dump(engine) == before
        assert before["alert"] == []

        # The service itself under the what-if policy, for comparison.
        async with metrics_client(settings, run_consumer=False, **PROPOSED) as other:
            proposed_api = await get_indicators(other, headers, window="all")
            proposed_scores = (
                await other.get(
                    "/v1/technicians/scores", params={"window": "all"}, headers=headers
                )
            ).json()

        # The live consumer goes on.
        late = (
            Timed("tech-b", region="shanghai-pudong")
            .created(d2(9))
            .assigned(d2(9, 1))
            .accepted(d2(9, 5))
        )
        await publish_events(settings, late.events)
        after = await wait_caught_up(client, headers, len(order_events) + 3)
        assert after["indicators"]["orders_created"]["value"] == 8

    indicators = report["indicators"]
    live = {name: value["live"] for name, value in indicators.items()}
    proposed = {name: value["what_if"] for name, value in indicators.items()}
    # Live: the brute-force reference and the live service agree with it.
    assert_indicators(live, reference_indicators(order_events), "live")
    assert_indicators(live, live_api["indicators"], "live API")
    # What-if: O7 meets the 245-minute target; nothing else moves.
    assert live["sla_accept_rate"] == {
        "value": 5 / 6,
        "numerator": 5,
        "denominator": 6,
    }
    assert proposed["sla_accept_rate"] == {
        "value": 1.0,
        "numerator": 6,
        "denominator": 6,
    }
    assert report["changed"] == ["sla_accept_rate"]
    # ... as the service itself answers under that policy.
    assert_indicators(proposed, proposed_api["indicators"], "what-if API")
    assert report["policy_version"] == {
        "live": live_api["as_of"]["policy_version"],
        "what_if": proposed_api["as_of"]["policy_version"],
    }

    # The ranking side by side, each as that policy's service ranks.
    by_technician = {row["technician_id"]: row for row in report["ranking"]}
    assert {
        t: (row["live_rank"], row["live_composite"]) for t, row in by_technician.items()
    } == ranks(live_scores["items"])
    assert {
        t: (row["what_if_rank"], row["what_if_composite"])
        for t, row in by_technician.items()
    } == ranks(proposed_scores["items"])
    assert any(
        row["live_composite"] != row["what_if_composite"]
        for row in by_technician.values()
    )

    # Alerts: overrun_rate per category over 60 days at AT. Air conditioners: O2
    # (21 000 over 20 000) and O5 (6 300 over 6 000) both overran: 1.0 > 0;
    # washing machines 0 of 2. The live rule is gone under the what-if policy.
    assert report["alerts"]["raised"] == [
        {"rule": "any_overrun", "scope": "category:air_conditioner", "value": 1.0}
    ]
    assert report["alerts"]["cleared"] == [
        {"rule": "overrun_watch", "scope": "category:air_conditioner", "value": 1.0}
    ]

    # The human table says the same.
    assert "sla_accept_rate" in table
    for shown in ("0.8333", "+0.1667", "any_overrun", "raised", "overrun_watch"):
        assert shown in table


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # CR of this matrix is far above 0.10.
        (
            {
                "score_pairwise": [
                    [1, 9, 1, 1, 1],
                    ["1/9", 1, 9, 1, 1],
                    [1, "1/9", 1, 9, 1],
                    [1, 1, "1/9", 1, 9],
                    [1, 1, 1, "1/9", 1],
                ]
            },
            "consisten",
        ),
        ({"sla_accept_minutes": {"normal": -1}}, "sla_accept_minutes"),
        ({"database_url": "postgresql://elsewhere/db"}, "not policy settings"),
        ({"peak_hours": {"time_zone": "Mars/Olympus"}}, "time zone"),
        ([1, 2], "JSON object"),
    ],
)
def test_an_invalid_policy_file_is_refused_with_exit_2(
    tmp_path: Path, content: Any, message: str
) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(content))
    code, output = whatif(
        "--policy",
        str(policy_file),
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )
    assert code == 2, output
    assert message in " ".join(output.split()), output


def test_an_unreadable_file_or_window_is_refused_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    code, output = whatif("--policy", str(missing), database_url="postgresql://x/y")
    assert (code, "cannot read" in output) == (2, True), output
    (tmp_path / "ok.json").write_text("{}")
    for window in ("30x", "0d", "-1d", "999999d"):
        code, output = whatif(
            "--policy",
            str(tmp_path / "ok.json"),
            "--window",
            window,
            database_url="postgresql://x/y",
        )
        assert code == 2, (window, output)
