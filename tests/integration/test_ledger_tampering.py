"""A superuser tampers with the ledger tables; every check names where.

Each test fills a real ledger through Kafka, then, as the PostgreSQL superuser with
the append-only triggers switched off for one transaction, changes a byte, deletes,
swaps, forges or cuts off entries. Afterwards the online check of the whole ledger
(`GET /v1/ledger/verify`), the online check of one order (`GET /v1/orders/{id}/verify`)
and the offline audit of an export taken *after* the tampering (`audit_export`, with
the public key saved before it) must each say "invalid" and name the first broken
position exactly.

The fork tests show the limit of all that: a forger who recomputes every hash is
caught only by a signed tree head the auditor saved before the forgery.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.audit import Report, audit_export, signed_head_from_json
from services.ledger.domain import TreeHead, verify_consistency
from services.ledger.signing import TreeSigner, load_public_key
from shared.domain.actors import Actor, Role
from shared.domain.lifecycle import OrderEvent
from shared.events.canonical import canonical_bytes
from shared.events.envelope import format_time, to_cloudevent
from shared.events.topics import SOURCE_INTAKE
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import happy_path_history, make_complaint_filed
from tests.integration.ledger_io import (
    GENESIS,
    LEDGER_ROLE,
    Row,
    append_events,
    auditor_headers,
    chain_link,
    export_lines,
    ledger_app,
    ledger_rows,
    ledger_verdict,
    merkle_tree_hash,
    order_verdict,
    perfect_subtrees,
    rfc_leaf_hash,
    triggers_disabled,
)

pytestmark = pytest.mark.integration

ORDERS = 3


@dataclass(frozen=True, slots=True)
class Ledger:
    """A running, filled ledger and what an auditor saved from it beforehand."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    rows: list[Row]
    checkpoint: dict[str, Any]
    public_key: Ed25519PublicKey

    @property
    def size(self) -> int:
        return len(self.rows)

    def of_order(self, order_id: UUID) -> list[Row]:
        return [r for r in self.rows if r.order_id == order_id]

    def at(self, position: int) -> Row:
        row = self.rows[position]
        assert row.position == position
        return row


@asynccontextmanager
async def filled_ledger(
    settings: CommonSettings, engine: AsyncEngine, orders: int = ORDERS
) -> AsyncIterator[Ledger]:
    """The ledger app with `orders` happy-path histories appended and signed."""
    histories = [happy_path_history() for _ in range(orders)]
    events = [e for h in histories for e in h]
    headers = auditor_headers(settings)
    async with running(ledger_app(settings)) as client:
        _, checkpoint = await append_events(
            settings, client, headers, events, size_after=len(events)
        )
        rows = await ledger_rows(engine)
        assert [r.position for r in rows] == list(range(len(events)))
        yield Ledger(
            client=client,
            headers=headers,
            rows=rows,
            checkpoint=checkpoint,
            # The auditor's own copy of the key, taken before anything happened.
            public_key=load_public_key(checkpoint["public_key"]),
        )


@dataclass(frozen=True, slots=True)
class Verdicts:
    ledger: dict[str, Any]
    order: dict[str, Any]
    audit: Report


async def verdicts(ledger: Ledger, order_id: UUID) -> Verdicts:
    """The three checks, run after the tampering (the export is taken now)."""
    exported = await export_lines(ledger.client, ledger.headers)
    return Verdicts(
        ledger=await ledger_verdict(ledger.client, ledger.headers),
        order=await order_verdict(ledger.client, ledger.headers, order_id),
        audit=audit_export(exported, ledger.public_key),
    )


def assert_online_broken_at(
    result: dict[str, Any], position: int, order_id: UUID | None
) -> None:
    assert result["valid"] is False, result
    assert result["first_broken_position"] == position, result
    if order_id is not None:
        named = {f["order_id"] for f in result["findings"] if f["position"] == position}
        assert named == {str(order_id)}, result


def assert_audit_broken_at(
    report: Report, position: int, order_id: UUID | None
) -> None:
    assert not report.valid, report
    assert report.first_broken_position == position, report.findings
    if order_id is not None:
        named = {f.order_id for f in report.findings if f.position == position}
        assert named == {order_id}, report.findings


async def set_row(conn: AsyncConnection, position: int, **values: object) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    await conn.execute(
        text(
            f"UPDATE ledger.ledger_entry SET {assignments} WHERE position = :position"
        ),
        {**values, "position": position},
    )


async def test_the_ledger_is_valid_before_anyone_tampers(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        some_order = ledger.rows[0].order_id
        found = await verdicts(ledger, some_order)
        assert found.ledger["valid"] is True, found.ledger
        assert found.ledger["events"] == ledger.size
        assert found.order["valid"] is True, found.order
        assert found.audit.valid, found.audit.findings
        assert found.audit.entries == ledger.size


async def test_one_changed_byte_is_found_at_its_position(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        # The diagnosis (version 5) of some order: not its first or last event.
        target = next(r for r in ledger.rows if r.order_version == 5)
        offset = target.canonical.index(b'"data":{') + len(b'"data":{"')
        assert chr(target.canonical[offset]).isalpha()
        changed = bytearray(target.canonical)
        changed[offset] ^= 0x20  # swap the letter's case: still valid UTF-8 JSON
        async with triggers_disabled(engine) as conn:
            await set_row(conn, target.position, canonical=bytes(changed))

        found = await verdicts(ledger, target.order_id)
        assert_online_broken_at(found.ledger, target.position, target.order_id)
        assert_online_broken_at(found.order, target.position, target.order_id)
        assert_audit_broken_at(found.audit, target.position, target.order_id)
        problems = {f.problem for f in found.audit.findings}
        assert "leaf hash does not match the event bytes" in problems


async def test_a_deleted_entry_is_found_at_its_position(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        target = next(r for r in ledger.rows if r.order_version == 5)
        next_of_order = next(
            r for r in ledger.of_order(target.order_id) if r.order_version == 6
        )
        async with triggers_disabled(engine) as conn:
            await conn.execute(
                text("DELETE FROM ledger.ledger_entry WHERE position = :p"),
                {"p": target.position},
            )

        found = await verdicts(ledger, target.order_id)
        # The whole ledger misses a position; the order's chain breaks at its next
        # entry, which now follows version 4.
        assert_online_broken_at(found.ledger, target.position, None)
        assert_online_broken_at(found.order, next_of_order.position, target.order_id)
        assert_audit_broken_at(found.audit, target.position, None)
        missing = f"positions {target.position}..{target.position} are missing"
        assert missing in {f.problem for f in found.audit.findings}


async def test_a_deleted_entry_is_not_blamed_on_the_next_order(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        # An entry followed by another order's entry.
        target = next(
            r
            for r in ledger.rows[:-1]
            if ledger.at(r.position + 1).order_id != r.order_id
        )
        async with triggers_disabled(engine) as conn:
            await conn.execute(
                text("DELETE FROM ledger.ledger_entry WHERE position = :p"),
                {"p": target.position},
            )

        found = await verdicts(ledger, target.order_id)
        at_gap = [f for f in found.audit.findings if f.position == target.position]
        assert at_gap
        # The deleted row's order cannot be known from the rest; naming the next
        # entry's order misleads the auditor.
        assert {f.order_id for f in at_gap} <= {None, target.order_id}, at_gap
        online = [
            f for f in found.ledger["findings"] if f["position"] == target.position
        ]
        assert {f["order_id"] for f in online} <= {None, str(target.order_id)}, online


SWAPPED_COLUMNS = (
    "event_id",
    "order_id",
    "order_version",
    "event_type",
    "event_time",
    "recorded_at",
    "canonical",
    "chain_hash",
    "leaf_hash",
)


async def swap_rows(conn: AsyncConnection, first: Row, second: Row) -> None:
    """Exchange the contents of two positions, through a placeholder.

    `event_id` and `(order_id, order_version)` are unique, so the first row is
    parked on values nobody holds before the second takes its old ones.
    """

    def contents(row: Row) -> dict[str, object]:
        return {c: getattr(row, c) for c in SWAPPED_COLUMNS}

    await set_row(conn, first.position, event_id=uuid4(), order_version=-1)
    await set_row(conn, second.position, **contents(first))
    await set_row(conn, first.position, **contents(second))


async def test_two_swapped_entries_of_one_order_are_found_at_the_first(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        earlier = next(r for r in ledger.rows if r.order_version == 4)
        later = next(
            r for r in ledger.of_order(earlier.order_id) if r.order_version == 5
        )
        async with triggers_disabled(engine) as conn:
            await swap_rows(conn, earlier, later)
        swapped = await ledger_rows(engine)
        assert swapped[earlier.position].event_id == later.event_id
        assert swapped[later.position].event_id == earlier.event_id

        found = await verdicts(ledger, earlier.order_id)
        assert_online_broken_at(found.ledger, earlier.position, earlier.order_id)
        assert_online_broken_at(found.order, earlier.position, earlier.order_id)
        assert_audit_broken_at(found.audit, earlier.position, earlier.order_id)


async def test_the_first_and_last_entries_swapped_are_found_at_position_zero(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        first, last = ledger.at(0), ledger.at(ledger.size - 1)
        assert first.order_id != last.order_id  # three orders of nine events each
        async with triggers_disabled(engine) as conn:
            await swap_rows(conn, first, last)

        # Position 0 now holds the last order's last version, before its others.
        found = await verdicts(ledger, last.order_id)
        assert_online_broken_at(found.ledger, 0, last.order_id)
        assert_online_broken_at(found.order, 0, last.order_id)
        assert_audit_broken_at(found.audit, 0, last.order_id)
        # The first order's chain now starts at its version 2.
        second_of_first = next(
            r for r in ledger.of_order(first.order_id) if r.order_version == 2
        )
        other = await order_verdict(ledger.client, ledger.headers, first.order_id)
        assert_online_broken_at(other, second_of_first.position, first.order_id)
        # The leaves are in another order: the signed root no longer matches.
        problems = {f.problem for f in found.audit.findings}
        assert any("differs from the signed root" in p for p in problems), problems


def forged_event(ledger: Ledger, order_id: UUID) -> OrderEvent:
    """A plausible next event of `order_id`: a complaint by its customer."""
    rows = ledger.of_order(order_id)
    created = json.loads(rows[0].canonical)
    later = rows[-1].event_time + timedelta(hours=1)
    return OrderEvent(
        event_id=uuid4(),
        order_id=order_id,
        version=rows[-1].order_version + 1,
        time=later,
        recorded_at=later,
        actor=Actor(Role.CUSTOMER, created["data"]["customer_id"]),
        data=make_complaint_filed(),
    )


async def append_forged_row(engine: AsyncEngine, ledger: Ledger) -> Row:
    """Append a well-formed entry that never went through Kafka or the signer.

    No trigger stands in the way of an INSERT, and the ledger's own role may
    insert: this is what a compromised ledger service could do.
    """
    victim = ledger.at(ledger.size - 1).order_id
    event = forged_event(ledger, victim)
    canonical = canonical_bytes(to_cloudevent(event, source=SOURCE_INTAKE))
    row = Row(
        position=ledger.size,
        event_id=event.event_id,
        order_id=victim,
        order_version=event.version,
        event_type="servicetrail.order.complaint_filed",
        event_time=event.time,
        recorded_at=event.recorded_at,
        canonical=canonical,
        chain_hash=chain_link(ledger.of_order(victim)[-1].chain_hash, canonical),
        leaf_hash=rfc_leaf_hash(canonical),
    )
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL ROLE {LEDGER_ROLE}"))
        columns = list(Row.__dataclass_fields__)
        await conn.execute(
            text(
                f"INSERT INTO ledger.ledger_entry ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + c for c in columns)})"
            ),
            {c: getattr(row, c) for c in columns},
        )
    return row


async def test_a_forged_entry_appended_at_the_end_is_not_covered_by_a_signature(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        forged = await append_forged_row(engine, ledger)

        found = await verdicts(ledger, forged.order_id)
        assert_online_broken_at(found.ledger, forged.position, None)
        assert_audit_broken_at(found.audit, forged.position, None)
        assert found.audit.entries == ledger.size + 1
        assert found.audit.signed_size == ledger.size
        assert any(
            "not covered by any signed tree head" in f.problem
            for f in found.audit.findings
        )


async def test_order_verify_flags_a_forged_entry_appended_at_the_end(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        forged = await append_forged_row(engine, ledger)
        found = await order_verdict(ledger.client, ledger.headers, forged.order_id)
        assert_online_broken_at(found, forged.position, forged.order_id)


CUT = 3


async def cut_tail(engine: AsyncEngine, ledger: Ledger) -> int:
    """Delete the last CUT entries; returns the new size."""
    size = ledger.size - CUT
    async with triggers_disabled(engine) as conn:
        await conn.execute(
            text("DELETE FROM ledger.ledger_entry WHERE position >= :p"), {"p": size}
        )
    return size


async def test_a_cut_off_tail_is_found_where_the_ledger_now_ends(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        size = await cut_tail(engine, ledger)

        found = await verdicts(ledger, ledger.at(size).order_id)
        assert_online_broken_at(found.ledger, size, None)
        assert found.ledger["events"] == size
        assert_audit_broken_at(found.audit, size, None)
        assert any("entries were removed" in f.problem for f in found.audit.findings), (
            found.audit.findings
        )


async def test_order_verify_flags_an_order_whose_last_entries_were_cut_off(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with filled_ledger(settings, engine) as ledger:
        size = await cut_tail(engine, ledger)
        victim = ledger.at(ledger.size - 1).order_id
        assert any(r.position < size for r in ledger.of_order(victim))
        found = await order_verdict(ledger.client, ledger.headers, victim)
        # Which orders the deleted rows held cannot be known any more; what can be
        # known is that the signed tree covers positions the ledger no longer has.
        assert_online_broken_at(found, size, None)


# --- the fork: a forger who recomputes every hash --------------------------------


async def rewrite_and_rehash(
    conn: AsyncConnection, rows: Sequence[Row], position: int, canonical: bytes
) -> list[bytes]:
    """Replace one event's bytes and recompute every hash that depends on them.

    What the forger does, in the tables, with the triggers off:
    1. `canonical` of the entry at `position` gets the new bytes;
    2. its `leaf_hash` becomes SHA-256(0x00 || new bytes);
    3. the `chain_hash` of that entry and of every later entry of the same order
       is recomputed from the order's previous link, so every chain verifies;
    4. every `merkle_node` row is deleted and the perfect subtrees are stored again
       from the new leaves, so the server's own proofs agree with the new tree.
    Returns the new leaf hashes in position order.
    """
    victim = rows[position].order_id
    link = GENESIS
    leaves: list[bytes] = []
    for row in rows:
        data = canonical if row.position == position else row.canonical
        leaves.append(rfc_leaf_hash(data))
        if row.order_id != victim:
            continue
        link = chain_link(link, data)
        if row.position >= position:
            await set_row(
                conn,
                row.position,
                canonical=data,
                chain_hash=link,
                leaf_hash=leaves[-1],
            )
    await conn.execute(text("DELETE FROM ledger.merkle_node"))
    await conn.execute(
        text(
            "INSERT INTO ledger.merkle_node (level, index, hash) "
            "VALUES (:level, :index, :hash)"
        ),
        [
            {"level": level, "index": index, "hash": h}
            for (level, index), h in perfect_subtrees(leaves).items()
        ],
    )
    return leaves


def cheaper(canonical: bytes) -> bytes:
    """The same quote at a lower total: the edit a forger would want."""
    event = json.loads(canonical)
    assert event["type"] == "servicetrail.order.priced"
    event["data"]["total"] -= 2000
    return canonical_bytes(event)


@dataclass(frozen=True, slots=True)
class Forgery:
    ledger: Ledger
    saved: dict[str, Any]
    """The checkpoint the auditor saved after the edited event was signed."""
    position: int
    """Where the forger edited the history."""
    signed_sizes: list[int]


@asynccontextmanager
async def ledger_signed_in_rounds(
    settings: CommonSettings, engine: AsyncEngine, key_path: Path
) -> AsyncIterator[Forgery]:
    """Three rounds of orders (9, 18, 9 events); the auditor saves the second head."""
    rounds = [
        [happy_path_history()],
        [happy_path_history(), happy_path_history()],
        [happy_path_history()],
    ]
    headers = auditor_headers(settings)
    async with running(
        ledger_app(settings, ledger_signing_key_path=key_path)
    ) as client:
        size = 0
        checkpoints = []
        for histories in rounds:
            events = [e for h in histories for e in h]
            size += len(events)
            _, checkpoint = await append_events(
                settings, client, headers, events, size_after=size
            )
            checkpoints.append(checkpoint)
        rows = await ledger_rows(engine)
        async with engine.connect() as conn:
            sizes = sorted(
                await conn.scalars(text("SELECT tree_size FROM ledger.tree_head"))
            )
        # The priced event of an order of the second round: signed by the head
        # the auditor keeps.
        second_round = {e.order_id for h in rounds[1] for e in h}
        position = next(
            r.position
            for r in rows
            if r.order_id in second_round
            and r.event_type == "servicetrail.order.priced"
        )
        assert position < checkpoints[1]["tree_size"]
        yield Forgery(
            ledger=Ledger(
                client=client,
                headers=headers,
                rows=rows,
                checkpoint=checkpoints[-1],
                public_key=load_public_key(checkpoints[0]["public_key"]),
            ),
            saved=checkpoints[1],
            position=position,
            signed_sizes=sizes,
        )


async def test_a_forger_without_the_key_must_roll_back_the_signed_heads(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ledger_signed_in_rounds(
        settings, engine, tmp_path / "key.pem"
    ) as forgery:
        ledger, position = forgery.ledger, forgery.position
        before_edit = max(s for s in forgery.signed_sizes if s <= position)
        async with triggers_disabled(engine) as conn:
            # The forger: lowers the total of one quote, recomputes that entry's
            # leaf hash, the order's chain from there on and every Merkle node
            # (`rewrite_and_rehash`). Without the key no new head can be signed,
            # and every head whose tree holds the edited entry would betray it
            # (its signed root covers the old leaf), so the forger deletes every
            # tree head of a size above the edited position. The latest head left
            # predates the edit.
            await rewrite_and_rehash(
                conn, ledger.rows, position, cheaper(ledger.at(position).canonical)
            )
            await conn.execute(
                text("DELETE FROM ledger.tree_head WHERE tree_size > :p"),
                {"p": position},
            )

        # Online and on the whole export, the entries after the surviving head
        # are not covered by any signature.
        found = await verdicts(ledger, ledger.at(position).order_id)
        assert_online_broken_at(found.ledger, before_edit, None)
        # Its chain was recomputed, but its entries after the surviving head are
        # covered by no signature, which the order check reports too.
        assert found.order["valid"] is False
        assert any(
            f["problem"] == "not covered by any signed tree head"
            for f in found.order["findings"]
        ), found.order
        assert_audit_broken_at(found.audit, before_edit, None)

        # An export cut down to the surviving head is a genuine, signed prefix:
        # alone, it passes.
        cut_down = await export_lines(ledger.client, ledger.headers, end=before_edit)
        alone = audit_export(cut_down, ledger.public_key)
        assert alone.valid, alone.findings
        assert alone.signed_size == before_edit

        # The auditor who saved a later head knows the ledger was larger.
        saved = signed_head_from_json(forgery.saved)
        caught = audit_export(cut_down, ledger.public_key, saved_head=saved)
        assert not caught.valid
        assert caught.first_broken_position == before_edit, caught.findings
        assert any(
            f"a tree head of size {saved.head.tree_size} was seen before" in f.problem
            for f in caught.findings
        ), caught.findings


async def test_a_forger_holding_the_key_is_caught_only_by_a_saved_tree_head(
    settings: CommonSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    key_path = tmp_path / "key.pem"
    async with ledger_signed_in_rounds(settings, engine, key_path) as forgery:
        ledger, position = forgery.ledger, forgery.position
        stolen = TreeSigner.load_or_create(key_path)
        async with triggers_disabled(engine) as conn:
            # The forger (an insider who also holds the signing key): lowers the
            # total of one quote, recomputes that entry's leaf hash, the order's
            # chain from there on and every Merkle node (`rewrite_and_rehash`);
            # then deletes every tree head of a size above the edited position
            # and signs a new head for each of those sizes over the rewritten
            # tree, with fresh timestamps. Every hash and signature now agrees.
            leaves = await rewrite_and_rehash(
                conn, ledger.rows, position, cheaper(ledger.at(position).canonical)
            )
            rewritten = [s for s in forgery.signed_sizes if s > position]
            await conn.execute(
                text("DELETE FROM ledger.tree_head WHERE tree_size > :p"),
                {"p": position},
            )
            for size in rewritten:
                head = TreeHead(
                    tree_size=size,
                    root_hash=merkle_tree_hash(leaves[:size]),
                    timestamp=format_time(datetime.now(UTC)),
                    key_id=stolen.key_id,
                )
                await conn.execute(
                    text(
                        "INSERT INTO ledger.tree_head "
                        "(tree_size, root_hash, timestamp, key_id, signature) "
                        "VALUES (:s, :r, :t, :k, :sig)"
                    ),
                    {
                        "s": size,
                        "r": head.root_hash,
                        "t": head.timestamp,
                        "k": head.key_id,
                        "sig": stolen.sign(head),
                    },
                )

        # Nothing the server holds can tell.
        found = await verdicts(ledger, ledger.at(position).order_id)
        assert found.ledger["valid"] is True, found.ledger
        assert found.order["valid"] is True, found.order
        assert found.audit.valid, found.audit.findings

        # The auditor's saved head (signed before the forgery, over the old entry)
        # is not a prefix of the new tree: the consistency check fails.
        exported = await export_lines(ledger.client, ledger.headers)
        saved = signed_head_from_json(forgery.saved)
        caught = audit_export(exported, ledger.public_key, saved_head=saved)
        assert not caught.valid
        assert [f.problem for f in caught.findings] == [
            f"the ledger does not extend the tree head of size "
            f"{saved.head.tree_size} seen before: history was rewritten (fork)"
        ]

        # The server's own consistency proof from the saved size fails against the
        # saved root, because the server now claims another root for that size.
        response = await ledger.client.get(
            "/v1/ledger/consistency",
            params={"first": saved.head.tree_size},
            headers=ledger.headers,
        )
        proof = response.json()
        assert proof["first_root"] != saved.head.root_hash.hex()
        assert not verify_consistency(
            proof["first"],
            proof["second"],
            saved.head.root_hash,
            bytes.fromhex(proof["second_root"]),
            [bytes.fromhex(p) for p in proof["proof"]],
        )
