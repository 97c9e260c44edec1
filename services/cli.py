"""The `servicetrail` command: run the stack, issue tokens, migrate."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.stack import Stack, jwt_secret, stack_home
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings

app = typer.Typer(
    help="ServiceTrail: event-sourced service tracking for home-repair after-sales.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

DEMO_SUBJECTS = {
    Role.CUSTOMER: "demo-customer-1",
    Role.TECHNICIAN: "demo-technician-1",
    Role.DISPATCHER: "demo-dispatcher",
    Role.AUDITOR: "demo-auditor",
    Role.ADMIN: "demo-admin",
    Role.SERVICE: "demo-service",
}


def _token(role: Role, subject: str) -> str:
    settings = CommonSettings(jwt_secret=jwt_secret(stack_home()))
    return issue_token(settings, role=role, subject=subject)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option(help="Post demo orders once the stack is up.")
    ] = False,
    demo_orders: Annotated[int, typer.Option(help="How many demo orders.")] = 50,
) -> None:
    """Start PostgreSQL, the broker, migrations and the four services; Ctrl-C stops all."""
    stack = Stack.from_environment()
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
    table.add_row("dashboard", f"{stack.services['metrics'].url}/")
    table.add_row("PostgreSQL", stack.database_url or "")
    table.add_row("Kafka", stack.kafka_bootstrap or "")
    console.print(table)
    tokens = Table(title="Tokens (12 h)")
    tokens.add_column("role")
    tokens.add_column("sub")
    tokens.add_column("token", overflow="fold")
    for role, subject in DEMO_SUBJECTS.items():
        tokens.add_row(role.value, subject, _token(role, subject))
    console.print(tokens)


def _post_demo(stack: Stack, count: int) -> None:
    from services.simulator import post_demo_orders

    with Progress(console=console) as progress:
        task = progress.add_task("Posting demo orders", total=count)
        post_demo_orders(
            stack.services["intake"].url,
            lambda customer: _token(Role.CUSTOMER, customer),
            count=count,
            on_progress=lambda done: progress.update(task, completed=done),
        )


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="customer, technician, dispatcher, ...")],
    sub: Annotated[
        str, typer.Option(help="The subject: the customer or technician id.")
    ],
) -> None:
    """Print a bearer token valid for the running stack."""
    typer.echo(_token(role, sub))


@app.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations to DATABASE_URL."""
    from shared.db import migrate

    migrate.upgrade(CommonSettings().database_url)
    console.print("Migrations applied.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
