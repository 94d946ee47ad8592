"""Exercises of notebook 05_eviction_and_locking: choose eviction victims."""

from __future__ import annotations

import heapq

from radixlab.exercises.framework import Case, Exercise


def reference_choose_victims(nodes: dict, num_tokens: int) -> list[int]:
    """LRU eviction over a radix tree given as {id: (parent, size, last_access, lock_ref)}.

    Node 0 is the root (never evicted). Repeatedly evict the unlocked leaf with the smallest
    last_access (ties: smaller id) until at least num_tokens are freed or nothing is evictable;
    a parent becomes a candidate once its last child is gone. Returns ids in eviction order.
    """
    children = {n: 0 for n in nodes}
    for n, (parent, *_rest) in nodes.items():
        if n != 0:
            children[parent] += 1
    heap = [(nodes[n][2], n) for n in nodes if n != 0 and children[n] == 0 and nodes[n][3] == 0]
    heapq.heapify(heap)
    out, freed = [], 0
    while heap and freed < num_tokens:
        _, n = heapq.heappop(heap)
        out.append(n)
        freed += nodes[n][1]
        parent = nodes[n][0]
        children[parent] -= 1
        if parent != 0 and children[parent] == 0 and nodes[parent][3] == 0:
            heapq.heappush(heap, (nodes[parent][2], parent))
    return out


def _tree() -> dict:
    #          root 0
    #         /      \
    #   1 (sys,8,t5)  6 (other,4,t1)
    #    /     \
    #  2(4,t2)  3(4,t7, locked by a running request; so is 1)
    #  |
    #  4(2,t3)   5 is a sibling of 4: (2,t9)
    return {
        0: (None, 0, 0, 0),
        1: (0, 8, 5, 1),
        2: (1, 4, 2, 0),
        3: (1, 4, 7, 1),
        4: (2, 2, 3, 0),
        5: (2, 2, 9, 0),
        6: (0, 4, 1, 0),
    }


def _cases() -> list[Case]:
    flat = {0: (None, 0, 0, 0), 1: (0, 3, 4, 0), 2: (0, 3, 2, 0), 3: (0, 3, 6, 0)}
    return [
        Case(flat, 3, note="three leaves under the root: the oldest goes first"),
        Case(flat, 4, note="whole leaves only: 4 tokens need two leaves"),
        Case(_tree(), 4, note="oldest leaf first"),
        Case(_tree(), 8, note="a locked leaf is skipped even though it is old"),
        Case(_tree(), 12, note="node 2 becomes a leaf once 4 and 5 are gone"),
        Case(_tree(), 100, note="ask for more than is evictable: locked nodes stay"),
        Case({0: (None, 0, 0, 0), 1: (0, 2, 1, 0), 2: (1, 2, 3, 0)}, 4,
             note="a chain: the parent becomes a leaf after its child"),
    ]


choose_victims = Exercise(
    name="choose_victims",
    reference=reference_choose_victims,
    cases=_cases,
    hints=[
        "Only leaves (nodes with no children left) with lock_ref == 0 can be evicted.",
        "Keep the candidates in a heap ordered by (last_access, id): least recently used first.",
        "After evicting a leaf, decrement its parent's child count; if the parent (not the root) "
        "now has none and is unlocked, push it onto the heap too. Stop once freed >= num_tokens.",
    ],
)

check_choose_victims = choose_victims.check
