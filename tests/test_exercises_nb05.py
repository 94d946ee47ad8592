"""Checker of notebook 05 accepts the reference and rejects realistic mistakes."""

from __future__ import annotations

from radixlab.exercises import nb05


def _stub(*args):
    raise NotImplementedError


def test_choose_victims_reference_and_stub():
    assert nb05.choose_victims.evaluate(nb05.reference_choose_victims).correct
    assert nb05.choose_victims.evaluate(_stub).status == "not attempted"


def _leaves(nodes):
    parents = {p for p, *_ in nodes.values()}
    return [n for n in nodes if n != 0 and n not in parents]


def test_choose_victims_rejects_mistakes():
    def ignores_locks(nodes, k):
        out, freed = [], 0
        for n in sorted(_leaves(nodes), key=lambda n: nodes[n][2]):
            if freed >= k:
                break
            out.append(n)
            freed += nodes[n][1]
        return out

    def leaves_only(nodes, k):  # never considers parents that become leaves
        out, freed = [], 0
        cands = [n for n in _leaves(nodes) if nodes[n][3] == 0]
        for n in sorted(cands, key=lambda n: nodes[n][2]):
            if freed >= k:
                break
            out.append(n)
            freed += nodes[n][1]
        return out

    def most_recent_first(nodes, k):
        ref = nb05.reference_choose_victims({n: (p, s, -t, lk) for n, (p, s, t, lk)
                                             in nodes.items()}, k)
        return ref

    for wrong in (ignores_locks, leaves_only, most_recent_first):
        res = nb05.choose_victims.evaluate(wrong)
        assert res.status == "incorrect", wrong.__name__


def test_reference_agrees_with_the_radix_tree():
    """The exercise's rule is the one RadixTree.evict implements (LRU, whole leaves)."""
    import numpy as np

    from radixlab.tree import RadixTree

    tree = RadixTree(1)
    tree.insert([1, 2, 3, 4], np.arange(4))          # oldest
    tree.insert([1, 2, 3, 9, 9], np.arange(10, 15))
    tree.insert([7, 7], np.arange(20, 22))
    m = tree.match_prefix([7, 7])                       # refresh [7, 7]
    tree.inc_lock_ref(tree.match_prefix([1, 2, 3, 9, 9]).node)
    freed = tree.evict(3)
    # leaf [4] (oldest, 1 token), then [7, 7]; the locked path [1, 2, 3, 9, 9] stays
    assert freed.tolist() == [3, 20, 21]
    del m
    nodes = {0: (None, 0, 0, 0), 1: (0, 3, 2, 1), 2: (1, 1, 1, 0), 3: (1, 2, 2, 1),
             4: (0, 2, 3, 0)}
    assert nb05.reference_choose_victims(nodes, 3) == [2, 4]
