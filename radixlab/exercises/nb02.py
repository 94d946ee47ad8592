"""Exercises of notebook 02_radix_tree: match on a plain trie, split an edge, predict a tree.

Also holds the notebook's toy word vocabulary, so that the checkers and the notebook agree on
token ids (one word = one token; ids are positions in `WORDS`).
"""

from __future__ import annotations

from typing import Any

from radixlab.exercises.framework import Case, Exercise
from radixlab.tree import RadixTree

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


# ------------------------------------------------------------------ exercise 1: match on a trie


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
        Case(trie, encode("the cat big sat on"),
             note="after a miss the rest would fit again, but the path broke"),
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


# ------------------------------------------------------------------ exercise 2: split an edge


def make_node(key: list[int], value: list[int], children: dict | None = None) -> dict:
    """A compressed node as plain data: an edge `key`, its `value` (slots), and children keyed
    by the first token of their key."""
    return {"key": list(key), "value": list(value), "children": dict(children or {})}


def reference_split_edge(node: dict, at: int) -> dict:
    """Cut `node`'s edge after `at` tokens: return a new upper node holding key[:at] whose only
    child is the lower part (key[at:]), which keeps the old node's children."""
    lower = {"key": node["key"][at:], "value": node["value"][at:], "children": node["children"]}
    return {"key": node["key"][:at], "value": node["value"][:at],
            "children": {lower["key"][0]: lower}}


def _split_cases() -> list[Case]:
    leaf = make_node(encode("the cat sat"), [10, 11, 12])
    tail_a = make_node(encode("on the mat"), [13, 14, 15])
    tail_b = make_node(encode("down"), [20])
    inner = make_node(encode("cat sat"), [11, 12],
                      {WORD_ID["on"]: tail_a, WORD_ID["down"]: tail_b})
    return [
        Case(leaf, 1, note="split a leaf after its first token"),
        Case(leaf, 2, note="split a leaf before its last token"),
        Case(make_node(encode("the the the"), [5, 6, 7]), 1,
             note="repeated tokens: the child is keyed by key[at], not by key[0]"),
        Case(inner, 1, note="the old children move to the lower part"),
    ]


split_edge = Exercise(
    name="split_edge",
    reference=reference_split_edge,
    cases=_split_cases,
    hints=[
        "Two nodes come out: the upper one gets key[:at] and value[:at].",
        "The lower one gets key[at:], value[at:] and all of the old node's children.",
        "The upper node has exactly one child, stored under the FIRST token of the lower key.",
    ],
)


def check_split_edge(fn: Any) -> Any:
    return split_edge.check(fn)


# ------------------------------------------------------------------ exercise 3: predict a tree

PREDICT_INSERTS = ("the cat sat on the mat", "the cat sat down", "the dog ran away",
                   "the cat sat on the rug")


def tree_as_dict(tree: RadixTree, node: Any = None) -> dict:
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


predict_tree = Exercise(
    name="predict_tree",
    reference=reference_predict_tree,
    cases=[Case(note="inserts: " + " | ".join(PREDICT_INSERTS))],
    hints=[
        "After the first insert the tree is one edge holding all six words.",
        "An insert that diverges inside an edge splits it where the words stop agreeing; "
        "the shared words stay on the upper part.",
        "Edges hold as many words as possible: a node is only cut where two sequences branch.",
    ],
)


def check_predict_tree(fn: Any) -> Any:
    return predict_tree.check(fn)
