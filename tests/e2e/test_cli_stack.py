"""The `servicetrail` command as a newcomer uses it against `servicetrail up`.

One stack for the module, started the way the README says, in a clone-like
directory (`clone/.stack`); every command runs as its own process from wherever
the test puts it, with nothing but the home to find the stack by.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

import httpx
import pytest

from services.stack.servers import free_port
from tests.e2e.processes import any_response_rule, free_port_block, interrupt
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.e2e

ROLES: Final = ("customer", "technician", "dispatcher", "auditor", "admin", "service")
JWT: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Any accepted order breaches it: the stack raises an alert per region at once.
ANY_RESPONSE: Final = any_response_rule("cli_any_response")
# Variables of the test process that would point a command elsewhere than the home.
NOT_INHERITED: Final = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "JWT_SECRET",
    "LEDGER_SIGNING_KEY_PATH",
    "SERVICETRAIL_HOME",
)


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    # Wide, so that people's tables keep ids on one line for the assertions.
    env.update({"COLUMNS": "250", "NO_COLOR": "1", **extra})
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`servicetrail ARGS` in `cwd`, as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=cwd,
        env=env or clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = run(*args, cwd=cwd, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Up:
    clone: Path
    """The directory holding `.stack/`, as a clone would."""
    printed: list[str]
    """What `servicetrail up` printed up to its dashboard link."""
    urls: dict[str, str]

    @property
    def home(self) -> Path:
        return self.clone / ".stack"

    def accepts(self, token: str) -> bool:
        """Whether the running stack takes `token` (ledger checkpoint: any role;
        404 while the ledger is still empty, past authentication)."""
        response = httpx.get(
            f"{self.urls['ledger']}/v1/ledger/checkpoint",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code in (200, 404, 401), response.text
        return response.status_code != 401

    def token(self, role: str) -> str:
        """The token of `role` (e.g. DISPATCHER) that `up` wrote in tokens.env."""
        kept = (self.home / "tokens.env").read_text()
        token = re.search(rf"^{role}_TOKEN=(\S+)$", kept, re.MULTILINE)
        assert token is not None, kept
        return token.group(1)

    def dispatcher_reads(self, service: str, path: str) -> Any:
        """GET as the dispatcher of tokens.env."""
        response = httpx.get(
            f"{self.urls[service]}{path}",
            headers={"Authorization": f"Bearer {self.token('DISPATCHER')}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def order(self, order_id: str) -> dict[str, Any]:
        order: dict[str, Any] = self.dispatcher_reads(
            "intake", f"/v1/orders/{order_id}"
        )
        return order


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    scratch = Path(tempfile.mkdtemp(prefix="servicetrail-cli-"))
    clone = scratch / "clone"
    clone.mkdir()
    base = free_port_block(4)
    env = clean_environment(
        # Narrow on purpose: the tokens and the link must not wrap anyway.
        COLUMNS="40",
        SERVICETRAIL_BASE_PORT=str(base),
        SERVICETRAIL_POSTGRES_PORT=str(free_port()),
        SERVICETRAIL_BROKER_PORT=str(free_port()),
        ALERT_RULES=json.dumps([ANY_RESPONSE]),
        ALERT_INTERVAL_SECONDS="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        while not printed or "#token=" not in printed[-1]:
            line = process.stdout.readline()
            assert line, f"up ended before its dashboard link: {printed}"
            printed.append(line.rstrip("\n"))
        names = ("intake", "dispatch", "ledger", "metrics")
        urls = {name: f"http://127.0.0.1:{base + n}" for n, name in enumerate(names)}
        yield Up(clone, printed, urls)
    finally:
        interrupt(process)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def orders(up: Up) -> list[dict[str, Any]]:
    """Simulated orders through the stack's API, all as far as they go, newest first."""
    ok(
        "simulate",
        "--orders",
        "8",
        "--rate",
        "30",
        "--late-arrival-seconds",
        "1",
        "--intake-url",
        up.urls["intake"],
        "--dispatch-url",
        up.urls["dispatch"],
        cwd=up.clone,
    )
    listed: list[dict[str, Any]] = json.loads(
        ok("orders", "ls", "--limit", "100", "--json", cwd=up.clone)
    )
    return listed


def nowhere() -> Path:
    """A new directory with no stack home in it or above it."""
    directory = Path(tempfile.mkdtemp(prefix="servicetrail-nowhere-"))
    assert not any((d / ".stack").exists() for d in (directory, *directory.parents))
    return directory


# --- servicetrail up ----------------------------------------------------------------


def test_up_prints_each_token_whole_on_its_own_line_and_keeps_them_in_tokens_env(
    up: Up,
) -> None:
    printed = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in up.printed
        if re.fullmatch(r"[A-Z]+_TOKEN=\S+", line)
    }
    assert sorted(printed) == sorted(f"{role.upper()}_TOKEN" for role in ROLES)
    for variable, token in printed.items():
        assert JWT.fullmatch(token), f"{variable} is not one whole token: {token!r}"
        assert up.accepts(token), f"the stack refuses {variable}"
    assert not up.accepts(printed["DISPATCHER_TOKEN"][:-2] + "xx")

    tokens_env = up.home / "tokens.env"
    assert f"also in {tokens_env}" in one_line("\n".join(up.printed))
    assert stat.S_IMODE(tokens_env.stat().st_mode) == 0o600
    kept = dict(
        line.split("=", 1)
        for line in tokens_env.read_text().splitlines()
        if not line.startswith("#")
    )
    assert kept == printed


def signed_in(up: Up, link: str) -> dict[str, str]:
    """The link's tokens by role (`#token=` and `auditor=`), each one the stack takes."""
    page, _, fragment = link.partition("#")
    assert page == f"{up.urls['metrics']}/", link
    given = dict(parse_qsl(fragment, strict_parsing=True))
    assert set(given) == {"token", "auditor"}, link
    roles = {}
    for token in given.values():
        assert JWT.fullmatch(token)
        assert up.accepts(token)
        roles[json.loads(_b64(token.split(".")[1]))["role"]] = token
    return roles


def test_up_prints_a_dashboard_link_signed_in_as_the_dispatcher(up: Up) -> None:
    link = up.printed[-1]
    assert set(signed_in(up, link)) == {"dispatcher", "auditor"}
    page = httpx.get(link.split("#")[0], timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    page = httpx.get(link.split("#")[0], timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# --- finding the stack --------------------------------------------------------------


def test_token_works_from_a_subdirectory_of_the_clone(up: Up) -> None:
    deeper = up.clone / "docs" / "notes"
    deeper.mkdir(parents=True, exist_ok=True)
    token = ok("token", "--role", "auditor", "--sub", "sub-1", cwd=deeper).strip()
    assert up.accepts(token)
    assert not (deeper / ".stack").exists()


def test_token_finds_the_home_by_option_or_environment_from_anywhere(up: Up) -> None:
    elsewhere = nowhere()
    for args, env in (
        (("--home", str(up.clone)), None),
        (("--home", str(up.home)), None),
        ((), clean_environment(SERVICETRAIL_HOME=str(up.home))),
    ):
        printed = ok(
            "token", "--role", "customer", "--sub", "c-1", *args, cwd=elsewhere, env=env
        )
        assert up.accepts(printed.strip()), args
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("token", "--role", "customer", "--sub", "alice"), id="token"),
        pytest.param(("orders", "ls", "--json"), id="orders-ls"),
        pytest.param(("verify",), id="verify"),
    ],
)
def test_a_command_where_no_stack_runs_exits_2_and_creates_nothing(
    command: tuple[str, ...],
) -> None:
    elsewhere = nowhere()
    done = run(*command, cwd=elsewhere)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "No ServiceTrail stack runs here" in one_line(done.stderr)
    assert done.stdout == ""
    assert list(elsewhere.iterdir()) == []


def test_a_home_option_naming_an_empty_directory_exits_2_and_creates_nothing() -> None:
    empty = nowhere()
    done = run(
        "token", "--role", "customer", "--sub", "a", "--home", str(empty), cwd=empty
    )
    assert done.returncode == 2
    assert f"No ServiceTrail stack at {empty}" in one_line(done.stderr)
    assert list(empty.iterdir()) == []


def test_a_recorded_stack_that_does_not_answer_exits_2(up: Up) -> None:
    """A home whose stack stopped: its services' ports answer nothing."""
    stopped = nowhere() / ".stack"
    stopped.mkdir()
    recorded = json.loads((up.home / "stack.json").read_text())
    recorded["services"] = {
        name: f"http://127.0.0.1:{free_port()}" for name in recorded["services"]
    }
    (stopped / "stack.json").write_text(json.dumps(recorded))
    shutil.copy2(up.home / "jwt-secret", stopped / "jwt-secret")
    for command in (("orders", "ls", "--json"), ("open",)):
        done = run(*command, cwd=stopped.parent)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "No stack answers at" in one_line(done.stderr)
        assert done.stdout == ""


# --- servicetrail open --------------------------------------------------------------


def test_open_hands_the_signed_in_dashboard_link_to_the_browser(
    up: Up, tmp_path: Path
) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    browser.chmod(0o700)
    printed = ok("open", cwd=up.clone, env=clean_environment(BROWSER=str(browser)))
    url = opened.read_text()
    assert url in printed
    assert set(signed_in(up, url)) == {"dispatcher", "auditor"}


def test_open_without_a_browser_prints_the_link(up: Up, tmp_path: Path) -> None:
    env = clean_environment(BROWSER="/bin/false", PATH=str(tmp_path))
    for variable in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(variable, None)
    printed = ok("open", cwd=up.clone, env=env)
    assert "No browser found" in printed
    link = printed.strip().splitlines()[-1]
    assert set(signed_in(up, link)) == {"dispatcher", "auditor"}


# --- orders -------------------------------------------------------------------------


def test_orders_ls_json_is_one_document_of_the_newest_orders(
    up: Up, orders: list[dict[str, Any]]
) -> None:
    assert len(orders) == 8
    created = [o["created_at"] for o in orders]
    assert created == sorted(created, reverse=True)
    two = json.loads(ok("orders", "ls", "--limit", "2", "--json", cwd=up.clone))
    assert [o["order_id"] for o in two] == [o["order_id"] for o in orders[:2]]


def test_orders_ls_filters_by_status_and_region(
    up: Up, orders: list[dict[str, Any]]
) -> None:
    status = orders[0]["status"]
    wanted = [o["order_id"] for o in orders if o["status"] == status]
    listed = json.loads(
        ok("orders", "ls", "--status", status, "--limit", "100", "--json", cwd=up.clone)
    )
    assert [o["order_id"] for o in listed] == wanted

    regions = {o["order_id"]: up.order(o["order_id"])["region"] for o in orders}
    region = regions[orders[0]["order_id"]]
    in_region = json.loads(
        ok("orders", "ls", "--region", region, "--limit", "100", "--json", cwd=up.clone)
    )
    assert [o["order_id"] for o in in_region] == [
        o["order_id"] for o in orders if regions[o["order_id"]] == region
    ]
    nobody = ok("orders", "ls", "--region", "nowhere-at-all", "--json", cwd=up.clone)
    assert json.loads(nobody) == []


def test_orders_show_and_timeline_for_people_and_for_scripts(
    up: Up, orders: list[dict[str, Any]]
) -> None:
    order_id = orders[-1]["order_id"]
    shown = json.loads(ok("orders", "show", order_id, "--json", cwd=up.clone))
    assert shown["order_id"] == order_id
    assert shown["orderversion"] == orders[-1]["orderversion"]
    timeline = json.loads(ok("orders", "timeline", order_id, "--json", cwd=up.clone))
    assert timeline["entries"][0]["type"] == "created"
    assert len(timeline["entries"]) == shown["orderversion"]

    table = ok("orders", "ls", "--limit", "3", cwd=up.clone)
    assert all(o["order_id"] in table for o in orders[:3])
    people = ok("orders", "timeline", order_id, cwd=up.clone)
    for entry in timeline["entries"]:
        assert entry["type"] in people


def test_what_a_customer_typed_shows_as_typed_in_json_and_tables(up: Up) -> None:
    typed = "[bold]空调[/bold] :smile: \\n 不制冷"
    created = httpx.post(
        f"{up.urls['intake']}/v1/orders",
        json=new_order_body(description=typed),
        headers={"Authorization": f"Bearer {up.token('CUSTOMER')}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    timeline = json.loads(ok("orders", "timeline", order_id, "--json", cwd=up.clone))
    assert timeline["entries"][0]["request"]["description"] == typed
    assert typed in ok("orders", "timeline", order_id, cwd=up.clone)


def test_an_unknown_order_exits_1_with_the_problems_title(up: Up) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for command in ("show", "timeline"):
        done = run("orders", command, missing, cwd=up.clone)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert done.stderr.startswith("Not Found:"), done.stderr
        assert missing in done.stderr
        assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("orders", "show", "not-a-uuid"), id="order-id"),
        pytest.param(("orders", "ls", "--status", "lost"), id="status"),
    ],
)
def test_a_malformed_argument_is_a_usage_error(up: Up, args: tuple[str, ...]) -> None:
    done = run(*args, cwd=up.clone)
    assert done.returncode == 2
    assert done.stdout == ""


# --- alerts -------------------------------------------------------------------------


def test_alerts_ls_and_ack(up: Up, orders: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 60
    while not up.dispatcher_reads("metrics", "/v1/alerts?state=open")["items"]:
        assert time.monotonic() < deadline, "no alert raised"
        time.sleep(0.5)
    raised = json.loads(ok("alerts", "ls", "--state", "open", "--json", cwd=up.clone))
    alert = raised[0]
    assert alert["rule"] == "cli_any_response"
    assert alert["case_state"] == "unacknowledged"
    assert alert["alert_id"] in ok("alerts", "ls", cwd=up.clone)

    acknowledged = json.loads(
        ok("alerts", "ack", alert["alert_id"], "--json", cwd=up.clone)
    )
    assert acknowledged["state"] == "acknowledged"
    assert acknowledged["acknowledged_by"].startswith("dispatcher:cli:")
    again = run("alerts", "ack", alert["alert_id"], cwd=up.clone)
    assert again.returncode == 1
    assert again.stderr.startswith("Conflict:"), again.stderr
    case = up.dispatcher_reads("metrics", f"/v1/alerts/{alert['alert_id']}")
    assert case["acknowledged_by"] == acknowledged["acknowledged_by"]


# --- progress -----------------------------------------------------------------------


def test_verify_shows_progress_on_a_terminal_and_none_in_a_pipe(
    up: Up, orders: list[dict[str, Any]]
) -> None:
    piped = run("verify", cwd=up.clone)
    assert piped.returncode == 0, piped.stderr
    assert "valid" in piped.stdout
    assert piped.stderr == ""

    controller, terminal = pty.openpty()
    chunks: list[bytes] = []
    # Read while it writes: a full terminal buffer would block the command.
    reader = threading.Thread(target=_read_all, args=(controller, chunks))
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "verify"],
            cwd=up.clone,
            env=clean_environment(TERM="xterm"),
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(terminal)  # the reader sees the end
        reader.join(timeout=10)
        os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0
    assert "valid" in done.stdout
    assert "Verifying the ledger" in shown
    assert re.search(r"(\d+)/\1", shown), shown  # done/total, the whole ledger


def _read_all(descriptor: int, chunks: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # the terminal's other end closed
            return
        if not chunk:
            return
        chunks.append(chunk)
