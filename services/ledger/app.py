"""The ledger application: consumes every order event into the audit ledger."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider

from services.ledger.api import router
from services.ledger.consumer import LedgerAppender
from services.ledger.settings import LedgerSettings
from services.ledger.signing import TreeSigner
from services.ledger.store import tracking
from shared.events.topics import LEDGER_GROUP, ORDER_EVENTS
from shared.http.application import build_app
from shared.service import (
    ConsumerRunner,
    ServiceResources,
    ServiceState,
    service_lifespan,
)


class LedgerState(ServiceState):
    """The ledger's lifespan state: its consumer and the tree signer."""

    consumer: ConsumerRunner
    signer: TreeSigner


def create_app(
    settings: LedgerSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The ledger app; traced on `tracer_provider` when given, else as OTEL_* say."""
    settings = settings or LedgerSettings()
    signer = TreeSigner.load_or_create(settings.ledger_signing_key_path)

    async def open_resources(service: ServiceResources) -> LedgerState:
        consumer = service.add_consumer(
            tracking=tracking,
            group_id=LEDGER_GROUP,
            topics=[ORDER_EVENTS],
            handler=LedgerAppender(signer),
            # The ledger signs what it appends: only what the event store holds,
            # never whatever someone able to produce to the topic wrote there.
            check_against_store=True,
            # It hashes the bytes and stores the header's columns: the payload is
            # the store's business, which validated it before storing it.
            parse_payloads=False,
            run=settings.run_consumer,
        )
        return LedgerState(**service.state(), consumer=consumer, signer=signer)

    return build_app(
        service="ledger",
        settings=settings,
        lifespan=service_lifespan(settings, open_resources),
        tracer_provider=tracer_provider,
        routers=[router],
    )
