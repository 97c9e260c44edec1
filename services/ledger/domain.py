"""The per-order hash chain: pure functions over canonical event bytes.

`h_n = SHA-256(h_{n-1} || canonical bytes of event n)`, with 32 zero bytes before the
first event, so anyone holding the exported bytes can recompute every hash.
Must not import any I/O framework.
"""

from __future__ import annotations

import hashlib
from typing import Final

GENESIS_HASH: Final = bytes(32)


def chain_hash(previous: bytes, canonical: bytes) -> bytes:
    """The next link of an order's chain."""
    return hashlib.sha256(previous + canonical).digest()
