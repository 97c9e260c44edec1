"""RFC 8785 (JSON Canonicalization Scheme) bytes and digests.

Canonical bytes make hashes independent of key order and whitespace, so the ledger and
idempotency digests can be recomputed by anyone from the JSON alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialization of a JSON value (dicts, lists, str, int, bool, None)."""
    return rfc8785.dumps(value)


def canonical_digest(value: Any) -> bytes:
    """SHA-256 of the canonical bytes."""
    return hashlib.sha256(canonical_bytes(value)).digest()
