"""A stream mixing `rated` 1 and 2 reads like its all-version-2 equivalent.

The golden history's first orders are written twice, each into a database of its
own through the write path, the ledger and a metrics rebuild: once as the apps sent
them (old apps' ratings in version 1, with or without `dataschema`), once with every
version-1 rating posted in version 2 as its upcaster reads it. Where the indicators
are defined (comments and their language count in none of them) both give the same
states, indicators and technician scores; each ledger keeps its own bytes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.ledger.signing import TreeSigner
from shared.settings import CommonSettings
from tests.fixtures.postgres import DatabaseFactory
from tests.golden.make_golden import KEY_SEED, V1, V2, Post, history, record
from tests.golden.observe import observe

pytestmark = pytest.mark.integration

ORDERS = 60


def as_version_2(post: Post) -> Post:
    """A version-1 rating posted in version 2, as `rated_1_to_2` reads it."""
    if post.type != "rated" or post.dataschema == V2:
        return post
    data = dict(post.data)
    comment = data.pop("comment", None)
    if comment is not None and comment.strip():
        data["comment"] = {"text": comment, "language": "und"}
    return replace(post, data=data, dataschema=V2)


async def replayed(url: str, posts: list[Post]) -> tuple[dict[str, Any], set[str]]:
    """What `posts` replay to, and the rating schemas the ledger holds."""
    settings = CommonSettings(database_url=url)
    await record(
        settings, posts, TreeSigner(Ed25519PrivateKey.from_private_bytes(KEY_SEED))
    )
    engine = create_async_engine(settings.sqlalchemy_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            schemas = set(
                (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT convert_from(canonical, 'UTF8')::jsonb"
                            "->>'dataschema' FROM ledger.ledger_entry "
                            "WHERE event_type = 'servicetrail.order.rated'"
                        )
                    )
                ).scalars()
            )
        return await observe(engine), schemas
    finally:
        await engine.dispose()


async def test_a_mixed_stream_gives_the_numbers_of_its_all_version_2_equivalent(
    fresh_database: DatabaseFactory, migrated_template: str
) -> None:
    mixed = history(ORDERS)
    ratings = [p for p in mixed if p.type == "rated"]
    assert {p.dataschema for p in ratings} == {None, V1, V2}
    assert any(isinstance(p.data.get("comment"), str) for p in ratings)

    seen_mixed, schemas_mixed = await replayed(
        await fresh_database("mixed", template=migrated_template), mixed
    )
    seen_v2, schemas_v2 = await replayed(
        await fresh_database("all_v2", template=migrated_template),
        [as_version_2(p) for p in mixed],
    )

    assert schemas_mixed == {V1, V2}
    assert schemas_v2 == {V2}
    assert seen_mixed["indicators"]["ratings_count"]["value"] == len(ratings)
    assert seen_mixed["states"] == seen_v2["states"]
    assert seen_mixed["indicators"] == seen_v2["indicators"]
    assert seen_mixed["technician_scores"] == seen_v2["technician_scores"]
