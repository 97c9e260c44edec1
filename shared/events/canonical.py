"""RFC 8785 (JSON Canonicalization Scheme) bytes and digests.

Canonical bytes make hashes independent of key order and whitespace, so the ledger and
idempotency digests can be recomputed by anyone from the JSON alone.

The pure-Python `rfc8785` package is the reference but costs over half of the
ledger's append time. Most documents sit in a subset where the C `json` module with
sorted keys writes exactly the RFC 8785 bytes, so those take that path and only the
rest go to `rfc8785`. The subset (checked while the C decoder parses, so the check
costs almost nothing):

- no astral characters and no escaped surrogates: RFC 8785 sorts keys by UTF-16 code
  units, which differs from Python's code-point order only for characters above
  U+FFFF (and a lone surrogate is an error for `rfc8785`);
- integers within +-(2**53 - 1), the range `rfc8785` accepts;
- floats that are exact integers within that range (ECMAScript writes them without
  a fraction, so they are re-encoded as ints) or non-integers with
  1e-4 <= |x| < 1e16, where Python's shortest `repr` is ECMAScript's
  Number::toString digit for digit (both fixed notation, same shortest digits);
- no NaN or Infinity.

Strings escape the same way in both (`\\b \\f \\n \\r \\t \\" \\\\`, other controls as
lowercase `\\u00xx`, nothing else escaped with `ensure_ascii=False`), which
tests/unit/test_canonical.py checks along with everything above.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Final

import rfc8785

_MAX_SAFE_INTEGER: Final = 2**53 - 1

# UTF-8 lead bytes F0..F4 start the astral characters; `\ud800`..`\udfff` escapes
# are surrogates (a pair spells an astral character, a lone one is an error).
_ASTRAL_LEAD_BYTES: Final = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
# The same two cases in a decoded str (a lone surrogate can only get in that way).
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


def canonical_from_json(raw: bytes) -> bytes:
    """RFC 8785 bytes of a JSON document: exactly `rfc8785.dumps(json.loads(raw))`,
    raising what that raises."""
    if not any(lead in raw for lead in _ASTRAL_LEAD_BYTES) and (
        b"\\u" not in raw or not _SURROGATE_ESCAPE.search(raw)
    ):
        try:
            return _ENCODER.encode(_DECODER.decode(raw.decode())).encode()
        except (_NotFast, ValueError):  # also: not UTF-8, a BOM, invalid JSON
            pass
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
