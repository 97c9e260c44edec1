"""The database login role of each service, URLs that connect as one, their passwords.

Migration 0008 creates the roles and their grants (no passwords: secrets stay out of
migrations); whoever deploys sets each password with `set_role_passwords`, as the
owner, and gives each service a URL with its own role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote, urlsplit

import asyncpg

from shared.db.engine import asyncpg_dsn, quote_identifier
from shared.settings import CommonSettings

SERVICE_ROLES: Final[Mapping[str, str]] = {
    "intake": "servicetrail_intake",
    "dispatch": "servicetrail_dispatch",
    "ledger": "servicetrail_ledger",
    "metrics": "servicetrail_metrics",
}
# PostgreSQL's default iteration count for SCRAM verifiers.
_SCRAM_ITERATIONS: Final = 4096


def url_as(url: str, user: str, password: str | None = None) -> str:
    """`url` logging in as `user` (with `password`, else none); all else kept."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    credentials = quote(user, safe="")
    if password is not None:
        credentials += ":" + quote(password, safe="")
    return parts._replace(netloc=f"{credentials}@{host}").geturl()


def without_password(url: str) -> str:
    """`url` with its password removed (for messages, logs and state files)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url_as(url, parts.username or "")


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, 7677).

    Sent instead of the password, so the plain secret never reaches the server,
    where a failing `ALTER ROLE` would write its text into the server log.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode()

    return (
        f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}"
        f"${b64(stored_key)}:{b64(server_key)}"
    )


def set_password_statement(role: str, password: str) -> str:
    """`ALTER ROLE` giving `role` the password (as a verifier; no quotes can occur)."""
    return f"ALTER ROLE {quote_identifier(role)} PASSWORD '{scram_verifier(password)}'"


async def set_role_passwords(owner_url: str, passwords: Mapping[str, str]) -> None:
    """Give each role (name -> password) its password, connected as the owner."""
    conn = await asyncpg.connect(asyncpg_dsn(CommonSettings(database_url=owner_url)))
    try:
        for role, password in passwords.items():
            await conn.execute(set_password_statement(role, password))
    finally:
        await conn.close()
