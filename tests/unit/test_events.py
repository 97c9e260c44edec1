"""Event payload models: strict JSON validation, bounds, money rules, type names."""

from __future__ import annotations

import json
import typing
from uuid import uuid4

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.domain import errors, events
from shared.domain.actors import (
    MAX_ACTOR_LENGTH,
    MAX_SUBJECT_LENGTH,
    Actor,
    Role,
    check_subject,
)
from shared.domain.currencies import ISO_4217_CODES, is_currency
from shared.domain.events import OrderPayload, Outcome
from tests import builders

JsonObject: typing.TypeAlias = dict[str, object]


def sample_payloads() -> list[OrderPayload]:
    """One valid payload of every type, built by the shared builders."""
    return [
        builders.make_created(),
        builders.make_assigned("tech-1"),
        builders.make_declined("tech-1"),
        builders.make_assignment_expired("tech-1", uuid4()),
        builders.make_accepted("tech-1"),
        builders.make_arrived("tech-1"),
        builders.make_diagnosed(),
        builders.make_priced(),
        builders.make_quote_approved(uuid4()),
        builders.make_quote_rejected(uuid4()),
        builders.make_completed(),
        builders.make_rated(),
        builders.make_cancelled(),
        builders.make_reopened(),
        builders.make_complaint_filed(),
        builders.make_complaint_resolved("cmp-1"),
    ]


def wire(payload: OrderPayload) -> JsonObject:
    """The payload as a JSON object, ready to be tampered with."""
    data = json.loads(builders.as_json(payload))
    assert isinstance(data, dict)
    return data


def validate(model: type[events.Payload], data: JsonObject | str) -> events.Payload:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return model.model_validate_json(text)


def error_types(err: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {e["type"] for e in err.value.errors()}


class TestValidPayloads:
    @pytest.mark.parametrize("payload", sample_payloads(), ids=lambda p: p.TYPE)
    def test_every_payload_round_trips_through_its_json(
        self, payload: OrderPayload
    ) -> None:
        assert events.parse_payload(payload.TYPE, builders.as_json(payload)) == payload

    def test_json_strings_are_accepted_for_enums_uuids(self) -> None:
        quote_id = uuid4()
        approved = events.QuoteApproved.model_validate_json(
            f'{{"quote_event_id": "{quote_id}"}}'
        )
        assert approved.quote_event_id == quote_id
        created = validate(events.Created, wire(builders.make_created()))
        assert isinstance(created, events.Created)
        assert created.urgency is events.Urgency.NORMAL

    def test_chinese_text_round_trips_exactly(self) -> None:
        text = "冰箱不制冷，压缩机异响；客户要求周六上午上门。🙂 «ok»"  # noqa: RUF001
        data = wire(builders.make_created())
        data["description"] = text
        created = validate(events.Created, data)
        assert isinstance(created, events.Created)
        assert created.description == text
        again = events.Created.model_validate_json(created.model_dump_json())
        assert again.description == text
        assert json.loads(created.model_dump_json())["description"] == text

    def test_text_length_counts_characters_not_bytes(self) -> None:
        data = wire(builders.make_created())
        data["description"] = "修" * events.MAX_TEXT  # 6000 bytes in UTF-8
        assert validate(events.Created, data)

    def test_optional_fields_may_be_left_out_or_null(self) -> None:
        rated = events.Rated.model_validate_json('{"score": 4, "nps": null}')
        assert rated == events.Rated(score=4)
        arrived = events.Arrived.model_validate_json('{"technician_id": "t-1"}')
        assert arrived.location is None
        dims = events.Rated.model_validate_json(
            '{"score": 3, "dimensions": {"attitude": 2}}'
        )
        assert dims.dimensions == events.Dimensions(attitude=2)

    def test_completed_notes_default_to_empty(self) -> None:
        data = wire(builders.make_completed())
        del data["notes"]
        completed = validate(events.Completed, data)
        assert isinstance(completed, events.Completed)
        assert completed.notes == ""

    def test_warranty_completion_may_list_no_items(self) -> None:
        completed = builders.make_completed(0)
        assert completed.final_items == ()
        assert validate(events.Completed, wire(completed)) == completed

    def test_integer_latitude_is_a_number(self) -> None:
        arrived = events.Arrived.model_validate_json(
            '{"technician_id": "t-1", "location": {"lat": 31, "lon": -180}}'
        )
        assert arrived.location == events.Location(lat=31.0, lon=-180.0)


class TestStrictValidation:
    def test_numeric_string_is_not_an_int(self) -> None:
        data = wire(builders.make_accepted("tech-1"))
        data["eta_minutes"] = "5"
        with pytest.raises(ValidationError) as err:
            validate(events.Accepted, data)
        assert error_types(err) == {"int_type"}

    def test_true_is_not_an_int(self) -> None:
        data = wire(builders.make_priced(5000))
        assert isinstance(data["items"], list)
        data["items"][0]["quantity"] = True
        with pytest.raises(ValidationError):
            validate(events.Priced, data)

    def test_float_is_not_an_int(self) -> None:
        with pytest.raises(ValidationError):
            events.Rated.model_validate_json('{"score": 5.0}')

    def test_int_is_not_a_bool(self) -> None:
        data = wire(builders.make_created())
        data["warranty"] = 1
        with pytest.raises(ValidationError) as err:
            validate(events.Created, data)
        assert error_types(err) == {"bool_type"}

    @pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
    def test_nan_and_infinity_are_refused(self, token: str) -> None:
        text = f'{{"technician_id": "t-1", "location": {{"lat": {token}, "lon": 0}}}}'
        with pytest.raises(ValidationError):
            events.Arrived.model_validate_json(text)

    def test_unknown_field_is_refused(self) -> None:
        data = wire(builders.make_cancelled())
        data["refund"] = 100
        with pytest.raises(ValidationError) as err:
            validate(events.Cancelled, data)
        assert error_types(err) == {"extra_forbidden"}

    def test_missing_required_field_is_refused(self) -> None:
        data = wire(builders.make_diagnosed())
        del data["remote"]
        with pytest.raises(ValidationError) as err:
            validate(events.Diagnosed, data)
        assert error_types(err) == {"missing"}

    def test_unknown_enum_value_is_refused(self) -> None:
        data = wire(builders.make_created())
        data["urgency"] = "whenever"
        with pytest.raises(ValidationError):
            validate(events.Created, data)

    def test_malformed_uuid_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            events.QuoteRejected.model_validate_json('{"quote_event_id": "q-1"}')

    def test_invalid_json_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            events.parse_payload("cancelled", b'{"reason": ')

    def test_payloads_are_immutable(self) -> None:
        cancelled = builders.make_cancelled()
        with pytest.raises(ValidationError):
            cancelled.reason = "changed my mind"  # type: ignore[misc]  # frozen model
        assert isinstance(builders.make_diagnosed().parts_needed, tuple)


class TestMoney:
    def test_total_must_equal_sum_of_items(self) -> None:
        data = wire(builders.make_priced(12_000))
        data["total"] = 11_999
        with pytest.raises(ValidationError, match="sum of quantity x unit_price"):
            validate(events.Priced, data)

    def test_final_total_must_equal_sum_of_final_items(self) -> None:
        data = wire(builders.make_completed(8_000))
        data["final_total"] = 0
        with pytest.raises(ValidationError, match="final_total 0 must equal"):
            validate(events.Completed, data)

    def test_total_multiplies_quantity_by_unit_price(self) -> None:
        priced = events.Priced.model_validate_json(
            '{"currency": "JPY", "total": 2500, "items": ['
            '{"kind": "part", "description": "filter", "quantity": 2,'
            ' "unit_price": 1000},'
            '{"kind": "labor", "description": "fit", "quantity": 1, "unit_price": 500}'
            "]}"
        )
        assert priced.total == 2500

    def test_quote_needs_at_least_one_item(self) -> None:
        with pytest.raises(ValidationError):
            events.Priced.model_validate_json(
                '{"currency": "CNY", "items": [], "total": 0}'
            )

    @pytest.mark.parametrize("currency", ["XYZ", "cny", "RMB", "HRK", "US", ""])
    def test_unknown_currency_is_refused(self, currency: str) -> None:
        data = wire(builders.make_priced())
        data["currency"] = currency
        with pytest.raises(ValidationError, match="ISO 4217"):
            validate(events.Priced, data)

    def test_negative_price_and_zero_quantity_are_refused(self) -> None:
        data = wire(builders.make_priced(5000))
        assert isinstance(data["items"], list)
        data["items"][0]["unit_price"] = -5000
        with pytest.raises(ValidationError):
            validate(events.Priced, data)
        data["items"][0].update(unit_price=5000, quantity=0)
        with pytest.raises(ValidationError):
            validate(events.Priced, data)

    def test_amounts_stay_within_exact_json_integers(self) -> None:
        data = wire(builders.make_priced(5000))
        assert isinstance(data["items"], list)
        data["items"][0]["unit_price"] = events.MAX_AMOUNT + 1
        data["total"] = events.MAX_AMOUNT + 1
        with pytest.raises(ValidationError):
            validate(events.Priced, data)

    def test_currency_list_holds_every_active_iso_4217_code(self) -> None:
        assert len(ISO_4217_CODES) > 170
        assert {"CNY", "USD", "EUR", "JPY", "HKD", "XCG", "ZWG", "XXX"} <= (
            ISO_4217_CODES
        )
        assert all(len(c) == 3 and c.isascii() and c.isupper() for c in ISO_4217_CODES)
        assert not is_currency("ANG")  # replaced by XCG in 2025


class TestBounds:
    def test_description_over_2000_characters_is_refused(self) -> None:
        data = wire(builders.make_created())
        data["description"] = "x" * (events.MAX_TEXT + 1)
        with pytest.raises(ValidationError) as err:
            validate(events.Created, data)
        assert error_types(err) == {"string_too_long"}

    def test_rating_comment_over_2000_characters_is_refused(self) -> None:
        data = wire(builders.make_rated())
        data["comment"] = "好" * (events.MAX_TEXT + 1)
        with pytest.raises(ValidationError):
            validate(events.Rated, data)

    def test_over_long_identifier_is_refused(self) -> None:
        data = wire(builders.make_assigned("tech-1"))
        data["technician_id"] = "t" * 201
        with pytest.raises(ValidationError):
            validate(events.Assigned, data)

    @pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
    def test_blank_reason_is_refused(self, reason: str) -> None:
        with pytest.raises(ValidationError):
            validate(events.Cancelled, {"reason": reason})

    def test_identifier_with_whitespace_is_refused(self) -> None:
        data = wire(builders.make_created())
        data["customer_id"] = "cust 1"
        with pytest.raises(ValidationError, match="whitespace"):
            validate(events.Created, data)

    def test_nul_character_is_refused(self) -> None:
        data = wire(builders.make_complaint_filed())
        data["text"] = "bad\u0000text"
        with pytest.raises(ValidationError, match="NUL"):
            validate(events.ComplaintFiled, data)

    def test_lists_over_100_items_are_refused(self) -> None:
        data = wire(builders.make_completed())
        data["evidence"] = [f"s3://evidence/{i}.jpg" for i in range(101)]
        with pytest.raises(ValidationError) as err:
            validate(events.Completed, data)
        assert error_types(err) == {"too_long"}

    @pytest.mark.parametrize("score", [0, 6, -1])
    def test_score_outside_1_to_5_is_refused(self, score: int) -> None:
        with pytest.raises(ValidationError):
            validate(events.Rated, {"score": score})

    @pytest.mark.parametrize("nps", [-1, 11])
    def test_nps_outside_0_to_10_is_refused(self, nps: int) -> None:
        with pytest.raises(ValidationError):
            validate(events.Rated, {"score": 5, "nps": nps})

    def test_dimension_outside_1_to_5_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            validate(events.Rated, {"score": 5, "dimensions": {"attitude": 0}})

    @pytest.mark.parametrize(
        ("lat", "lon"), [(90.0001, 0), (-90.5, 0), (0, 180.01), (0, -181)]
    )
    def test_location_outside_the_globe_is_refused(
        self, lat: float, lon: float
    ) -> None:
        with pytest.raises(ValidationError):
            validate(
                events.Arrived,
                {"technician_id": "t-1", "location": {"lat": lat, "lon": lon}},
            )


class TestTypeNames:
    def test_registry_covers_every_payload_of_the_union(self) -> None:
        members = set(typing.get_args(OrderPayload))
        assert set(events.PAYLOAD_TYPES.values()) == members
        assert len(events.PAYLOAD_TYPES) == 16

    @pytest.mark.parametrize(("name", "cls"), list(events.PAYLOAD_TYPES.items()))
    def test_class_name_is_the_short_name_in_pascal_case(
        self, name: str, cls: type[events.Payload]
    ) -> None:
        assert name == cls.TYPE
        assert cls.__name__ == name.title().replace("_", "")
        # Each type's version: a bump comes with a retired model and an upcaster
        # (shared.domain.evolution; tests/unit/test_evolution.py).
        assert (2 if cls is events.Rated else 1) == cls.SCHEMA_MAJOR

    def test_short_and_full_type_names_resolve_to_the_same_class(self) -> None:
        assert events.payload_type("accepted") is events.Accepted
        assert events.payload_type("servicetrail.order.accepted") is events.Accepted
        assert events.payload_type("servicetrail.order.quote_approved") is (
            events.QuoteApproved
        )

    @pytest.mark.parametrize(
        "name",
        [
            "accept",
            "Accepted",
            "servicetrail.order.",
            "servicetrail.quality.alert_raised",
            "order.accepted",
            "servicetrail.order.servicetrail.order.accepted",
            "",
        ],
    )
    def test_unknown_type_name_is_refused(self, name: str) -> None:
        with pytest.raises(errors.UnknownEventType) as err:
            events.payload_type(name)
        assert err.value.code == "unknown_event_type"

    def test_full_type_and_dataschema_follow_the_envelope_spec(self) -> None:
        assert events.full_type(events.QuoteApproved) == (
            "servicetrail.order.quote_approved"
        )
        assert events.dataschema(events.Created) == "urn:servicetrail:order.created:1"

    def test_parse_payload_uses_the_model_of_the_named_type(self) -> None:
        payload = events.parse_payload(
            "servicetrail.order.cancelled", '{"reason": "moved house"}'
        )
        assert payload == events.Cancelled(reason="moved house")
        with pytest.raises(ValidationError):
            events.parse_payload("reopened", '{"reason": "x", "extra": 1}')

    def test_parse_payload_refuses_unknown_types(self) -> None:
        with pytest.raises(errors.UnknownEventType):
            events.parse_payload("teleported", "{}")

    def test_only_final_outcomes_end_the_service(self) -> None:
        assert Outcome.FIXED.is_final
        assert Outcome.NOT_FIXED.is_final
        assert not Outcome.FOLLOW_UP_REQUIRED.is_final


def test_the_longest_token_subject_fits_every_id_and_actor_made_from_it() -> None:
    subject = "a" * MAX_SUBJECT_LENGTH
    assert TypeAdapter(events.Identifier).validate_python(subject) == subject
    for role in Role:
        assert len(str(Actor(role, subject))) <= MAX_ACTOR_LENGTH
    assert check_subject(subject) == subject
    with pytest.raises(ValueError, match="subject"):
        check_subject(subject + "a")
