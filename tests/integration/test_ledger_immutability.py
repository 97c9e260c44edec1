"""The ledger only grows: refused changes, and proofs that every head extends the last.

Two guards stand between anyone and an edit of the ledger tables: triggers that
refuse UPDATE, DELETE and TRUNCATE even to the superuser, and a role for the ledger
service that holds only INSERT and SELECT. The proofs the API serves are checked by
a verifier written here from RFC 9162 2.1.3.2 and 2.1.4.2, not by the service's own
`services.ledger.domain` functions, over every event and every pair of signed sizes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Final
from uuid import uuid4

import hypothesis
import pytest
from cryptography.exceptions import InvalidSignature
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.signing import load_public_key
from shared.events.canonical import canonical_bytes
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import happy_path_history
from tests.integration.ledger_io import (
    LEDGER_ROLE,
    LEDGER_TABLES,
    SEED_DIGEST,
    append_events,
    auditor_headers,
    ledger_app,
    merkle_tree_hash,
    rfc_leaf_hash,
    rfc_node_hash,
    seed_one_row_each,
    table_snapshot,
)

pytestmark = pytest.mark.integration


# --- an independent verifier: RFC 9162, section 2.1.3.2 and 2.1.4.2 ---------------


def rfc_verify_inclusion(
    leaf_hash: bytes,
    leaf_index: int,
    tree_size: int,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> bool:
    """RFC 9162 2.1.3.2, step by step."""
    # 1. leaf_index >= tree_size: fail.
    if leaf_index >= tree_size or leaf_index < 0:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    # 4. For each p in the inclusion path:
    for p in inclusion_path:
        # a. sn == 0: fail.
        if sn == 0:
            return False
        # b. LSB(fn) set or fn == sn: r = H(0x01 || p || r), then while LSB(fn) is
        #    not set and fn != 0, shift both right; otherwise r = H(0x01 || r || p).
        if fn & 1 or fn == sn:
            r = rfc_node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = rfc_node_hash(r, p)
        # c. Shift both right once.
        fn >>= 1
        sn >>= 1
    # 5. sn == 0 and r == root_hash.
    return sn == 0 and r == root_hash


def rfc_verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """RFC 9162 2.1.4.2, step by step (for 0 < first < second)."""
    if not 0 < first < second:
        return False
    # 1. An empty path fails.
    if not consistency_path:
        return False
    path = list(consistency_path)
    # 2. first a power of two: prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = first - 1, second - 1
    # 4. While LSB(fn) is set, shift both right.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a. sn == 0: fail.
        if sn == 0:
            return False
        # b. LSB(fn) set or fn == sn: fr = H(c || fr), sr = H(c || sr), then
        #    while LSB(fn) is not set and fn != 0 shift both; else sr = H(sr || c).
        if fn & 1 or fn == sn:
            fr = rfc_node_hash(c, fr)
            sr = rfc_node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = rfc_node_hash(sr, c)
        # c. Shift both right once.
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, sn == 0.
    return fr == first_hash and sr == second_hash and sn == 0


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]), by its recursive definition."""
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*rfc_path(m, leaves[:k]), merkle_tree_hash(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), merkle_tree_hash(leaves[:k])]


def rfc_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b), by its recursive definition."""
    n = len(leaves)
    if m == n:
        return [] if whole else [merkle_tree_hash(leaves)]
    k = _split(n)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), merkle_tree_hash(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), merkle_tree_hash(leaves[:k])]


def leaves_of(count: int) -> list[bytes]:
    return [rfc_leaf_hash(i.to_bytes(4, "big")) for i in range(count)]


def flipped(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 1]) + digest[1:]


class TestTheIndependentVerifier:
    """The verifier accepts the RFC's own proofs and nothing altered."""

    @hypothesis.settings(max_examples=300, deadline=None)
    @given(data=st.data(), size=st.integers(1, 70))
    def test_it_accepts_rfc_audit_paths_and_refuses_altered_ones(
        self, data: st.DataObject, size: int
    ) -> None:
        leaves = leaves_of(size)
        root = merkle_tree_hash(leaves)
        index = data.draw(st.integers(0, size - 1))
        path = rfc_path(index, leaves)
        assert rfc_verify_inclusion(leaves[index], index, size, path, root)
        assert not rfc_verify_inclusion(flipped(leaves[index]), index, size, path, root)
        assert not rfc_verify_inclusion(leaves[index], index, size, path, flipped(root))
        if path:
            spot = data.draw(st.integers(0, len(path) - 1))
            bad = [*path[:spot], flipped(path[spot]), *path[spot + 1 :]]
            assert not rfc_verify_inclusion(leaves[index], index, size, bad, root)
            assert not rfc_verify_inclusion(leaves[index], index, size, path[:-1], root)
        if size > 1:
            other = (index + 1) % size
            assert not rfc_verify_inclusion(leaves[index], other, size, path, root)

    @hypothesis.settings(max_examples=300, deadline=None)
    @given(data=st.data(), second=st.integers(2, 70))
    def test_it_accepts_rfc_consistency_proofs_and_refuses_altered_ones(
        self, data: st.DataObject, second: int
    ) -> None:
        leaves = leaves_of(second)
        first = data.draw(st.integers(1, second - 1))
        old, new = merkle_tree_hash(leaves[:first]), merkle_tree_hash(leaves)
        proof = rfc_subproof(first, leaves, True)
        assert rfc_verify_consistency(first, second, old, new, proof)
        assert not rfc_verify_consistency(first, second, flipped(old), new, proof)
        assert not rfc_verify_consistency(first, second, old, flipped(new), proof)
        spot = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:spot], flipped(proof[spot]), *proof[spot + 1 :]]
        assert not rfc_verify_consistency(first, second, old, new, bad)
        # A history rewritten before `first` (a fork) has no valid proof.
        forked = [flipped(leaves[0]), *leaves[1:]]
        assert not rfc_verify_consistency(
            first,
            second,
            old,
            merkle_tree_hash(forked),
            rfc_subproof(first, forked, True),
        )


# --- the served proofs, for every event and every pair of signed sizes ------------

# Batch sizes for 54 events: powers of two, odd and one-event batches, so the
# signed sizes (1, 2, 4, 7, 8, 12, ...) hit every shape of tree.
GROUPS: Final = (1, 1, 2, 3, 1, 4, 5, 8, 2, 7, 1, 6, 13)
HISTORIES: Final = 6


def check_checkpoint(checkpoint: dict[str, Any]) -> None:
    """The signed message is RFC 8785 of the head's fields, signed by its key."""
    message = canonical_bytes(
        {
            "key_id": checkpoint["key_id"],
            "root_hash": checkpoint["root_hash"],
            "timestamp": checkpoint["timestamp"],
            "tree_size": checkpoint["tree_size"],
        }
    )
    assert checkpoint["signed_message"].encode() == message
    key = load_public_key(checkpoint["public_key"])
    try:
        key.verify(base64.b64decode(checkpoint["signature"]), message)
    except InvalidSignature:
        pytest.fail(f"bad signature on {checkpoint}")


async def test_every_served_proof_checks_out_against_an_independent_verifier(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    histories = [happy_path_history() for _ in range(HISTORIES)]
    # Version by version across the orders, so that batches mix orders.
    events = [h[v] for v in range(len(histories[0])) for h in histories]
    assert sum(GROUPS) == len(events)
    headers = auditor_headers(settings)
    leaf_of: dict[str, bytes] = {}  # event id -> leaf of the bytes *we* published
    boundaries: list[int] = []
    async with running(ledger_app(settings)) as client:
        size = 0
        for group in GROUPS:
            chunk = events[size : size + group]
            size += group
            boundaries.append(size)
            values, checkpoint = await append_events(
                settings, client, headers, chunk, size_after=size
            )
            for value in values:
                envelope = json.loads(value)
                leaf_of[envelope["id"]] = rfc_leaf_hash(canonical_bytes(envelope))
            check_checkpoint(checkpoint)
            root = bytes.fromhex(checkpoint["root_hash"])

            # Every event appended so far is in the tree of the latest head.
            by_position: dict[int, bytes] = {}
            for event_id, leaf in leaf_of.items():
                response = await client.get(
                    f"/v1/ledger/proof/{event_id}", headers=headers
                )
                assert response.status_code == 200, response.text
                proof = response.json()
                assert proof["tree_size"] == size
                assert proof["root_hash"] == checkpoint["root_hash"]
                assert proof["leaf_hash"] == leaf.hex()
                path = [bytes.fromhex(p) for p in proof["proof"]]
                assert rfc_verify_inclusion(
                    leaf, proof["position"], size, path, root
                ), proof
                assert not rfc_verify_inclusion(
                    flipped(leaf), proof["position"], size, path, root
                )
                by_position[proof["position"]] = leaf
            assert sorted(by_position) == list(range(size))
            # The signed root is RFC 9162's MTH of the events' own bytes.
            assert merkle_tree_hash([by_position[p] for p in range(size)]) == root

        leaves = [by_position[p] for p in range(size)]
        async with engine.connect() as conn:
            signed = {
                int(r.tree_size): bytes(r.root_hash)
                for r in await conn.execute(
                    text("SELECT tree_size, root_hash FROM ledger.tree_head")
                )
            }
        assert set(boundaries) <= set(signed)
        for tree_size, root in signed.items():
            assert merkle_tree_hash(leaves[:tree_size]) == root, tree_size

        # Every pair of signed sizes: the later tree extends the earlier one.
        sizes = sorted(signed)
        for i, first in enumerate(sizes):
            for second in sizes[i:]:
                response = await client.get(
                    "/v1/ledger/consistency",
                    params={"first": first, "second": second},
                    headers=headers,
                )
                assert response.status_code == 200, response.text
                proof = response.json()
                assert (proof["first"], proof["second"]) == (first, second)
                assert proof["first_root"] == signed[first].hex()
                assert proof["second_root"] == signed[second].hex()
                path = [bytes.fromhex(p) for p in proof["proof"]]
                if first == second:
                    assert path == []
                    continue
                assert rfc_verify_consistency(
                    first, second, signed[first], signed[second], path
                ), proof
                assert path == rfc_subproof(first, leaves[:second], True)

        # Sizes nobody signed, and events nobody appended, get no proof.
        unsigned = next(s for s in range(1, size) if s not in signed)
        refused = await client.get(
            "/v1/ledger/consistency",
            params={"first": unsigned, "second": size},
            headers=headers,
        )
        assert refused.status_code == 422, refused.text
        backwards = await client.get(
            "/v1/ledger/consistency",
            params={"first": size, "second": sizes[0]},
            headers=headers,
        )
        assert backwards.status_code == 422, backwards.text
        unknown = await client.get(f"/v1/ledger/proof/{uuid4()}", headers=headers)
        assert unknown.status_code == 404, unknown.text


# --- refused changes: triggers (even the superuser) and the ledger's role --------

CHANGES: Final = {
    "ledger_entry": "UPDATE ledger.ledger_entry SET canonical = '\\x7b7d'::bytea",
    "merkle_node": "UPDATE ledger.merkle_node SET hash = sha256('y'::bytea)",
    "tree_head": "UPDATE ledger.tree_head SET tree_size = tree_size + 1",
}


def statements(table: str) -> dict[str, str]:
    return {
        "UPDATE": CHANGES[table],
        "DELETE": f"DELETE FROM ledger.{table}",
        "TRUNCATE": f"TRUNCATE ledger.{table}",
    }


async def refusal(engine: AsyncEngine, sql: str, *, role: str | None = None) -> str:
    """The error message PostgreSQL refuses `sql` with (fails if it is accepted)."""
    try:
        async with engine.begin() as conn:
            if role is not None:
                await conn.execute(text(f"SET LOCAL ROLE {role}"))
            await conn.execute(text(sql))
    except DBAPIError as err:
        return str(err.orig)
    pytest.fail(f"{sql!r} was accepted")


@pytest.mark.parametrize("table", LEDGER_TABLES)
async def test_triggers_refuse_update_delete_and_truncate_even_to_the_superuser(
    engine: AsyncEngine, table: str
) -> None:
    await seed_one_row_each(engine)
    before = await table_snapshot(engine)
    async with engine.connect() as conn:
        assert await conn.scalar(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
    for operation, sql in statements(table).items():
        message = await refusal(engine, sql)
        assert f"ledger table ledger.{table} is append-only: {operation} refused" in (
            message
        ), message
    assert await table_snapshot(engine) == before


@pytest.mark.parametrize("table", LEDGER_TABLES)
async def test_the_ledger_role_may_insert_and_select_but_never_change(
    engine: AsyncEngine, table: str
) -> None:
    await seed_one_row_each(engine)
    before = await table_snapshot(engine)
    for operation, sql in statements(table).items():
        message = await refusal(engine, sql, role=LEDGER_ROLE)
        # Refused by privileges, before any trigger runs.
        assert f"permission denied for table {table}" in message, (operation, message)
    assert await table_snapshot(engine) == before

    inserts = {
        "ledger_entry": (
            "INSERT INTO ledger.ledger_entry (position, event_id, order_id, "
            "order_version, event_type, event_time, recorded_at, canonical, "
            "chain_hash, leaf_hash) VALUES (1, :e, :o, 1, "
            "'servicetrail.order.created', now(), now(), '\\x7b7d'::bytea, :h, :h)"
        ),
        "merkle_node": "INSERT INTO ledger.merkle_node VALUES (1, 1, :h)",
        "tree_head": (
            "INSERT INTO ledger.tree_head VALUES "
            "(2, :h, '2026-03-02T09:07:00Z', 'k', :h)"
        ),
    }
    async with engine.begin() as conn:
        await conn.execute(text(f"SET LOCAL ROLE {LEDGER_ROLE}"))
        assert await conn.scalar(text("SELECT current_user")) == LEDGER_ROLE
        await conn.execute(
            text(inserts[table]), {"e": uuid4(), "o": uuid4(), "h": SEED_DIGEST}
        )
        count = await conn.scalar(text(f"SELECT count(*) FROM ledger.{table}"))
    assert count == 2
