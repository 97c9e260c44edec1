"""Settings of the intake service (customer side)."""

from __future__ import annotations

from shared.settings import CommonSettings


class IntakeSettings(CommonSettings):
    port: int = 8001
    # The relay runs in every writing service; an advisory lock elects one leader.
    run_outbox_relay: bool = True
