"""The ledger over HTTP: history, as-of state, verify, proofs, export and audit."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.app import create_app
from services.ledger.audit import audit_export
from services.ledger.domain import leaf_hash, verify_consistency, verify_inclusion
from services.ledger.settings import LedgerSettings
from services.ledger.signing import load_public_key
from shared.domain.actors import Role
from shared.settings import CommonSettings
from tests.api.conftest import bearer, running
from tests.api.test_auth_and_problems import assert_problem
from tests.builders import happy_path_history
from tests.fixtures.stack import service_settings
from tests.integration.ledger_io import publish_events

pytestmark = pytest.mark.integration


async def test_the_ledger_serves_verifiable_history_proofs_and_exports(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    histories = [happy_path_history() for _ in range(3)]
    auditor = bearer(settings)(Role.AUDITOR, "audit-1")
    async with running(
        create_app(service_settings(settings, LedgerSettings))
    ) as ledger:
        for history in histories:
            await publish_events(settings, history)
        total = sum(len(h) for h in histories)
        async with asyncio.timeout(20):
            while True:
                checkpoint = await ledger.get("/v1/ledger/checkpoint", headers=auditor)
                if (
                    checkpoint.status_code == 200
                    and checkpoint.json()["tree_size"] == total
                ):
                    break
                await asyncio.sleep(0.1)
        head = checkpoint.json()
        key = load_public_key(head["public_key"])
        key.verify(base64.b64decode(head["signature"]), head["signed_message"].encode())

        order = histories[1]
        history = (
            await ledger.get(f"/v1/orders/{order[0].order_id}/history", headers=auditor)
        ).json()
        assert [e["event"]["id"] for e in history["entries"]] == [
            str(e.event_id) for e in order
        ]

        verified = (
            await ledger.get(f"/v1/orders/{order[0].order_id}/verify", headers=auditor)
        ).json()
        assert verified["valid"] is True
        assert verified["events"] == len(order)
        assert verified["head_hash"] == history["entries"][-1]["chain_hash"]

        as_of = order[3].time.isoformat()
        state = (
            await ledger.get(
                f"/v1/orders/{order[0].order_id}/state",
                params={"as_of": as_of},
                headers=auditor,
            )
        ).json()
        assert state["events_applied"] == 4
        assert state["state"]["version"] == 4

        proof = (
            await ledger.get(f"/v1/ledger/proof/{order[2].event_id}", headers=auditor)
        ).json()
        assert verify_inclusion(
            bytes.fromhex(proof["leaf_hash"]),
            proof["position"],
            proof["tree_size"],
            [bytes.fromhex(p) for p in proof["proof"]],
            bytes.fromhex(proof["root_hash"]),
        )
        entry = next(
            e for e in history["entries"] if e["event"]["id"] == str(order[2].event_id)
        )
        from shared.events.canonical import canonical_bytes

        assert leaf_hash(canonical_bytes(entry["event"])).hex() == proof["leaf_hash"]

        sizes = [len(histories[0]), total]
        consistency = await ledger.get(
            "/v1/ledger/consistency",
            params={"first": sizes[0], "second": sizes[1]},
            headers=auditor,
        )
        if (
            consistency.status_code == 200
        ):  # the first size is signed only if a batch ended there
            c = consistency.json()
            assert verify_consistency(
                c["first"],
                c["second"],
                bytes.fromhex(c["first_root"]),
                bytes.fromhex(c["second_root"]),
                [bytes.fromhex(p) for p in c["proof"]],
            )

        whole = await ledger.get("/v1/ledger/verify", headers=auditor)
        lines = [json.loads(line) for line in whole.text.splitlines()]
        assert lines[-1]["result"]["valid"] is True, lines[-1]
        assert lines[-1]["result"]["events"] == total

        exported = (await ledger.get("/v1/ledger/export", headers=auditor)).text
        report = audit_export(exported.splitlines(), key)
        assert report.valid, report.findings
        assert report.entries == total

        completeness: Any = (
            await ledger.get("/v1/ledger/completeness", headers=auditor)
        ).json()
        assert completeness["ledger_size"] == total
        assert completeness["orders_with_gaps"] == []


async def test_an_empty_ledger_has_no_checkpoint_and_says_so(
    settings: CommonSettings,
) -> None:
    auditor = bearer(settings)(Role.AUDITOR, "audit-1")
    async with running(
        create_app(service_settings(settings, LedgerSettings))
    ) as ledger:
        response = await ledger.get("/v1/ledger/checkpoint", headers=auditor)
    assert_problem(response, 404, "ledger_empty")
