"""RFC 8785 (JSON Canonicalization Scheme) bytes and digests.

Canonical bytes make hashes independent of key order and whitespace, so the ledger and
idempotency digests can be recomputed by anyone from the JSON alone.

The pure-Python `rfc8785` package is the reference but costs over half of the
ledger's append time. Most documents sit in a subset where a fast encoder with sorted
keys writes exactly the RFC 8785 bytes, so those take that path and only the rest go
to `rfc8785`.

`canonical_from_json` (the ledger's hot path: every record it appends) parses with
`orjson` and writes with `orjson` (sorted keys), after one walk over the parsed value
that settles the numbers and the keys:

- integers within +-(2**53 - 1), the range `rfc8785` accepts;
- floats that are exact integers within that range become ints (ECMAScript writes
  them, and -0, without a fraction); other floats must be 1e-4 <= |x| < 1e16, where
  the shortest round-trip digits in fixed notation are ECMAScript's
  Number::toString (`orjson`, Python's `repr` and ECMAScript all write the shortest
  digits there, in fixed notation);
- no key with a character above U+FFFF: RFC 8785 sorts keys by UTF-16 code units,
  which differs from code-point (UTF-8 byte) order only for those. In values they
  are written as UTF-8 by both.

`orjson` refuses more than `json.loads` (a BOM, UTF-16, surrogates, NaN, 1e400): all
of it goes to the reference, which then raises what `json.loads` + `rfc8785` raise.

`canonical_bytes` (values built in Python) uses the C `json` module the same way:
written once and parsed back through guards on every number.

Strings escape the same way in all three (`\\b \\f \\n \\r \\t \\" \\\\`, other controls as
lowercase `\\u00xx`, nothing else escaped), which tests/unit/test_canonical.py checks
along with everything above, character by character and on random documents.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Final

import orjson
import rfc8785

_MAX_SAFE_INTEGER: Final = 2**53 - 1

# Astral characters sort differently in UTF-16; lone surrogates are refused by rfc8785.
_ASTRAL_OR_SURROGATE: Final = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


class _NotFast(Exception):
    """This document needs the reference implementation."""


def _int(text: str) -> int:
    value = int(text)
    if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        raise _NotFast  # rfc8785 refuses it; let it say so
    return value


def _float(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFast  # 1e400: rfc8785 refuses it
    if value.is_integer():
        if abs(value) <= _MAX_SAFE_INTEGER:
            return int(value)  # ECMAScript writes these doubles (and -0) as integers
        raise _NotFast  # ... and larger ones as shortest digits padded with zeros
    if 1e-4 <= abs(value) < 1e16:
        return value  # here Python's shortest repr is ECMAScript's Number::toString
    raise _NotFast


def _constant(text: str) -> Any:
    raise _NotFast  # NaN, Infinity, -Infinity: rfc8785 refuses them


# Built once: json.loads/json.dumps with keyword arguments build a new decoder or
# encoder on every call, which costs as much as the parsing here.
_DECODER: Final = json.JSONDecoder(
    parse_int=_int, parse_float=_float, parse_constant=_constant
)
_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def _make_exact(container: dict[str, Any] | list[Any]) -> None:
    """Check a parsed value's numbers and keys against the fast subset (see the
    module doc), turning integral floats into ints in place; raise _NotFast outside.

    Recursive like the parsers, whose depth limits are lower than Python's.
    """
    if type(container) is dict:
        for key in container:
            if not key.isascii() and _ASTRAL_OR_SURROGATE.search(key):
                raise _NotFast
        items: Any = container.items()
    else:
        items = enumerate(container)
    for key, value in items:
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                raise _NotFast  # rfc8785 refuses it (orjson reads some as floats)
        elif kind is float:
            if value.is_integer():
                if not -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
                    raise _NotFast  # ECMAScript pads these with zeros
                container[key] = int(value)  # a value, not a key: no resize
            elif not 1e-4 <= abs(value) < 1e16:
                raise _NotFast  # exponent notation: spelt differently
        else:
            _make_exact(value)


def canonical_from_json(raw: bytes) -> bytes:
    """RFC 8785 bytes of a JSON document: exactly `rfc8785.dumps(json.loads(raw))`,
    raising what that raises."""
    try:
        # The document in a list, so that a top-level number is settled too.
        holder = [orjson.loads(raw)]
        _make_exact(holder)
        return orjson.dumps(holder[0], option=orjson.OPT_SORT_KEYS)
    except (_NotFast, orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        pass  # also: not UTF-8, a BOM, invalid JSON, nested too deep
    return rfc8785.dumps(json.loads(raw))


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialization of a JSON value (dicts, lists, str, int, float,
    bool, None): exactly `rfc8785.dumps(value)`, raising what that raises."""
    try:
        # Written once by the C encoder and parsed back through the guards: that
        # settles the integers and floats without a Python walk over the value.
        text = _ENCODER.encode(value)
        if not _ASTRAL_OR_SURROGATE.search(text):
            parsed = _DECODER.decode(text)
            # json.dumps turns int, float, bool and None keys into strings and
            # tuples into lists, where rfc8785 refuses the keys and keeps the
            # tuples: equality with what was parsed back rules both out.
            if parsed == value:
                return _ENCODER.encode(parsed).encode()
    except (_NotFast, TypeError, ValueError):  # not JSON, NaN, a cycle, ...
        pass
    return rfc8785.dumps(value)


def canonical_digest(value: Any) -> bytes:
    """SHA-256 of the canonical bytes."""
    return hashlib.sha256(canonical_bytes(value)).digest()


def fingerprint(value: Any) -> bytes:
    """SHA-256 of sorted-key JSON: a stable digest of a request for idempotency.

    Only this service compares these digests, so the C-accelerated `json` module will
    do; RFC 8785 (several times slower here) is kept for what outsiders verify.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()
