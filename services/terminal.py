"""What the `servicetrail` command shows: output, progress bars, tables.

Results go to stdout: rich tables for people, or with `--json` one stable JSON
document and nothing else, for scripts. Progress bars go to stderr, and only to a
terminal: a pipe, a log file or `--json`/`--quiet` gets none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeAlias

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

out: Final = Console()
err: Final = Console(stderr=True)


class Advance(Protocol):
    """Report progress: units done, and the total once it is known."""

    def __call__(self, done: int, total: int | None = None) -> None: ...


def _unseen(done: int, total: int | None = None) -> None:
    """Progress nobody watches."""


Row: TypeAlias = Mapping[str, Any]


def print_json(document: object) -> None:
    """`document` as indented JSON with sorted keys: the same bytes for the same data."""
    print_line(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True))


def print_line(text: str) -> None:
    """One line exactly as given: never wrapped, styled or rewritten (rich would turn
    `:smile:` in a customer's comment into an emoji), for tokens, links and JSON."""
    out.file.write(f"{text}\n")
    out.file.flush()


def fail(message: str) -> None:
    """An error for people, on stderr."""
    err.print(message, style="red", markup=False, highlight=False)


@contextmanager
def progress(
    description: str, *, total: int | None = None, quiet: bool = False
) -> Iterator[Advance]:
    """A progress bar on stderr while the block runs; a no-op when not wanted."""
    if quiet or not err.is_terminal:
        yield _unseen
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(done: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.update(task, completed=done)

        yield advance
        finished = bar.tasks[0].total
        if finished is not None:
            bar.update(task, completed=finished)


# --- tables -------------------------------------------------------------------------


def _instant(value: str) -> str:
    """An RFC 3339 instant in UTC to the second, as people read it."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if column.endswith("_at") and isinstance(value, str):
        return _instant(value)
    return str(value)


def table(
    rows: Sequence[Row], columns: Sequence[str], *, title: str | None = None
) -> Table:
    """`rows` (JSON objects) as a table of the named fields."""
    shown = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        # Ids must stay whole to be copied: never shrunk, never folded.
        whole = column in WHOLE_COLUMNS
        shown.add_column(
            HEADERS.get(column, column),
            no_wrap=whole,
            min_width=UUID_LENGTH if whole else None,
        )
    for row in rows:
        # Text, not markup: what people typed shows as typed (`[b]`, `:smile:`).
        shown.add_row(*(Text(_cell(column, row.get(column))) for column in columns))
    return shown


def fields(document: Row, *, title: str) -> Table:
    """One object's fields as name/value rows (nested ones as compact JSON)."""
    shown = Table(title=title, show_header=False)
    shown.add_column("field", style="bold", no_wrap=True)
    shown.add_column("value")
    for name, value in document.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        text = (
            json.dumps(value, ensure_ascii=False)
            if isinstance(value, dict | list)
            else _cell(name, value)
        )
        shown.add_row(name, Text(text))
    return shown


UUID_LENGTH: Final = 36
HEADERS: Final = {
    "order_id": "order",
    "alert_id": "alert",
    "orderversion": "v",
    "customer_id": "customer",
    "technician_id": "technician",
    "created_at": "created (UTC)",
    "raised_at": "raised (UTC)",
    "time_at": "time (UTC)",
    "case_state": "case",
}
WHOLE_COLUMNS: Final = frozenset({"order_id", "alert_id"})
ORDER_COLUMNS: Final = (
    "order_id",
    "status",
    "orderversion",
    "customer_id",
    "technician_id",
    "created_at",
)
ALERT_COLUMNS: Final = (
    "alert_id",
    "rule",
    "scope",
    "state",
    "value",
    "threshold",
    "case_state",
    "raised_at",
)
TIMELINE_COLUMNS: Final = ("orderversion", "type", "time_at", "what")


def _money(lines: Row) -> str:
    return f"{lines['total'] / 100:.2f} {lines['currency']}"


def _request(request: Row) -> str:
    return (
        f"{request['category']} in {request['region']} ({request['urgency']}): "
        f"{request['description']}"
    )


# What each part of a timeline entry says, in a few words, in this order.
_SAYINGS: Final[tuple[tuple[str, Callable[[Any], str]], ...]] = (
    ("request", _request),
    ("technician", lambda t: f"{t.get('name') or ''} ({t['technician_id']})"),
    ("eta", lambda eta: f"ETA {_instant(eta)}"),
    ("diagnosis", lambda d: f"{d['fault_code']}: {d['summary']}"),
    ("quote", lambda quote: f"quote {_money(quote)}"),
    ("completion", lambda c: f"{c['outcome']}, {_money(c)}"),
    ("rating", lambda rating: f"rated {rating['score']}/5"),
    ("complaint", lambda c: c.get("text") or c.get("resolution") or ""),
    ("reason", str),
    ("note", str),
)


def _what(entry: Row) -> str:
    """The part of a timeline entry its type fills, in a few words."""
    said = (say(entry[key]) for key, say in _SAYINGS if entry.get(key))
    return "; ".join(words for words in said if words)


def timeline_rows(timeline: Row) -> list[dict[str, Any]]:
    """Each timeline entry as a row: version, type, time and what it says."""
    return [
        {
            "orderversion": entry["orderversion"],
            "type": entry["type"],
            "time_at": entry["time"],
            "what": _what(entry),
        }
        for entry in timeline["entries"]
    ]
