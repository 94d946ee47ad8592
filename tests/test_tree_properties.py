"""Property tests of RadixTree: the radix tree conformance suite, plus insert-only compression
and LRU order read from the tree's own clock.

The suite (`radixlab.conformance.tree`) replays random insert / match / lock / unlock / evict
sequences against a naive model (a dict from every cached (namespace, page prefix) to its slots):
after every operation the tree holds exactly the model's pages with the model's slots (so splits
kept the values), sizes are exact, locked prefixes survive eviction, every slot handed to
`insert` is accounted for exactly once, and edges split only where something ended or branched.
"""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.conformance import Trace
from radixlab.conformance.tree import NAMESPACE, TOKENS, lru_part, node_paths, operations_part
from radixlab.tree import RadixTree

# The radix tree's conformance suite (radixlab/conformance/tree.py): the same parts notebook 02
# runs on the learner's tree, here with the larger budget of the package's own tests.
OPERATIONS = operations_part(page_sizes=(1, 1, 2, 3))
LRU = lru_part(page_sizes=(1, 2, 3))


@pytest.mark.parametrize("eviction", ["lru", "lfu"])
@settings(max_examples=1000)
@given(example=OPERATIONS.examples)
def test_random_operation_sequences_match_the_model(example, eviction):
    OPERATIONS.replay(partial(RadixTree, eviction=eviction), example, Trace())


@settings(max_examples=300)
@given(example=LRU.examples)
def test_lru_evicts_the_least_recently_touched_leaves_and_cascades(example):
    LRU.replay(RadixTree, example, Trace())


@settings(max_examples=500)
@given(seqs=st.lists(st.tuples(TOKENS.filter(len), NAMESPACE), max_size=10),
       page_size=st.sampled_from([1, 2]))
def test_insert_only_trees_split_only_at_branches_and_key_ends(seqs, page_size):
    tree = RadixTree(page_size=page_size)
    ends = set()
    for i, (seq, ns) in enumerate(seqs):
        tree.insert(seq, list(range(100 * i, 100 * i + len(seq))), namespace=ns)
        ends.add((ns, tuple(seq[: len(seq) - len(seq) % page_size])))
    for path, n_children in node_paths(tree):
        assert n_children != 1 or path in ends, f"single-child node at {path} is no key end"


@settings(max_examples=300)
@given(seqs=st.lists(TOKENS.filter(len), min_size=1, max_size=8),
       order=st.permutations(range(8)))
def test_lru_evicts_least_recently_touched_leaf_first(seqs, order):
    """Touch the cached sequences in a random order; one-token evictions must follow it."""
    tree = RadixTree()
    for i, s in enumerate(seqs):
        tree.insert(s, list(range(100 * i, 100 * i + len(s))))
    for i in order:
        if i < len(seqs):
            tree.match_prefix(seqs[i])
    while tree.total_size():
        leaves = [n for n in tree.nodes()[1:] if not n.children]
        oldest = min(leaves, key=lambda n: (n.last_access, n.id))
        assert tree.evict(1).tolist() == oldest.value.tolist()
        tree.check_invariants()
