"""`GET /v1/orders/{id}/receipt` and `servicetrail audit-receipt`: one order's ledger
entries, proven against one signed tree head, checked offline with only a public key.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from services.cli import app as cli
from services.ledger.audit import Report
from services.ledger.receipt import verify_receipt
from services.ledger.signing import load_public_key
from shared.domain.actors import Role
from shared.domain.lifecycle import OrderEvent
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.builders import happy_path_history, random_ref
from tests.http_events import assert_problem
from tests.integration.ledger_io import (
    append_events,
    auditor_headers,
    ledger_app,
    triggers_disabled,
)

pytestmark = pytest.mark.integration

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ledger:
    client: httpx.AsyncClient
    settings: CommonSettings
    size: int

    def customer_of(self, order: Sequence[OrderEvent]) -> dict[str, str]:
        """The headers of the order's customer (who posted its `created`)."""
        return bearer(self.settings)(Role.CUSTOMER, order[0].actor.id)

    async def receipt(self, order: Sequence[OrderEvent]) -> Json:
        response = await self.client.get(
            f"/v1/orders/{order[0].order_id}/receipt", headers=self.customer_of(order)
        )
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    async def append(self, orders: int) -> tuple[Ledger, list[list[OrderEvent]]]:
        """`orders` more happy-path orders, signed: the ledger after them."""
        histories = [happy_path_history() for _ in range(orders)]
        size = self.size + sum(map(len, histories))
        await append_events(
            self.settings,
            self.client,
            auditor_headers(self.settings),
            [e for history in histories for e in history],
            size_after=size,
        )
        return Ledger(self.client, self.settings, size), histories


@asynccontextmanager
async def empty_ledger(settings: CommonSettings) -> AsyncIterator[Ledger]:
    async with running(ledger_app(settings)) as client:
        yield Ledger(client, settings, 0)


def public_key_of(receipt: Json) -> Ed25519PublicKey:
    """The key an auditor holds (here taken once from a genuine receipt)."""
    return load_public_key(receipt["public_key"])


def problems(report: Report) -> list[str]:
    return [f.problem for f in report.findings]


def run_audit(path: Path, key: str) -> tuple[int, str]:
    """`servicetrail audit-receipt PATH --public-key KEY`: its code and output."""
    result = CliRunner().invoke(cli, ["audit-receipt", str(path), "--public-key", key])
    return result.exit_code, " ".join(result.output.split())  # unwrapped


def audit_receipt(tmp_path: Path, receipt: Json, key: str) -> tuple[int, str]:
    """`servicetrail audit-receipt` on the receipt saved to a file."""
    path = tmp_path / f"receipt-{uuid4().hex[:8]}.json"
    path.write_text(json.dumps(receipt))
    return run_audit(path, key)


def with_byte_flipped(receipt: Json, index: int) -> Json:
    """The receipt with one byte of entry `index`'s canonical bytes changed."""
    altered = copy.deepcopy(receipt)
    entry = altered["entries"][index]
    data = bytearray(base64.b64decode(entry["canonical"]))
    offset = data.index(b'"subject":"') + len(b'"subject":"')  # a hex digit
    data[offset] = ord("a") if data[offset] != ord("a") else ord("b")
    entry["canonical"] = base64.b64encode(bytes(data)).decode()
    return altered


async def test_a_customers_receipt_verifies_offline(
    settings: CommonSettings, tmp_path: Path
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order, _) = await ledger.append(2)
        ledger, _ = await ledger.append(1)

        receipt = await ledger.receipt(order)

        assert receipt["order_id"] == str(order[0].order_id)
        assert receipt["tree_head"]["tree_size"] == ledger.size
        assert len(receipt["entries"]) == len(order)
        events = [
            json.loads(base64.b64decode(e["canonical"])) for e in receipt["entries"]
        ]
        assert [e["id"] for e in events] == [str(e.event_id) for e in order]
        key = public_key_of(receipt)
        report = verify_receipt(receipt, key)
        assert report.valid, report.findings
        assert (report.entries, report.signed_size) == (len(order), ledger.size)

        pem = tmp_path / "ledger.pub.pem"
        pem.write_text(receipt["public_key"])
        code, out = audit_receipt(tmp_path, receipt, str(pem))
        assert code == 0, out
        assert f"valid: {len(order)} entries verified" in out
        # The key as a value too: base64 of its raw 32 bytes.
        raw = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        code, out = audit_receipt(tmp_path, receipt, base64.b64encode(raw).decode())
        assert code == 0, out


async def test_a_changed_byte_a_proof_from_another_tree_or_another_key_fails(
    settings: CommonSettings, tmp_path: Path
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order,) = await ledger.append(1)
        earlier = await ledger.receipt(order)
        ledger, _ = await ledger.append(2)
        receipt = await ledger.receipt(order)
        key = public_key_of(receipt)
        assert verify_receipt(receipt, key).valid
        entries = receipt["entries"]

        changed = verify_receipt(with_byte_flipped(receipt, 2), key)
        assert {f.position for f in changed.findings} == {entries[2]["position"]}
        assert "entry 3: leaf hash does not match the canonical bytes" in problems(
            changed
        )

        # The audit path of the same entry in the smaller tree signed before.
        index = next(
            i
            for i, (old, new) in enumerate(
                zip(earlier["entries"], entries, strict=True)
            )
            if old["inclusion_proof"] != new["inclusion_proof"]
        )
        foreign = copy.deepcopy(receipt)
        foreign["entries"][index]["inclusion_proof"] = earlier["entries"][index][
            "inclusion_proof"
        ]
        report = verify_receipt(foreign, key)
        assert problems(report) == [
            f"entry {index + 1}: inclusion proof does not verify against the tree "
            f"head (size {ledger.size})"
        ]
        # The later proofs against the earlier (genuinely signed) head.
        mixed = copy.deepcopy(receipt) | {"tree_head": earlier["tree_head"]}
        assert not verify_receipt(mixed, key).valid

        stranger = Ed25519PrivateKey.generate().public_key()
        wrong_key = problems(verify_receipt(receipt, stranger))
        assert "tree head: the signature is not valid for the given public key" in (
            wrong_key
        )
        assert any("is not the given key's" in p for p in wrong_key)
        pem = stranger.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        code, out = audit_receipt(tmp_path, receipt, pem)
        assert code == 1, out
        assert "INVALID" in out
        assert "the signature is not valid for the given public key" in out


async def test_a_receipt_missing_reordered_or_mislabelled_entries_fails(
    settings: CommonSettings, tmp_path: Path
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order, other) = await ledger.append(2)
        receipt = await ledger.receipt(order)
        key = public_key_of(receipt)

        dropped = copy.deepcopy(receipt)
        del dropped["entries"][1]
        assert any(
            "entry 2: orderversion 3 where 2 follows" in p
            for p in problems(verify_receipt(dropped, key))
        )
        swapped = copy.deepcopy(receipt)
        swapped["entries"][1:3] = swapped["entries"][2:0:-1]
        found = problems(verify_receipt(swapped, key))
        assert any("entry 2: chain hash does not follow" in p for p in found)
        assert any("position" in p and "does not follow" in p for p in found)
        relabelled = copy.deepcopy(receipt) | {"order_id": str(other[0].order_id)}
        assert any(
            f"the event is of order {order[0].order_id}" in p
            for p in problems(verify_receipt(relabelled, key))
        )
        # Another order's (genuine) entry in place of this order's first.
        foreign = copy.deepcopy(receipt)
        foreign["entries"][0] = (await ledger.receipt(other))["entries"][0]
        assert not verify_receipt(foreign, key).valid


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(lambda r: [r], "not a receipt", id="not-an-object"),
        pytest.param(lambda r: r | {"entries": "x"}, "not a receipt", id="entries"),
        pytest.param(lambda r: r | {"entries": []}, "holds no entries", id="empty"),
        pytest.param(
            lambda r: r | {"order_id": "not-a-uuid"}, "not a receipt", id="order-id"
        ),
        pytest.param(
            lambda r: r | {"tree_head": r["tree_head"] | {"root_hash": "zz"}},
            "tree head: malformed",
            id="root-hash",
        ),
        pytest.param(
            lambda r: r | {"tree_head": r["tree_head"] | {"timestamp": "yesterday"}},
            "tree head: malformed",
            id="timestamp",
        ),
        pytest.param(
            lambda r: (
                r
                | {
                    "entries": [
                        r["entries"][0] | {"canonical": "***"},
                        *r["entries"][1:],
                    ]
                }
            ),
            "entry 1: canonical is not base64",
            id="canonical-not-base64",
        ),
        pytest.param(
            lambda r: (
                r
                | {
                    "entries": [
                        r["entries"][0]
                        | {"canonical": base64.b64encode(b"[1]").decode()},
                        *r["entries"][1:],
                    ]
                }
            ),
            "entry 1: canonical bytes are not an order event's CloudEvent",
            id="canonical-not-an-event",
        ),
        pytest.param(
            lambda r: (
                r
                | {
                    "entries": [
                        r["entries"][0] | {"inclusion_proof": ["not hex"]},
                        *r["entries"][1:],
                    ]
                }
            ),
            "entry 1: inclusion proof holds a hash that is not hex",
            id="proof-not-hex",
        ),
    ],
)
async def test_hostile_receipts_fail_with_a_reason(
    settings: CommonSettings, tmp_path: Path, edit: Any, expected: str
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order,) = await ledger.append(1)
        receipt = await ledger.receipt(order)

        report = verify_receipt(edit(copy.deepcopy(receipt)), public_key_of(receipt))

        assert any(expected in p for p in problems(report)), problems(report)


def test_the_command_refuses_a_file_that_is_not_json_or_a_key_it_cannot_read(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff{not json")
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    key = base64.b64encode(raw).decode()
    code, out = run_audit(garbage, key)
    assert code == 1, out
    assert "is not a JSON receipt" in out
    code, out = run_audit(garbage, "x" * 5000)
    assert code == 1, out
    assert "public key cannot be read" in out


async def test_only_the_orders_customer_auditors_and_admins_get_its_receipt(
    settings: CommonSettings,
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order,) = await ledger.append(1)
        path = f"/v1/orders/{order[0].order_id}/receipt"
        auth = bearer(settings)

        stranger = auth(Role.CUSTOMER, random_ref("cust"))
        other = await ledger.client.get(path, headers=stranger)
        missing = await ledger.client.get(
            f"/v1/orders/{uuid4()}/receipt", headers=stranger
        )
        # Exactly what an order the ledger does not hold gets.
        for response in (other, missing):
            problem = assert_problem(response, 404, "order_not_found")
            assert problem["detail"].startswith("The ledger holds no events of order")
        for role in (Role.AUDITOR, Role.ADMIN):
            response = await ledger.client.get(path, headers=auth(role, "someone"))
            assert response.status_code == 200, response.text
        for role in (Role.DISPATCHER, Role.TECHNICIAN, Role.SERVICE):
            response = await ledger.client.get(path, headers=auth(role, "someone"))
            assert_problem(response, 403, "forbidden")
        assert_problem(await ledger.client.get(path), 401, "unauthenticated")
        for malformed in ("not-a-uuid", "1" * 300, "%00"):
            response = await ledger.client.get(
                f"/v1/orders/{malformed}/receipt", headers=ledger.customer_of(order)
            )
            assert_problem(response, 422, "validation_error")


async def test_a_receipt_is_signed_afresh_when_no_stored_head_covers_the_order(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    async with empty_ledger(settings) as ledger:
        ledger, (order,) = await ledger.append(1)
        key = public_key_of(await ledger.receipt(order))
        async with triggers_disabled(engine) as conn:
            await conn.execute(text("DELETE FROM ledger.tree_head"))

        receipt = await ledger.receipt(order)

        assert receipt["tree_head"]["tree_size"] == ledger.size
        report = verify_receipt(receipt, key)
        assert report.valid, report.findings
