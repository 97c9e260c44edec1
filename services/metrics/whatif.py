"""What-if replay (`servicetrail metrics whatif --policy FILE --window 30d`).

Recomputes the indicators, the technician ranking and the alerts from the ledger
under another indicator policy, side by side with the live policy, without touching
live state.

How: one transaction that is always rolled back. Inside it the metrics tables are
rebuilt from the ledger (`rebuild.rebuild_from_ledger`), then both policies' figures
are computed over that one replay, so a difference is the policy's alone (not the
consumer being ahead of or behind the ledger). Each policy's alert rules are
evaluated in a savepoint that is rolled back too, against the alerts open now; no
alert row and no outbox message outlives the transaction, so nothing is published.

The rebuild takes the consumer's offset rows FOR UPDATE, as `metrics rebuild` does:
the live consumer pauses (its next batch waits) until the what-if ends, and then
goes on from where it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics import alerts
from services.metrics.domain import SliceFilter
from services.metrics.policy import IndicatorPolicy, policy_from
from services.metrics.queries import compute_indicators
from services.metrics.rebuild import align_deadlines, rebuild_from_ledger
from services.metrics.schemas import TechnicianScore
from services.metrics.scores import technician_numbers
from services.metrics.settings import MetricsSettings
from services.metrics.store import alert

POLICY_KEYS: Final = frozenset(
    {
        "indicator_policy_label",
        "sla_accept_minutes",
        "sla_arrive_minutes",
        "eta_kept_tolerance_s",
        "score_weights",
        "dimension_weights",
        "score_pairwise",
        "score_min_samples",
        "alert_rules",
        "peak_hours",
    }
)
"""The MetricsSettings fields a policy FILE may give (the rest are not policy)."""

_WINDOW: Final = re.compile(r"([1-9][0-9]{0,4})([hd])")


class PolicyFileError(ValueError):
    """A policy FILE that cannot be read or is not a valid policy."""


def read_policy(path: Path) -> MetricsSettings:
    """The settings a policy FILE describes (JSON, the metrics settings' field
    names); fields it leaves out come from the environment, as at start-up.

    Raises:
        PolicyFileError: unreadable, not a JSON object, a key that is not a policy
            field, or refused by MetricsSettings (e.g. a pairwise CR >= 0.10).
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicyFileError(f"cannot read {path}: {err}") from None
    if not isinstance(content, dict):
        raise PolicyFileError(f"{path} must hold a JSON object of policy settings")
    unknown = sorted(set(content) - POLICY_KEYS)
    if unknown:
        raise PolicyFileError(
            f"{path}: not policy settings: {', '.join(map(str, unknown))[:500]}"
            f" (one of {', '.join(sorted(POLICY_KEYS))})"
        )
    try:
        return MetricsSettings(**content)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}"
            for e in err.errors()
        )
        raise PolicyFileError(f"{path} is not a valid policy: {problems}") from None


def proposed_policy(path: Path) -> IndicatorPolicy:
    """The policy a FILE describes (see `read_policy`)."""
    return policy_from(read_policy(path))


def parse_window(text: str) -> timedelta | None:
    """`30d`, `7d`, `24h` (None: `all`, every measurement)."""
    if text == "all":
        return None
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError(f"a window is like 30d, 24h or all, got {text[:40]!r}")
    number, unit = int(match[1]), match[2]
    return timedelta(days=number) if unit == "d" else timedelta(hours=number)


# --- the figures of one policy ----------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One policy's numbers over the replay."""

    version: str
    indicators: dict[str, Any]
    ranking: list[TechnicianScore]
    # Open after this policy's rules are evaluated: (rule, scope) -> value.
    open_alerts: dict[tuple[str, str], float | None]


async def _open_alerts(conn: AsyncConnection) -> dict[tuple[str, str], float | None]:
    rows = await conn.execute(
        select(alert.c.rule, alert.c.scope, alert.c.value).where(
            alert.c.state == "open"
        )
    )
    return {(r.rule, r.scope): r.value for r in rows}


async def _figures(
    conn: AsyncConnection,
    policy: IndicatorPolicy,
    where: SliceFilter,
    *,
    now: datetime,
    open_now: Mapping[tuple[str, str], float | None],
) -> Figures:
    where = replace(where, peak_hours=policy.peak_hours)
    indicators = await compute_indicators(conn, where, policy.catalog, sla=policy.sla)
    numbers = await technician_numbers(conn, where, policy)
    still_open = dict(open_now)
    async with conn.begin_nested() as savepoint:
        emitted = await alerts.evaluate(
            conn,
            now,
            rules=policy.alert_rules,
            catalog=policy.catalog,
            sla=policy.sla,
            peak_hours=policy.peak_hours,
        )
        await savepoint.rollback()
    for event in emitted:
        data = event["data"]
        key = (data["rule"], data["scope"])
        if event["type"].endswith("alert_raised"):
            still_open[key] = data["value"]
        else:
            still_open.pop(key, None)
    return Figures(
        version=policy.version,
        indicators=indicators,
        ranking=numbers.listing(policy.scoring),
        open_alerts=still_open,
    )


@dataclass(frozen=True)
class WhatIf:
    start: datetime | None
    end: datetime
    replayed: int  # ledger entries
    live: Figures
    what_if: Figures

    def as_json(self) -> dict[str, Any]:
        """Everything side by side, for scripts (`--json`)."""
        names = list(self.live.indicators)
        return {
            "window": {
                "start": None if self.start is None else self.start.isoformat(),
                "end": self.end.isoformat(),
            },
            "replayed_events": self.replayed,
            "policy_version": {
                "live": self.live.version,
                "what_if": self.what_if.version,
            },
            "indicators": {
                name: {
                    "live": self.live.indicators[name],
                    "what_if": self.what_if.indicators[name],
                }
                for name in names
            },
            "changed": [
                name
                for name in names
                if self.live.indicators[name] != self.what_if.indicators[name]
            ],
            "ranking": self.ranking(),
            "alerts": self.alerts(),
        }

    def ranking(self) -> list[dict[str, Any]]:
        """Every technician of either ranking, by what-if rank (unranked last)."""
        live = {s.technician_id: s for s in self.live.ranking}
        what_if = {s.technician_id: s for s in self.what_if.ranking}

        def order(technician: str) -> tuple[int, int, str]:
            ranks = [
                s.rank
                for s in (what_if.get(technician), live.get(technician))
                if s is not None and s.rank is not None
            ]
            return (0 if ranks else 1, ranks[0] if ranks else 0, technician)

        rows = []
        for technician in sorted(set(live) | set(what_if), key=order):
            before, after = live.get(technician), what_if.get(technician)
            live_rank = None if before is None else before.rank
            new_rank = None if after is None else after.rank
            rows.append(
                {
                    "technician_id": technician,
                    "live_rank": live_rank,
                    "what_if_rank": new_rank,
                    "rank_change": None
                    if live_rank is None or new_rank is None
                    else live_rank - new_rank,  # positive: moves up
                    "live_composite": None if before is None else before.composite,
                    "what_if_composite": None if after is None else after.composite,
                    "live_grade": None if before is None else before.fuzzy.grade,
                    "what_if_grade": None if after is None else after.fuzzy.grade,
                }
            )
        return rows

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Alerts open under what-if but not live (raised), and the reverse."""
        live, what_if = self.live.open_alerts, self.what_if.open_alerts

        def listed(
            keys: set[tuple[str, str]], values: Mapping[tuple[str, str], Any]
        ) -> list[dict[str, Any]]:
            return [
                {"rule": rule, "scope": scope, "value": values[(rule, scope)]}
                for rule, scope in sorted(keys)
            ]

        return {
            "raised": listed(set(what_if) - set(live), what_if),
            "cleared": listed(set(live) - set(what_if), live),
            "live_open": listed(set(live), live),
            "what_if_open": listed(set(what_if), what_if),
        }


async def what_if(
    conn: AsyncConnection,
    *,
    live: IndicatorPolicy,
    proposed: IndicatorPolicy,
    window: timedelta | None,
    now: datetime,
    on_progress: Callable[[int, int], None] | None = None,
) -> WhatIf:
    """Both policies' figures over a replay of the ledger, the window ending at
    `now` (None: all time); changes nothing (see the module docstring).
    `on_progress(entries replayed, entries)` follows the replay, the long part."""
    start = None if window is None else now - window
    where = SliceFilter(start=start, end=None if window is None else now, now=now)
    transaction = await conn.begin()
    try:
        replayed = await rebuild_from_ledger(conn, on_progress=on_progress)
        open_now = await _open_alerts(conn)
        figures = []
        for policy in (live, proposed):
            # The stored SLA deadlines follow the policy's targets and calendars.
            await align_deadlines(conn, policy.sla)
            figures.append(
                await _figures(conn, policy, where, now=now, open_now=open_now)
            )
    finally:
        await transaction.rollback()  # always: the live state stays as it was
    return WhatIf(start, now, replayed, *figures)


def live_policy() -> IndicatorPolicy:
    """The policy the metrics service runs with: its settings from the environment."""
    return policy_from(MetricsSettings())


# --- the headline of each indicator, for the table ----------------------------------------


def headline(value: Mapping[str, Any]) -> tuple[str, float | None]:
    """(statistic, number) that stands for an indicator value in the table."""
    statistic = "p90" if "p90" in value else "value"
    number = value.get(statistic)
    return statistic, None if number is None else float(number)


# --- the tables -----------------------------------------------------------------------


def _number(value: float | None, sign: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:  # seconds and counts: whole, grouped
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.4g}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "" if before == after else "n/a"
    return "" if before == after else _number(after - before, "+")


def tables(result: WhatIf) -> list[Table]:
    """Indicators, ranking and alerts side by side, as rich tables."""
    live, what_if = result.live, result.what_if
    numbers = Table(
        title=f"Indicators ({live.version} -> {what_if.version})", show_lines=False
    )
    for column in ("indicator", "live", "what-if", "change"):
        numbers.add_column(column, justify="left" if column == "indicator" else "right")
    for name, value in live.indicators.items():
        statistic, before = headline(value)
        _, after = headline(what_if.indicators[name])
        label = name if statistic == "value" else f"{name} {statistic}"
        numbers.add_row(label, _number(before), _number(after), _change(before, after))

    ranking = Table(title="Ranking")
    for column in ("technician", "live", "what-if", "change", "composite"):
        ranking.add_column(
            column, justify="left" if column == "technician" else "right"
        )
    for row in result.ranking():
        moved = row["rank_change"]
        ranking.add_row(
            row["technician_id"],
            str(row["live_rank"] or "-"),
            str(row["what_if_rank"] or "-"),
            "" if not moved else f"{moved:+d}",
            f"{_number(row['live_composite'])} -> {_number(row['what_if_composite'])}",
        )

    changes = Table(title="Alerts under the what-if policy")
    for column in ("", "rule", "scope", "value"):
        changes.add_column(column)
    found = result.alerts()
    for verb in ("raised", "cleared"):
        for item in found[verb]:
            changes.add_row(verb, item["rule"], item["scope"], _number(item["value"]))
    return [numbers, ranking, changes]
