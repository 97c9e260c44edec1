"""The embedded stack: PostgreSQL, the broker, migrations and the four services.

`servicetrail up` runs this. With `DATABASE_URL` or `KAFKA_BOOTSTRAP_SERVERS` set, the
external server is used instead of the embedded one. The stack's home directory
(`.stack/` by default, `SERVICETRAIL_HOME` or `up --home` to move it) keeps the
PostgreSQL data, the secrets, logs and the tokens it printed, so a restart finds its
orders again. Only starting a stack makes secrets; other commands find the home
(`services.stack.home`) and read them (`read_jwt_secret`).

Migrations run as the database owner; each service logs in as its own role
(`shared.db.roles`) with a password the stack generates once and keeps in
`secrets/` (files of mode 0600, created exclusively). The embedded PostgreSQL
requires a password from everyone, its superuser too.

The embedded servers live beside this module (`postgres`, `broker`): they are
development and test infrastructure, so no service imports them at run time.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
from pydantic import SecretStr

from services.stack.broker import EmbeddedBroker, create_topics
from services.stack.home import (
    JWT_SECRET_FILE,
    STATE_FILE,
    StackNotFound,
    home_to_start,
)
from services.stack.postgres import SUPERUSER, EmbeddedPostgres
from services.stack.servers import PortInUseError, port_is_free
from shared.db.roles import SERVICE_ROLES, set_role_passwords, url_as, without_password
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


def stored_secret(path: Path) -> str:
    """The secret in `path`, generated there first if missing (mode 0600).

    The file is created with O_EXCL and its final mode in one call: never readable by
    others for an instant, and of two starts racing, one writes and both read it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return read_secret(path)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(32))
    return read_secret(path)


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only from the first byte."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(
        temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_TRUNC, 0o600
    )
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def read_secret(path: Path) -> str:
    """A secret stored by `stored_secret`; refused when others could read it."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise PermissionError(
            f"{path} is readable by others: make it private (chmod 600) or delete it"
        )
    for _ in range(50):
        # Another start may have created the file an instant before writing it.
        if value := path.read_text().strip():
            return value
        time.sleep(0.02)
    raise ValueError(f"{path} is empty: delete it to have a new secret made")


def configured_jwt_secret() -> str | None:
    """JWT_SECRET, checked as the services check it.

    Raises:
        InvalidSettings: JWT_SECRET is shorter than the services accept (they would
            refuse to start; say so before starting them).
    """
    configured = os.environ.get("JWT_SECRET")
    if configured:
        return CommonSettings(jwt_secret=SecretStr(configured)).hs256_secret()
    return None


def jwt_secret(home: Path) -> str:
    """The stack's HS256 secret: from JWT_SECRET, or created once in the home dir.

    Only for starting a stack: everything else reads it (`read_jwt_secret`).
    """
    return configured_jwt_secret() or stored_secret(home / JWT_SECRET_FILE)


def read_jwt_secret(home: Path) -> str:
    """The HS256 secret of the stack in `home` (JWT_SECRET overrides); never made.

    Raises:
        StackNotFound: no stack ever started in `home`.
    """
    if configured := configured_jwt_secret():
        return configured
    path = home / JWT_SECRET_FILE
    if not path.is_file():
        raise StackNotFound(
            f"No stack has started in {home} (no {JWT_SECRET_FILE}): "
            "run `servicetrail up` there."
        )
    return read_secret(path)


def database_password_path(home: Path, role: str) -> Path:
    return home / "secrets" / f"database-{role}"


def database_password(home: Path, role: str) -> str:
    """The password of a database role (the superuser's or a service's) in this home."""
    return stored_secret(database_password_path(home, role))


def dashboard_environment(ports: dict[str, int]) -> dict[str, str]:
    """The dashboard (served by metrics) calls intake and the ledger from the
    browser: their addresses for the page, and its origins for their CORS."""
    metrics = ports["metrics"]
    return {
        "CORS_ALLOW_ORIGINS": f"http://127.0.0.1:{metrics},http://localhost:{metrics}",
        "DASHBOARD_INTAKE_URL": f"http://127.0.0.1:{ports['intake']}",
        "DASHBOARD_LEDGER_URL": f"http://127.0.0.1:{ports['ledger']}",
    }


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
    # Role -> password, once `start_infrastructure` set them; a stack given only a
    # `database_url` (tests on a trusting server) logs its services in without.
    role_passwords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, home: Path | None = None) -> Stack:
        return cls(
            home=home or home_to_start(),
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
                password=database_password(self.home, SUPERUSER),
            )
            self.postgres.start()
            self.database_url = self.postgres.create_database(
                DATABASE_NAME, exist_ok=True
            )
        if self.kafka_bootstrap is None:
            self.start_broker()
        # Here, not at import: Alembic would slow every `servicetrail` command.
        from shared.db import migrate

        migrate.upgrade(self.database_url)
        self.set_role_passwords()
        self.create_topics()

    def set_role_passwords(self) -> None:
        """Give each service's role its password from the home (after migrating)."""
        assert self.database_url is not None
        self.role_passwords = {
            role: database_password(self.home, role) for role in SERVICE_ROLES.values()
        }
        asyncio.run(set_role_passwords(self.database_url, self.role_passwords))

    def service_database_url(self, name: str) -> str:
        """The URL service `name` connects with: its own role, never the owner."""
        assert self.database_url is not None
        role = SERVICE_ROLES[name]
        return url_as(self.database_url, role, self.role_passwords.get(role))

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
        ports = service_ports() | {n: s.port for n, s in self.services.items()}
        return {
            # The caller's own environment wins over these.
            **dashboard_environment(ports),
            **os.environ,
            "DATABASE_URL": self.service_database_url(name),
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
        """Record where the running stack is, for `servicetrail token` and others.

        The owner's password stays in its secret file, named here for the CLI.
        """
        assert self.database_url is not None
        (self.home / STATE_FILE).write_text(
            json.dumps(
                {
                    "database_url": without_password(self.database_url),
                    "database_password_file": (
                        None
                        if self.postgres is None
                        else str(database_password_path(self.home, SUPERUSER))
                    ),
                    "kafka_bootstrap_servers": self.kafka_bootstrap,
                    "services": {n: s.url for n, s in self.services.items()},
                    "pid": os.getpid(),
                },
                indent=2,
            )
        )
