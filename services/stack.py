"""The embedded stack: PostgreSQL, the broker, migrations and the four services.

`servicetrail up` runs this. With `DATABASE_URL` or `KAFKA_BOOTSTRAP_SERVERS` set, the
external server is used instead of the embedded one. The stack's home directory
(`.stack/` by default, `SERVICETRAIL_HOME` to move it) keeps the PostgreSQL data, the
JWT secret and logs, so a restart finds its orders again.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
from pydantic import SecretStr

from shared.db import migrate
from shared.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    PortInUseError,
    create_topics,
    port_is_free,
)
from shared.events.topics import DEFAULT_PARTITIONS
from shared.settings import CommonSettings

SERVICE_NAMES: Final = ("intake", "dispatch", "ledger", "metrics")
DATABASE_NAME: Final = "servicetrail"
HEALTH_TIMEOUT_SECONDS: Final = 60.0


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def service_ports() -> dict[str, int]:
    """8001-8004 unless SERVICETRAIL_BASE_PORT moves the block."""
    base = _env_int("SERVICETRAIL_BASE_PORT", 8001)
    return {name: base + n for n, name in enumerate(SERVICE_NAMES)}


def stack_home() -> Path:
    return Path(os.environ.get("SERVICETRAIL_HOME", ".stack")).resolve()


def jwt_secret(home: Path) -> str:
    """The stack's HS256 secret: from JWT_SECRET, or created once in the home dir.

    Raises:
        InvalidSettings: JWT_SECRET is shorter than the services accept (they would
            refuse to start; say so before starting them).
    """
    configured = os.environ.get("JWT_SECRET")
    if configured:
        return CommonSettings(jwt_secret=SecretStr(configured)).hs256_secret()
    path = home / "jwt-secret"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    """Starts and stops everything; each part can be used on its own by tests."""

    home: Path
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, home: Path | None = None) -> Stack:
        return cls(
            home=home or stack_home(),
            database_url=os.environ.get("DATABASE_URL"),
            kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        )

    def start_infrastructure(self) -> None:
        """PostgreSQL and the broker (embedded unless given), migrations, topics."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.database_url is None:
            self.postgres = EmbeddedPostgres(
                self.home / "postgres",
                port=_env_int("SERVICETRAIL_POSTGRES_PORT", 55432),
            )
            self.postgres.start()
            self.database_url = self.postgres.create_database(
                DATABASE_NAME, exist_ok=True
            )
        if self.kafka_bootstrap is None:
            self.start_broker()
        migrate.upgrade(self.database_url)
        self.create_topics()

    def start_broker(self, port: int | None = None) -> EmbeddedBroker:
        """Start the embedded broker (SERVICETRAIL_BROKER_PORT unless `port`)."""
        self.broker = EmbeddedBroker(
            port=port or _env_int("SERVICETRAIL_BROKER_PORT", 19092),
            log_file=self.home / "broker.log",
        )
        self.broker.start()
        self.kafka_bootstrap = self.broker.bootstrap_servers
        return self.broker

    def create_topics(self) -> None:
        """Create the topics with their partition counts (existing ones stay)."""
        assert self.kafka_bootstrap is not None
        prefix = self.extra_env.get("KAFKA_TOPIC_PREFIX", "")
        asyncio.run(
            create_topics(
                self.kafka_bootstrap,
                {prefix + name: count for name, count in DEFAULT_PARTITIONS.items()},
            )
        )

    def service_environment(self, name: str, port: int) -> dict[str, str]:
        assert self.database_url is not None
        assert self.kafka_bootstrap is not None
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "JWT_SECRET": jwt_secret(self.home),
            # Kept beside the stack's data, never in the ledger tables.
            "LEDGER_SIGNING_KEY_PATH": str(self.home / "ledger-signing-key.pem"),
            "PORT": str(port),
            **(
                {
                    "KAFKA_SESSION_TIMEOUT_MS": "2000",
                    "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
                }
                if self.broker is not None
                else {}
            ),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def start_service(self, name: str, port: int | None = None) -> ServiceProcess:
        """Start (or restart) one service as its own process, logging to the home."""
        service = self.services.get(name) or ServiceProcess(
            name, port or service_ports()[name]
        )
        log = (self.home / f"{name}.log").open("ab")
        service.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", f"services.{name}"],
            env=self.service_environment(name, service.port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services[name] = service
        return service

    def start_services(self) -> None:
        """Start all four; refuse up front if a port is taken, saying what to do."""
        ports = service_ports()
        taken = [
            f"{name} ({port})" for name, port in ports.items() if not port_is_free(port)
        ]
        if taken:
            raise PortInUseError(
                f"port taken for {', '.join(taken)}: stop what listens there "
                "(another `servicetrail up`?) or set SERVICETRAIL_BASE_PORT"
            )
        for name, port in ports.items():
            self.start_service(name, port)

    def wait_until_healthy(self, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        """Block until every service answers /readyz, or raise with its log tail."""
        deadline = time.monotonic() + timeout
        pending = dict(self.services)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name, service in list(pending.items()):
                    assert service.process is not None
                    if service.process.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {service.process.returncode}; "
                            f"see {self.home / (name + '.log')}"
                        )
                    try:
                        if client.get(f"{service.url}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.TransportError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"not ready after {timeout:.0f} s: {', '.join(pending)}; "
                        f"see the logs in {self.home}"
                    )
                time.sleep(0.2)

    def supervise_once(self) -> list[str]:
        """Restart the embedded broker or any service that died; returns their names.

        A restarted embedded broker has lost every topic and record: the topics are
        created again at once (before the relay's first send would auto-create them
        with the broker's default partition count), and the relay heals the rest.
        """
        restarted = []
        if self.broker is not None and not self.broker.is_running():
            self.broker.start()
            self.create_topics()
            restarted.append("broker")
        for name, service in self.services.items():
            if service.process is not None and service.process.poll() is not None:
                service.restarts += 1
                self.start_service(name)
                restarted.append(name)
        return restarted

    def stop_service(self, name: str, *, sig: int = signal.SIGTERM) -> None:
        service = self.services[name]
        if service.process is None or service.process.poll() is not None:
            return
        service.process.send_signal(sig)
        try:
            service.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()

    def stop(self) -> None:
        """Stop the services, then the broker and PostgreSQL we started."""
        for name in self.services:
            self.stop_service(name)
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def write_state(self) -> None:
        """Record where the running stack is, for `servicetrail token` and others."""
        (self.home / "stack.json").write_text(
            json.dumps(
                {
                    "database_url": self.database_url,
                    "kafka_bootstrap_servers": self.kafka_bootstrap,
                    "services": {n: s.url for n, s in self.services.items()},
                    "pid": os.getpid(),
                },
                indent=2,
            )
        )
