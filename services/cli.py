"""The `servicetrail` command: run the stack, issue tokens, migrate, audit, and read
and act on the running stack (orders, alerts, the dashboard).

Commands parse their arguments and call one function: the stack's home is found by
`services.stack.home`, HTTP calls go through `services.stack.client`, and what people
see (tables, JSON, progress bars) comes from `services.terminal`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import signal
import threading
import time
import webbrowser
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit
from uuid import UUID

import typer
from rich.console import RenderableType
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services import terminal
from services.stack import Stack, read_secret
from services.stack.client import (
    ProblemAnswer,
    StackClient,
    StackUnreachable,
    dashboard_link,
    mint_token,
    operator_subject,
    role_tokens,
    stack_client,
    token_for,
    write_tokens_file,
)
from services.stack.home import StackNotFound, find_home, home_to_start, recorded_stack
from services.stack.postgres import SUPERUSER
from shared.db.engine import create_engine
from shared.db.roles import SERVICE_ROLES, set_role_passwords, url_as, without_password
from shared.domain.actors import Role
from shared.domain.lifecycle import OrderStatus
from shared.serve import tune_collector
from shared.settings import CommonSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from services.ledger.audit import SignedHead
    from services.ledger.signing import TreeSigner
    from services.simulator import Summary

app = typer.Typer(
    help="ServiceTrail: event-sourced service tracking for home-repair after-sales.",
    no_args_is_help=True,
    add_completion=False,
)
console = terminal.out
T = TypeVar("T")

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="The stack's home (its .stack/, or the directory holding it); "
        "default: SERVICETRAIL_HOME, else the nearest .stack/ here or above.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]


@contextmanager
def _stack_errors() -> Iterator[None]:
    """Exit 2 when there is no stack (or it is down), 1 when a service refused."""
    try:
        yield
    except (StackNotFound, StackUnreachable) as error:
        terminal.fail(str(error))
        raise typer.Exit(2) from None
    except ProblemAnswer as error:
        terminal.fail(str(error))
        raise typer.Exit(1) from None


def _home(explicit: Path | None) -> Path:
    """The running stack's home, or exit 2 saying no stack runs here."""
    with _stack_errors():
        return find_home(explicit)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="Post demo orders once the stack is up.")
    ] = False,
    demo_orders: Annotated[
        int | None,
        typer.Option(
            help="About how many orders the demo history holds [default: 300].", min=1
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(
            help="Where the stack keeps its data and secrets; default: "
            "SERVICETRAIL_HOME, else ./.stack.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start PostgreSQL, the broker, migrations and the four services; Ctrl-C stops all."""
    stack = Stack.from_environment(home_to_start(home))
    if demo:
        from services.demo_seeding import DEMO_STACK_ENVIRONMENT

        stack.extra_env.update(DEMO_STACK_ENVIRONMENT)
    signal.signal(signal.SIGTERM, _raise_stop)
    started = time.monotonic()
    try:
        with console.status(
            "Starting PostgreSQL and the broker, applying migrations..."
        ):
            stack.start_infrastructure()
        with console.status("Starting intake, dispatch, ledger and metrics..."):
            stack.start_services()
            stack.write_state()
            stack.wait_until_healthy()
        _print_ready(stack, time.monotonic() - started)
        if demo:
            _post_demo(stack, demo_orders)
        console.print("Press Ctrl-C to stop.")
        while True:
            for name in stack.supervise_once():
                console.print(f"[yellow]{name} exited; restarted it[/yellow]")
            time.sleep(1.0)
    except (KeyboardInterrupt, _Stop):
        console.print("Stopping...")
    except Exception as err:
        console.print(f"[red]The stack could not start:[/red] {err}")
        stack.stop()
        raise typer.Exit(1) from None
    stack.stop()
    console.print("Stopped.")


def _print_ready(stack: Stack, seconds: float) -> None:
    table = Table(title=f"ServiceTrail is up ({seconds:.1f} s)")
    table.add_column("service")
    table.add_column("URL")
    for name, service in stack.services.items():
        table.add_row(name, service.url)
    table.add_row("PostgreSQL", without_password(stack.database_url or ""))
    table.add_row("Kafka", stack.kafka_bootstrap or "")
    table.add_row("home", str(stack.home))
    console.print(table)
    # Tokens and the link print whole, one per line: a wrapped token cannot be copied.
    tokens = role_tokens(stack.home)
    path = write_tokens_file(stack.home, tokens)
    terminal.print_line(f"Tokens (valid 12 h), also in {path}:")
    for token in tokens:
        for line in token.lines():
            terminal.print_line(line)
    signed_in = {t.role: t.token for t in tokens}
    console.print(
        "Dashboard (signed in as the dispatcher, ledger checks as the auditor):"
    )
    terminal.print_line(
        dashboard_link(
            f"{stack.services['metrics'].url}/",
            signed_in[Role.DISPATCHER],
            signed_in[Role.AUDITOR],
        )
    )


def _run_simulation(
    intake_url: str,
    dispatch_url: str,
    *,
    home: Path,
    orders: int,
    rate: float,
    linger: bool,
    late_arrival_s: float | None = None,
) -> Summary:
    """Simulate with a progress bar until every order got as far as it goes now.

    With `linger`, the late technicians' visits go on in a background thread while
    the caller carries on (the stack keeps running); without it, they are awaited.
    """
    from services.simulator import LATE_ARRIVAL_S, Endpoints, simulate

    posted: queue.Queue[Summary] = queue.Queue()
    with Progress(console=console) as progress:
        task = progress.add_task("Simulating orders", total=orders)
        run = functools.partial(
            simulate,
            Endpoints(intake=intake_url, dispatch=dispatch_url),
            lambda role, subject: mint_token(home, role=Role(role), subject=subject),
            orders=orders,
            rate=rate,
            on_progress=lambda done: progress.update(task, completed=done),
            on_posted=posted.put,
            late_arrival_s=LATE_ARRIVAL_S if late_arrival_s is None else late_arrival_s,
        )
        if not linger:
            return asyncio.run(run())
        threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
        return posted.get()


def _report_demo(summary: Summary, *, lingering: bool) -> None:
    from services.simulator import LATE_ETA_MINUTES, UNCOVERED_REGION

    console.print(
        f"Demo: {summary.completed} of {summary.orders} orders completed "
        f"({summary.follow_ups} after a follow-up visit); the rest stopped early."
    )
    console.print(
        f"  {summary.silent} technicians never answer: dispatch expires their "
        "assignment when the accept target passes (15 min for emergencies) and "
        "offers the order to the next technician."
    )
    console.print(
        f"  {summary.uncovered} orders come from {UNCOVERED_REGION}, which nobody "
        "covers: unassignable, and unaccepted past their target."
    )
    for failure in summary.failures[:5]:
        console.print(f"  [yellow]an order stopped:[/yellow] {failure}")
    arrival = "arrive" if lingering else "arrived"
    console.print(
        f"  {summary.late} technicians promised to be there in "
        f"{LATE_ETA_MINUTES} min and {arrival} {summary.late_arrival_s / 60:g} min "
        "later (missed ETAs when that is over 15 min past the promise)."
    )


def _post_demo(stack: Stack, count: int | None) -> None:
    from services.demo_history import DEMO_MAX_EVENT_AGE
    from services.demo_seeding import seed

    console.print(
        f"[yellow]Demo stack: event times up to {DEMO_MAX_EVENT_AGE} old are "
        "accepted (MAX_EVENT_AGE), for the backdated history; without --demo the "
        "default 72 h holds.[/yellow]"
    )
    with console.status("Posting 30 days of demo history..."):
        seeded = seed(
            stack,
            lambda role, subject: mint_token(
                stack.home, role=Role(role), subject=subject
            ),
            orders=count,
        )
    for line in seeded.story():
        console.print(line)


@app.command()
def simulate(
    orders: Annotated[int, typer.Option(help="How many orders.", min=1)] = 100,
    rate: Annotated[float, typer.Option(help="New orders per second.", min=0.1)] = 5.0,
    intake_url: Annotated[
        str, typer.Option(help="Intake base URL.")
    ] = "http://127.0.0.1:8001",
    dispatch_url: Annotated[
        str, typer.Option(help="Dispatch base URL.")
    ] = "http://127.0.0.1:8002",
    late_arrival_seconds: Annotated[
        float,
        typer.Option(
            help="How long after accepting the late technicians arrive.", min=0
        ),
    ] = 17 * 60,
    home: HomeOption = None,
) -> None:
    """Realistic traffic through the public API: declines, follow-ups, re-quotes,
    ratings, silent and late technicians, orders nobody covers.

    Exits 1 when an order met a refusal or an outage.
    """
    summary = _run_simulation(
        intake_url,
        dispatch_url,
        home=_home(home),
        orders=orders,
        rate=rate,
        linger=False,
        late_arrival_s=late_arrival_seconds,
    )
    _report_demo(summary, lingering=False)
    if summary.failures:
        raise typer.Exit(1)


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="customer, technician, dispatcher, ...")],
    sub: Annotated[
        str, typer.Option(help="The subject: the customer or technician id.")
    ],
    home: HomeOption = None,
) -> None:
    """Print a bearer token valid for the running stack."""
    try:
        with _stack_errors():
            typer.echo(token_for(home, role=role, subject=sub))
    except ValueError as err:  # a subject or role the services would refuse
        console.print(f"[red]No token:[/red] {err}")
        raise typer.Exit(2) from None


@app.command("open")
def open_dashboard(home: HomeOption = None) -> None:
    """Open the dashboard in a browser, signed in as a dispatcher (12 h)."""
    with _stack_errors(), stack_client(_home(home)) as client:
        client.check_running()
    auditor = mint_token(
        client.stack.home, role=Role.AUDITOR, subject=operator_subject()
    )
    url = dashboard_link(client.stack.dashboard_url, client.token, auditor)
    if webbrowser.open(url):
        console.print("Opened the dashboard in your browser:")
    else:
        console.print("No browser found here; open this URL:")
    terminal.print_line(url)


owner_database = typer.Option(
    envvar="MIGRATION_DATABASE_URL",
    help="The database owner's URL (else DATABASE_URL, else the running stack's).",
)


@app.command("migrate")
def migrate_command(
    database_url: Annotated[str | None, owner_database] = None,
    home: HomeOption = None,
) -> None:
    """Apply the database migrations, as the owner of the schemas."""
    from shared.db import migrate

    migrate.upgrade(_database_url(database_url or os.environ.get("DATABASE_URL"), home))
    console.print("Migrations applied.")


@app.command("set-role-passwords")
def set_role_passwords_command(
    database_url: Annotated[str | None, owner_database] = None,
    home: HomeOption = None,
) -> None:
    """Give each service's role the password in <SERVICE>_DATABASE_URL (as owner).

    For deployments: run after `migrate`, with the very URLs the services get as
    their DATABASE_URL, so each password lives in one secret. Services without a
    variable keep their role's password.
    """
    passwords: dict[str, str] = {}
    for service, role in SERVICE_ROLES.items():
        url = os.environ.get(f"{service.upper()}_DATABASE_URL")
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.username != role or not parts.password:
            console.print(
                f"[red]{service.upper()}_DATABASE_URL must log in as {role} "
                "with a password.[/red]"
            )
            raise typer.Exit(2)
        passwords[role] = unquote(parts.password)
    if not passwords:
        console.print("[red]No <SERVICE>_DATABASE_URL variable is set.[/red]")
        raise typer.Exit(2)
    owner_url = _database_url(database_url or os.environ.get("DATABASE_URL"), home)
    asyncio.run(set_role_passwords(owner_url, passwords))
    console.print(f"Passwords set for {', '.join(sorted(passwords))}.")


ledger_database = typer.Option(
    envvar="DATABASE_URL", help="PostgreSQL URL; default: the running stack's."
)


def _database_url(url: str | None, home: Path | None = None) -> str:
    """`url`, else the running stack's owner URL with its password from the home."""
    if url:
        return url
    try:
        stack = recorded_stack(find_home(home))
    except StackNotFound as error:
        terminal.fail(f"{error} Or set DATABASE_URL.")
        raise typer.Exit(2) from None
    if stack.database_password_file is None:
        return stack.database_url
    owner = urlsplit(stack.database_url).username or SUPERUSER
    password = read_secret(stack.database_password_file)
    return url_as(stack.database_url, owner, password)


def _signer(home: Path | None = None) -> TreeSigner:
    configured = os.environ.get("LEDGER_SIGNING_KEY_PATH")
    path = Path(configured) if configured else _home(home) / "ledger-signing-key.pem"
    if not path.exists():
        console.print(
            f"[red]No ledger key at {path}; set LEDGER_SIGNING_KEY_PATH.[/red]"
        )
        raise typer.Exit(2)
    from services.ledger.signing import TreeSigner

    return TreeSigner.load_or_create(path)


async def _with_connection(
    url: str, work: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    engine = create_engine(CommonSettings(database_url=url))
    try:
        async with engine.connect() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


async def _ledger_size(conn: AsyncConnection) -> int:
    """Entries in the ledger: the total of a pass over it."""
    return int(await conn.scalar(text("SELECT count(*) FROM ledger.ledger_entry")) or 0)


def _print_report(valid: bool, entries: int, findings: list[Any]) -> None:
    if valid:
        console.print(f"[green]valid[/green]: {entries} entries verified")
        return
    console.print(
        f"[red]INVALID[/red]: {entries} entries read, {len(findings)} finding(s)"
    )
    for finding in findings:
        where = "" if finding.position is None else f"position {finding.position}: "
        order = "" if finding.order_id is None else f" (order {finding.order_id})"
        console.print(f"  {where}{finding.problem}{order}")


@app.command()
def verify(
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
    quiet: QuietOption = False,
) -> None:
    """Verify the whole ledger: chains, leaves, positions, the signed Merkle root."""
    from services.ledger import queries

    signer = _signer(home)

    async def run(conn: AsyncConnection) -> dict[str, Any]:
        total = await _ledger_size(conn)
        result: dict[str, Any] = {}
        with terminal.progress(
            "Verifying the ledger", total=total, quiet=quiet
        ) as advance:
            async for line in queries.verify_ledger(
                conn, signer, progress_every=10_000
            ):
                if "progress" in line:
                    advance(line["progress"])
                else:
                    result = line["result"]
        return result

    # Millions of rows pass through: with the services' collector settings the
    # collections stop costing about a quarter of the pass.
    tune_collector()
    result = asyncio.run(_with_connection(_database_url(database_url, home), run))
    findings = [SimpleNamespace(**f) for f in result["findings"]]
    _print_report(result["valid"], result["events"], findings)
    if not result["valid"]:
        raise typer.Exit(1)


@app.command()
def replay(
    order_id: Annotated[UUID, typer.Argument(help="The order to replay.")],
    as_of: Annotated[datetime | None, typer.Option(help="RFC 3339 instant.")] = None,
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
) -> None:
    """Print an order's history from the ledger, and its state (at --as-of)."""
    from services.ledger import queries

    async def run(conn: AsyncConnection) -> tuple[Any, Any]:
        history = await queries.get_history(conn, order_id)
        moment = as_of or datetime.now(UTC)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return history, await queries.state_as_of(conn, order_id, moment)

    history, state = asyncio.run(
        _with_connection(_database_url(database_url, home), run)
    )
    table = Table(title=f"Order {order_id}")
    for column in ("position", "version", "type", "time", "actor"):
        table.add_column(column)
    for entry in history:
        event = entry.event
        table.add_row(
            str(entry.position),
            str(entry.orderversion),
            event["type"],
            event["time"],
            event["actor"],
        )
    console.print(table)
    console.print_json(state.model_dump_json())


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="NDJSON file to write.")],
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
    quiet: QuietOption = False,
) -> None:
    """Export the ledger (entries and the signed tree head) for an offline audit."""
    from services.ledger import queries

    signer = _signer(home)

    async def run(conn: AsyncConnection) -> int:
        total = await _ledger_size(conn)
        written = 0
        with (
            out.open("w", encoding="utf-8") as file,
            terminal.progress(
                f"Exporting to {out}", total=total, quiet=quiet
            ) as advance,
        ):
            async for line in queries.export_lines(conn, signer):
                file.write(line)
                written += 1
                if written % 1000 == 0:
                    advance(min(written, total))
        return total

    total = asyncio.run(_with_connection(_database_url(database_url, home), run))
    console.print(f"Exported {total} entries to {out}")


@app.command()
def checkpoint(
    save: Annotated[
        Path, typer.Option(help="Where to keep the signed tree head (JSON).")
    ],
    public_key: Annotated[
        Path, typer.Option(help="Where to write the public key (PEM).")
    ],
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
) -> None:
    """Save the latest signed tree head and the ledger's public key, to audit later."""
    from services.ledger import queries

    signer = _signer(home)

    async def run(conn: AsyncConnection) -> Any:
        return await queries.latest_checkpoint(conn, signer)

    head = asyncio.run(_with_connection(_database_url(database_url, home), run))
    save.write_text(head.model_dump_json(indent=2))
    public_key.write_text(head.public_key)
    console.print(
        f"Tree head of size {head.tree_size} saved to {save}; key {head.key_id}."
    )


def _key_and_checkpoint(
    public_key: Path, tree_head: Path | None
) -> tuple[Ed25519PublicKey, SignedHead | None]:
    """The auditor's public key (PEM) and their saved checkpoint, if any."""
    from services.ledger.audit import signed_head_from_json
    from services.ledger.signing import load_public_key

    key = load_public_key(public_key.read_bytes())
    if tree_head is None:
        return key, None
    return key, signed_head_from_json(json.loads(tree_head.read_text()))


@app.command()
def audit(
    file: Annotated[Path, typer.Argument(help="An NDJSON export.")],
    public_key: Annotated[Path, typer.Option(help="PEM of the ledger's public key.")],
    tree_head: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint saved earlier (JSON): detects a rewritten history."
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Verify an export offline, trusting nothing but the public key you hold."""
    from services.ledger.audit import audit_export

    key, saved = _key_and_checkpoint(public_key, tree_head)
    with (
        file.open(encoding="utf-8") as lines,
        terminal.progress(f"Auditing {file.name}", quiet=quiet) as advance,
    ):
        report = audit_export(
            lines,
            key,
            saved_head=saved,
            on_entry=lambda n: advance(n) if n % 1000 == 0 else None,
        )
    _print_report(report.valid, report.entries, report.findings)
    if not report.valid:
        raise typer.Exit(1)


@app.command("import-ledger")
def import_ledger(
    file: Annotated[Path, typer.Argument(help="An NDJSON export.")],
    public_key: Annotated[Path, typer.Option(help="PEM of the ledger's public key.")],
    tree_head: Annotated[
        Path | None,
        typer.Option(help="A checkpoint saved earlier (JSON) the export must extend."),
    ] = None,
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
) -> None:
    """Audit an export, then restore it into an empty ledger (then: metrics rebuild)."""
    from services.ledger.importer import import_export
    from shared.domain.errors import DomainError

    key, saved = _key_and_checkpoint(public_key, tree_head)

    def read_lines() -> Any:
        with file.open(encoding="utf-8") as lines:
            yield from lines

    async def run(conn: AsyncConnection) -> int:
        async with conn.begin():
            report = await import_export(conn, read_lines, key, saved_head=saved)
        return report.entries

    try:
        entries = asyncio.run(_with_connection(_database_url(database_url, home), run))
    except DomainError as err:
        console.print(f"[red]refused[/red]: {err.detail}")
        raise typer.Exit(1) from None
    console.print(
        f"Imported {entries} audited entries from {file.name}; "
        "now run `servicetrail metrics rebuild`."
    )


def _read_public_key(key: str) -> Ed25519PublicKey:
    """The key in the file `key` if there is one, else `key` itself (PEM or base64)."""
    from services.ledger.signing import parse_public_key

    try:
        text = Path(key).read_bytes() if Path(key).is_file() else key.encode()
    except (OSError, ValueError):  # a key value too long or odd for a file name
        text = key.encode()
    return parse_public_key(text)


@app.command("audit-receipt")
def audit_receipt(
    file: Annotated[
        Path, typer.Argument(help="A receipt (JSON) from /v1/orders/{id}/receipt.")
    ],
    public_key: Annotated[
        str,
        typer.Option(
            help="The ledger's public key from your own records: a PEM or base64 "
            "file, or the value itself."
        ),
    ],
) -> None:
    """Verify an order's receipt offline: bytes, chain, proofs, signed tree head."""
    from services.ledger.receipt import verify_receipt

    try:
        key = _read_public_key(public_key)
    except ValueError as err:
        console.print(f"[red]INVALID[/red]: the public key cannot be read: {err}")
        raise typer.Exit(1) from None
    try:
        document = json.loads(file.read_bytes())
    except (OSError, ValueError) as err:
        console.print(f"[red]INVALID[/red]: {file} is not a JSON receipt: {err}")
        raise typer.Exit(1) from None
    report = verify_receipt(document, key)
    _print_report(report.valid, report.entries, report.findings)
    if not report.valid:
        raise typer.Exit(1)
    console.print(
        f"  order {document['order_id']}: every event proven into the signed "
        f"tree head of size {report.signed_size}"
    )


@app.command()
def reconcile(
    grace_seconds: Annotated[
        float, typer.Option(help="Only events stored longer ago than this.", min=0)
    ] = 60.0,
    dry_run: Annotated[bool, typer.Option(help="Count, change nothing.")] = False,
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
) -> None:
    """Re-publish stored events a consumer never received (e.g. after a broker loss)."""
    from datetime import timedelta

    from shared.db.reconcile import missing_from_consumers, requeue_missing
    from shared.events.topics import ORDER_EVENTS

    grace = timedelta(seconds=grace_seconds)

    async def run(conn: AsyncConnection) -> int:
        async with conn.begin():
            if dry_run:
                return len(await missing_from_consumers(conn, grace=grace))
            return await requeue_missing(conn, topic=ORDER_EVENTS, grace=grace)

    count = asyncio.run(_with_connection(_database_url(database_url, home), run))
    verb = "missing from a consumer" if dry_run else "queued for publishing again"
    console.print(f"{count} event(s) {verb}.")


metrics_app = typer.Typer(help="Quality indicators.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("rebuild")
def metrics_rebuild(
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
    quiet: QuietOption = False,
) -> None:
    """Recompute every indicator from the ledger; gives exactly the live numbers."""
    from services.metrics.rebuild import rebuild_from_ledger

    async def run(conn: AsyncConnection) -> int:
        with terminal.progress("Replaying the ledger", quiet=quiet) as advance:
            async with conn.begin():
                return await rebuild_from_ledger(conn, on_progress=advance)

    applied = asyncio.run(_with_connection(_database_url(database_url, home), run))
    console.print(f"Rebuilt the indicators from {applied} ledger entries.")


@app.command("report")
def report(
    period: Annotated[
        str, typer.Option(help="week, month, quarter or year.", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(help="Write here; the format follows .json, .csv or .html."),
    ],
    at: Annotated[
        str | None,
        typer.Option(
            help="2026-W47, 2026-11, 2026-Q4, 2026 or a day 2026-11-18; "
            "default: the last complete period."
        ),
    ] = None,
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
    quiet: QuietOption = False,
) -> None:
    """Write the quality report of a period (as GET /v1/reports answers it).

    The policy and the time zone come from the metrics service's settings
    (environment: SLA_ACCEPT_MINUTES, REPORT_TIME_ZONE, ...).
    """
    from services.metrics.policy import policy_from
    from services.metrics.report import build_report
    from services.metrics.report_render import render
    from services.metrics.report_schemas import ReportFormat
    from services.metrics.settings import MetricsSettings
    from shared.domain.errors import DomainError
    from shared.domain.periods import PeriodKind, parse_period

    try:
        kind = PeriodKind(period)
        format_ = ReportFormat(out.suffix.removeprefix(".").lower() or "json")
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    url = _database_url(database_url, home)
    settings = MetricsSettings(database_url=url)
    zone, now = settings.report_zone(), datetime.now(UTC)
    try:
        chosen = parse_period(kind, at, today=now.astimezone(zone).date())
    except DomainError as err:
        console.print(f"[red]{err.detail}[/red]")
        raise typer.Exit(2) from None

    async def run(conn: AsyncConnection) -> str:
        with terminal.progress(f"Report {chosen.label}", quiet=quiet) as advance:
            built = await build_report(
                conn,
                chosen,
                policy=policy_from(settings),
                zone=zone,
                now=now,
                on_progress=advance,
            )
        return render(built, format_)

    text = asyncio.run(_with_connection(url, run))
    out.write_text(text, encoding="utf-8", newline="")
    console.print(f"Report {chosen.label} ({kind.value}) written to {out}.")


@metrics_app.command("whatif")
def metrics_whatif(
    policy: Annotated[
        Path, typer.Option(help="JSON: the metrics settings' policy fields.")
    ],
    window: Annotated[str, typer.Option(help="30d, 7d, 24h, ... or all.")] = "30d",
    at: Annotated[
        str | None, typer.Option(help="The window's end, RFC 3339 (default: now).")
    ] = None,
    as_json: JsonOption = False,
    database_url: Annotated[str | None, ledger_database] = None,
    home: HomeOption = None,
    quiet: QuietOption = False,
) -> None:
    """Indicators, ranking and alerts from the ledger under another policy, side
    by side with the live one. Changes nothing; the live consumer pauses while it
    runs (it holds the consumer's offsets, as `metrics rebuild` does)."""
    from services.metrics import whatif

    try:
        proposed = whatif.proposed_policy(policy)
        length = whatif.parse_window(window)
        end = datetime.now(UTC) if at is None else datetime.fromisoformat(at)
    except ValueError as err:  # PolicyFileError included
        console.print(str(err), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if end.tzinfo is None:  # a wall time without offset: UTC
        end = end.replace(tzinfo=UTC)

    async def run(conn: AsyncConnection) -> whatif.WhatIf:
        with terminal.progress(
            "Replaying the ledger under both policies", quiet=quiet or as_json
        ) as advance:
            return await whatif.what_if(
                conn,
                live=whatif.live_policy(),
                proposed=proposed,
                window=length,
                now=end,
                on_progress=advance,
            )

    result = asyncio.run(_with_connection(_database_url(database_url, home), run))
    if as_json:
        typer.echo(json.dumps(result.as_json(), default=str, indent=2))
        return
    for table in whatif.tables(result):
        console.print(table)


orders_app = typer.Typer(
    help="Orders of the running stack (as a dispatcher).", no_args_is_help=True
)
app.add_typer(orders_app, name="orders")
alerts_app = typer.Typer(
    help="Quality alerts of the running stack (as a dispatcher).", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

OrderArgument = Annotated[UUID, typer.Argument(help="The order's id.")]
LimitOption = Annotated[
    int, typer.Option(help="At most this many, newest first.", min=1, max=1000)
]


def _answer(
    home: Path | None,
    ask: Callable[[StackClient], T],
    *,
    as_json: bool,
    view: Callable[[T], RenderableType],
) -> None:
    """Ask the running stack; print the answer as JSON for scripts, or as `view`
    renders it for people."""
    with _stack_errors(), stack_client(_home(home)) as client:
        answer = ask(client)
    if as_json:
        terminal.print_json(answer)
    else:
        console.print(view(answer))


@orders_app.command("ls")
def orders_ls(
    status: Annotated[
        list[OrderStatus] | None,
        typer.Option(help="Only orders in this status (repeatable)."),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Only orders of this region.")
    ] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """List orders, newest first."""
    statuses = [s.value for s in status or ()]
    _answer(
        home,
        lambda c: c.list_orders(statuses=statuses, region=region, limit=limit),
        as_json=as_json,
        view=lambda rows: terminal.table(rows, terminal.ORDER_COLUMNS),
    )


@orders_app.command("show")
def orders_show(
    order_id: OrderArgument, as_json: JsonOption = False, home: HomeOption = None
) -> None:
    """One order's current state."""
    _answer(
        home,
        lambda c: c.get_order(order_id),
        as_json=as_json,
        view=lambda order: terminal.fields(order, title=f"Order {order_id}"),
    )


@orders_app.command("timeline")
def orders_timeline(
    order_id: OrderArgument, as_json: JsonOption = False, home: HomeOption = None
) -> None:
    """One order's events in order, as its customer sees them."""
    _answer(
        home,
        lambda c: c.get_timeline(order_id),
        as_json=as_json,
        view=lambda timeline: terminal.table(
            terminal.timeline_rows(timeline),
            terminal.TIMELINE_COLUMNS,
            title=f"Order {order_id}: {timeline['status']}",
        ),
    )


class AlertState(StrEnum):
    OPEN = "open"
    CLEARED = "cleared"


@alerts_app.command("ls")
def alerts_ls(
    state: Annotated[
        AlertState | None, typer.Option(help="open or cleared (default: both).")
    ] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """List quality alerts with their cases, newest first."""
    _answer(
        home,
        lambda c: c.list_alerts(state=state and state.value, limit=limit),
        as_json=as_json,
        view=lambda rows: terminal.table(rows, terminal.ALERT_COLUMNS),
    )


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[UUID, typer.Argument(help="The alert's id.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Acknowledge an alert (once), as cli:<your login>."""
    _answer(
        home,
        lambda c: c.acknowledge_alert(alert_id),
        as_json=as_json,
        view=lambda case: (
            f"Alert {alert_id} acknowledged by "
            f"{case['acknowledged_by']} at {case['acknowledged_at']}."
        ),
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
