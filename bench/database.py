"""A fresh, migrated database for one run, and its removal afterwards.

Without `--database-url` an embedded PostgreSQL is started in a temporary directory
(fsync on unless `--no-fsync`). With it, a new database is created on that server
(the URL's user needs CREATEDB) and dropped at the end (kept with `--keep`): the ledger tables refuse
DELETE and TRUNCATE by design, and a run must never touch an existing database's tables.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.ingest.cluster import plain_url
from services.stack.postgres import EmbeddedPostgres
from shared.db import migrate


def _with_database(url: str, database: str) -> str:
    """`url` pointing at `database` (query string kept)."""
    base, question, query = url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}{question}{query}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(slots=True)
class BenchDatabase:
    """Where the run writes; `url` is set once `start()` returned."""

    server_url: str | None
    fsync: bool
    home: Path  # the embedded server's data goes under it; the caller removes it
    keep: bool = False
    # Names the throwaway database after the benchmark that made it.
    prefix: str = "bench_"
    url: str = ""
    name: str = ""
    _server: EmbeddedPostgres | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        if self._server is not None:
            return (
                f"embedded PostgreSQL in {self._server.data_dir} "
                f"(fsync {'on' if self.fsync else 'off'})"
            )
        return f"database {self.name} on {self.server_url}"

    @property
    def postmaster_pid(self) -> int | None:
        """The embedded server's postmaster (its backends are its children)."""
        if self._server is None:
            return None
        try:
            first = (self._server.data_dir / "postmaster.pid").read_text().split()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.isdigit() else None

    def start(self) -> None:
        """Start or create the database and apply the migrations (blocking)."""
        self.name = self.prefix + secrets.token_hex(4)
        if self.server_url is None:
            self._server = EmbeddedPostgres(self.home / "pgdata", fsync=self.fsync)
            self._server.start()
            self.url = self._server.create_database(self.name)
        else:
            server = plain_url(self.server_url)
            asyncio.run(_execute(server, f"CREATE DATABASE {_quote(self.name)}"))
            self.url = _with_database(server, self.name)
        # Alembic runs its own event loop: call it outside ours.
        migrate.upgrade(self.url)

    def stop(self) -> None:
        """Stop the server or drop the database (unless `keep`); idempotent."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        elif self.server_url is not None and self.name and not self.keep:
            asyncio.run(
                _execute(
                    plain_url(self.server_url),
                    f"DROP DATABASE IF EXISTS {_quote(self.name)} WITH (FORCE)",
                )
            )
            self.name = ""


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
