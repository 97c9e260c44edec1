"""Settings of the ledger service (audit side)."""

from __future__ import annotations

from pathlib import Path

from shared.settings import CommonSettings


class LedgerSettings(CommonSettings):
    port: int = 8003
    run_consumer: bool = True
    # Outside the ledger tables on purpose: whoever can rewrite the tables must not
    # also hold the key that signs them.
    ledger_signing_key_path: Path = Path(".stack/ledger-signing-key.pem")
