"""The ledger's Merkle tree against RFC 9162 section 2.1, written out a second time.

`ReferenceTree` and the `rfc_verify_*` functions below are transcribed from the RFC's
recursive definitions (MTH, PATH, PROOF/SUBPROOF) and its verification algorithms
(2.1.3.2, 2.1.4.2). They share no code with `services.ledger.domain`, so a property
that holds here checks the module against the RFC, not against itself.

Known answers come from two places: hashes worked out step by step with hashlib, and
the public RFC 6962/9162 test tree of transparency-dev/merkle (testonly/constants.go
and proof/verify_test.go), which certificate-transparency implementations share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import FrozenInstanceError
from datetime import datetime
from itertools import pairwise

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.domain import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    MerkleAccumulator,
    NodeKey,
    NodeSource,
    TreeHead,
    append_leaves,
    consistency_proof,
    frontier_keys,
    inclusion_proof,
    leaf_hash,
    node_hash,
    required_nodes,
    root_from_frontier,
    subtree_hash,
    tree_head_message,
    verify_consistency,
    verify_inclusion,
)

# --------------------------------------------------------------------------------------
# The reference, straight from RFC 9162 2.1: nothing here calls the module under test.


def rfc_leaf(entry: bytes) -> bytes:
    """HASH(0x00 || d)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class ReferenceTree:
    """MTH, PATH and PROOF over a list of entries, by the RFC's recursions.

    Ranges are `[start, end)` of the entry list, so `D[start:end]` reads as in the RFC.
    Leaf hashes and MTH are memoised because PATH and PROOF ask for the same ranges
    again and again; the memo does not change what is computed.
    """

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.leaves = [rfc_leaf(entry) for entry in entries]
        self._mth: dict[tuple[int, int], bytes] = {}

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end])."""
        n = end - start
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[start]
        if (start, end) not in self._mth:
            k = rfc_k(n)
            self._mth[start, end] = rfc_node(
                self.mth(start, start + k), self.mth(start + k, end)
            )
        return self._mth[start, end]

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]), with m counted from `start`."""
        n = end - start
        if n == 1:
            return []
        k = rfc_k(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
        return self.subproof(m, 0, n, True)

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b), with m counted from `start`."""
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = rfc_k(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [
            *self.subproof(m - k, start + k, end, False),
            self.mth(start, start + k),
        ]

    def perfect_nodes(self, size: int) -> dict[tuple[int, int], bytes]:
        """Every complete power-of-two subtree of D[0:size], keyed (level, index)."""
        nodes = {}
        level = 0
        while 2**level <= size:
            for index in range(size // 2**level):
                start = index * 2**level
                nodes[level, index] = self.mth(start, start + 2**level)
            level += 1
        return nodes


def rfc_verify_inclusion(
    leaf_index: int,
    tree_size: int,
    hash_: bytes,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> bool:
    """RFC 9162 2.1.3.2, step by step."""
    # 1. An index at or beyond the tree size fails.
    if leaf_index >= tree_size:
        return False
    # 2.-3.
    fn, sn = leaf_index, tree_size - 1
    r = hash_
    # 4.
    for p in inclusion_path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            r = rfc_node(r, p)
        fn //= 2
        sn //= 2
    # 5.
    return sn == 0 and r == root_hash


def rfc_verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """RFC 9162 2.1.4.2, step by step; the RFC defines it for 0 < first < second."""
    assert 0 < first < second
    # 1.
    if not consistency_path:
        return False
    path = list(consistency_path)
    # 2.
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = rfc_node(c, fr)
            sr = rfc_node(c, sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn //= 2
                    sn //= 2
        else:
            sr = rfc_node(sr, c)
        fn //= 2
        sn //= 2
    # 7.
    return fr == first_hash and sr == second_hash and sn == 0


# --------------------------------------------------------------------------------------
# Fixtures as data: one long log whose prefixes are the trees under test.

ENTRIES: tuple[bytes, ...] = (
    b"",
    *(f"ledger entry {i}".encode() for i in range(1, 5000)),
)
LOG = ReferenceTree(ENTRIES)

SMALL_SIZES = st.integers(1, 300)
LARGE_SIZES = st.integers(1000, len(ENTRIES))
# Mostly small trees (every shape near the root), now and then a large one.
SIZES = st.one_of(SMALL_SIZES, SMALL_SIZES, SMALL_SIZES, LARGE_SIZES)

# deadline=None: a loaded CI machine must not turn a slow example into a failure.
PROPERTIES = settings(max_examples=60, deadline=None)


def stored_nodes(size: int) -> NodeSource:
    """The node table of the log at `size` leaves; asking for any other node fails."""

    def source(key: NodeKey) -> bytes:
        level, index = key
        assert is_node_of(size, key), key
        return LOG.mth(index << level, (index + 1) << level)

    return source


def flip_bit(digest: bytes) -> bytes:
    """The same hash with one bit changed."""
    return bytes([digest[0] ^ 0x08]) + digest[1:]


def batches(size: int, cuts: Sequence[int]) -> list[range]:
    """[0, size) cut into consecutive batches at `cuts`."""
    bounds = sorted({0, size, *cuts})
    return [range(a, b) for a, b in pairwise(bounds)]


def is_node_of(size: int, key: NodeKey) -> bool:
    """Whether `key` names a complete subtree of a tree of `size` leaves."""
    level, index = key
    return level >= 0 and index >= 0 and (index + 1) << level <= size


def subtrees_above(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges [start, end) PATH descends through from the root to leaf `index`."""
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = rfc_k(end - start)
        start, end = (start, start + k) if index < start + k else (start + k, end)
        ranges.append((start, end))
    return ranges


def left_trees_holding(old_size: int, new_size: int) -> list[int]:
    """The sizes k of the left subtrees [0, k) of the new tree that hold the old one."""
    sizes = []
    n = new_size
    while n > old_size and rfc_k(n) >= old_size:
        n = rfc_k(n)
        sizes.append(n)
    return sizes


@st.composite
def leaf_positions(draw: st.DrawFn) -> tuple[int, int]:
    """(index, size) with the index a leaf of the tree."""
    size = draw(SIZES)
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """(old_size, new_size) with 0 < old_size <= new_size."""
    new_size = draw(SIZES)
    return draw(st.integers(1, new_size)), new_size


# --------------------------------------------------------------------------------------
# Known answers.

# transparency-dev/merkle testonly/constants.go: LeafInputs, RootHashes, NodeHashes.
CT_INPUTS = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")] + [
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
CT_NODES: dict[NodeKey, bytes] = {
    (level, index): bytes.fromhex(h)
    for level, row in enumerate(
        (
            (
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
            ),
            (
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            ),
            (
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ),
            ("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",),
        )
    )
    for index, h in enumerate(row)
}
# proof/verify_test.go, with its 1-based leaf numbers made 0-based indices.
CT_INCLUSION: list[tuple[int, int, list[NodeKey]]] = [
    (0, 8, [(0, 1), (1, 1), (2, 1)]),
    (5, 8, [(0, 4), (1, 3), (2, 0)]),
    (2, 3, [(1, 0)]),
    (1, 5, [(0, 0), (1, 1), (0, 4)]),
]
CT_CONSISTENCY: list[tuple[int, int, list[NodeKey]]] = [
    (1, 8, [(0, 1), (1, 1), (2, 1)]),
    (6, 8, [(1, 2), (1, 3), (2, 0)]),
    (2, 5, [(1, 1), (0, 4)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
]


class TestKnownAnswers:
    def test_one_two_and_three_leaves_hash_as_worked_out_by_hand(self) -> None:
        d0, d1, d2 = b"", b"\x00", b"\x10"
        # Leaves: SHA-256 of 0x00 followed by the entry.
        l0 = hashlib.sha256(b"\x00").digest()
        l1 = hashlib.sha256(b"\x00\x00").digest()
        l2 = hashlib.sha256(b"\x00\x10").digest()
        # Size 1: the lone leaf. Size 2: 0x01 || l0 || l1. Size 3 splits at k = 2:
        # 0x01 || MTH(d0, d1) || l2.
        root1 = l0
        root2 = hashlib.sha256(b"\x01" + l0 + l1).digest()
        root3 = hashlib.sha256(b"\x01" + root2 + l2).digest()
        assert [leaf_hash(d) for d in (d0, d1, d2)] == [l0, l1, l2]
        assert node_hash(l0, l1) == root2
        assert [root1, root2, root3] == CT_ROOTS[:3]
        assert root_from_frontier([l0]) == root1
        assert root_from_frontier([root2]) == root2
        assert root_from_frontier([root2, l2]) == root3
        # The only sibling of leaf 2 in a tree of three is the left pair.
        nodes = {(0, 0): l0, (0, 1): l1, (0, 2): l2, (1, 0): root2}
        assert inclusion_proof(2, 3, nodes.__getitem__) == [root2]
        assert inclusion_proof(0, 3, nodes.__getitem__) == [l1, l2]
        # From one leaf to three: l1 rebuilds the pair, l2 the new root.
        assert consistency_proof(1, 3, nodes.__getitem__) == [l1, l2]
        assert consistency_proof(2, 3, nodes.__getitem__) == [l2]
        assert verify_inclusion(l2, 2, 3, [root2], root3)
        assert verify_consistency(1, 3, root1, root3, [l1, l2])

    def test_prefixes_and_empty_root_are_the_rfc_constants(self) -> None:
        assert (LEAF_PREFIX, NODE_PREFIX) == (b"\x00", b"\x01")
        assert EMPTY_ROOT.hex() == (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        assert root_from_frontier([]) == EMPTY_ROOT

    def test_the_ct_test_tree_completes_its_published_nodes_and_roots(self) -> None:
        frontier: list[tuple[NodeKey, bytes]] = []
        completed: list[tuple[NodeKey, bytes]] = []
        for size, entry in enumerate(CT_INPUTS, start=1):
            grown = append_leaves(frontier, [leaf_hash(entry)])
            frontier, completed = grown.frontier, completed + grown.completed
            # CompactTrees() in constants.go is exactly our frontier.
            assert frontier == [(key, CT_NODES[key]) for key in frontier_keys(size)]
            assert root_from_frontier([h for _, h in frontier]) == CT_ROOTS[size - 1]
        assert dict(completed) == {k: h for k, h in CT_NODES.items() if k[0] >= 1}

    @pytest.mark.parametrize(("index", "size", "keys"), CT_INCLUSION)
    def test_ct_inclusion_proofs_are_reproduced_and_verify(
        self, index: int, size: int, keys: list[NodeKey]
    ) -> None:
        expected = [CT_NODES[key] for key in keys]
        assert inclusion_proof(index, size, CT_NODES.__getitem__) == expected
        leaf = leaf_hash(CT_INPUTS[index])
        assert verify_inclusion(leaf, index, size, expected, CT_ROOTS[size - 1])

    @pytest.mark.parametrize(("old_size", "new_size", "keys"), CT_CONSISTENCY)
    def test_ct_consistency_proofs_are_reproduced_and_verify(
        self, old_size: int, new_size: int, keys: list[NodeKey]
    ) -> None:
        expected = [CT_NODES[key] for key in keys]
        assert consistency_proof(old_size, new_size, CT_NODES.__getitem__) == expected
        old_root, new_root = CT_ROOTS[old_size - 1], CT_ROOTS[new_size - 1]
        assert verify_consistency(old_size, new_size, old_root, new_root, expected)


# --------------------------------------------------------------------------------------
# The frontier.


class TestFrontier:
    @given(size=st.integers(0, 1 << 40))
    def test_frontier_tiles_the_tree_with_one_aligned_subtree_per_set_bit(
        self, size: int
    ) -> None:
        keys = frontier_keys(size)
        assert len(keys) == bin(size).count("1")
        levels = [level for level, _ in keys]
        assert levels == sorted(set(levels), reverse=True)
        start = 0
        for level, index in keys:
            assert index << level == start
            start += 1 << level
        assert start == size

    @PROPERTIES
    @given(entries=st.lists(st.binary(max_size=6), max_size=300))
    def test_frontier_root_is_the_rfc_tree_hash(self, entries: list[bytes]) -> None:
        tree = ReferenceTree(entries)
        hashes = [
            tree.mth(index << level, (index + 1) << level)
            for level, index in frontier_keys(len(entries))
        ]
        assert root_from_frontier(hashes) == tree.mth(0, len(entries))

    @PROPERTIES
    @given(size=LARGE_SIZES)
    def test_frontier_root_is_the_rfc_tree_hash_for_large_trees(
        self, size: int
    ) -> None:
        source = stored_nodes(size)
        hashes = [source(key) for key in frontier_keys(size)]
        assert root_from_frontier(hashes) == LOG.mth(0, size)

    def test_a_negative_size_has_no_frontier(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            frontier_keys(-1)


class TestAppendLeaves:
    @PROPERTIES
    @given(size=SIZES, data=st.data())
    def test_batches_complete_every_perfect_node_once_in_order(
        self, size: int, data: st.DataObject
    ) -> None:
        cuts = data.draw(st.lists(st.integers(0, size), max_size=10), label="cuts")
        frontier: list[tuple[NodeKey, bytes]] = []
        completed: list[tuple[NodeKey, bytes]] = []
        for batch in batches(size, cuts):
            grown = append_leaves(frontier, [LOG.leaves[i] for i in batch])
            frontier, completed = grown.frontier, completed + grown.completed
            assert [key for key, _ in frontier] == frontier_keys(batch.stop)
            root = root_from_frontier([h for _, h in frontier])
            assert root == LOG.mth(0, batch.stop)
        expected = {k: h for k, h in LOG.perfect_nodes(size).items() if k[0] >= 1}
        assert dict(completed) == expected
        assert len(completed) == len(expected)
        # By last leaf, then bottom-up: the order a batch insert can rely on.
        ends = [((i + 1) << level, level) for (level, i), _ in completed]
        assert ends == sorted(ends)

    def test_appending_nothing_keeps_the_frontier(self) -> None:
        frontier = [((1, 0), CT_NODES[1, 0]), ((0, 2), CT_NODES[0, 2])]
        grown = append_leaves(frontier, [])
        assert (grown.frontier, grown.completed) == (frontier, [])

    @pytest.mark.parametrize(
        "keys",
        [[(0, 0), (0, 1)], [(0, 1)], [(0, 0), (1, 0)], [(1, 1)]],
        ids=["two-leaves", "gap", "small-first", "misplaced"],
    )
    def test_a_frontier_that_is_not_a_tree_is_refused(
        self, keys: list[NodeKey]
    ) -> None:
        with pytest.raises(ValueError, match="frontier"):
            append_leaves([(key, bytes(32)) for key in keys], [bytes(32)])


class TestSubtreeHash:
    @PROPERTIES
    @given(data=st.data())
    def test_any_range_hashes_as_the_rfc_defines_it(self, data: st.DataObject) -> None:
        size = data.draw(SIZES, label="size")
        start = data.draw(st.integers(0, size), label="start")
        end = data.draw(st.integers(start, size), label="end")
        assert subtree_hash(start, end, stored_nodes(size)) == LOG.mth(start, end)

    def test_a_backwards_range_is_refused(self) -> None:
        with pytest.raises(ValueError, match="range"):
            subtree_hash(3, 2, stored_nodes(3))


# --------------------------------------------------------------------------------------
# Inclusion.


def assert_inclusion_proof_is_rfc_path(index: int, size: int) -> None:
    proof = inclusion_proof(index, size, stored_nodes(size))
    assert proof == LOG.path(index, 0, size)
    leaf, root = LOG.leaves[index], LOG.mth(0, size)
    assert rfc_verify_inclusion(index, size, leaf, proof, root)
    assert verify_inclusion(leaf, index, size, proof, root)


def inclusion_forgeries(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> list[tuple[bytes, int, list[bytes], bytes]]:
    """Ways of changing the leaf, the index, the root or the proof of a valid check."""
    # Neighbours, sibling-ish indices and both ends, not all `size` of them: the
    # large trees would make the property slow for no more coverage.
    other_indices = {-1, 0, index - 1, index + 1, index ^ 1, index ^ 2, size - 1, size}
    forgeries = [
        (flip_bit(leaf), index, proof, root),
        (leaf, index, proof, flip_bit(root)),
        (leaf, index, [*proof, root], root),
        (leaf, index, [root, *proof], root),
        (leaf, index, proof[:-1], root),
        *((leaf, other, proof, root) for other in other_indices - {index}),
        *(
            (leaf, index, [*proof[:i], flip_bit(p), *proof[i + 1 :]], root)
            for i, p in enumerate(proof)
        ),
    ]
    return [forged for forged in forgeries if forged != (leaf, index, proof, root)]


class TestInclusionProof:
    def test_every_leaf_of_every_small_tree_gets_the_rfc_path(self) -> None:
        for size in range(1, 65):
            for index in range(size):
                assert_inclusion_proof_is_rfc_path(index, size)

    @PROPERTIES
    @given(position=leaf_positions())
    def test_proof_is_the_rfc_path_and_verifies(
        self, position: tuple[int, int]
    ) -> None:
        assert_inclusion_proof_is_rfc_path(*position)

    @PROPERTIES
    @given(position=leaf_positions())
    def test_changing_leaf_index_root_or_any_proof_element_fails_verification(
        self, position: tuple[int, int]
    ) -> None:
        index, size = position
        proof = LOG.path(index, 0, size)
        leaf, root = LOG.leaves[index], LOG.mth(0, size)
        for forged in inclusion_forgeries(leaf, index, size, proof, root):
            forged_leaf, forged_index, forged_proof, forged_root = forged
            assert not verify_inclusion(
                forged_leaf, forged_index, size, forged_proof, forged_root
            )
            # The RFC's indices are unsigned; -1 has no meaning to its algorithm.
            if forged_index >= 0:
                assert not rfc_verify_inclusion(
                    forged_index, size, forged_leaf, forged_proof, forged_root
                )

    @PROPERTIES
    @given(position=leaf_positions())
    def test_a_subtree_passed_off_as_the_whole_tree_fails_verification(
        self, position: tuple[int, int]
    ) -> None:
        index, size = position
        leaf = LOG.leaves[index]
        for start, end in subtrees_above(index, size):
            # A correct proof up to a correct node: only the tree's height is wrong.
            proof, subtree_root = (
                LOG.path(index - start, start, end),
                LOG.mth(start, end),
            )
            assert not verify_inclusion(leaf, index, size, proof, subtree_root)
            assert not rfc_verify_inclusion(index, size, leaf, proof, subtree_root)

    @pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (-1, 1), (5, 3)])
    def test_an_index_outside_the_tree_is_refused(self, index: int, size: int) -> None:
        assert not verify_inclusion(EMPTY_ROOT, index, size, [], EMPTY_ROOT)
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_proof(index, size, stored_nodes(size))

    def test_a_lone_leaf_is_its_own_root_with_an_empty_proof(self) -> None:
        leaf = leaf_hash(b"only")
        assert verify_inclusion(leaf, 0, 1, [], leaf)
        assert not verify_inclusion(leaf, 0, 1, [leaf], node_hash(leaf, leaf))


# --------------------------------------------------------------------------------------
# Consistency.


def assert_consistency_proof_is_rfc_proof(old_size: int, new_size: int) -> None:
    proof = consistency_proof(old_size, new_size, stored_nodes(new_size))
    assert proof == LOG.proof(old_size, new_size)
    old_root, new_root = LOG.mth(0, old_size), LOG.mth(0, new_size)
    assert verify_consistency(old_size, new_size, old_root, new_root, proof)
    if old_size < new_size:
        assert rfc_verify_consistency(old_size, new_size, old_root, new_root, proof)
    else:
        assert proof == []


def consistency_forgeries(
    old_root: bytes, new_root: bytes, proof: list[bytes]
) -> list[tuple[bytes, bytes, list[bytes]]]:
    """Every way of changing a root or the proof of a valid consistency check."""
    forgeries = [
        (flip_bit(old_root), new_root, proof),
        (old_root, flip_bit(new_root), proof),
        (new_root, old_root, proof),
        (old_root, new_root, [*proof, new_root]),
        (old_root, new_root, [old_root, *proof]),
        (old_root, new_root, proof[:-1]),
        (old_root, new_root, []),
        *(
            (old_root, new_root, [*proof[:i], flip_bit(p), *proof[i + 1 :]])
            for i, p in enumerate(proof)
        ),
    ]
    return [forged for forged in forgeries if forged != (old_root, new_root, proof)]


class TestConsistencyProof:
    def test_every_pair_of_small_sizes_gets_the_rfc_proof(self) -> None:
        for new_size in range(1, 65):
            for old_size in range(1, new_size + 1):
                assert_consistency_proof_is_rfc_proof(old_size, new_size)

    @PROPERTIES
    @given(sizes=size_pairs())
    def test_proof_is_the_rfc_proof_and_verifies(self, sizes: tuple[int, int]) -> None:
        assert_consistency_proof_is_rfc_proof(*sizes)

    @PROPERTIES
    @given(sizes=size_pairs())
    def test_changing_a_root_or_any_proof_element_fails_verification(
        self, sizes: tuple[int, int]
    ) -> None:
        old_size, new_size = sizes
        if old_size == new_size:
            old_size -= 1  # Equal sizes have no proof to tamper with.
        if old_size == 0:
            return
        proof = LOG.proof(old_size, new_size)
        old_root, new_root = LOG.mth(0, old_size), LOG.mth(0, new_size)
        for forged_old, forged_new, forged_proof in consistency_forgeries(
            old_root, new_root, proof
        ):
            args = (old_size, new_size, forged_old, forged_new, forged_proof)
            assert not verify_consistency(*args)
            assert not rfc_verify_consistency(*args)

    @PROPERTIES
    @given(sizes=size_pairs())
    def test_a_left_subtree_passed_off_as_the_new_tree_fails_verification(
        self, sizes: tuple[int, int]
    ) -> None:
        old_size, new_size = sizes
        old_root = LOG.mth(0, old_size)
        for size in left_trees_holding(old_size, new_size):
            # A correct proof to a correct node: only the new tree's height is wrong.
            proof, subtree_root = LOG.proof(old_size, size), LOG.mth(0, size)
            args = (old_size, new_size, old_root, subtree_root, proof)
            assert not verify_consistency(*args)
            assert not rfc_verify_consistency(*args)

    def test_the_empty_tree_precedes_every_tree_without_proof(self) -> None:
        assert consistency_proof(0, 5, stored_nodes(5)) == []
        assert verify_consistency(0, 5, EMPTY_ROOT, LOG.mth(0, 5), [])
        assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
        assert not verify_consistency(0, 5, LOG.mth(0, 5), LOG.mth(0, 5), [])
        assert not verify_consistency(0, 5, EMPTY_ROOT, LOG.mth(0, 5), [EMPTY_ROOT])
        assert not verify_consistency(0, 0, EMPTY_ROOT, LOG.mth(0, 1), [])

    @pytest.mark.parametrize(
        ("old_size", "new_size", "proof", "why"),
        [
            (3, 3, [], "same size, different roots"),
            (3, 3, [b"x" * 32], "same size, a proof"),
            (4, 3, [], "time travel"),
            (-1, 3, [], "negative size"),
            (2, 3, [], "empty proof"),
        ],
    )
    def test_impossible_consistency_claims_are_refused(
        self, old_size: int, new_size: int, proof: list[bytes], why: str
    ) -> None:
        assert not verify_consistency(
            old_size, new_size, CT_ROOTS[1], CT_ROOTS[2], proof
        )

    def test_equal_trees_are_consistent_with_an_empty_proof(self) -> None:
        assert verify_consistency(3, 3, CT_ROOTS[2], CT_ROOTS[2], [])

    @pytest.mark.parametrize(("old_size", "new_size"), [(-1, 2), (3, 2)])
    def test_no_proof_exists_for_a_shrinking_tree(
        self, old_size: int, new_size: int
    ) -> None:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_proof(old_size, new_size, stored_nodes(3))


# --------------------------------------------------------------------------------------
# Fetching nodes in one query.


def assert_required_nodes_suffice(
    size: int, compute: Callable[[NodeSource], list[bytes]], expected: list[bytes]
) -> None:
    keys = required_nodes(compute)
    assert all(is_node_of(size, key) for key in keys)
    # One lookup per level on the way down and per set bit of the size: O(log n).
    assert len(keys) <= 2 * size.bit_length()
    fetched = {key: stored_nodes(size)(key) for key in keys}
    assert compute(fetched.__getitem__) == expected


class TestRequiredNodes:
    @PROPERTIES
    @given(position=leaf_positions())
    def test_the_recorded_nodes_are_enough_for_an_inclusion_proof(
        self, position: tuple[int, int]
    ) -> None:
        index, size = position

        def compute(source: NodeSource) -> list[bytes]:
            return inclusion_proof(index, size, source)

        assert_required_nodes_suffice(size, compute, LOG.path(index, 0, size))

    @PROPERTIES
    @given(sizes=size_pairs())
    def test_the_recorded_nodes_are_enough_for_a_consistency_proof(
        self, sizes: tuple[int, int]
    ) -> None:
        old_size, new_size = sizes

        def compute(source: NodeSource) -> list[bytes]:
            return consistency_proof(old_size, new_size, source)

        assert_required_nodes_suffice(new_size, compute, LOG.proof(old_size, new_size))

    def test_nothing_is_read_for_an_empty_proof(self) -> None:
        assert required_nodes(lambda source: consistency_proof(4, 4, source)) == set()


# --------------------------------------------------------------------------------------
# Streaming roots.


class TestMerkleAccumulator:
    @PROPERTIES
    @given(entries=st.lists(st.binary(max_size=6), max_size=300))
    def test_root_is_the_rfc_tree_hash_after_every_append(
        self, entries: list[bytes]
    ) -> None:
        tree = ReferenceTree(entries)
        accumulator = MerkleAccumulator()
        assert (accumulator.size, accumulator.root()) == (0, EMPTY_ROOT)
        for size, entry in enumerate(entries, start=1):
            accumulator.append(rfc_leaf(entry))
            assert (accumulator.size, accumulator.root()) == (size, tree.mth(0, size))

    def test_root_matches_the_long_log_at_sampled_sizes(self) -> None:
        accumulator = MerkleAccumulator()
        for size, entry in enumerate(ENTRIES, start=1):
            accumulator.append(rfc_leaf(entry))
            if size % 97 == 0 or size & (size - 1) == 0 or size == len(ENTRIES):
                assert accumulator.root() == LOG.mth(0, size)

    @PROPERTIES
    @given(
        entries=st.lists(st.binary(max_size=6), max_size=300),
        cuts=st.lists(st.integers(0, 300), max_size=6),
    )
    def test_growing_by_levels_gives_the_rfc_tree_hash_after_every_batch(
        self, entries: list[bytes], cuts: list[int]
    ) -> None:
        tree = ReferenceTree(entries)
        accumulator = MerkleAccumulator()
        for batch in batches(len(entries), [c for c in cuts if c <= len(entries)]):
            accumulator.extend_by_levels([rfc_leaf(entries[i]) for i in batch])
            assert (accumulator.size, accumulator.root()) == (
                batch.stop,
                tree.mth(0, batch.stop),
            )

    def test_one_batch_by_levels_matches_the_long_log(self) -> None:
        accumulator = MerkleAccumulator()
        accumulator.extend_by_levels([rfc_leaf(entry) for entry in ENTRIES])
        assert accumulator.root() == LOG.mth(0, len(ENTRIES))


# --------------------------------------------------------------------------------------
# Signed tree heads.

ROOT = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")

printable_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))


class TestTreeHeadMessage:
    def test_message_is_sorted_compact_json_with_a_hex_root(self) -> None:
        head = TreeHead(
            tree_size=8,
            root_hash=ROOT,
            timestamp="2026-11-22T10:00:00.123456Z",
            key_id='ledger-"2026"',
        )
        assert tree_head_message(head) == (
            b'{"key_id":"ledger-\\"2026\\"",'
            b'"root_hash":"' + ROOT.hex().encode() + b'",'
            b'"timestamp":"2026-11-22T10:00:00.123456Z","tree_size":8}'
        )

    @PROPERTIES
    @given(
        tree_size=st.integers(0, 2**53 - 1),
        root_hash=st.binary(min_size=32, max_size=32),
        moment=st.datetimes(),
        key_id=printable_ascii,
    )
    def test_message_is_the_rfc_8785_canonical_form(
        self, tree_size: int, root_hash: bytes, moment: datetime, key_id: str
    ) -> None:
        timestamp = moment.isoformat(timespec="microseconds") + "Z"
        head = TreeHead(tree_size, root_hash, timestamp, key_id)
        fields: dict[str, str | int] = {
            "tree_size": tree_size,
            "timestamp": timestamp,
            "root_hash": root_hash.hex(),
            "key_id": key_id,
        }
        assert tree_head_message(head) == rfc8785.dumps(fields)

    @pytest.mark.parametrize(
        ("tree_size", "root_hash", "timestamp", "key_id"),
        [
            (-1, ROOT, "2026-11-22T10:00:00Z", "k"),
            (2**53, ROOT, "2026-11-22T10:00:00Z", "k"),
            (1, ROOT[:31], "2026-11-22T10:00:00Z", "k"),
            (1, ROOT, "2026-11-22T10:00:00+00:00", "k"),
            (1, ROOT, "2026-11-22 10:00:00Z", "k"),
            (1, ROOT, "2026-13-22T10:00:00Z", "k"),
            (1, ROOT, "2026-11-22T10:00:00Z", "clé"),
            (1, ROOT, "2026-11-22T10:00:00Z", "k\n"),
        ],
        ids=[
            "negative-size",
            "unsafe-integer",
            "short-root",
            "offset-not-z",
            "no-t",
            "month-13",
            "non-ascii-key",
            "control-character",
        ],
    )
    def test_heads_that_would_not_sign_one_canonical_message_are_refused(
        self, tree_size: int, root_hash: bytes, timestamp: str, key_id: str
    ) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            TreeHead(tree_size, root_hash, timestamp, key_id)

    def test_a_head_cannot_be_changed_after_it_is_made(self) -> None:
        head = TreeHead(1, ROOT, "2026-11-22T10:00:00Z", "k")
        with pytest.raises(FrozenInstanceError):
            head.tree_size = 2  # type: ignore[misc]  # the point: frozen is enforced
