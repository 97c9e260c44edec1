"""`python -m bench.ledger.whatif`: measured evidence for the suggested ledger fixes.

CPU (process time, one core) over events of the same stream as `python -m
bench.ledger`; each candidate is checked to give exactly today's result:

1. RFC 8785 bytes: the pure-Python `rfc8785` package (`rfc8785.dumps(json.loads(
   value))`, what the ledger ran before) against `canonical_from_json(value)` and
   `canonical_bytes(json.loads(value))` from `shared/events/canonical.py` (the C
   `json` module wherever its output is provably RFC 8785, `rfc8785` otherwise),
   which the ledger now runs: byte-identical on every sampled event and on random
   JSON.
2. The auditor: `LedgerAuditor.add` over `Entry` objects against `lean_audit` over
   plain row tuples (the same checks and root, the Merkle frontier kept as a bare
   list of hashes).
3. With `--database-url` (a ledger left by `python -m bench.ledger --keep`):
   `verify_ledger` against `lean_verify`, which feeds asyncpg rows straight to
   that loop and fetches the next chunk while one is audited. Same root.

2 and 3 are candidates for `services/ledger/audit.py`; the benchmark itself never
uses them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import asyncpg
import rfc8785

from bench.ledger.events import EventStream
from services.ledger.audit import Entry, LedgerAuditor
from services.ledger.domain import (
    GENESIS_HASH,
    chain_hash,
    leaf_hash,
    root_from_frontier,
)
from services.ledger.queries import verify_ledger
from services.ledger.signing import TreeSigner
from shared.db.engine import create_engine
from shared.events.canonical import canonical_bytes, canonical_from_json
from shared.settings import CommonSettings

# --- candidate 2: a lean auditor loop ----------------------------------------------

Row = tuple[int, UUID, UUID, int, bytes, bytes, bytes]


def lean_audit(rows: Iterable[Row]) -> tuple[int, bytes, int]:
    """(entries, Merkle root, problems) with LedgerAuditor.add's checks."""
    sha256 = hashlib.sha256
    chains: dict[UUID, tuple[bytes, int]] = {}
    frontier: list[bytes] = []  # perfect-subtree hashes, largest first
    size = problems = 0
    for position, _event_id, order_id, version, canonical, chain, leaf in rows:
        if position != size:
            problems += 1
        digest = sha256(b"\x00" + canonical).digest()
        if digest != leaf:
            problems += 1
        link, last = chains.get(order_id, (GENESIS_HASH, 0))
        if sha256(link + canonical).digest() != chain or version != last + 1:
            problems += 1
        chains[order_id] = (chain, version)
        carry = size
        while carry & 1:  # binary carry: merge equal-sized subtrees
            digest = sha256(b"\x01" + frontier.pop() + digest).digest()
            carry >>= 1
        frontier.append(digest)
        size += 1
    return size, root_from_frontier(frontier), problems


_ROWS_SQL: Final = (
    "SELECT position, event_id, order_id, order_version, canonical, chain_hash, "
    "leaf_hash FROM ledger.ledger_entry WHERE position >= $1 ORDER BY position LIMIT $2"
)


async def lean_verify(url: str, chunk: int = 5000) -> tuple[int, bytes, int]:
    """lean_audit over the whole ledger, the next chunk fetched while one is audited.

    asyncpg returns bytea as bytes and Records unpack positionally, so rows go to
    the loop as they come: no Entry objects, no copies.
    """
    conn = await asyncpg.connect(url)
    queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(maxsize=2)

    async def produce() -> None:
        position = 0
        while True:
            rows = await conn.fetch(_ROWS_SQL, position, chunk)
            await queue.put(rows)  # Records unpack like the Row tuples
            if len(rows) < chunk:
                await queue.put(None)
                return
            position = rows[-1][0] + 1

    async def chunks() -> AsyncIterator[list[Row]]:
        while (rows := await queue.get()) is not None:
            yield rows

    producer = asyncio.create_task(produce())
    try:
        result = await _lean_audit_async(chunks())
        await producer
    finally:
        producer.cancel()
        await conn.close()
    return result


async def _lean_audit_async(
    chunks: AsyncIterator[list[Row]],
) -> tuple[int, bytes, int]:
    # lean_audit's loop over a stream of chunks (kept in one frame for speed).
    sha256 = hashlib.sha256
    chains: dict[UUID, tuple[bytes, int]] = {}
    frontier: list[bytes] = []
    size = problems = 0
    async for rows in chunks:
        for position, _event_id, order_id, version, canonical, chain, leaf in rows:
            if position != size:
                problems += 1
            digest = sha256(b"\x00" + canonical).digest()
            if digest != leaf:
                problems += 1
            link, last = chains.get(order_id, (GENESIS_HASH, 0))
            if sha256(link + canonical).digest() != chain or version != last + 1:
                problems += 1
            chains[order_id] = (chain, version)
            carry = size
            while carry & 1:
                digest = sha256(b"\x01" + frontier.pop() + digest).digest()
                carry >>= 1
            frontier.append(digest)
            size += 1
    return size, root_from_frontier(frontier), problems


async def compare_verify(url: str, key: Path) -> None:
    """verify_ledger (as the API runs it) against lean_verify, same database."""
    signer = TreeSigner.load_or_create(key)
    engine = create_engine(CommonSettings(database_url=url, database_pool_size=1))
    try:
        began, cpu = time.perf_counter(), time.process_time()
        result: dict[str, Any] = {}
        async with engine.connect() as conn:
            async for line in verify_ledger(conn, signer):
                result = line.get("result", result)
        today, today_cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await engine.dispose()
    began, cpu = time.perf_counter(), time.process_time()
    size, root, problems = await lean_verify(url)
    lean, lean_cpu = time.perf_counter() - began, time.process_time() - cpu
    same = size == result["events"] and root.hex() == result["head_hash"]
    print(
        f"3. whole-ledger verify of {size:,} entries: verify_ledger "
        f"{size / today:,.0f}/s ({size / today_cpu:,.0f} per CPU-second), lean_verify "
        f"{size / lean:,.0f}/s ({size / lean_cpu:,.0f} per CPU-second); same root: "
        f"{same}, problems {problems}"
    )


# --- measuring ---------------------------------------------------------------------


def _cpu(work: Callable[[], object], repeat: int = 3) -> float:
    """Best process time of `repeat` runs (seconds)."""
    best = math.inf
    for _ in range(repeat):
        began = time.process_time()
        work()
        best = min(best, time.process_time() - began)
    return best


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    alphabet = ["a", "Z", "é", "中", "\u2028", "\x00", "\x1f", '"', "\\", "\ue000"]
    alphabet += ["\U0001f600", "\x7f", "/", "ß"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))

    def number() -> int | float:
        match rng.randrange(6):
            case 0:
                return rng.randrange(-(2**60), 2**60)
            case 1:
                return rng.randrange(-1000, 1000)
            case 2:
                return rng.uniform(-1e3, 1e3)
            case 3:
                return rng.choice(
                    [1e-7, 1.5e-5, 2e-4, 1e16, 1.2345e20, 1e21, 3e22, 5.0, -0.0, 0.1]
                )
            case 4:
                return float(rng.randrange(-(10**6), 10**6))
            case _:
                return rng.random() * 10.0 ** rng.randrange(-10, 25)

    match rng.randrange(7 if depth < 3 else 4):
        case 0:
            return text()
        case 1 | 3:
            return number()
        case 2:
            return rng.choice([True, False, None])
        case 4 | 5:
            return {
                text(): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))
            }
        case _:
            return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def check_canonical(values: Sequence[bytes], fuzz: int, seed: int) -> int:
    """Mismatches between the fast paths and the `rfc8785` package."""
    mismatches = sum(
        canonical_from_json(v) != rfc8785.dumps(json.loads(v))
        or canonical_bytes(json.loads(v)) != rfc8785.dumps(json.loads(v))
        for v in values
    )
    rng = random.Random(seed)
    for _ in range(fuzz):
        raw = json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5).encode()
        try:
            expected: bytes | None = rfc8785.dumps(json.loads(raw))
        except ValueError:
            expected = None
        try:
            got: bytes | None = canonical_from_json(raw)
        except ValueError:
            got = None
        try:
            from_value: bytes | None = canonical_bytes(json.loads(raw))
        except ValueError:
            from_value = None
        mismatches += expected != got or expected != from_value
    return mismatches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger.whatif",
        description="CPU of today's ledger steps against the suggested fixes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--fuzz", type=int, default=50_000, help="random documents")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=None,
        help="also compare whole-ledger verifies on this database (one left by "
        "`python -m bench.ledger --keep`)",
    )
    args = parser.parse_args(argv)

    stream = EventStream(
        entries=args.events,
        orders=max(2, args.events // 10),
        window=max(1, args.events // 50),
        seed=args.seed,
    )
    values = [r.value for r in stream.take(args.events)]
    n = len(values)
    print(
        f"{n:,} events of the benchmark's stream, mean {stream.mean_value_bytes:.0f} B"
    )

    mismatches = check_canonical(values, args.fuzz, args.seed)
    before = _cpu(lambda: [rfc8785.dumps(json.loads(v)) for v in values])
    fast = _cpu(lambda: [canonical_from_json(v) for v in values])
    from_value = _cpu(lambda: [canonical_bytes(json.loads(v)) for v in values])
    print(
        f"1. RFC 8785: rfc8785 package {1e6 * before / n:.1f} µs/event, "
        f"canonical_from_json {1e6 * fast / n:.1f} µs/event ({before / fast:.1f}x), "
        f"json.loads + canonical_bytes {1e6 * from_value / n:.1f} µs/event "
        f"({before / from_value:.1f}x); mismatches over the events and "
        f"{args.fuzz:,} random documents: {mismatches}"
    )

    entries: list[Entry] = []
    heads: dict[UUID, bytes] = {}
    versions: dict[UUID, int] = {}
    for position, value in enumerate(values):
        envelope = json.loads(value)
        order_id = UUID(envelope["subject"])
        canonical = canonical_from_json(value)
        link = chain_hash(heads.get(order_id, GENESIS_HASH), canonical)
        heads[order_id] = link
        versions[order_id] = versions.get(order_id, 0) + 1
        entries.append(
            Entry(
                position=position,
                event_id=UUID(envelope["id"]),
                order_id=order_id,
                order_version=versions[order_id],
                canonical=canonical,
                chain_hash=link,
                leaf_hash=leaf_hash(canonical),
            )
        )
    rows: list[Row] = [
        (
            e.position,
            e.event_id,
            e.order_id,
            e.order_version,
            e.canonical,
            e.chain_hash,
            e.leaf_hash,
        )
        for e in entries
    ]

    def audit_today() -> LedgerAuditor:
        auditor = LedgerAuditor()
        for entry in entries:
            auditor.add(entry)
        return auditor

    auditor = audit_today()
    report = auditor.finish(None, None, None)
    size, root, problems = lean_audit(rows)
    same = size == report.entries and root == report.root_hash and problems == 0
    today = _cpu(audit_today)
    lean = _cpu(lambda: lean_audit(rows))
    build = _cpu(lambda: [Entry(*r) for r in rows])
    print(
        f"2. auditor: LedgerAuditor.add {1e6 * today / n:.1f} µs/entry, lean loop "
        f"{1e6 * lean / n:.1f} µs/entry ({today / lean:.1f}x); same root and "
        f"verdict: {same}; building the Entry objects alone: "
        f"{1e6 * build / n:.1f} µs/entry"
    )
    hashes = _cpu(
        lambda: [
            (hashlib.sha256(b"\x00" + r[4]).digest(), hashlib.sha256(r[5] + r[4]))
            for r in rows
        ]
    )
    print(f"   (the two SHA-256 per entry alone: {1e6 * hashes / n:.1f} µs/entry)")
    if args.database_url is not None:
        with tempfile.TemporaryDirectory() as home:
            # The key only signs nothing here: verify_ledger wants a signer for the
            # public key; the root comparison does not depend on it.
            asyncio.run(compare_verify(args.database_url, Path(home) / "key.pem"))
    return 0 if mismatches == 0 and same else 1


if __name__ == "__main__":
    sys.exit(main())
