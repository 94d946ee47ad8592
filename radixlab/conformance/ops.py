"""Random operation sequences over token lists, shared by the prefix caches' suites.

Operations: ("insert", tokens, namespace), ("match", tokens, namespace), ("match_lock", tokens,
namespace), ("unlock", k) (the k-th held lock, modulo their number) and ("evict", n). Token lists
often reuse an earlier one (a prefix of it, or it with a few tokens more), so matches find what
inserts stored, later operations split locked edges and trees grow several levels deep; lists
drawn independently reach those states only rarely. Because the draws depend on each other,
hypothesis' own shrinker is slow on them; `smaller_operations` shrinks instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from radixlab.conformance.runner import without_one_op

BASES = ([1, 3, 5, 1, 3, 5, 1, 3, 5], [1, 3, 5, 1, 1, 3, 6, 6], [3, 3, 3, 3, 5, 5, 5, 5])
ALPHABET = (1, 3, 5, 6)  # small ids, so that random sequences share prefixes
_FROM_BASE = st.builds(lambda b, cut, tail: BASES[b][:cut] + tail, st.integers(0, 2),
                       st.integers(1, 9), st.lists(st.sampled_from(ALPHABET), max_size=2))
# Mostly prefixes of a few shared "documents" (so that paths share prefixes, branch and split
# several levels deep, and matches find what inserts stored), sometimes anything.
TOKENS = st.one_of(_FROM_BASE, _FROM_BASE, _FROM_BASE, st.lists(st.sampled_from(ALPHABET),
                                                                 max_size=9))
NAMESPACE = st.sampled_from([None, None, None, "a"])
KINDS = ("insert", "insert", "match", "match_lock", "match_lock", "unlock", "evict")


@st.composite
def operations(draw: Any, max_ops: int = 20) -> list[tuple]:
    """A random list of operations (see the module docstring)."""
    seqs: list[list[int]] = []
    ops: list[tuple] = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "unlock":
            ops.append((kind, draw(st.integers(0, 7))))
        elif kind == "evict":
            ops.append((kind, draw(st.integers(0, 12))))
        else:
            if seqs and draw(st.integers(0, 2)):
                base = seqs[draw(st.integers(0, len(seqs) - 1))]
                seq = base[: draw(st.integers(0, len(base)))] + draw(
                    st.lists(st.sampled_from(ALPHABET), max_size=3))
            else:
                seq = draw(TOKENS)
            if kind == "insert" and not seq:
                seq = [ALPHABET[0]]
            seqs.append(seq)
            ops.append((kind, seq, draw(NAMESPACE)))
    return ops


OPS = operations()


def smaller_operations(example: tuple[int, list]) -> Iterator[tuple[int, list]]:
    """Smaller valid examples of (page_size, ops): one operation less, then shorter token lists,
    no namespaces, smaller counts, page_size 1."""
    page_size, ops = example
    yield from without_one_op(example)
    for i, op in enumerate(ops):
        if len(op) == 3 and op[1]:
            keep = 1 if op[0] == "insert" else 0
            for seq in (op[1][:-1], op[1][1:]):
                if len(seq) >= keep:
                    yield page_size, ops[:i] + [(op[0], seq, op[2])] + ops[i + 1:]
        if len(op) == 3 and op[2] is not None:
            yield page_size, ops[:i] + [(op[0], op[1], None)] + ops[i + 1:]
        if len(op) == 2 and op[1] > 0:
            yield page_size, ops[:i] + [(op[0], op[1] - 1)] + ops[i + 1:]
    if any(len(op) == 3 and op[2] is not None for op in ops):
        yield page_size, [(op[0], op[1], None) if len(op) == 3 else op for op in ops]
    if page_size > 1:
        yield 1, ops
