"""`servicetrail up --demo` against the real stack: the history the dashboard shows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from services.demo_history import EXCELLENT, POOR, TECHNICIANS
from services.stack.servers import free_port
from shared.domain.actors import Role
from shared.http.auth import issue_token
from shared.settings import CommonSettings
from tests.e2e.processes import free_port_block

pytestmark = pytest.mark.e2e

READY_LINE: Final = "Press Ctrl-C to stop."
READY_TIMEOUT_SECONDS: Final = 600.0


@pytest.fixture(scope="module")
def demo_stack() -> Iterator[dict[str, Any]]:
    """`servicetrail up --demo` on free ports, once it said it is ready.

    Its home is a fresh /tmp directory, not pytest's tree (see `scratch_dir`).
    """
    scratch = Path(tempfile.mkdtemp(prefix="servicetrail-demo-"))
    home = scratch / "home"
    base = free_port_block(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET")
    } | {
        "SERVICETRAIL_HOME": str(home),
        "SERVICETRAIL_BASE_PORT": str(base),
        "SERVICETRAIL_POSTGRES_PORT": str(free_port()),
        "SERVICETRAIL_BROKER_PORT": str(free_port()),
    }
    log = scratch / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--demo"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while READY_LINE not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1.0)
        secret = (home / "jwt-secret").read_text().strip()
        settings = CommonSettings(jwt_secret=secret)
        token = issue_token(settings, role=Role.DISPATCHER, subject="demo-dispatcher")
        yield {
            "metrics": f"http://127.0.0.1:{base + 3}",
            "headers": {"Authorization": f"Bearer {token}"},
            "printed": log.read_text(errors="replace"),
        }
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def get(stack: dict[str, Any], path: str, **params: Any) -> Any:
    response = httpx.get(
        stack["metrics"] + path, params=params, headers=stack["headers"], timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_demo_posts_a_month_of_orders_without_a_refusal(
    demo_stack: dict[str, Any],
) -> None:
    assert "an order stopped" not in demo_stack["printed"], demo_stack["printed"]
    assert "MAX_EVENT_AGE" in demo_stack["printed"]  # said out loud
    month = get(demo_stack, "/v1/indicators", window="30d")["indicators"]
    week = get(demo_stack, "/v1/indicators", window="7d")["indicators"]
    assert month["orders_created"]["value"] >= 250
    assert 0 < week["orders_created"]["value"] < month["orders_created"]["value"]
    assert month["orders_completed"]["value"] >= 200


def test_the_demo_durations_are_hours_not_seconds(demo_stack: dict[str, Any]) -> None:
    month = get(demo_stack, "/v1/indicators", window="30d")["indicators"]
    assert month["resolution_time_s"]["p50"] >= 3 * 3600
    assert month["arrival_time_s"]["p50"] >= 3600
    assert 60 <= month["response_time_s"]["p50"] <= 4 * 3600


def test_the_strong_technicians_score_clearly_above_the_weak_ones(
    demo_stack: dict[str, Any],
) -> None:
    scores = {
        item["technician_id"]: item["composite"]
        for item in get(demo_stack, "/v1/technicians/scores", window="30d")["items"]
    }
    strong = [scores[t.technician_id] for t in TECHNICIANS if t.profile is EXCELLENT]
    weak = [scores[t.technician_id] for t in TECHNICIANS if t.profile is POOR]
    assert min(strong) - max(weak) >= 20, scores


def test_the_demo_leaves_alerts_open_on_a_weak_technician_and_a_region(
    demo_stack: dict[str, Any],
) -> None:
    weak = {
        f"technician_id:{t.technician_id}" for t in TECHNICIANS if t.profile is POOR
    }
    uncovered = ("unaccepted_overdue", "region:chongqing-yuzhong")
    # Alerts are judged every 10 s: the last of the history may still be on its way.
    deadline = time.monotonic() + 60
    while True:
        alerts = get(demo_stack, "/v1/alerts", state="open", limit=1000)["items"]
        scopes = {(alert["rule"], alert["scope"]) for alert in alerts}
        on_weak = any(rule == "price_overrun" and s in weak for rule, s in scopes)
        if (on_weak and uncovered in scopes) or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    assert on_weak, scopes
    assert uncovered in scopes, scopes
