"""The `servicetrail` ledger commands, run as real processes against a filled ledger.

The ledger service runs in the test (on the test's database and topics, signing with
a key file the test chose); `python -m services.cli` then exports, verifies, audits
and replays with only `DATABASE_URL` and `LEDGER_SIGNING_KEY_PATH` to go on, like an
operator or an auditor would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from services.ledger.audit import audit_export, signed_head_from_json
from services.ledger.domain import TreeHead
from services.ledger.signing import TreeSigner, load_public_key
from shared.events.canonical import canonical_bytes
from shared.events.envelope import format_time
from shared.settings import CommonSettings
from tests.api.conftest import running
from tests.builders import happy_path_history
from tests.integration.ledger_io import (
    GENESIS,
    append_events,
    auditor_headers,
    chain_link,
    ledger_app,
    merkle_tree_hash,
    rfc_leaf_hash,
)

pytestmark = pytest.mark.e2e

REPOSITORY: Final = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    out: str


@dataclass(frozen=True, slots=True)
class Cli:
    """`python -m services.cli` with the test's database and ledger key."""

    database_url: str
    key_path: Path

    async def __call__(self, *args: str | Path) -> Outcome:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "LEDGER_SIGNING_KEY_PATH": str(self.key_path),
            # Rich wraps at 80 columns without a terminal; keep findings on a line.
            "COLUMNS": "250",
            "NO_COLOR": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *map(str, args),
            cwd=REPOSITORY,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        assert process.returncode is not None
        return Outcome(process.returncode, out.decode())


@dataclass(frozen=True, slots=True)
class Filled:
    client: httpx.AsyncClient
    headers: dict[str, str]
    cli: Cli
    checkpoints: list[dict[str, Any]]
    """The signed head after each round, as an auditor would have saved them."""


@asynccontextmanager
async def filled_ledger(
    settings: CommonSettings, tmp_path: Path, rounds: list[int]
) -> AsyncIterator[Filled]:
    """The ledger app, signing with tmp_path/key.pem, fed `rounds` of orders."""
    key_path = tmp_path / "key.pem"
    headers = auditor_headers(settings)
    async with running(
        ledger_app(settings, ledger_signing_key_path=key_path)
    ) as client:
        size, checkpoints = 0, []
        for orders in rounds:
            events = [e for _ in range(orders) for e in happy_path_history()]
            size += len(events)
            _, checkpoint = await append_events(
                settings, client, headers, events, size_after=size
            )
            checkpoints.append(checkpoint)
        yield Filled(client, headers, Cli(settings.database_url, key_path), checkpoints)


def saved_head(checkpoint: dict[str, Any], path: Path) -> Path:
    """What an auditor keeps of a checkpoint: its JSON, as served."""
    path.write_text(json.dumps(checkpoint))
    return path


def flip_one_byte(export: Path, position: int, out: Path) -> None:
    """Change one letter of one event's bytes inside the export file, nothing else."""
    lines = export.read_bytes().splitlines(keepends=True)
    index = next(
        i
        for i, line in enumerate(lines)
        if json.loads(line).get("type") == "entry"
        and json.loads(line)["position"] == position
    )
    line = bytearray(lines[index])
    # Inside the canonical string, on the first letter of the actor's id.
    offset = line.index(b'"canonical": "{\\"actor\\":\\"') + len(
        b'"canonical": "{\\"actor\\":\\"'
    )
    assert chr(line[offset]).isalpha()
    line[offset] ^= 0x20
    lines[index] = bytes(line)
    out.write_bytes(b"".join(lines))


def fork(export: Path, position: int, key_path: Path, out: Path) -> None:
    """The export an insider holding the signing key could hand an auditor.

    What the forger did: lowered the total of the quote at `position`, put the new
    RFC 8785 bytes in that entry, recomputed its leaf hash and the chain hash of it
    and of every later entry of the same order, then computed the Merkle root over
    all (edited) leaves and signed a fresh tree head for the same size. Every hash
    and the signature check out.
    """
    records = [json.loads(line) for line in export.read_text().splitlines()]
    entries = [r for r in records if r["type"] == "entry"]
    victim = entries[position]["order_id"]
    event = json.loads(entries[position]["canonical"])
    assert event["type"] == "servicetrail.order.priced"
    event["data"]["total"] -= 2000
    entries[position]["canonical"] = canonical_bytes(event).decode()
    link = GENESIS
    for entry in entries:
        if entry["order_id"] != victim:
            continue
        link = chain_link(link, entry["canonical"].encode())
        if entry["position"] >= position:
            entry["chain_hash"] = link.hex()
    entries[position]["leaf_hash"] = rfc_leaf_hash(
        entries[position]["canonical"].encode()
    ).hex()
    signer = TreeSigner.load_or_create(key_path)
    head = TreeHead(
        tree_size=len(entries),
        root_hash=merkle_tree_hash([bytes.fromhex(e["leaf_hash"]) for e in entries]),
        timestamp=format_time(datetime.now(UTC)),
        key_id=signer.key_id,
    )
    signed = {
        "type": "tree_head",
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "timestamp": head.timestamp,
        "key_id": head.key_id,
        "signature": base64.b64encode(signer.sign(head)).decode(),
    }
    lines = [records[0], *entries, signed]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))


async def test_export_verify_and_audit_and_the_audit_catches_an_edit_or_a_fork(
    settings: CommonSettings, tmp_path: Path
) -> None:
    async with filled_ledger(settings, tmp_path, rounds=[2, 1]) as ledger:
        cli, latest = ledger.cli, ledger.checkpoints[-1]
        size = latest["tree_size"]
        public_key = tmp_path / "ledger.pub.pem"
        public_key.write_text(latest["public_key"])
        earlier = saved_head(ledger.checkpoints[0], tmp_path / "saved.json")

        export = tmp_path / "ledger.ndjson"
        # Each command is a process of its own (seconds of imports): run them at once.
        exported, verified = await asyncio.gather(
            cli("export", "--out", export), cli("verify")
        )
        assert exported.code == 0, exported.out
        assert verified.code == 0, verified.out
        assert f"{size} entries verified" in verified.out
        records = [json.loads(line) for line in export.read_text().splitlines()]
        assert [r["type"] for r in records] == (
            ["servicetrail.ledger.export"] + ["entry"] * size + ["tree_head"]
        )
        assert records[-1]["root_hash"] == latest["root_hash"]

        # Two altered copies of the export: one byte changed, and a fork.
        position = size // 2
        tampered = tmp_path / "tampered.ndjson"
        flip_one_byte(export, position, tampered)  # one byte, in the file only
        quote = next(
            r["position"]
            for r in records
            if r["type"] == "entry"
            and json.loads(r["canonical"])["type"] == "servicetrail.order.priced"
        )
        assert quote < ledger.checkpoints[0]["tree_size"]
        forked = tmp_path / "forked.ndjson"
        fork(export, quote, cli.key_path, forked)

        audited, caught, against_saved = await asyncio.gather(
            cli("audit", export, "--public-key", public_key),
            cli("audit", tampered, "--public-key", public_key),
            cli("audit", forked, "--public-key", public_key, "--tree-head", earlier),
        )
        assert audited.code == 0, audited.out
        assert f"{size} entries verified" in audited.out

        assert caught.code == 1, caught.out
        assert "INVALID" in caught.out
        assert f"position {position}: leaf hash does not match" in caught.out

        # The fork is caught by the saved head, and by nothing else: the same audit
        # (in process, to spare a process start) passes the forked file alone, and
        # passes the true export against the saved head.
        assert against_saved.code == 1, against_saved.out
        assert "history was rewritten (fork)" in against_saved.out
        key = load_public_key(public_key.read_bytes())
        with forked.open() as lines:
            assert audit_export(lines, key).valid
        with export.open() as lines:
            saved = signed_head_from_json(json.loads(earlier.read_text()))
            assert audit_export(lines, key, saved_head=saved).valid


async def test_replay_prints_the_history_and_the_state_as_of_an_instant(
    settings: CommonSettings, tmp_path: Path
) -> None:
    async with filled_ledger(settings, tmp_path, rounds=[1]) as ledger:
        response = await ledger.client.get("/v1/ledger/export", headers=ledger.headers)
        events = [
            json.loads(json.loads(line)["canonical"])
            for line in response.text.splitlines()
            if json.loads(line)["type"] == "entry"
        ]
        order_id = events[0]["subject"]
        arrived = events[3]
        assert arrived["type"] == "servicetrail.order.arrived"

        replayed = await ledger.cli("replay", order_id, "--as-of", arrived["time"])
        assert replayed.code == 0, replayed.out
        for event in events:
            assert event["type"] in replayed.out
            assert event["time"] in replayed.out
        assert '"events_applied": 4' in replayed.out
        assert '"status": "on_site"' in replayed.out
