"""The ledger's pure hash math: the per-order chain and the RFC 9162 Merkle tree.

The per-order chain: `h_n = SHA-256(h_{n-1} || canonical bytes of event n)`, with 32
zero bytes before the first event, so anyone holding the exported bytes can recompute
every hash.

The Merkle tree is RFC 9162 (Certificate Transparency v2) section 2.1 over every ledger
entry, so an auditor can check that one entry is in the log (inclusion) and that a
later log extends an earlier one (consistency) without trusting the server. Nodes are
addressed as `(level, index)`: the perfect subtree over leaves
`[index * 2**level, (index + 1) * 2**level)`. Perfect subtrees never change once
complete, so the shell stores each one once and proofs read O(log n) of them.

Pure: imports only the standard library. No I/O framework, no clock, no environment;
reading stored nodes is the caller's `NodeSource`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

GENESIS_HASH: Final = bytes(32)

# RFC 9162 2.1.1: distinct prefixes for leaves and interior nodes, so that no leaf can
# be passed off as an interior node (second-preimage resistance).
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

# Hash states that have taken in nothing but the prefix, copied for each hash (never
# updated themselves): setting up a new OpenSSL digest costs about as much as hashing
# a whole 600-byte event, and the ledger hashes three times per entry.
_CHAIN_STATE: Final = hashlib.sha256()
_LEAF_STATE: Final = hashlib.sha256(LEAF_PREFIX)
_NODE_STATE: Final = hashlib.sha256(NODE_PREFIX)


def chain_hash(previous: bytes, canonical: bytes) -> bytes:
    """The next link of an order's chain: SHA-256(previous || canonical)."""
    state = _CHAIN_STATE.copy()
    state.update(previous)
    state.update(canonical)
    return state.digest()


NodeKey: TypeAlias = tuple[int, int]
"""`(level, index)`: the 2**level leaves starting at leaf index * 2**level."""
NodeSource: TypeAlias = Callable[[NodeKey], bytes]
"""Returns the stored hash of a perfect subtree; level 0 is the leaf hash."""
Node: TypeAlias = tuple[NodeKey, bytes]

# What `required_nodes` hands back for every key: any value of the right length will
# do, because the proof functions choose keys from sizes and indices alone.
_PLACEHOLDER_HASH: Final = bytes(32)


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    state = _LEAF_STATE.copy()
    state.update(data)
    return state.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    state = _NODE_STATE.copy()
    state.update(left + right)
    return state.digest()


def _split(size: int) -> int:
    """RFC 9162's k: the largest power of two strictly smaller than `size` (>= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def frontier_keys(size: int) -> list[NodeKey]:
    """The perfect subtrees that tile [0, size), largest (leftmost) first.

    One per set bit of `size`: this is all a tree of that size needs to keep in order
    to grow and to compute its root.
    """
    if size < 0:
        raise ValueError(f"tree size must not be negative, got {size}")
    keys: list[NodeKey] = []
    start = 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def root_from_frontier(hashes: Sequence[bytes]) -> bytes:
    """MTH of the whole tree from its frontier hashes (as `frontier_keys` orders them).

    RFC 9162 splits at the largest power of two below n, which is exactly the first
    frontier subtree; the rest recurses on the remaining subtrees, so the root is a
    fold from the right.
    """
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The tree after an append, and the perfect nodes the append completed."""

    frontier: list[Node]
    completed: list[Node]


def append_leaves(
    frontier: Sequence[Node], leaf_hashes: Sequence[bytes]
) -> AppendResult:
    """Grow a tree given only its frontier, in O(len(leaf_hashes) + log n) hashes.

    `completed` holds every perfect node of level >= 1 the new leaves finished, in the
    order they finish: by their last leaf, then bottom-up. The caller stores them so
    that proofs never recompute a subtree.

    Raises:
        ValueError: `frontier` is not the `frontier_keys` decomposition of a tree.
    """
    size = sum(1 << level for (level, _), _ in frontier)
    if [key for key, _ in frontier] != frontier_keys(size):
        raise ValueError("frontier is not the decomposition of a tree")
    # A binary carry: the stack holds one hash per set bit of the size, levels
    # decreasing, so leaf n merges once per trailing one bit of n (its left
    # siblings), each merge completing the node one level up at half the index.
    stack = [digest for _, digest in frontier]
    completed: list[Node] = []
    pop, push, done, node = stack.pop, stack.append, completed.append, node_hash
    for leaf_index, digest in enumerate(leaf_hashes, size):
        level, index = 0, leaf_index
        while index & 1:
            digest = node(pop(), digest)
            level, index = level + 1, index >> 1
            done(((level, index), digest))
        push(digest)
    grown = size + len(leaf_hashes)
    return AppendResult(
        frontier=list(zip(frontier_keys(grown), stack, strict=True)),
        completed=completed,
    )


def _is_perfect(start: int, end: int) -> bool:
    """Whether [start, end) is one stored node: a power-of-two size, aligned to it."""
    size = end - start
    return size > 0 and size & (size - 1) == 0 and start % size == 0


def subtree_hash(start: int, end: int, source: NodeSource) -> bytes:
    """MTH(D[start:end]) built from stored perfect nodes.

    Follows RFC 9162's split and stops at any range that is a stored node. The ranges
    proofs ask for start at a multiple of a power of two at least their size, so they
    cost one lookup per set bit of `end - start`; other ranges are correct but slower.
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid leaf range [{start}, {end})")
    if start == end:
        return EMPTY_ROOT
    if _is_perfect(start, end):
        level = (end - start).bit_length() - 1
        return source((level, start >> level))
    middle = start + _split(end - start)
    return node_hash(
        subtree_hash(start, middle, source), subtree_hash(middle, end, source)
    )


def inclusion_proof(index: int, size: int, source: NodeSource) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(index, D[size]): the siblings from the leaf up to the root.

    Raises:
        ValueError: `index` is not a leaf of a tree of `size` leaves.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            siblings.append(subtree_hash(middle, end, source))
            end = middle
        else:
            siblings.append(subtree_hash(start, middle, source))
            start = middle
    # Collected from the root down; PATH lists the deepest sibling first.
    return siblings[::-1]


def consistency_proof(old_size: int, new_size: int, source: NodeSource) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[new_size]) = SUBPROOF(m, D[n], true).

    Empty when `old_size` is 0 or equals `new_size`: those trees are consistent with
    nothing to prove.

    Raises:
        ValueError: unless 0 <= old_size <= new_size.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end = 0, new_size
    # SUBPROOF's boolean: the old tree is still a whole subtree the verifier knows.
    old_is_whole = True
    while old_size < end:
        middle = start + _split(end - start)
        if old_size <= middle:
            proof.append(subtree_hash(middle, end, source))
            end = middle
        else:
            proof.append(subtree_hash(start, middle, source))
            start, old_is_whole = middle, False
    if not old_is_whole:
        proof.append(subtree_hash(start, end, source))
    # Collected from the root down; SUBPROOF lists the deepest node first.
    return proof[::-1]


def required_nodes(compute: Callable[[NodeSource], object]) -> set[NodeKey]:
    """The node keys `compute` reads, so the shell can fetch them in one query.

    Runs `compute` once against a source that records each key and answers with a
    placeholder hash. This is sound because `subtree_hash`, `inclusion_proof` and
    `consistency_proof` choose which nodes to read from sizes and indices only, never
    from hash values; the real call with a dict of the fetched rows then reads exactly
    these keys.
    """
    keys: set[NodeKey] = set()

    def record(key: NodeKey) -> bytes:
        keys.add(key)
        return _PLACEHOLDER_HASH

    compute(record)
    return keys


def _skip_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """Shift past the levels where a node on the tree's right edge has no sibling.

    RFC 9162 does this only when LSB(fn) is clear; when it is set the loop below does
    nothing, so callers need no test of their own.
    """
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: whether `leaf` (a leaf *hash*) is entry `index` of `root`."""
    if not 0 <= index < size:
        return False
    fn, sn, digest = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False  # A longer proof than the tree is tall.
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            fn, sn = _skip_right_edge(fn, sn)
        else:
            digest = node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and digest == root


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """RFC 9162 2.1.4.2: whether the tree `new_root` extends the tree `old_root`.

    Also decides the cases RFC 9162 leaves out: equal sizes need an empty proof and
    equal roots, and the empty tree (whose root must be EMPTY_ROOT) precedes every tree
    with an empty proof.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0 and old_root != EMPTY_ROOT:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    # A power-of-two old tree is a node of the new one, so the proof omits it.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_digest = new_digest = path[0]
    for node in path[1:]:
        if sn == 0:
            return False  # A longer proof than the tree is tall.
        if fn & 1 or fn == sn:
            old_digest = node_hash(node, old_digest)
            new_digest = node_hash(node, new_digest)
            fn, sn = _skip_right_edge(fn, sn)
        else:
            new_digest = node_hash(new_digest, node)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and old_digest == old_root and new_digest == new_root


def grow_frontier(
    frontier: Sequence[bytes], size: int, leaf_hashes: Sequence[bytes]
) -> list[bytes]:
    """The frontier hashes of a tree of `size` leaves after `leaf_hashes` are added.

    `append_leaves`' carry done a level at a time, without node keys. At level l the
    first new node's index is `size >> l`; when that is odd, its left sibling is the
    frontier's node of level l (bit l of `size` is set). Pairs from there make the
    next level; an unpaired last node becomes the new frontier's node of level l.
    """
    remaining = list(frontier)  # levels decreasing: pop() gives the lowest
    unpaired: list[bytes] = []  # levels increasing
    level = list(leaf_hashes)
    first_index = size
    while level:
        if first_index & 1:
            level = [remaining.pop(), *level]
        paired = len(level) & ~1
        if paired < len(level):
            unpaired.append(level[-1])
        level = list(map(node_hash, level[0:paired:2], level[1:paired:2]))
        first_index >>= 1
    return remaining + unpaired[::-1]


class MerkleAccumulator:
    """Streams leaf hashes into a root in O(log n) memory, for verifiers and auditors.

    Keeps only the frontier's hashes (their levels are the set bits of the size), so
    an auditor can recompute a signed root from an export of any length without
    holding the export.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """How many leaves have been appended."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf (its hash, as `leaf_hash` computes it)."""
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add the next leaves, in order."""
        # The carry of `append_leaves`, without the node keys.
        hashes, size = self._hashes, self._size
        pop, push, node = hashes.pop, hashes.append, node_hash
        for leaf in leaf_hashes:
            carry, digest = size, leaf
            while carry & 1:
                digest = node(pop(), digest)
                carry >>= 1
            push(digest)
            size += 1
        self._size = size

    def extend_by_levels(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add the next leaves, in order: `extend`'s result, a level at a time.

        Pairs a whole level in one `map` over `node_hash`, so a batch pays no loop
        of its own per node: about a quarter less CPU than `extend` for thousands
        of leaves.
        """
        self._hashes = grow_frontier(self._hashes, self._size, leaf_hashes)
        self._size += len(leaf_hashes)

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        return root_from_frontier(self._hashes)


# RFC 3339 in UTC with the "Z" designator only, so one instant has one spelling and
# therefore one signed message.
_RFC3339_UTC: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z", re.ASCII
)
# JSON numbers beyond 2**53 are not exact in RFC 8785 (ECMAScript doubles).
_MAX_JSON_INTEGER: Final = 2**53


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed statement of the log's size and root at a moment (RFC 9162 2.1)."""

    tree_size: int
    root_hash: bytes
    timestamp: str
    key_id: str

    def __post_init__(self) -> None:
        # The checks make `tree_head_message` RFC 8785 output and unambiguous.
        if not 0 <= self.tree_size < _MAX_JSON_INTEGER:
            raise ValueError(f"tree size out of range: {self.tree_size}")
        if len(self.root_hash) != len(EMPTY_ROOT):
            raise ValueError("root hash must be a 32-byte SHA-256 digest")
        if not _is_rfc3339_utc(self.timestamp):
            raise ValueError(f"timestamp not RFC 3339 UTC with Z: {self.timestamp!r}")
        if not (self.key_id.isascii() and self.key_id.isprintable()):
            raise ValueError(f"key id must be printable ASCII: {self.key_id!r}")


def _is_rfc3339_utc(timestamp: str) -> bool:
    """Whether `timestamp` is a real RFC 3339 instant written in UTC with "Z"."""
    if not _RFC3339_UTC.fullmatch(timestamp):
        return False
    try:
        # The pattern admits month 13 or second 61; the calendar does not.
        datetime.fromisoformat(timestamp.removesuffix("Z"))
    except ValueError:
        return False
    return True


def tree_head_message(head: TreeHead) -> bytes:
    """The exact bytes a tree head's signature covers.

    `{"key_id":…,"root_hash":"<lowercase hex>","timestamp":…,"tree_size":N}` in UTF-8:
    sorted keys, no whitespace, ASCII only. For these types (printable ASCII strings,
    a safe integer) that is the RFC 8785 canonical form, so any JCS library reproduces
    it.
    """
    fields = {
        "key_id": head.key_id,
        "root_hash": head.root_hash.hex(),
        "timestamp": head.timestamp,
        "tree_size": head.tree_size,
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("utf-8")
