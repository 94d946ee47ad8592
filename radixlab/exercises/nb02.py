"""Exercises of notebook 02_radix_tree: match on a trie (warm-up), predict a tree, and the build
exercise: the radix tree itself (`check_radix_tree`), checked by `radixlab.conformance.tree`.

Also holds the notebook's toy word vocabulary, so that the checkers and the notebook agree on
token ids (one word = one token; ids are positions in `WORDS`).
"""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Build, Case, Exercise
from radixlab.exercises.solutions import SolutionRadixTree
from radixlab.exercises.tree_base import MatchResult, Node, RadixTreeBase
from radixlab.tree import RadixTree

__all__ = ["MatchResult", "Node", "RadixTreeBase", "WORDS", "check_predict_tree",
           "check_radix_tree", "check_trie_match", "decode", "encode"]

WORDS = ("<s>", "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "rug", "down", "away",
         "and", "slept", "big", "small")
WORD_ID = {w: i for i, w in enumerate(WORDS)}


def encode(text: str) -> list[int]:
    """Words to token ids; ValueError naming an unknown word."""
    ids = []
    for word in text.split():
        if word not in WORD_ID:
            raise ValueError(f"unknown word {word!r}; the toy vocabulary is {list(WORDS)}")
        ids.append(WORD_ID[word])
    return ids


def decode(ids: list[int]) -> str:
    """Token ids back to words."""
    return " ".join(WORDS[int(i)] for i in ids)


# ------------------------------------------------------------------ warm-up: match on a trie


def build_trie(sequences: list[list[int]]) -> dict:
    """A plain trie: each node is a dict {token: child node}; one node per token."""
    root: dict = {}
    for seq in sequences:
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
    return root


def reference_trie_match(trie: dict, tokens: list[int]) -> int:
    """How many leading tokens of `tokens` are a path from the root of `trie`."""
    node, n = trie, 0
    for tok in tokens:
        if tok not in node:
            break
        node = node[tok]
        n += 1
    return n


def _trie_cases() -> list[Case]:
    seqs = [encode("the cat sat on the mat"), encode("the cat ran away"), encode("a dog sat")]
    trie = build_trie(seqs)
    return [
        Case({}, encode("the cat"), note="empty trie"),
        Case(trie, [], note="empty query"),
        Case(trie, encode("the cat sat on the mat"), note="the whole sequence is cached"),
        Case(trie, encode("the cat slept"), note="stops at the first miss"),
        Case(trie, encode("big cat"), note="the first token already misses"),
        Case(trie, encode("the cat the cat sat"),
             note="after the miss the rest is a path from the root again: still 2"),
        Case(trie, encode("the cat a dog"),
             note="after the miss at 'a' a walk restarted at the root would find 'a dog'"),
        Case(trie, encode("a dog sat on the rug"), note="query longer than the cached path"),
    ]


trie_match = Exercise(
    name="trie_match",
    reference=reference_trie_match,
    cases=_trie_cases,
    hints=[
        "Start at the root dict and walk one token at a time.",
        "If the next token is not a key of the current node, the match ends there.",
        "Count the tokens you walked; never jump back to the root.",
    ],
)


def check_trie_match(fn: Any) -> Any:
    return trie_match.check(fn)


# ------------------------------------------------------------------ predict a tree

PREDICT_INSERTS = ("a dog ran away", "a dog sat", "a cat sat on the mat", "a dog sat down",
                   "the big dog")


def tree_as_dict(tree: Any, node: Any = None) -> dict:
    """A tree as nested dicts {edge text: subtree}, e.g. {'the': {'cat': {}, 'dog': {}}}."""
    node = tree.root if node is None else node
    return {decode(c.key.tolist()): tree_as_dict(tree, c) for c in node.children.values()}


def reference_predict_tree() -> dict:
    """What a RadixTree holds after inserting PREDICT_INSERTS in order."""
    tree = RadixTree()
    slot = 0
    for text in PREDICT_INSERTS:
        ids = encode(text)
        tree.insert(ids, list(range(slot, slot + len(ids))))
        slot += len(ids)
    return tree_as_dict(tree)


def first_difference(got: Any, expected: dict, path: str = "the root") -> str | None:
    """Where two {edge: subtree} dicts first differ, without giving the answer away."""
    if not isinstance(got, dict):
        return f"under {path} you wrote {type(got).__name__}, not a dict of edges"
    extra = sorted(set(got) - set(expected))
    if extra:
        return f"under {path}, your edge {extra[0]!r} is not in the tree"
    missing = sorted(set(expected) - set(got))
    if missing:
        return (f"under {path}, the tree has an edge starting with "
                f"{missing[0].split()[0]!r} that you do not have")
    for edge in sorted(expected):
        diff = first_difference(got[edge], expected[edge], repr(edge))
        if diff:
            return diff
    return None


predict_tree = Exercise(
    name="predict_tree",
    reference=reference_predict_tree,
    cases=[Case(note="inserts: " + " | ".join(PREDICT_INSERTS))],
    explain=lambda got, expected: first_difference(got, expected) or "",
    hints=[
        "After the first insert the tree is one edge holding all four words.",
        "An insert that diverges inside an edge splits it where the words stop agreeing; "
        "the shared words stay on the upper part.",
        "An insert that ends exactly where an edge ends adds nothing; one that continues past "
        "the end of a node hangs a new leaf below it, even if that node then has one child.",
    ],
)


def check_predict_tree(fn: Any) -> Any:
    return predict_tree.check(fn)


# ------------------------------------------------------------------ build: the radix tree


def _suite() -> Any:
    from radixlab.conformance.tree import radix_tree_suite

    return radix_tree_suite(page_sizes=(1, 2))


radix_tree = Build(
    name="radix tree",
    reference=RadixTree,
    suite=_suite,
    answer=SolutionRadixTree,
    words=decode,
    hints=[
        "match_prefix: cut the tokens to whole pages, tick the clock, then walk from the root: "
        "look the child up with self.child_key(rest, namespace), compare with "
        "self.common_prefix(child.key, rest), set child.last_access to now.",
        "A match that ends inside an edge splits it: a new upper node (self.new_node under the "
        "old parent, same first page, so it takes the child's place) gets key[:m], value[:m], "
        "the child's lock_ref, last_access and hit_count; the child keeps key[m:] and hangs "
        "under the upper node. Return MatchResult(concatenated slots, last node).",
        "insert walks the same way (splitting where the new tokens diverge), adds 1 to the "
        "hit_count of every node it walks through, hangs a new leaf (copies of the remaining "
        "whole pages) with hit_count 1, and returns how far it walked.",
        "inc_lock_ref / dec_lock_ref: +1 / -1 on every node of self.path_to_root(node); check "
        "the whole path before you change anything in dec_lock_ref.",
        "evict: until enough tokens are freed, take the unlocked leaf with the smallest "
        "(last_access, id), self.remove it and keep its slots; compute the leaves again each "
        "time, so a parent left without children becomes a candidate at once.",
    ],
)


def check_radix_tree(cls: Any) -> Any:
    """Run the radix tree suite on your class; returns it when correct, else `RadixTree`."""
    return radix_tree.check(cls)
