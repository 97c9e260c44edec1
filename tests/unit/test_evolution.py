"""Event evolution: every published version is read, upcast exactly, or refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.domain import errors, events
from shared.domain.actors import Actor, Role
from shared.domain.evolution import (
    RETIRED,
    SCHEMAS,
    UPCASTERS,
    RatedV1,
    Schema,
    parse_schema,
    read_event_data,
    read_payload,
    upcast,
    versions,
)
from shared.domain.lifecycle import OrderEvent
from shared.events.envelope import (
    encode,
    parse_envelope,
    parse_order_event,
    to_cloudevent,
    to_order_event,
)

V1 = "urn:servicetrail:order.rated:1"
V2 = "urn:servicetrail:order.rated:2"


class TestRegistry:
    def test_every_type_has_a_model_for_every_version_and_upcasters_between(
        self,
    ) -> None:
        for name in events.PAYLOAD_TYPES:
            for version in versions(name):
                assert version == SCHEMAS[(name, version)].SCHEMA_MAJOR
            for version in versions(name)[:-1]:
                assert (name, version) in UPCASTERS

    def test_rated_has_two_versions_and_the_newest_is_the_domain_model(self) -> None:
        assert list(versions("rated")) == [1, 2]
        assert SCHEMAS[("rated", 2)] is events.Rated
        assert SCHEMAS[("rated", 1)] is RatedV1
        assert RatedV1 in RETIRED


class TestRatedOneToTwo:
    @pytest.mark.parametrize(
        ("v1", "v2"),
        [
            pytest.param({"score": 4}, {"score": 4}, id="bare"),
            pytest.param(
                {"score": 5, "nps": 10, "comment": "师傅很专业"},
                {
                    "score": 5,
                    "nps": 10,
                    "comment": {"text": "师傅很专业", "language": "und"},
                },
                id="comment-language-undetermined",
            ),
            pytest.param(
                {
                    "score": 2,
                    "nps": 0,
                    "dimensions": {"attitude": 1, "punctuality": 3},
                    "comment": None,
                },
                {
                    "score": 2,
                    "nps": 0,
                    "dimensions": {"attitude": 1, "punctuality": 3},
                },
                id="dimensions-kept",
            ),
            pytest.param({"score": 3, "comment": ""}, {"score": 3}, id="empty"),
            pytest.param({"score": 3, "comment": " \n\t"}, {"score": 3}, id="blank"),
        ],
    )
    def test_upcasts_exactly(
        self, v1: dict[str, object], v2: dict[str, object]
    ) -> None:
        read = read_payload(Schema("rated", 1), json.dumps(v1))
        assert read.data == events.Rated.model_validate_json(json.dumps(v2))
        assert read.written_as == RatedV1.model_validate_json(json.dumps(v1))

    def test_newest_version_is_read_as_is(self) -> None:
        data = {"score": 5, "comment": {"text": "good", "language": "en-GB"}}
        read = read_payload(Schema("rated", 2), json.dumps(data))
        assert read.written_as is None
        assert read.data.model_dump(mode="json", exclude_none=True) == data

    def test_upcast_of_the_newest_is_itself(self) -> None:
        rated = events.Rated(score=1)
        assert upcast(rated) is rated

    def test_a_v1_comment_is_not_a_v2_comment_nor_the_reverse(self) -> None:
        with pytest.raises(ValidationError):
            read_payload(Schema("rated", 2), '{"score": 5, "comment": "text"}')
        with pytest.raises(ValidationError):
            read_payload(
                Schema("rated", 1),
                '{"score": 5, "comment": {"text": "t", "language": "en"}}',
            )


HOSTILE_V1 = [
    '{"score": 6}',
    '{"score": 0}',
    '{"score": "5"}',
    '{"score": 5.0}',
    '{"score": true}',
    '{"score": 5, "nps": 11}',
    '{"score": 5, "comment": "a\\u0000b"}',
    '{"score": 5, "comment": "' + "好" * 2001 + '"}',
    '{"score": 5, "dimensions": {"cleanliness": 5}}',
    '{"score": 5, "extra": 1}',
    '{"score": 5, "comment": {"text": "t", "language": "en"}}',
    "[]",
    '{"score": NaN}',
]
HOSTILE_V2 = [
    '{"score": 5, "comment": {"text": "t"}}',
    '{"score": 5, "comment": {"language": "en"}}',
    '{"score": 5, "comment": {"text": "", "language": "en"}}',
    '{"score": 5, "comment": {"text": "  ", "language": "en"}}',
    '{"score": 5, "comment": {"text": "a\\u0000", "language": "en"}}',
    '{"score": 5, "comment": {"text": "t", "language": "e"}}',
    '{"score": 5, "comment": {"text": "t", "language": "en\\n"}}',
    '{"score": 5, "comment": {"text": "t", "language": "en US"}}',
    '{"score": 5, "comment": {"text": "t", "language": "zh-toolongsubtag"}}',
    '{"score": 5, "comment": {"text": "t", "language": "' + "a" * 40 + '"}}',
    '{"score": 5, "comment": {"text": "t", "language": "<script>"}}',
    '{"score": 5, "comment": {"text": "t", "language": "en", "x": 1}}',
    '{"score": 5, "comment": "plain"}',
    '{"score": 5, "comment": {"text": "' + "好" * 2001 + '", "language": "zh"}}',
]


class TestHostileValues:
    @pytest.mark.parametrize("data", HOSTILE_V1)
    def test_refused_in_version_1(self, data: str) -> None:
        with pytest.raises(ValidationError):
            read_payload(Schema("rated", 1), data)

    @pytest.mark.parametrize("data", HOSTILE_V2)
    def test_refused_in_version_2(self, data: str) -> None:
        with pytest.raises(ValidationError):
            read_payload(Schema("rated", 2), data)

    @pytest.mark.parametrize("tag", ["zh", "zh-Hans-CN", "en-GB", "und", "yue-HK"])
    def test_well_formed_language_tags_are_taken(self, tag: str) -> None:
        data = {"score": 5, "comment": {"text": "t", "language": tag}}
        read = read_payload(Schema("rated", 2), json.dumps(data)).data
        assert isinstance(read, events.Rated)
        assert read.comment == events.RatingComment(text="t", language=tag)


class TestParseSchema:
    def test_absent_means_version_1(self) -> None:
        assert parse_schema("rated", None) == Schema("rated", 1)
        assert parse_schema("servicetrail.order.accepted", None).version == 1

    def test_each_published_version_is_named_by_its_urn(self) -> None:
        assert parse_schema("rated", V2) == Schema("rated", 2)
        assert parse_schema("servicetrail.order.rated", V1).urn == V1

    @pytest.mark.parametrize(
        "urn",
        [
            "urn:servicetrail:order.rated:3",  # a newer release's
            "urn:servicetrail:order.rated:0",
            "urn:servicetrail:order.rated:01",
            "urn:servicetrail:order.rated:-1",
            "urn:servicetrail:order.rated:99999999999999999999",
            "urn:servicetrail:order.accepted:1",  # another type's
            "urn:servicetrail:order.rated:1 ",
            "urn:servicetrail:order.rated:1\n",
            " urn:servicetrail:order.rated:1",
            "URN:SERVICETRAIL:ORDER.RATED:1",
            "urn:servicetrail:quality.alert_raised:1",
            "",
            "rated:2",
            "urn:servicetrail:order.rated:2" + "0" * 500,
            "urn:servicetrail:order.rated:\u0662",  # an Arabic-Indic digit two
        ],
    )
    def test_unknown_versions_are_refused_clearly(self, urn: str) -> None:
        with pytest.raises(errors.UnknownSchema) as err:
            parse_schema("rated", urn)
        assert err.value.code == "unknown_schema"
        assert len(err.value.detail) < 600

    def test_an_unknown_type_is_refused_before_its_schema(self) -> None:
        with pytest.raises(errors.UnknownEventType):
            read_event_data("rated_twice", "urn:servicetrail:order.rated_twice:1", "{}")


def _event(data: events.OrderPayload, written_as: events.Payload | None) -> OrderEvent:
    now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    return OrderEvent(
        event_id=uuid4(),
        order_id=uuid4(),
        version=9,
        time=now,
        recorded_at=now,
        actor=Actor(Role.CUSTOMER, "c-1"),
        data=data,
        written_as=written_as,
    )


class TestEnvelopes:
    def test_a_v1_event_keeps_its_bytes_and_reads_as_v2(self) -> None:
        written = RatedV1(score=4, comment="好")
        event = _event(upcast(written), written)
        value = encode(to_cloudevent(event, source="/servicetrail/intake"))
        envelope = json.loads(value)
        assert envelope["dataschema"] == V1
        assert envelope["data"] == {
            "score": 4,
            "nps": None,
            "dimensions": None,
            "comment": "好",
        }
        for parsed in (parse_order_event(value), to_order_event(parse_envelope(value))):
            assert parsed == event
            assert parsed.data == events.Rated(
                score=4, comment=events.RatingComment(text="好", language="und")
            )
            # Encoding the event read back gives the received bytes again.
            assert encode(to_cloudevent(parsed, source="/servicetrail/intake")) == value

    def test_a_v2_event_is_written_as_v2(self) -> None:
        rated = events.Rated(
            score=5, comment=events.RatingComment(text="ok", language="en")
        )
        value = encode(
            to_cloudevent(_event(rated, None), source="/servicetrail/intake")
        )
        envelope = json.loads(value)
        assert envelope["dataschema"] == V2
        assert envelope["data"]["comment"] == {"text": "ok", "language": "en"}
        assert parse_order_event(value).data == rated

    def test_an_envelope_naming_an_unknown_version_is_refused(self) -> None:
        value = encode(
            to_cloudevent(_event(events.Rated(score=5), None), source="/x")
        ).replace(b"order.rated:2", b"order.rated:7")
        with pytest.raises(errors.UnknownSchema):
            parse_order_event(value)

    def test_v2_data_labelled_v1_is_not_read_as_v2(self) -> None:
        rated = events.Rated(
            score=5, comment=events.RatingComment(text="ok", language="en")
        )
        value = encode(to_cloudevent(_event(rated, None), source="/x")).replace(
            b"order.rated:2", b"order.rated:1"
        )
        with pytest.raises(ValidationError):
            parse_order_event(value)


_COMMENTS = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=40,
)
_STARS = st.integers(1, 5)


class TestUpcastProperties:
    @given(
        score=_STARS,
        nps=st.none() | st.integers(0, 10),
        attitude=st.none() | _STARS,
        punctuality=st.none() | _STARS,
        comment=st.none() | _COMMENTS,
    )
    def test_every_version_1_rating_reads_as_a_valid_version_2_that_keeps_its_facts(
        self,
        score: int,
        nps: int | None,
        attitude: int | None,
        punctuality: int | None,
        comment: str | None,
    ) -> None:
        dimensions = events.Dimensions(attitude=attitude, punctuality=punctuality)
        old = RatedV1(score=score, nps=nps, dimensions=dimensions, comment=comment)
        read = read_payload(Schema("rated", 1), old.model_dump_json())
        assert read.written_as == old
        new = read.data
        assert isinstance(new, events.Rated)
        # Re-validated from JSON: the upcast is a valid version 2, not just a model.
        assert events.Rated.model_validate_json(new.model_dump_json()) == new
        assert (new.score, new.nps, new.dimensions) == (score, nps, dimensions)
        if comment is None or not comment.strip():
            assert new.comment is None
        else:
            assert new.comment == events.RatingComment(text=comment, language="und")
