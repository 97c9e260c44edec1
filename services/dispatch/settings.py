"""Settings of the dispatch service (technician side)."""

from __future__ import annotations

from shared.settings import CommonSettings


class DispatchSettings(CommonSettings):
    port: int = 8002
    run_outbox_relay: bool = True
    run_assignment_consumer: bool = True
