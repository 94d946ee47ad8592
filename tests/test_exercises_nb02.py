"""Notebook 02: the trie warm-up and the predict exercise reject realistic mistakes; the radix
tree build exercise accepts the package's RadixTree and the model answer, and rejects realistic
mutants with a short, readable smallest failing case."""

from __future__ import annotations

import numpy as np
import pytest

from radixlab.exercises import nb02
from radixlab.exercises.solutions import SolutionRadixTree
from radixlab.tree import RadixTree


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

    def restarts_at_root(trie, tokens):  # after a miss, carries on from the root
        node, n = trie, 0
        for t in tokens:
            if t not in node:
                node = trie
            if t in node:
                node, n = node[t], n + 1
        return n

    def looks_up_in_root(trie, tokens):
        return sum(1 for t in tokens if t in trie)

    def off_by_one(trie, tokens):
        return max(0, nb02.reference_trie_match(trie, tokens) - 1)

    for wrong in (counts_tokens_anywhere, restarts_at_root, looks_up_in_root, off_by_one):
        assert ex.evaluate(wrong).status == "incorrect", wrong.__name__
    assert ex.evaluate(_stub).status == "not attempted"


def test_predict_tree_uses_new_inserts_and_never_prints_the_answer(capsys):
    ex = nb02.predict_tree
    expected = nb02.reference_predict_tree()
    assert expected == {"a": {"dog": {"ran away": {}, "sat": {"down": {}}},
                              "cat sat on the mat": {}}, "the big dog": {}}
    assert ex.evaluate(lambda: expected).correct

    def plain_trie():  # one word per edge: not compressed
        return {"a": {"dog": {"ran": {"away": {}}, "sat": {"down": {}}},
                      "cat": {"sat": {"on": {"the": {"mat": {}}}}}}, "the": {"big": {"dog": {}}}}

    def merged_key_end():  # forgets that "a dog sat" ended a key
        return {"a": {"dog": {"ran away": {}, "sat down": {}}, "cat sat on the mat": {}},
                "the big dog": {}}

    def one_edge_per_insert():
        return {text: {} for text in nb02.PREDICT_INSERTS}

    for wrong in (plain_trie, merged_key_end, one_edge_per_insert):
        assert ex.evaluate(wrong).status == "incorrect", wrong.__name__
    nb02.check_predict_tree(merged_key_end)
    out = capsys.readouterr().out
    assert "'sat down'" in out and "'ran away'" not in out and "'cat sat on the mat'" not in out
    assert ex.evaluate(_stub).status == "not attempted"


# ---------------------------------------------------------------- the radix tree build


class ForgetsTheSplit(SolutionRadixTree):
    """A match that ends inside an edge returns the whole edge's node."""

    def match_prefix(self, tokens, namespace=None):
        key = self.whole_pages(self.tokens(tokens))
        now = self.tick()
        node, pos, values = self.root, 0, []
        while pos < len(key):
            child = node.children.get(self.child_key(key[pos:], namespace))
            if child is None:
                break
            child.last_access = now
            m = self.common_prefix(child.key, key[pos:])
            values.append(child.value[:m])
            node, pos = child, pos + m
            if m < len(child.key):
                break
        slots = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
        return nb02.MatchResult(slots, node)


class ReturnsNewTokens(SolutionRadixTree):
    """insert returns the tokens it stored instead of those already cached."""

    def insert(self, tokens, slots, namespace=None):
        cached = super().insert(tokens, slots, namespace)
        return len(self.whole_pages(self.tokens(tokens))) - cached


class LocksOnlyTheNode(SolutionRadixTree):
    def inc_lock_ref(self, node):
        node.lock_ref += 1

    def dec_lock_ref(self, node):
        node.lock_ref -= 1


class EvictsLockedLeaves(SolutionRadixTree):
    def evict(self, num_tokens):
        freed, count = [], 0
        while count < num_tokens and self.leaves():
            victim = min(self.leaves(), key=lambda n: (n.last_access, n.id))
            self.remove(victim)
            freed.append(victim.value)
            count += len(victim)
        return np.concatenate(freed) if freed else np.zeros(0, dtype=np.int64)


class NoParentCascade(SolutionRadixTree):
    """The candidates are the leaves before the call: a parent left bare is not considered."""

    def evict(self, num_tokens):
        freed, count = [], 0
        for victim in sorted((n for n in self.leaves() if n.lock_ref == 0),
                             key=lambda n: (n.last_access, n.id)):
            if count >= num_tokens:
                break
            self.remove(victim)
            freed.append(victim.value)
            count += len(victim)
        return np.concatenate(freed) if freed else np.zeros(0, dtype=np.int64)


class MatchKeepsOldTimes(SolutionRadixTree):
    """Forgets to refresh last_access on match: LRU becomes 'least recently inserted'."""

    def match_prefix(self, tokens, namespace=None):
        key = self.whole_pages(self.tokens(tokens))
        node, _, values = self.walk(key, namespace, now=-1, count_hits=False)
        for n in self.path_to_root(node):
            n.last_access = max(n.last_access, n.created)
        self.tick()
        slots = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
        return nb02.MatchResult(slots, node)


class SplitDropsTheLock(SolutionRadixTree):
    def split(self, child, at):
        upper = super().split(child, at)
        upper.lock_ref = 0
        return upper


MUTANTS = {
    ForgetsTheSplit: "tokens on the path from the root to the returned node",
    ReturnsNewTokens: "insert should return how many leading tokens were already cached",
    LocksOnlyTheNode: "lock",
    EvictsLockedLeaves: "of a locked prefix",
    NoParentCascade: "a parent left without children becomes a leaf",
    MatchKeepsOldTimes: "least recently used",
    SplitDropsTheLock: "lock",
}


@pytest.mark.parametrize("tree", [RadixTree, SolutionRadixTree], ids=["RadixTree", "solution"])
def test_the_reference_and_the_model_answer_pass(tree):
    assert nb02.radix_tree.evaluate(tree).correct


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=lambda m: m.__name__)
def test_mutants_are_rejected_with_a_short_readable_case(mutant):
    verdict = nb02.radix_tree.evaluate(mutant)
    assert verdict.status == "incorrect"
    assert 1 <= len(verdict.steps) <= 6, verdict.report()
    assert MUTANTS[mutant] in verdict.problem, verdict.report()
    report = verdict.report()
    assert "Smallest failing case" in report and '"' in report  # tokens shown as words


def test_check_returns_the_piece_or_the_reference(capsys):
    assert nb02.check_radix_tree(SolutionRadixTree) is SolutionRadixTree
    assert "Correct" in capsys.readouterr().out
    assert nb02.check_radix_tree(nb02.RadixTreeBase) is RadixTree
    out = capsys.readouterr().out
    assert "Not attempted yet" in out and "`insert` still raises" in out
    assert nb02.check_radix_tree(LocksOnlyTheNode) is RadixTree
    assert "Incorrect" in capsys.readouterr().out


def test_a_partly_written_tree_names_the_missing_method():
    class OnlyInsert(nb02.RadixTreeBase):
        insert = SolutionRadixTree.insert
        walk = SolutionRadixTree.walk
        split = SolutionRadixTree.split

    verdict = nb02.radix_tree.evaluate(OnlyInsert)
    assert verdict.status == "not attempted" and "`match_prefix`" in verdict.problem


def test_the_learners_tree_exports_what_the_pictures_need():
    t = SolutionRadixTree()
    t.insert(nb02.encode("the cat sat"), [0, 1, 2])
    t.insert(nb02.encode("the cat ran"), [3, 4, 5])
    state = t.export()
    assert state["last_op"]["op"] == "insert" and len(state["last_op"]["splits"]) == 1
    assert len(state["last_op"]["new"]) == 1 and state["sizes"]["total"] == 4
    m = t.match_prefix(nb02.encode("the cat"))
    t.inc_lock_ref(m.node)
    assert t.export()["last_op"]["path"] == t.path_ids(m.node)
    assert t.protected_size() == 2 and "lock=1" in t.pretty_print(nb02.decode)
    t.dec_lock_ref(m.node)
    t.evict(10)
    assert t.total_size() == 0 and len(t.export()["last_op"]["evicted"]) == 3
