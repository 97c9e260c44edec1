"""The ledger appends only what the event store holds, whatever is produced to the topic.

Forged and altered records reach the topic before the genuine next event: the ledger
dead-letters them with the reason and goes on, and then appends the genuine event of
that version (a forgery must neither take its version nor mark its id processed).
The other consumers check too: dispatch dead-letters a forged `created`, and metrics
a forged `completed` and `rated`, whose indicators count only the real events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final
from uuid import UUID, uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.dispatch.store import tracking as dispatch_tracking
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.ledger.store import tracking
from shared.db.engine import driver_of
from shared.db.event_store import match_stored
from shared.domain import events
from shared.domain.events import Outcome
from shared.domain.lifecycle import OrderEvent
from shared.events.canonical import canonical_bytes
from shared.events.envelope import encode
from shared.events.provenance import (
    ALTERED,
    FORGED,
    OTHER_ORDER,
    OTHER_VERSION,
    StoredMatch,
)
from shared.events.topics import (
    DEAD_LETTER,
    DISPATCH_GROUP,
    LEDGER_GROUP,
    METRICS_GROUP,
)
from shared.kafka.consumer import ConsumedEvent
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import happy_path_history, make_completed, random_ref
from tests.fixtures.stack import service_settings
from tests.http_events import started
from tests.integration.kafka_io import consuming, publish, read_topic, record_value
from tests.integration.ledger_io import (
    auditor_headers,
    ledger_app,
    ledger_rows,
    ledger_verdict,
    order_topic,
    wait_for_size,
)
from tests.integration.metrics_io import (
    assert_indicators,
    differences,
    dispatcher,
    metrics_client,
    publish_events,
    reference_indicators,
    wait_caught_up,
)
from tests.integration.store_io import store_events

pytestmark = pytest.mark.integration

# The real events stored and published before the forgeries (versions 1..N).
STORED_FIRST: Final = 3


def altered(event: OrderEvent, **data: Any) -> bytes:
    """The record of `event` with fields of its data changed (id and version kept)."""
    envelope = json.loads(record_value(event))
    envelope["data"].update(data)
    return encode(envelope)


def forgeries(history: list[OrderEvent]) -> list[tuple[bytes, str]]:
    """(record value, expected reason) of records nobody stored, for the same order."""
    following = history[STORED_FIRST]  # version N+1, not yet stored
    other_order = happy_path_history()[0]
    return [
        # Version N+1 under a made-up id.
        (record_value(dataclasses.replace(following, event_id=uuid4())), FORGED),
        # The genuine N+1's own id, altered, before the genuine one is even stored:
        # it must not mark that id processed.
        (altered(following, technician_id="technician-forger"), FORGED),
        # A stored event's id with altered data.
        (altered(history[0], description="forged description"), ALTERED),
        # A stored event's id and content, claimed for version N+1.
        (
            record_value(dataclasses.replace(history[1], version=STORED_FIRST + 1)),
            OTHER_VERSION,
        ),
        # A stored event's id moved to another order.
        (
            record_value(
                dataclasses.replace(history[2], order_id=other_order.order_id)
            ),
            OTHER_ORDER,
        ),
    ]


async def rejected_counts(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """`servicetrail_consumer_records_rejected_total` by (group, reason)."""
    response = await client.get("/metrics")
    return {
        (sample.labels["group"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "servicetrail_consumer_records_rejected_total"
    }


async def stored_envelopes(engine: AsyncEngine, order_id: UUID) -> dict[UUID, Any]:
    """event id -> (version, envelope) as the event store holds them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id, version, envelope::text AS envelope "
                "FROM event_store.order_event WHERE order_id = :order_id"
            ),
            {"order_id": order_id},
        )
        return {r.event_id: (r.version, json.loads(r.envelope)) for r in rows}


async def test_forged_and_altered_records_are_dead_lettered_and_the_real_event_appended(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    history = happy_path_history()
    order_id = history[0].order_id
    forged = forgeries(history)
    headers = auditor_headers(settings)
    intake = create_intake(
        service_settings(settings, IntakeSettings, run_outbox_relay=True)
    )
    async with running(intake), running(ledger_app(settings)) as ledger:
        await store_events(settings, history[:STORED_FIRST])
        await wait_for_size(ledger, headers, STORED_FIRST)
        before = await rejected_counts(ledger)

        await publish(
            settings.kafka_bootstrap_servers,
            order_topic(settings),
            [(str(order_id), value) for value, _ in forged],
        )
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_prefix + DEAD_LETTER,
            expected=len(forged),
            timeout=30,
        )
        after = await rejected_counts(ledger)

        # Only now does the genuine N+1 exist; the relay publishes it after them.
        await store_events(settings, [history[STORED_FIRST]])
        await wait_for_size(ledger, headers, STORED_FIRST + 1)
        verdict = await ledger_verdict(ledger, headers)

    assert verdict["valid"] is True, verdict
    assert {
        reason: after.get((LEDGER_GROUP, reason), 0)
        - before.get((LEDGER_GROUP, reason), 0)
        for reason in ("forged", "altered")
    } == {"forged": 2, "altered": 3}
    stored = await stored_envelopes(engine, order_id)
    rows = await ledger_rows(engine)
    assert {r.event_id for r in rows} == set(stored)
    for row in rows:
        version, envelope = stored[row.event_id]
        assert (row.order_id, row.order_version) == (order_id, version)
        # What the ledger hashed is the canonical form of the stored envelope.
        assert row.canonical == canonical_bytes(envelope)

    assert [(r.value, dict(r.headers)["rejected.reason"]) for r in dead] == [
        (value, reason.encode()) for value, reason in forged
    ]
    for record in dead:
        record_headers = dict(record.headers)
        assert record_headers["error.type"] == b"UntrustedRecord"
        assert record_headers["consumer.group"] == LEDGER_GROUP.encode()

    # Not blocked: the stored offset is past the forgeries, at the genuine N+1.
    topic = await read_topic(
        settings.kafka_bootstrap_servers,
        order_topic(settings),
        expected=STORED_FIRST + len(forged) + 1,
    )
    genuine_next = [r for r in topic if r.value == record_value(history[STORED_FIRST])]
    assert len(genuine_next) == 1
    forged_offsets = [int(dict(r.headers)["original.offset"]) for r in dead]
    assert max(forged_offsets) < genuine_next[0].offset
    table = tracking.consumer_offset
    async with engine.connect() as conn:
        offsets = (
            await conn.execute(
                select(table.c.partition, table.c.offset).where(
                    table.c.group_id == LEDGER_GROUP
                )
            )
        ).all()
    assert [tuple(o) for o in offsets] == [
        (genuine_next[0].partition, genuine_next[0].offset)
    ]


async def _spellings_matched(
    conn: AsyncConnection, created: OrderEvent
) -> tuple[bytes, list[StoredMatch | None]]:
    """The published record, and `match_stored` over it, the jsonb rendering that
    healing re-queues, a re-spaced copy, an altered copy and an unknown id."""
    original = record_value(created)
    envelope = json.loads(original)
    rendered = await conn.scalar(
        text("SELECT envelope::text FROM event_store.order_event WHERE event_id = :id"),
        {"id": created.event_id},
    )
    assert rendered.encode() != original
    spaced = json.dumps(dict(reversed(envelope.items())), indent=2).encode()
    as_number = altered(created, warranty=1)  # true is not 1
    matches = await match_stored(
        await driver_of(conn),
        [(created.event_id, v) for v in (original, rendered.encode(), spaced)]
        + [(created.event_id, as_number), (uuid4(), original)],
    )
    return original, matches


async def test_records_match_by_the_digest_of_their_canonical_bytes(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    created = happy_path_history(warranty=True)[0]
    await store_events(settings, [created])
    async with engine.connect() as conn:
        original, matches = await _spellings_matched(conn, created)
        stored_digest = await conn.scalar(
            text(
                "SELECT canonical_digest FROM event_store.order_event "
                "WHERE event_id = :id"
            ),
            {"id": created.event_id},
        )
    # The writers publish the RFC 8785 bytes and store their digest.
    assert original == canonical_bytes(json.loads(original))
    assert stored_digest == hashlib.sha256(original).digest()
    # Every spelling of the stored envelope yields the same canonical bytes.
    same = StoredMatch(created.order_id, 1, same_envelope=True, canonical=original)
    assert matches == [
        same,
        same,
        same,
        StoredMatch(created.order_id, 1, same_envelope=False),
        None,
    ]


async def test_events_stored_without_a_digest_match_as_json_values(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    """Events stored before digests were kept (revision 0012) are still checked."""
    created = happy_path_history(warranty=True)[0]
    await store_events(settings, [created])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE event_store.order_event SET canonical_digest = NULL "
                "WHERE event_id = :id"
            ),
            {"id": created.event_id},
        )
    async with engine.connect() as conn:
        _, matches = await _spellings_matched(conn, created)
    same = StoredMatch(created.order_id, 1, same_envelope=True)
    assert matches == [
        same,
        same,
        same,
        dataclasses.replace(same, same_envelope=False),
        None,
    ]


async def test_dispatch_dead_letters_a_forged_created_and_assigns_real_orders(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    forged = happy_path_history()[0]
    technician = random_ref("tech")
    async with started(settings, kafka=True) as services:
        await services.register_technician(technician)
        await publish(
            settings.kafka_bootstrap_servers,
            order_topic(settings),
            [(str(forged.order_id), record_value(forged))],
        )
        order_id = await services.create_order(random_ref("cust"))
        async with asyncio.timeout(30):
            while (order := await services.order(order_id))["status"] != "assigned":
                await asyncio.sleep(0.05)
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_prefix + DEAD_LETTER,
            expected=1,
        )

    assert order["technician_id"] == technician
    assert [
        (dict(r.headers)["rejected.reason"], dict(r.headers)["consumer.group"])
        for r in dead
    ] == [(FORGED.encode(), DISPATCH_GROUP.encode())]
    table = dispatch_tracking.processed_event
    async with engine.connect() as conn:
        processed = await conn.scalar(
            select(table.c.event_id).where(table.c.event_id == forged.event_id)
        )
    assert processed is None


async def test_metrics_dead_letters_a_forged_completion_and_rating_and_counts_the_real(
    settings: CommonSettings,
) -> None:
    history = happy_path_history()
    *before_end, completed, rated = history
    assert isinstance(completed.data, events.Completed)
    assert isinstance(rated.data, events.Rated)
    forged = [
        # A `not_fixed` completion at the real one's version, under a made-up id.
        dataclasses.replace(
            completed,
            event_id=uuid4(),
            data=make_completed(0, outcome=Outcome.NOT_FIXED),
        ),
        # The real rating's own id with a score of 1, before the real one is stored.
        dataclasses.replace(rated, data=events.Rated(score=1, nps=0)),
    ]
    real = reference_indicators(history)
    # Applied in place of the real ones, the forgeries would move the indicators.
    assert differences(reference_indicators([*before_end, *forged]), real)
    headers = dispatcher(settings)
    async with metrics_client(settings) as metrics:
        await publish_events(settings, before_end)
        await wait_caught_up(metrics, headers, len(before_end))
        before = await rejected_counts(metrics)
        await publish(
            settings.kafka_bootstrap_servers,
            order_topic(settings),
            [(str(event.order_id), record_value(event)) for event in forged],
        )
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_prefix + DEAD_LETTER,
            expected=len(forged),
            timeout=30,
        )
        # Only now are the real ones stored (and published after the forgeries).
        await publish_events(settings, [completed, rated])
        payload = await wait_caught_up(metrics, headers, len(history) + len(forged))
        after = await rejected_counts(metrics)

    assert_indicators(payload["indicators"], real)
    assert [
        (
            r.value,
            dict(r.headers)["rejected.reason"],
            dict(r.headers)["consumer.group"],
        )
        for r in dead
    ] == [(record_value(e), FORGED.encode(), METRICS_GROUP.encode()) for e in forged]
    rejected = after.get((METRICS_GROUP, "forged"), 0)
    assert rejected - before.get((METRICS_GROUP, "forged"), 0) == len(forged)


class Recorder:
    """A handler that only remembers what it was given."""

    def __init__(self) -> None:
        self.event_ids: list[UUID] = []

    async def handle(
        self, events: Sequence[ConsumedEvent], conn: AsyncConnection
    ) -> None:
        self.event_ids += [e.event.event_id for e in events]


@contextlib.asynccontextmanager
async def role_without_event_store(engine: AsyncEngine) -> AsyncIterator[str]:
    """A role with the ledger's tracking tables but no grant on the event store."""
    role = f"test_no_store_{uuid4().hex[:10]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        await conn.execute(text(f"GRANT USAGE ON SCHEMA ledger TO {role}"))
        await conn.execute(
            text(
                "GRANT SELECT, INSERT, UPDATE ON ledger.consumer_offset, "
                f"ledger.processed_event TO {role}"
            )
        )
    try:
        yield role
    finally:
        # Roles outlive the test's database: revoke everything, then drop it.
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))


async def test_a_missing_grant_on_the_store_stalls_the_consumer_and_loses_nothing(
    settings: CommonSettings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    created = happy_path_history()[0]
    await store_events(settings, [created])
    await publish(
        settings.kafka_bootstrap_servers,
        order_topic(settings),
        [(str(created.order_id), record_value(created))],
    )
    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="shared.kafka.consumer")
    async with role_without_event_store(engine) as role:
        as_role = create_async_engine(
            settings.sqlalchemy_url,
            connect_args={"server_settings": {"role": role}},
        )
        try:
            async with consuming(
                as_role,
                settings,
                tracking=tracking,
                handler=recorder,
                check_against_store=True,
            ) as consumer:
                async with asyncio.timeout(30):
                    while "permission denied" not in caplog.text:
                        await asyncio.sleep(0.05)
                async with engine.begin() as conn:
                    await conn.execute(
                        text(f"GRANT USAGE ON SCHEMA event_store TO {role}")
                    )
                    await conn.execute(
                        text(f"GRANT SELECT ON event_store.order_event TO {role}")
                    )
                async with asyncio.timeout(30):
                    while not recorder.event_ids:
                        await asyncio.sleep(0.05)
        finally:
            await as_role.dispose()

    assert recorder.event_ids == [created.event_id]
    assert consumer.dead_lettered_total == 0
