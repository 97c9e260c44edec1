"""The fast RFC 8785 paths give exactly the `rfc8785` package's bytes, or both refuse.

`canonical_bytes` takes the C `json` module and `canonical_from_json` takes
`orjson` only where their output is provably RFC 8785; these tests hold them to the
reference byte for byte, on the RFC's own vectors, on the edges of that subset
(every BMP character, number spellings, syntax `orjson` and `json` disagree on), on
random documents and JSON texts, and on the envelopes the services really produce.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.lifecycle import OrderStatus
from shared.events.canonical import canonical_bytes, canonical_from_json
from shared.events.envelope import encode, to_cloudevent
from shared.events.topics import SOURCE_DISPATCH, SOURCE_INTAKE
from tests.builders import happy_path_history, story_at

Outcome = bytes | type[Exception]


def _reference(value: Any) -> Outcome:
    try:
        return rfc8785.dumps(value)
    except (ValueError, TypeError, RecursionError) as error:
        return type(error)


def _fast(value: Any) -> Outcome:
    try:
        return canonical_bytes(value)
    except (ValueError, TypeError, RecursionError) as error:
        return type(error)


def _fast_raw(raw: bytes) -> Outcome:
    try:
        return canonical_from_json(raw)
    except (ValueError, TypeError, RecursionError) as error:
        return type(error)


def _reference_raw(raw: bytes) -> Outcome:
    try:
        return rfc8785.dumps(json.loads(raw))
    except (ValueError, TypeError, RecursionError) as error:
        return type(error)


def assert_same(value: Any) -> None:
    """Both fast paths agree with the reference: same bytes, or the same refusal."""
    assert _fast(value) == _reference(value), value
    for ensure_ascii in (False, True):
        try:
            raw = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
            continue  # no JSON text to start from (NaN, lone surrogate, ...)
        assert _fast_raw(raw) == _reference_raw(raw), raw


# --- RFC 8785's own examples -------------------------------------------------------

# Section 3.2.2 (the sample object), as JSON text: the numbers are written as the
# RFC writes them, which Python's json would not produce.
RFC_SAMPLE = rb"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_SAMPLE_CANONICAL = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
    '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
).encode()

# Section 3.2.3 (sorting of object properties by UTF-16 code units).
RFC_SORTING = rb"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC_SORTING_CANONICAL = (
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
    '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
    '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(RFC_SAMPLE, RFC_SAMPLE_CANONICAL), (RFC_SORTING, RFC_SORTING_CANONICAL)],
    ids=["sample", "sorting"],
)
def test_rfc_examples(raw: bytes, expected: bytes) -> None:
    assert rfc8785.dumps(json.loads(raw)) == expected
    assert canonical_from_json(raw) == expected
    assert canonical_bytes(json.loads(raw)) == expected


# Appendix B: IEEE 754 bit patterns and their ECMAScript serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_appendix_b_numbers(bits: str, expected: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert rfc8785.dumps(number) == expected.encode()
    assert canonical_bytes(number) == expected.encode()
    assert canonical_bytes([number]) == f"[{expected}]".encode()
    assert canonical_from_json(repr(number).encode()) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000"])
def test_appendix_b_nan_and_infinity_are_refused(bits: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    for value in (number, -number, [number], {"x": number}):
        with pytest.raises(rfc8785.FloatDomainError):
            canonical_bytes(value)
    for raw in (b"NaN", b"Infinity", b"-Infinity", b'{"x":[1e400]}'):
        with pytest.raises(rfc8785.FloatDomainError):
            canonical_from_json(raw)


# --- the edges of the fast subset --------------------------------------------------

EDGE_STRINGS = [
    "",
    "plain",
    "\U0001f600",  # astral: a surrogate pair in UTF-16
    "a\U0001f600b",
    "\ue000",  # BMP private use, above the surrogates
    "\uffff",
    "\u2028\u2029",  # JSON allows them raw, RFC 8785 keeps them raw
    "\x00\x01\x07\x08\x09\x0a\x0b\x0c\x0d\x1e\x1f",
    "\x7f\x80\x9f",
    '"\\/',
    "\ud800",  # lone surrogates: rfc8785 refuses them
    "\udc00",
    "x\udbff",
    "中文 é ß",
]


@pytest.mark.parametrize("text", EDGE_STRINGS)
def test_strings_as_values_and_keys(text: str) -> None:
    assert_same(text)
    assert_same([text, {text: text}])
    assert_same({text: 1, "\uffff": 2, "\U0001f600": 3, "a": 4, "\ue000": 5})


def test_control_characters_escape_as_rfc8785_says() -> None:
    expected = b'"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\x7f"'
    value = "\x00\b\t\n\x0b\f\r\x1f\x7f"
    assert rfc8785.dumps(value) == expected
    assert canonical_bytes(value) == expected
    assert canonical_from_json(json.dumps(value).encode()) == expected


def test_astral_keys_sort_by_utf16_code_units() -> None:
    # Code points: U+E000 < U+1F600; UTF-16: D83D.. < E000.
    value = {"\ue000": 1, "\U0001f600": 2}
    expected = '{"\U0001f600":2,"\ue000":1}'.encode()
    assert canonical_bytes(value) == expected
    assert canonical_from_json(json.dumps(value).encode()) == expected
    assert canonical_from_json(json.dumps(value, ensure_ascii=False).encode()) == (
        expected
    )


EDGE_NUMBERS: list[Any] = [
    0,
    -0,
    1,
    -1,
    2**53 - 1,
    -(2**53 - 1),
    2**53,
    -(2**53),
    2**64,
    10**400,
    0.0,
    -0.0,
    1.0,
    -1.0,
    5.0,
    float(2**53 - 1),
    float(2**53),
    -float(2**53),
    1e15,
    1e16,
    1.5e16,
    1e20,
    1e21,
    1e22,
    1.7976931348623157e308,
    1e-4,
    9.999e-5,
    1e-6,
    1e-7,
    1.5e-7,
    5e-324,
    -5e-324,
    0.1 + 0.2,
    0.1,
    123.456,
    -123.456,
    9007199254740991.5,
    4503599627370495.5,
    1234567890123456.7,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    None,
]


@pytest.mark.parametrize("number", EDGE_NUMBERS, ids=repr)
def test_numbers(number: Any) -> None:
    assert_same(number)
    assert_same({"n": [number, {"m": number}]})


@pytest.mark.parametrize(
    "raw",
    [
        rb'"\ud800"',  # escaped surrogates: lone ones are refused, pairs are astral
        rb'"\udc00"',
        rb'"\uDBFF\uDFFF"',
        rb'"\ud83d\ude00"',
        b"-0",
        b"-0.0",
        b"0e0",
        b"1E2",
        b"1.0e1",
        b"100e-2",
        b"9007199254740991",
        b"9007199254740992",
        b"-9007199254740992",
        b"9007199254740991.0",
        b"1e400",
        b"-1e400",
        b"1e-400",
        b"0.30000000000000004",
        b"1.00000000000000000001",
        b"123456789012345678901234567890",
        # Accepted by json.loads, refused by orjson: the reference decides.
        b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8 (surrogatepass)
        rb'"\ude00\ud83d"',  # escaped surrogates in the wrong order
        b"[1E400]",
        b"[-1e400]",
        b"NaN",
        # Refused by both.
        b'"\t"',
        b'"\x00"',
        b"01",
        b"1.",
        b".5",
        b"+1",
        b"-",
        b"1e+",
        b"[1 2]",
        b"{a:1}",
        b'{"a":1,}',
        b"[1,,2]",
        b'"\xc0\x80"',  # overlong UTF-8
        b'"\xf4\x90\x80\x80"',  # beyond U+10FFFF
        b"\x0c[1]",
        b"\xa0[1]",
        # Accepted by both.
        b'"\xef\xbf\xbe"',
        b"\t[1]\r\n ",
        b'{"":1,"\\u0000":2}',
        b'"\\/"',
        b"[1.5e-400,-1e-400,-0,0.0,-0.0]",
        b'{"a":{"b":[1,{"c":2.50}]},"a":[3.25]}',
    ],
)
def test_json_text_as_written(raw: bytes) -> None:
    assert _fast_raw(raw) == _reference_raw(raw)
    assert _fast_raw(b'{"a":[' + raw + b"]}") == _reference_raw(b'{"a":[' + raw + b"]}")


@pytest.mark.parametrize(
    "value",
    [{}, [], [[]], [{}], {"a": {}}, {"a": []}, {"a": {"b": {"c": [[], {}]}}}],
    ids=repr,
)
def test_empty_containers(value: Any) -> None:
    assert_same(value)


def test_what_json_dumps_accepts_and_rfc8785_refuses() -> None:
    # json.dumps writes these keys as strings; rfc8785 refuses non-string keys.
    for value in ({1: "a"}, {True: "a"}, {None: "a"}, {1.5: "a"}, {"a": {2: 3}}):
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_bytes(value)
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({"a": object()})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes({"a": b"bytes"})


def test_tuples_are_arrays() -> None:
    assert canonical_bytes((1, (2.0, "x"))) == rfc8785.dumps((1, (2.0, "x")))
    assert canonical_bytes({"t": ()}) == b'{"t":[]}'


def test_raw_json_that_is_not_plain_utf8() -> None:
    # json.loads accepts a BOM and UTF-16; the reference then decides.
    for raw in (
        b'\xef\xbb\xbf{"a":1}',
        '{"b":1,"a":2}'.encode("utf-16"),
        b'{"a":1',
        b"",
        b'{"a":1}{',
        b'\xff"',
    ):
        assert _fast_raw(raw) == _reference_raw(raw), raw


def test_duplicate_keys_keep_the_last_as_json_loads_does() -> None:
    raw = b'{"a":1,"b":2,"a":3.0}'
    assert canonical_from_json(raw) == b'{"a":3,"b":2}' == _reference_raw(raw)


def test_every_bmp_character_as_value_and_key() -> None:
    # Escaping and key order, character by character (surrogates are refused by
    # both readers of raw UTF-8 and are covered by EDGE_STRINGS).
    characters = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    for first in range(0, len(characters), 4096):
        block = characters[first : first + 4096]
        value = {c: [c, f"a{c}b"] for c in reversed(block)}
        for ensure_ascii in (False, True):
            raw = json.dumps(value, ensure_ascii=ensure_ascii).encode()
            assert canonical_from_json(raw) == rfc8785.dumps(value)


def test_astral_characters_in_values_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value: dict[str, Any] = {
        "z": "\U0001f600",
        "a": ["x\U0010ffff", "\U00010000"],
        "\ue000": 1,
    }
    expected = rfc8785.dumps(value)

    def refuse(value: Any) -> bytes:
        raise AssertionError(f"fell back to rfc8785 for {value!r}")

    monkeypatch.setattr(rfc8785, "dumps", refuse)
    for ensure_ascii in (False, True):
        raw = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        assert canonical_from_json(raw) == expected


@pytest.mark.parametrize(
    "depth", [10, 254, 255, 256, 600, 980, 1000, 1023, 1024, 1100, 5000]
)
def test_deep_nesting(depth: int) -> None:
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        raw = opening * depth + b"1" + closing * depth
        assert _fast_raw(raw) == _reference_raw(raw)


# --- random documents --------------------------------------------------------------

_TEXT = st.text(
    st.characters(codec=None, exclude_categories=()),  # surrogates included
    max_size=8,
) | st.text(st.sampled_from('aZé中\u2028\x00\x1f"\\\ue000\U0001f600\x7f/'), max_size=6)

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2)
    | st.floats(allow_nan=False)
    | st.floats(min_value=-1e17, max_value=1e17)
    | st.sampled_from([1e-7, 1e-4, 1e16, 1e21, 5e-324, -0.0, 0.1 + 0.2])
    | _TEXT
)

_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(_DOCUMENTS)
def test_random_documents_match_rfc8785(value: Any) -> None:
    assert_same(value)


# JSON number spellings as a producer might write them: long mantissas, any
# exponent, leading zeros in fractions; both readers must round alike.
_NUMBER_TEXTS = st.builds(
    lambda sign, whole, fraction, exponent: (
        f"{sign}{whole}{'.' + fraction if fraction else ''}{exponent}"
    ),
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**25).map(str),
    st.text("0123456789", max_size=25),
    st.sampled_from(["", "e", "E", "e+", "e-", "E-"]).flatmap(
        lambda mark: (
            st.just("")
            if not mark
            else st.integers(min_value=0, max_value=400).map(lambda n: f"{mark}{n}")
        )
    ),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_NUMBER_TEXTS, min_size=1, max_size=5))
def test_random_number_texts_match_rfc8785(numbers: list[str]) -> None:
    raw = ("[" + ",".join(numbers) + "]").encode()
    assert _fast_raw(raw) == _reference_raw(raw)
    assert _fast_raw(numbers[0].encode()) == _reference_raw(numbers[0].encode())


@settings(max_examples=1500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_random_doubles_as_written_by_repr(number: float) -> None:
    raw = f'{{"x":{number!r},"y":[{-number!r}]}}'.encode()
    assert _fast_raw(raw) == _reference_raw(raw)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers() | st.booleans() | st.none(), _SCALARS))
def test_random_non_string_keys(value: dict[Any, Any]) -> None:
    assert _fast(value) == _reference(value)


# --- the envelopes the services really produce -------------------------------------


def _envelopes() -> list[dict[str, Any]]:
    histories = [happy_path_history(), happy_path_history(warranty=True)]
    histories += [story_at(status).history for status in OrderStatus]
    return [
        to_cloudevent(event, source=source, traceparent=trace)
        for history in histories
        for event in history
        for source, trace in (
            (SOURCE_INTAKE, None),
            (
                SOURCE_DISPATCH,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )
    ]


def test_real_envelopes_canonicalise_identically() -> None:
    envelopes = _envelopes()
    assert len(envelopes) > 50
    for envelope in envelopes:
        expected = rfc8785.dumps(envelope)
        assert canonical_bytes(envelope) == expected
        assert canonical_from_json(encode(envelope)) == expected
        assert canonical_from_json(json.dumps(envelope).encode()) == expected


def test_real_envelopes_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point of the fast path: the ledger's events never reach rfc8785.
    envelopes = _envelopes()
    expected = [rfc8785.dumps(envelope) for envelope in envelopes]

    def refuse(value: Any) -> bytes:
        raise AssertionError(f"fell back to rfc8785 for {value!r}")

    monkeypatch.setattr(rfc8785, "dumps", refuse)
    assert [canonical_bytes(e) for e in envelopes] == expected
    assert [canonical_from_json(encode(e)) for e in envelopes] == expected
