"""URLs that log in as a service's role, and the SCRAM verifiers sent for passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import unquote, urlsplit

from shared.db.roles import scram_verifier, url_as, without_password

SERVER = "postgresql+asyncpg://postgres:owner-secret@db.example:6543/st?ssl=require"


def test_url_as_replaces_only_the_credentials() -> None:
    url = url_as(SERVER, "servicetrail_ledger", "p@ss:/word%")
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+asyncpg"
    assert parts.username == "servicetrail_ledger"
    assert unquote(parts.password or "") == "p@ss:/word%"
    assert (parts.hostname, parts.port, parts.path, parts.query) == (
        "db.example",
        6543,
        "/st",
        "ssl=require",
    )


def test_url_as_without_a_password_names_none() -> None:
    assert url_as(SERVER, "servicetrail_intake") == (
        "postgresql+asyncpg://servicetrail_intake@db.example:6543/st?ssl=require"
    )


def test_without_password_keeps_the_user_and_drops_the_secret() -> None:
    assert "owner-secret" not in without_password(SERVER)
    assert without_password(SERVER).startswith("postgresql+asyncpg://postgres@")
    plain = "postgresql://postgres@127.0.0.1:5432/x"
    assert without_password(plain) == plain


def test_the_scram_verifier_proves_the_password_as_rfc_5802_defines() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("secret", salt=salt)
    method, _, rest = verifier.partition("$")
    iterations_salt, _, keys = rest.partition("$")
    iterations, _, encoded_salt = iterations_salt.partition(":")
    stored_key, _, server_key = keys.partition(":")
    assert (method, int(iterations), base64.b64decode(encoded_salt)) == (
        "SCRAM-SHA-256",
        4096,
        salt,
    )
    salted = hashlib.pbkdf2_hmac("sha256", b"secret", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
    expected_server = hmac.new(salted, b"Server Key", "sha256").digest()
    assert base64.b64decode(server_key) == expected_server
    assert "secret" not in verifier
