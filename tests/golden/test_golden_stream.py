"""The golden stream: today's ledger export must import into every later release.

An operator's steps, run as real processes on a fresh database: `servicetrail
audit` the export against the public key and checkpoint kept with it, `servicetrail
import-ledger` it, `servicetrail metrics rebuild`; then every order replays from the
ledger to the state it had, and the indicators and technician scores come out as
`expected.json` says. The stream holds `rated` in versions 1 and 2: a release that
cannot read one of them fails here. Never regenerate the files to make this pass
(README.md next to this file).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.settings import CommonSettings
from tests.e2e.test_ledger_cli import Cli
from tests.golden.observe import observe

pytestmark = [pytest.mark.integration, pytest.mark.golden]

HERE: Final = Path(__file__).resolve().parent
PUBLIC_KEY: Final = HERE / "public_key.pem"
TREE_HEAD: Final = HERE / "tree_head.json"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """The export as an operator unpacks it."""
    path = tmp_path / "ledger.ndjson"
    with gzip.open(HERE / "ledger.ndjson.gz", "rb") as packed:
        path.write_bytes(packed.read())
    return path


def _entries(export: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in export.read_text("utf-8").splitlines()]
    return [line for line in lines if line["type"] == "entry"]


def _alter_one_rating(export: Path) -> None:
    """One rating's score changed: its bytes no longer hash to its chain."""
    original = export.read_text("utf-8")
    altered = original.replace('\\"score\\":5', '\\"score\\":1', 1)
    assert altered != original
    export.write_text(altered, "utf-8")


def _cli(database_url: str, tmp_path: Path) -> Cli:
    # No signing key is needed (nor made): audit and import only verify.
    return Cli(database_url, tmp_path / "no-key.pem")


def test_the_stream_holds_every_version_of_rated_and_every_fate() -> None:
    expected = json.loads((HERE / "expected.json").read_text("utf-8"))
    with gzip.open(HERE / "ledger.ndjson.gz", "rt", encoding="utf-8") as lines:
        schemas = {
            json.loads(json.loads(line)["canonical"])["dataschema"]
            for line in lines
            if '"type": "entry"' in line
        }
    assert {
        "urn:servicetrail:order.rated:1",
        "urn:servicetrail:order.rated:2",
        "urn:servicetrail:order.assignment_expired:1",
        "urn:servicetrail:order.reopened:1",
        "urn:servicetrail:order.complaint_resolved:1",
    } <= schemas
    assert expected["orders"] >= 200
    assert {"cancelled", "completed", "assigned"} <= set(expected["statuses"])
    assert (HERE / "ledger.ndjson.gz").stat().st_size < 512 * 1024


async def test_the_golden_stream_audits_imports_and_replays_to_the_same_numbers(
    database_url: str, export: Path, tmp_path: Path
) -> None:
    cli = _cli(database_url, tmp_path)
    key = ("--public-key", PUBLIC_KEY, "--tree-head", TREE_HEAD)

    audited = await cli("audit", export, *key)
    assert audited.code == 0, audited.out
    assert "valid" in audited.out
    imported = await cli("import-ledger", export, *key)
    assert imported.code == 0, imported.out
    rebuilt = await cli("metrics", "rebuild")
    assert rebuilt.code == 0, rebuilt.out

    engine = create_async_engine(
        CommonSettings(database_url=database_url).sqlalchemy_url, poolclass=NullPool
    )
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT canonical FROM ledger.ledger_entry ORDER BY position")
                )
            ).scalars()
            # The exact bytes, old versions included: never upcast in the ledger.
            assert [bytes(b).decode() for b in stored] == [
                e["canonical"] for e in _entries(export)
            ]
        observed = await observe(engine)
    finally:
        await engine.dispose()
    expected = json.loads((HERE / "expected.json").read_text("utf-8"))
    assert observed["states_digest"] == expected["states_digest"]
    assert observed["states"] == expected["states"]
    assert observed["indicators"] == expected["indicators"]
    assert observed["technician_scores"] == expected["technician_scores"]
    assert observed == expected

    again = await cli("import-ledger", export, *key)
    assert again.code == 1
    assert "empty" in again.out


async def test_an_altered_export_is_refused_and_nothing_is_imported(
    database_url: str, export: Path, tmp_path: Path
) -> None:
    _alter_one_rating(export)
    cli = _cli(database_url, tmp_path)

    imported = await cli("import-ledger", export, "--public-key", PUBLIC_KEY)
    assert imported.code == 1
    assert "audit" in imported.out
    engine = create_async_engine(
        CommonSettings(database_url=database_url).sqlalchemy_url, poolclass=NullPool
    )
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM ledger.ledger_entry"))
    finally:
        await engine.dispose()
    assert count == 0
