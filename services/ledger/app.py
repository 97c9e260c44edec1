"""The ledger application: consumes every order event into the audit ledger."""

from __future__ import annotations

from fastapi import FastAPI

from services.ledger.api import router
from services.ledger.consumer import LedgerAppender
from services.ledger.settings import LedgerSettings
from services.ledger.signing import TreeSigner
from services.ledger.store import tracking
from shared.events.topics import LEDGER_GROUP, ORDER_EVENTS
from shared.http.application import build_app
from shared.service import consumer_service_lifespan


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()
    signer = TreeSigner.load_or_create(settings.ledger_signing_key_path)
    lifespan = consumer_service_lifespan(
        settings,
        tracking=tracking,
        group_id=LEDGER_GROUP,
        topics=[ORDER_EVENTS],
        handler=LedgerAppender(signer),
        # The ledger signs what it appends: only what the event store holds, never
        # whatever someone able to produce to the topic wrote there.
        check_against_store=True,
        extra_state={"signer": signer},
        run_consumer=settings.run_consumer,
    )
    return build_app(
        service="ledger", settings=settings, lifespan=lifespan, routers=[router]
    )
