"""`servicetrail up` from nothing: embedded PostgreSQL and broker, four services."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured_event

from services.stack.servers import free_port
from shared.events.topics import ORDER_EVENTS
from tests.e2e.processes import free_port_block, wait_ready
from tests.http_bodies import new_order_body

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "dispatch", "ledger", "metrics")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def stack_env(scratch_dir: Path) -> dict[str, str]:
    # Not tmp_path: another pytest session starting meanwhile makes pytest's tree
    # 0700 again, and the PostgreSQL user could no longer reach its data to stop it.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET")
    }
    env.update(
        SERVICETRAIL_HOME=str(scratch_dir / "home"),
        SERVICETRAIL_BASE_PORT=str(free_port_block(4)),
        SERVICETRAIL_POSTGRES_PORT=str(free_port()),
        SERVICETRAIL_BROKER_PORT=str(free_port()),
    )
    return env


@pytest.fixture
def running_stack(
    stack_env: dict[str, str],
) -> Iterator[tuple[subprocess.Popen[str], float]]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=stack_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = int(stack_env["SERVICETRAIL_BASE_PORT"])
        state_file = Path(stack_env["SERVICETRAIL_HOME"]) / "stack.json"
        for n in range(len(SERVICES)):
            wait_ready(f"http://127.0.0.1:{base + n}", timeout=90)
        assert state_file.exists()
        yield process, time.monotonic() - started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def token(role: str, sub: str, env: dict[str, str]) -> dict[str, str]:
    printed = cli("token", "--role", role, "--sub", sub, env=env).stdout.strip()
    return {"Authorization": f"Bearer {printed}"}


async def first_record(bootstrap: str) -> KafkaMessage:
    consumer = AIOKafkaConsumer(
        ORDER_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    return KafkaMessage(
        headers=dict(record.headers), key=record.key, value=record.value
    )


async def test_an_order_posted_to_the_stack_reaches_kafka_ledger_and_metrics(
    running_stack: tuple[subprocess.Popen[str], float], stack_env: dict[str, str]
) -> None:
    process, startup_seconds = running_stack
    assert startup_seconds < 60, f"the stack took {startup_seconds:.1f} s to get ready"
    base = int(stack_env["SERVICETRAIL_BASE_PORT"])
    intake, ledger, metrics = (f"http://127.0.0.1:{base + n}" for n in (0, 2, 3))
    state = json.loads(
        (Path(stack_env["SERVICETRAIL_HOME"]) / "stack.json").read_text()
    )

    body = new_order_body()
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            f"{intake}/v1/orders",
            json=body,
            headers=token("customer", "c-1", stack_env),
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["order_id"]

        message = await first_record(state["kafka_bootstrap_servers"])
        assert message.key == order_id.encode()
        assert message.headers["content-type"] == b"application/cloudevents+json"
        event = from_structured_event(message)
        assert event.get_id() == body["id"]
        assert event.get_subject() == order_id

        auditor = token("auditor", "a-1", stack_env)
        dispatcher = token("dispatcher", "d-1", stack_env)
        deadline = time.monotonic() + 20
        while True:
            history = await client.get(
                f"{ledger}/v1/orders/{order_id}/history", headers=auditor
            )
            counted = await client.get(f"{metrics}/v1/indicators", headers=dispatcher)
            if (
                history.status_code == 200
                and counted.json()["indicators"]["orders_created"]["value"] == 1
            ):
                break
            assert time.monotonic() < deadline, (history.text, counted.text)
            await asyncio.sleep(0.1)
        assert history.json()["entries"][0]["event"]["id"] == body["id"]

    # Operator commands reach the database as its owner through the stack's home
    # (the services' roles could not read everything verify reads).
    home = Path(stack_env["SERVICETRAIL_HOME"])
    key = {"LEDGER_SIGNING_KEY_PATH": str(home / "ledger-signing-key.pem")}
    assert "valid" in cli("verify", env={**stack_env, **key}).stdout
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Stopped." in output
    for secret in (home / "secrets").iterdir():
        assert secret.read_text().strip() not in output
    async with httpx.AsyncClient(timeout=1) as client:
        for n in range(len(SERVICES)):
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{base + n}/healthz")


def test_the_demo_simulation_runs_every_order_without_a_refusal(
    running_stack: tuple[subprocess.Popen[str], float], stack_env: dict[str, str]
) -> None:
    """The demo's own traffic (follow-up visits charged under the approved quote,
    reworks, silent and late technicians) must be traffic the stack accepts: the
    command exits 1 as soon as one order met a refusal."""
    base = int(stack_env["SERVICETRAIL_BASE_PORT"])
    finished = cli(
        "simulate",
        "--orders",
        "60",
        "--rate",
        "30",
        "--late-arrival-seconds",
        "1",
        "--intake-url",
        f"http://127.0.0.1:{base}",
        "--dispatch-url",
        f"http://127.0.0.1:{base + 1}",
        env=stack_env,
    )
    assert "an order stopped" not in finished.stdout, finished.stdout
    follow_ups = re.search(r"\((\d+) after a follow-up visit\)", finished.stdout)
    assert follow_ups is not None, finished.stdout
    assert int(follow_ups.group(1)) > 0
