"""RFC 8785 (JSON Canonicalization Scheme) bytes and digests.

Canonical bytes make hashes independent of key order and whitespace, so the ledger and
idempotency digests can be recomputed by anyone from the JSON alone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialization of a JSON value (dicts, lists, str, int, bool, None)."""
    return rfc8785.dumps(value)


def canonical_digest(value: Any) -> bytes:
    """SHA-256 of the canonical bytes."""
    return hashlib.sha256(canonical_bytes(value)).digest()


def fingerprint(value: Any) -> bytes:
    """SHA-256 of sorted-key JSON: a stable digest of a request for idempotency.

    Only this service compares these digests, so the C-accelerated `json` module will
    do; RFC 8785 (several times slower here) is kept for what outsiders verify.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()
