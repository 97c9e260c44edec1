"""Ledger append against a raw COPY of the same rows, on the stack's own server.

`bench.ledger.phases.measure` needs an empty, migrated ledger, so it runs in a new
database of the stack's PostgreSQL (dropped afterwards): same server, same machine
load as the other phases of this run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bench.database import BenchDatabase
from bench.ledger.phases import measure

Say = Callable[[str], None]


def ledger_append(
    server_url: str, *, home: Path, entries: int, say: Say
) -> dict[str, float]:
    """The ledger bench's figures (`ledger_append_vs_copy`, `verify_vs_raw_read`, ...)."""
    db = BenchDatabase(
        server_url=server_url, fsync=True, home=home, prefix="bench_ledger_"
    )
    db.start()
    try:
        return asyncio.run(
            measure(
                db.url,
                entries=entries,
                orders=max(1, entries // 10),
                key_path=home / "ledger-append-key.pem",
                say=say,
            )
        )
    finally:
        db.stop()
