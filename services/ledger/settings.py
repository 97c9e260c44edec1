"""Settings of the ledger service (audit side)."""

from __future__ import annotations

from shared.settings import CommonSettings


class LedgerSettings(CommonSettings):
    port: int = 8003
    run_consumer: bool = True
