"""Notebook 04: the pages-saved warm-up rejects a common-prefix-of-all answer; the copy-on-write
and hash chain builds accept the package and the model answers and reject realistic mutants
with a small readable case; both run inside the real memory manager."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from radixlab.exercises import nb04
from radixlab.exercises.solutions import SolutionHashCache, SolutionPageTables
from radixlab.hashcache import HashPrefixCache
from radixlab.memory import BlockTables, KVCacheManager, PageAllocator


def _stub(*args):
    raise NotImplementedError


def test_pages_saved_accepts_the_reference_and_rejects_mistakes():
    ex = nb04.pages_saved
    assert ex.evaluate(nb04.reference_pages_saved).correct

    def common_prefix_of_all(prompts, ps):  # shares only what every prompt has in common
        logical = sum(-(-len(p) // ps) for p in prompts)
        n = min(len(p) for p in prompts)
        k = next((i for i in range(n) if len({p[i] for p in prompts}) > 1), n) // ps
        return logical, logical - (len(prompts) - 1) * k

    def keyed_by_page_tokens(prompts, ps):  # a page's own tokens, not its whole prefix
        logical = sum(-(-len(p) // ps) for p in prompts)
        pages = {tuple(p[i:i + ps]) for p in prompts for i in range(0, len(p) // ps * ps, ps)}
        return logical, len(pages) + sum(len(p) % ps != 0 for p in prompts)

    def shares_partial_pages(prompts, ps):
        logical = sum(-(-len(p) // ps) for p in prompts)
        return logical, len({tuple(p[: (k + 1) * ps]) for p in prompts
                             for k in range(-(-len(p) // ps))})

    for wrong in (common_prefix_of_all, keyed_by_page_tokens, shares_partial_pages):
        result = ex.evaluate(wrong)
        assert result.status == "incorrect", wrong.__name__
    note = ex.evaluate(common_prefix_of_all).case.note
    assert "common to all" in note or "tree" in note
    assert ex.evaluate(_stub).status == "not attempted"


# ---------------------------------------------------------------- copy-on-write


class CopiesOnlyAboveTwo(SolutionPageTables):
    """Copies only when three or more hold the page: a fork and its parent write into one page."""

    def plan_append(self, rid, n):
        pages, length = self.table[rid], self.length_of[rid]
        if n == 0:
            return 0, False
        cow = length % self.page_size != 0 and self.allocator.refcount(pages[-1]) > 2
        return self.pages_for(length + n) - len(pages) + int(cow), cow


class CopiesFullPages(SolutionPageTables):
    """Copies a shared last page even when it is full (the new token goes to a new page)."""

    def plan_append(self, rid, n):
        pages, length = self.table[rid], self.length_of[rid]
        if n == 0:
            return 0, False
        cow = bool(pages) and self.allocator.refcount(pages[-1]) > 1
        return self.pages_for(length + n) - len(pages) + int(cow), cow


class KeepsTheSource(SolutionPageTables):
    """Forgets to let go of the shared page after copying it."""

    def append(self, rid, n):
        needed, cow = self.plan_append(rid, n)
        if cow:
            self.allocator.share([self.table[rid][-1]])
        return super().append(rid, n)


class OneTooManyPages(SolutionPageTables):
    """Counts pages as length // page_size + 1: one too many when the tokens fill them exactly."""

    def plan_append(self, rid, n):
        needed, cow = super().plan_append(rid, n)
        length = self.length_of[rid] + n
        if n and length % self.page_size == 0:
            needed += 1
        return needed, cow


COW_MUTANTS = {CopiesOnlyAboveTwo: "2 holders: one copy", CopiesFullPages: "plan_append",
               KeepsTheSource: "refcount", OneTooManyPages: "plan_append"}


@pytest.mark.parametrize("cls", [BlockTables, SolutionPageTables])
def test_copy_on_write_accepts_the_package_and_the_model_answer(cls):
    assert nb04.copy_on_write.evaluate(cls).correct


def test_the_mutant_that_skips_a_copy_shows_the_other_holder_reading_the_write():
    class NoCopyEver(SolutionPageTables):
        def plan_append(self, rid, n):
            pages, length = self.table[rid], self.length_of[rid]
            return (self.pages_for(length + n) - len(pages), False) if n else (0, False)

    class PlansRightWritesInPlace(SolutionPageTables):  # says copy, then writes in place
        def append(self, rid, n):
            needed, cow = self.plan_append(rid, n)
            if cow:
                self.allocator.share([self.table[rid][-1]])  # keep the count as if copied
            new = [int(p) for p in self.allocator.alloc(needed - int(cow))]
            self.table[rid].extend(new)
            start = self.length_of[rid]
            self.length_of[rid] = start + n
            slots = nb04.pages_to_slots(self.table[rid], self.page_size, start + n)[start:]
            return slots, [(self.table[rid][-1], self.table[rid][-1])] if cow else []

    assert nb04.copy_on_write.evaluate(NoCopyEver).status == "incorrect"
    verdict = nb04.copy_on_write.evaluate(PlansRightWritesInPlace)
    assert verdict.status == "incorrect" and len(verdict.steps) <= 4, verdict.report()


@pytest.mark.parametrize("mutant", list(COW_MUTANTS), ids=lambda m: m.__name__)
def test_copy_on_write_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb04.copy_on_write.evaluate(mutant)
    assert verdict.status == "incorrect" and 1 <= len(verdict.steps) <= 4, verdict.report()
    assert COW_MUTANTS[mutant] in verdict.problem, verdict.report()


def test_the_manager_runs_on_the_learners_tables():
    mgr = KVCacheManager(PageAllocator(12), 2, HashPrefixCache(page_size=2))
    mgr.tables = SolutionPageTables(mgr.allocator, 2)
    mgr.admit("p", mgr.match([1, 2, 3]))
    mgr.reserve("p", 3)
    mgr.fork("p", "c")
    _, copies = mgr.reserve("c", 1)
    assert len(copies) == 1
    mgr.free("c")
    mgr.free("p", [1, 2, 3])
    mgr.check_invariants()
    assert nb04.check_copy_on_write(nb04.PageTablesBase) is BlockTables


# ---------------------------------------------------------------- the hash chain


class NotChained(SolutionHashCache):
    """Hashes a block's tokens alone: equal blocks under different prefixes collide."""

    def block_hash(self, parent, block, namespace):
        return super().block_hash(b"", block, namespace)


class IgnoresNamespace(SolutionHashCache):
    def block_hash(self, parent, block, namespace):
        return super().block_hash(parent, block, None)


class ListAsTheHandle(SolutionHashCache):
    """Returns the matched blocks as a plain list: the lock calls cannot use it."""

    def match_prefix(self, tokens, namespace=None):
        m = super().match_prefix(tokens, namespace)
        return nb04.HashMatch(m.slots, list(m.node.blocks))


class ForgetsToTouch(SolutionHashCache):
    """The lookup does not refresh the LRU queue: a hot prefix is evicted as if unused."""

    def match_prefix(self, tokens, namespace=None):
        chain, parent = [], nb04.ROOT_HASH
        for block in self.full_blocks(self.tokens(tokens)):
            parent = self.block_hash(parent, block, namespace)
            if parent not in self.blocks:
                break
            chain.append(self.blocks[parent])
        return nb04.HashMatch(self.slots_of(chain), nb04.BlockChain(tuple(chain)))


class HashesTheLengthToo(SolutionHashCache):
    """Not a bug: any collision-free encoding of (parent, tokens, namespace) works."""

    def block_hash(self, parent, block, namespace):
        h = hashlib.sha256(parent + len(block).to_bytes(4, "little"))
        h.update(np.asarray(block, dtype=np.int64).tobytes() + repr(namespace).encode())
        return h.digest()


HASH_MUTANTS = {NotChained: "same hash", IgnoresNamespace: "already cached",
                ListAsTheHandle: "your code raised", ForgetsToTouch: "least recently used"}


@pytest.mark.parametrize("cls", [HashPrefixCache, SolutionHashCache, HashesTheLengthToo])
def test_hash_chain_accepts_the_package_the_model_answer_and_other_encodings(cls):
    assert nb04.hash_chain.evaluate(cls).correct


@pytest.mark.parametrize("mutant", list(HASH_MUTANTS), ids=lambda m: m.__name__)
def test_hash_chain_mutants_are_rejected_with_a_small_case(mutant):
    verdict = nb04.hash_chain.evaluate(mutant)
    assert verdict.status == "incorrect" and 1 <= len(verdict.steps) <= 5, verdict.report()
    assert HASH_MUTANTS[mutant] in verdict.report(), verdict.report()


def test_hash_chain_stub_names_block_hash():
    verdict = nb04.hash_chain.evaluate(nb04.HashCacheBase)
    assert verdict.status == "not attempted" and "`block_hash`" in verdict.problem


# ---------------------------------------------------------------- the engine on learners' pieces


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def test_the_engine_serves_from_learners_pieces_with_the_tokens_of_transformers(capsys):
    from radixlab.engine import Engine
    from radixlab.exercises.plug import serve_and_compare, use_allocator, use_tables
    from radixlab.exercises.solutions import SolutionPageAllocator, SolutionRadixTree

    rng = np.random.default_rng(0)
    prefix = rng.integers(1, 97, 40).tolist()
    prompts = [prefix + rng.integers(1, 97, int(k)).tolist() for k in (3, 9, 17)]
    for cache in (SolutionRadixTree, SolutionHashCache):
        engine = Engine(model=_tiny_llama(), cache=cache, page_size=4, pool_tokens=512)
        use_allocator(engine, SolutionPageAllocator)
        use_tables(engine, SolutionPageTables)
        assert serve_and_compare(engine, prompts[:1], max_new_tokens=5)
        assert serve_and_compare(engine, prompts[1:], max_new_tokens=5, first=1)
        engine.manager.check_invariants()
        assert type(engine.manager.allocator) is SolutionPageAllocator
        assert engine.last_stats.cached_tokens == 2 * 40
    out = capsys.readouterr().out
    assert "equal to transformers: False" not in out and "prompt 2:" in out


def test_parts_are_swapped_only_while_nothing_runs():
    from radixlab.engine import Engine
    from radixlab.exercises.plug import use_allocator

    engine = Engine(model=_tiny_llama(), page_size=4, pool_tokens=512)
    engine.generate([[1, 2, 3, 4, 5]], max_new_tokens=2)
    with pytest.raises(RuntimeError, match="before anything is cached"):
        use_allocator(engine, PageAllocator)
