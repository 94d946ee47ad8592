"""Checkers of notebook 02 accept the reference and reject realistic mistakes."""

from __future__ import annotations

import pytest

from radixlab.exercises import nb02


def _stub(*args):
    raise NotImplementedError


def test_vocab_round_trip_and_unknown_word():
    assert nb02.decode(nb02.encode("the cat sat")) == "the cat sat"
    with pytest.raises(ValueError, match="'zebra'"):
        nb02.encode("the zebra")


def test_trie_match():
    ex = nb02.trie_match
    assert ex.evaluate(nb02.reference_trie_match).correct

    def counts_tokens_anywhere(trie, tokens):  # does not stop at the first miss
        node, n = trie, 0
        for t in tokens:
            if t in node:
                node, n = node[t], n + 1
        return n

    def restarts_at_root(trie, tokens):  # looks every token up in the root
        return sum(1 for t in tokens if t in trie)

    def off_by_one(trie, tokens):
        return max(0, nb02.reference_trie_match(trie, tokens) - 1)

    for wrong in (counts_tokens_anywhere, restarts_at_root, off_by_one):
        assert ex.evaluate(wrong).status == "incorrect", wrong.__name__
    assert ex.evaluate(_stub).status == "not attempted"


def test_trie_match_check_returns_reference_when_wrong(capsys):
    fn = nb02.check_trie_match(lambda trie, tokens: 0)
    assert fn is nb02.reference_trie_match
    assert "Incorrect" in capsys.readouterr().out


def test_split_edge():
    ex = nb02.split_edge
    assert ex.evaluate(nb02.reference_split_edge).correct

    def keeps_children_on_top(node, at):
        lower = {"key": node["key"][at:], "value": node["value"][at:], "children": {}}
        return {"key": node["key"][:at], "value": node["value"][:at],
                "children": {**node["children"], lower["key"][0]: lower}}

    def keyed_by_first_token(node, at):
        out = nb02.reference_split_edge(node, at)
        (lower,) = out["children"].values()
        out["children"] = {node["key"][0]: lower}
        return out

    def off_by_one(node, at):
        return nb02.reference_split_edge(node, at + 1) if at + 1 < len(node["key"]) else node

    for wrong in (keeps_children_on_top, keyed_by_first_token, off_by_one):
        assert ex.evaluate(wrong).status == "incorrect", wrong.__name__
    assert ex.evaluate(_stub).status == "not attempted"


def test_predict_tree():
    ex = nb02.predict_tree
    assert ex.evaluate(nb02.reference_predict_tree).correct
    expected = {"the": {"cat sat": {"on the": {"mat": {}, "rug": {}}, "down": {}},
                        "dog ran away": {}}}
    assert ex.evaluate(lambda: expected).correct

    def plain_trie():  # one word per edge: not compressed
        return {"the": {"cat": {"sat": {"on": {"the": {"mat": {}, "rug": {}}}, "down": {}}},
                        "dog": {"ran": {"away": {}}}}}

    def forgot_last_split():
        return {"the": {"cat sat": {"on the mat": {}, "down": {}, "on the rug": {}},
                        "dog ran away": {}}}

    def one_edge_per_insert():
        return {text: {} for text in nb02.PREDICT_INSERTS}

    for wrong in (plain_trie, forgot_last_split, one_edge_per_insert):
        assert ex.evaluate(wrong).status == "incorrect", wrong.__name__
    assert ex.evaluate(_stub).status == "not attempted"
