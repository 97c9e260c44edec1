"""Helpers for tests that run services as real processes on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from services.stack import Stack
from shared.settings import CommonSettings


def free_port_block(size: int) -> int:
    """The first of `size` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size > 65535:
            continue
        if all(_is_free(base + n) for n in range(size)):
            return base
    raise RuntimeError("no block of free ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_ready(url: str, *, timeout: float = 60.0) -> float:
    """Seconds until `url/readyz` answers 200."""
    started = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - started < timeout:
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def stack_environment(settings: CommonSettings) -> dict[str, str]:
    """What a test's service processes need: its topics and secret, quick groups."""
    return {
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "JWT_SECRET": settings.hs256_secret(),
        # Tansu holds a new group's first join for about half the session timeout.
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }


def interrupt(process: subprocess.Popen[Any]) -> None:
    """Ctrl-C for a `servicetrail up`: it stops everything it started; killed if not."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def any_response_rule(name: str) -> dict[str, Any]:
    """An alert rule (ALERT_RULES) that any response in the last day breaches, so
    the metrics service raises an alert per region with a response in it."""
    return {
        "name": name,
        "indicator": "response_time_s",
        "statistic": "p90",
        "scope": "region",
        "window": "PT24H",
        "above": True,
        "threshold": 0.0,
        "min_samples": 1,
    }


def services_stack(settings: CommonSettings, home: Path, **environment: str) -> Stack:
    """A stack whose services run on the test's database, topics and secret (only
    the ones a test starts), with brisk consumer groups and quiet logs."""
    return Stack(
        home=home,
        database_url=settings.database_url,
        kafka_bootstrap=settings.kafka_bootstrap_servers,
        extra_env={
            "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "JWT_SECRET": settings.hs256_secret(),
            "KAFKA_SESSION_TIMEOUT_MS": "2000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "LOG_LEVEL": "warning",
            **environment,
        },
    )
