"""Make the golden stream once: a realistic history written by today's code.

    python -m tests.golden.make_golden --server-url postgresql://postgres@127.0.0.1:5432/postgres

DO NOT RUN THIS TO MAKE A FAILING TEST PASS (tests/golden/README.md): the files it
wrote are the record every later release must import unchanged.

What it does, in a scratch database it creates and drops on that server:
1. posts the history through the write path the HTTP API uses (`post_request`, then
   the order writer's `decide` and append), with `rated` posted in version 1 and 2;
2. feeds the stored records, in order, to the ledger's own appender (as its Kafka
   consumer does), signing with a test key derived from a fixed seed;
3. rebuilds the indicators from the ledger (`servicetrail metrics rebuild`'s code);
4. writes `ledger.ndjson.gz` (the ledger's export, gzipped), `public_key.pem`,
   `tree_head.json`
   (the checkpoint) and `expected.json` (tests/golden/observe.py at a fixed instant).

Deterministic: one seeded `random.Random` draws every choice and id, and every
`time` and `recordedtime` is fixed, so the entries come out byte for byte the same on
each run. Only the tree head's timestamp (the appender reads the clock) and so its
signature differ between runs.

`recordedtime` is each event's `time` plus a few seconds: the history is written as
if the server received each post right away (the write path accepts a `time` at most
72 hours old, so a history of 30 days cannot be posted with today's clock).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # ships no stubs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger import queries as ledger_queries
from services.ledger.consumer import LedgerAppender
from services.ledger.signing import TreeSigner
from services.metrics.rebuild import rebuild_from_ledger
from shared.db.engine import create_driver_pool, create_engine
from shared.db.migrate import upgrade
from shared.domain.actors import Actor, Role
from shared.domain.events import PAYLOAD_TYPES
from shared.domain.lifecycle import AUTO_DISPATCH
from shared.domain.rules import Policy
from shared.events.topics import SOURCE_DISPATCH, SOURCE_INTAKE
from shared.kafka.consumer import parse_record
from shared.orders.posts import EventPost, TakenPosts, post_request
from shared.orders.writer import OrderWriter
from shared.settings import CommonSettings
from tests.golden.observe import START, observe
from tests.integration.kafka_io import consumer_records

HERE: Final = Path(__file__).resolve().parent
EXPORT: Final = "ledger.ndjson.gz"
SEED: Final = 20261005
ORDERS: Final = 200
DAYS: Final = 30
# The test key's 32 private bytes: public on purpose, it signs only this stream.
KEY_SEED: Final = hashlib.sha256(b"servicetrail golden stream, test key 1").digest()
LEDGER_BATCH: Final = 100

V1: Final = "urn:servicetrail:order.rated:1"
V2: Final = "urn:servicetrail:order.rated:2"
ALL_TYPES: Final = TakenPosts(service="golden", types=frozenset(PAYLOAD_TYPES))
CUSTOMER_TYPES: Final = frozenset(
    {"created", "cancelled", "quote_approved", "quote_rejected", "rated"}
    | {"reopened", "complaint_filed"}
)
REGIONS: Final = ("shanghai-pudong", "shanghai-minhang", "beijing-chaoyang")
CATEGORIES: Final = ("air_conditioner", "washing_machine", "water_heater", "plumbing")
COMMENTS: Final = (
    ("师傅很专业,准时到达", "zh-CN"),
    ("修好了,价格合理", "zh-CN"),
    ("来得有点晚", "zh"),
    ("Quick and tidy, thank you", "en"),
    ("沟通不太好", "zh-Hans-CN"),
)


@dataclass(frozen=True)
class Technician:
    """A technician's profile: how fast, punctual and good they are."""

    technician_id: str
    speed: float  # multiplies response times
    lateness: float  # multiplies the ETA actually taken
    skill: float  # probability of fixing on the first visit


@dataclass(order=True)
class Post:
    """One event to post: when it was recorded, then its place in its order."""

    recorded: datetime
    order_seq: int
    step: int
    time: datetime = field(compare=False)
    order_id: uuid.UUID = field(compare=False)
    actor: Actor = field(compare=False)
    type: str = field(compare=False)
    data: dict[str, Any] = field(compare=False)
    event_id: uuid.UUID = field(compare=False)
    dataschema: str | None = field(default=None, compare=False)


TECHNICIANS: Final = (
    Technician("tech-01", 0.5, 0.9, 0.95),
    Technician("tech-02", 0.6, 1.0, 0.92),
    Technician("tech-03", 0.8, 1.0, 0.88),
    Technician("tech-04", 1.0, 1.1, 0.85),
    Technician("tech-05", 1.0, 1.0, 0.85),
    Technician("tech-06", 1.2, 1.2, 0.80),
    Technician("tech-07", 1.5, 1.4, 0.70),
    Technician("tech-08", 2.5, 1.8, 0.55),
)


class Story:
    """One order's events, drawn from `rng`, times moving forward."""

    def __init__(self, rng: random.Random, seq: int, created_at: datetime) -> None:
        self.rng = rng
        self.seq = seq
        self.order_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        self.customer = Actor(Role.CUSTOMER, f"cust-{seq:04d}")
        self.dispatcher = Actor(Role.DISPATCHER, "disp-01")
        self.now = created_at
        self.posts: list[Post] = []

    def minutes(self, low: float, high: float) -> None:
        self.now += timedelta(minutes=self.rng.uniform(low, high))

    def post(
        self,
        actor: Actor,
        type_: str,
        data: dict[str, Any],
        *,
        dataschema: str | None = None,
    ) -> uuid.UUID:
        event_id = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        time = self.now.replace(microsecond=0)
        recorded = time + timedelta(seconds=self.rng.randint(1, 20))
        self.posts.append(
            Post(
                recorded,
                self.seq,
                len(self.posts),
                time,
                self.order_id,
                actor,
                type_,
                data,
                event_id,
                dataschema,
            )
        )
        self.now = recorded + timedelta(minutes=1)  # events of an order stay ordered
        return event_id


def _technician(rng: random.Random, avoid: set[str]) -> Technician:
    return rng.choice([t for t in TECHNICIANS if t.technician_id not in avoid])


def _items(rng: random.Random, *, parts: bool) -> list[dict[str, Any]]:
    items = [
        {
            "kind": "labor",
            "description": "人工",
            "quantity": 1,
            "unit_price": rng.choice((8000, 12000, 15000)),
        }
    ]
    if parts:
        items.append(
            {
                "kind": "part",
                "description": "配件",
                "quantity": rng.randint(1, 2),
                "unit_price": rng.choice((3500, 6000, 9900)),
            }
        )
    return items


def _total(items: list[dict[str, Any]]) -> int:
    return sum(int(i["quantity"]) * int(i["unit_price"]) for i in items)


def _completed(outcome: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "currency": "CNY",
        "final_items": items,
        "final_total": _total(items),
        "parts_used": ["配件"] if any(i["kind"] == "part" for i in items) else [],
        "notes": "",
        "evidence": [],
    }


def _assign(story: Story, tech: Technician) -> uuid.UUID:
    """Assigned by the dispatcher or the engine, at random."""
    story.minutes(2, 30)
    if story.rng.random() < 0.5:
        return story.post(
            AUTO_DISPATCH,
            "assigned",
            {
                "technician_id": tech.technician_id,
                "method": "auto",
                "reason": "nearest",
            },
        )
    return story.post(
        story.dispatcher,
        "assigned",
        {"technician_id": tech.technician_id, "method": "manual", "reason": "skill"},
    )


def _rating(story: Story, tech: Technician) -> None:
    rng = story.rng
    score = max(1, min(5, round(rng.gauss(1 + 4 * tech.skill, 0.8))))
    data: dict[str, Any] = {"score": score}
    if rng.random() < 0.7:
        data["nps"] = max(0, min(10, score * 2 + rng.randint(-1, 0)))
    if rng.random() < 0.6:
        data["dimensions"] = {
            "attitude": max(1, min(5, score + rng.randint(-1, 1))),
            "punctuality": max(1, min(5, round(5 / tech.lateness) - rng.randint(0, 1))),
            "price_fairness": max(1, min(5, score + rng.randint(-1, 0))),
        }
    comment = rng.choice(COMMENTS) if rng.random() < 0.5 else None
    # Old apps (no dataschema, or naming version 1) next to updated ones (version 2).
    if rng.random() < 0.45:
        if comment is not None:
            data["comment"] = comment[0]
        dataschema = None if rng.random() < 0.5 else V1
    else:
        if comment is not None:
            data["comment"] = {"text": comment[0], "language": comment[1]}
        dataschema = V2
    story.minutes(30, 48 * 60)
    story.post(story.customer, "rated", data, dataschema=dataschema)


def _complaint(story: Story) -> None:
    story.minutes(60, 24 * 60)
    complaint_id = f"cmp-{story.seq:04d}"
    story.post(
        story.customer,
        "complaint_filed",
        {"complaint_id": complaint_id, "category": "service", "text": "态度不好"},
    )
    if story.rng.random() < 0.8:
        story.minutes(60, 3 * 24 * 60)
        story.post(
            story.dispatcher,
            "complaint_resolved",
            {"complaint_id": complaint_id, "resolution": "已道歉并回访"},
        )


def _visit_and_fix(story: Story, tech: Technician, *, warranty: bool) -> bool:
    """Accept, visit (or diagnose remotely), quote, complete; False: left open."""
    rng = story.rng
    me = Actor(Role.TECHNICIAN, tech.technician_id)
    story.minutes(2 * tech.speed, 90 * tech.speed)
    eta = rng.choice((30, 45, 60, 90, 120))
    story.post(
        me, "accepted", {"technician_id": tech.technician_id, "eta_minutes": eta}
    )
    remote = rng.random() < 0.12
    if not remote:
        story.minutes(eta * tech.lateness * 0.8, eta * tech.lateness * 1.3)
        story.post(me, "arrived", {"technician_id": tech.technician_id})
    story.minutes(10, 40)
    diagnosis: dict[str, Any] = {
        "fault_code": rng.choice(("E1", "E4", "F2", "LEAK")),
        "summary": "已诊断",
        "parts_needed": [],
        "remote": remote,
    }
    story.post(me, "diagnosed", diagnosis)
    if warranty and rng.random() < 0.6:
        story.minutes(20, 90)
        story.post(me, "completed", _completed("fixed", []))
        return True
    if rng.random() < 0.03:
        return False  # still diagnosing when the history ends
    items = _items(rng, parts=rng.random() < 0.6)
    story.minutes(5, 30)
    quote = story.post(
        me, "priced", {"currency": "CNY", "items": items, "total": _total(items)}
    )
    if rng.random() < 0.08:
        story.minutes(5, 60)
        story.post(story.customer, "quote_rejected", {"quote_event_id": str(quote)})
        items = items[:1]
        story.minutes(5, 30)
        quote = story.post(
            me, "priced", {"currency": "CNY", "items": items, "total": _total(items)}
        )
    story.minutes(5, 60)
    story.post(story.customer, "quote_approved", {"quote_event_id": str(quote)})
    if not remote and rng.random() < 0.08:
        first = items[:1]
        story.minutes(30, 120)
        story.post(me, "completed", _completed("follow_up_required", first))
        story.minutes(18 * 60, 30 * 60)
        story.post(me, "arrived", {"technician_id": tech.technician_id})
        story.minutes(30, 120)
        story.post(me, "completed", _completed("fixed", items[1:]))
        return True
    story.minutes(30, 180)
    outcome = "fixed" if rng.random() < tech.skill else "not_fixed"
    story.post(me, "completed", _completed(outcome, items))
    return True


def _rework(story: Story, tech: Technician) -> None:
    """A reopen within the warranty window: the same technician comes back."""
    me = Actor(Role.TECHNICIAN, tech.technician_id)
    story.minutes(24 * 60, 8 * 24 * 60)
    story.post(story.customer, "reopened", {"reason": "又坏了"})
    _assign(story, tech)
    story.minutes(10, 120)
    story.post(me, "accepted", {"technician_id": tech.technician_id, "eta_minutes": 60})
    story.minutes(40, 90)
    story.post(me, "arrived", {"technician_id": tech.technician_id})
    story.minutes(10, 30)
    story.post(
        me,
        "diagnosed",
        {"fault_code": "E1", "summary": "返修", "parts_needed": [], "remote": False},
    )
    story.minutes(20, 60)
    story.post(me, "completed", _completed("fixed", []))


def order_story(rng: random.Random, seq: int) -> list[Post]:
    """One order's history, from `created` to wherever it stands at the end."""
    created_at = START + timedelta(
        minutes=seq * DAYS * 24 * 60 / ORDERS + rng.uniform(0, 60)
    )
    story = Story(rng, seq, created_at)
    warranty = rng.random() < 0.15
    story.post(
        story.customer,
        "created",
        {
            "customer_id": story.customer.id,
            "category": rng.choice(CATEGORIES),
            "region": rng.choice(REGIONS),
            "urgency": rng.choices(("normal", "urgent", "emergency"), (7, 2, 1))[0],
            "description": "不制冷",
            "warranty": warranty,
            "channel": rng.choices(
                ("app", "web", "phone", "mini_program"), (5, 1, 1, 2)
            )[0],
            "contact_ref": f"vault-{seq:04d}",
        },
    )
    roll = rng.random()
    if roll < 0.05:
        story.minutes(10, 120)
        story.post(story.customer, "cancelled", {"reason": "不需要了"})
        return story.posts
    tech = _technician(rng, set())
    assigned = _assign(story, tech)
    if roll < 0.09:
        return story.posts  # never answered: open, its accept target long passed
    if roll < 0.19:
        story.minutes(5, 30)
        story.post(
            Actor(Role.TECHNICIAN, tech.technician_id),
            "declined",
            {"technician_id": tech.technician_id, "reason": "太远"},
        )
        tech = _technician(rng, {tech.technician_id})
        _assign(story, tech)
    elif roll < 0.25:
        story.minutes(240, 300)
        story.post(
            AUTO_DISPATCH,
            "assignment_expired",
            {"technician_id": tech.technician_id, "assigned_event_id": str(assigned)},
        )
        tech = _technician(rng, {tech.technician_id})
        _assign(story, tech)
    elif roll < 0.28:
        story.minutes(20, 60)
        story.post(story.dispatcher, "cancelled", {"reason": "客户改约"})
        return story.posts
    if not _visit_and_fix(story, tech, warranty=warranty):
        return story.posts
    if rng.random() < 0.7:
        _rating(story, tech)
    if rng.random() < 1.5 * (1 - tech.skill):
        _complaint(story)
    if rng.random() < 0.6 * (1 - tech.skill):
        _rework(story, tech)
    return story.posts


def history(orders: int = ORDERS) -> list[Post]:
    """Every order's posts, in the order the server recorded them.

    A shorter history is the longer one's first `orders` orders (one random draw).
    """
    rng = random.Random(SEED)
    return sorted(post for seq in range(orders) for post in order_story(rng, seq))


def _event_post(post: Post) -> EventPost:
    return EventPost.model_validate(
        {
            "id": post.event_id,
            "type": post.type,
            "dataschema": post.dataschema,
            "time": post.time,
            "data": post.data,
        }
    )


async def write_history(settings: CommonSettings, posts: list[Post]) -> None:
    """Every post through the HTTP API's parse and the order writer."""
    pool = await create_driver_pool(settings)
    try:
        intake = OrderWriter(pool, policy=Policy(), source=SOURCE_INTAKE)
        dispatch = OrderWriter(pool, policy=Policy(), source=SOURCE_DISPATCH)
        for post in posts:
            request = post_request(
                post.order_id,
                _event_post(post),
                taken=ALL_TYPES,
                actor=post.actor,
                now=post.recorded,
            )
            if post.type == "created":
                request = replace(request, new_order=True)
            writer = intake if post.type in CUSTOMER_TYPES else dispatch
            await writer.append(request)
    finally:
        await pool.close()


async def record(
    settings: CommonSettings, posts: list[Post], signer: TreeSigner
) -> None:
    """Write `posts`, sign them into the ledger and rebuild the indicators from it."""
    await write_history(settings, posts)
    engine = create_engine(settings)
    try:
        await _sign_and_rebuild(engine, signer)
    finally:
        await engine.dispose()


async def _sign_and_rebuild(engine: AsyncEngine, signer: TreeSigner) -> None:
    async with engine.connect() as conn:
        values = [
            bytes(v)
            for v in (
                await conn.execute(
                    text("SELECT value FROM event_store.outbox_message ORDER BY id")
                )
            ).scalars()
        ]
    appender = LedgerAppender(signer)
    for first in range(0, len(values), LEDGER_BATCH):
        batch = values[first : first + LEDGER_BATCH]
        consumed = [parse_record(r) for r in consumer_records(batch, first)]
        async with engine.begin() as conn:
            await appender.handle(consumed, conn)
    async with engine.begin() as conn:
        await rebuild_from_ledger(conn)


async def make(server_url: str) -> None:
    database = f"golden_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    url = urlsplit(server_url)._replace(path=f"/{database}").geturl()
    try:
        await asyncio.to_thread(upgrade, url)
        posts = history()
        signer = TreeSigner(Ed25519PrivateKey.from_private_bytes(KEY_SEED))
        settings = CommonSettings(database_url=url)
        await record(settings, posts, signer)
        engine = create_engine(settings)
        try:
            async with engine.connect() as conn:
                # gzip: a third of the size, and the bytes inside are the export's.
                with gzip.open(HERE / EXPORT, "wt", encoding="utf-8") as out:
                    async for line in ledger_queries.export_lines(conn, signer):
                        out.write(line)
                head = await ledger_queries.latest_checkpoint(conn, signer)
            (HERE / "tree_head.json").write_text(head.model_dump_json(indent=2) + "\n")
            (HERE / "public_key.pem").write_text(head.public_key)
            expected = await observe(engine)
            (HERE / "expected.json").write_text(
                json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True)
                + "\n"
            )
            print(  # noqa: T201 - a script's one line of output
                f"{len(posts)} events of {ORDERS} orders; "
                f"statuses {expected['statuses']}"
            )
        finally:
            await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--server-url",
        required=True,
        help="A PostgreSQL superuser URL; a scratch database is made and dropped.",
    )
    asyncio.run(make(parser.parse_args().server_url))


if __name__ == "__main__":
    main()
