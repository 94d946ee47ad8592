"""Seeded workload traces whose prompts share prefixes the way real LLM traffic does.

Each generator builds prompts from the course's synthetic world (`radixlab.corpus`), so the
shipped tiny model reads them, and returns a `Trace`: requests in arrival order, each with its
prompt token ids, arrival time, the request it continues (`parent`) and a generation budget.
Prompts are tokenised piece by piece and the pieces concatenated, so the sharing structure a
generator promises (a common few-shot prefix, a chat that extends its last turn, ...) holds
exactly in token ids, whatever the tokenizer.

Traces are stored as JSON Lines (`save_trace` / `load_trace`): an optional header line, then one
request per line.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radixlab import corpus
from radixlab.corpus import ASSISTANT, END, SYSTEM, TOOL, USER

Tokenize = Callable[[str], Sequence[int]]

TRACE_FORMAT = "radixlab-trace"
TRACE_VERSION = 1


class TraceFormatError(ValueError):
    """A trace file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: what to send, when, and which earlier request it continues."""

    rid: int
    prompt_ids: tuple[int, ...]
    arrival: float = 0.0
    parent: int | None = None
    max_new_tokens: int = 16
    text: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rid, bool) or not isinstance(self.rid, int) or self.rid < 0:
            raise ValueError(f"rid must be an int >= 0, got {self.rid!r}")
        ids = tuple(_check_token_ids(self.prompt_ids, f"request {self.rid}"))
        object.__setattr__(self, "prompt_ids", ids)
        arrival = self.arrival
        if isinstance(arrival, bool) or not isinstance(arrival, int | float):
            raise ValueError(f"request {self.rid}: arrival must be a number, got {arrival!r}")
        if not math.isfinite(arrival) or arrival < 0:
            raise ValueError(
                f"request {self.rid}: arrival must be finite and >= 0, got {arrival!r}"
            )
        object.__setattr__(self, "arrival", float(arrival))
        parent = self.parent
        if parent is not None and (
            isinstance(parent, bool) or not isinstance(parent, int) or parent < 0
        ):
            raise ValueError(f"request {self.rid}: parent must be None or an rid, got {parent!r}")
        mnt = self.max_new_tokens
        if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt < 1:
            raise ValueError(f"request {self.rid}: max_new_tokens must be an int >= 1, got {mnt!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise ValueError(f"request {self.rid}: text must be a string, got {self.text!r}")

    def __len__(self) -> int:
        return len(self.prompt_ids)


def _check_token_ids(ids: Any, what: str, vocab_size: int | None = None) -> list[int]:
    if isinstance(ids, str | bytes) or not hasattr(ids, "__iter__"):
        raise ValueError(f"{what}: prompt_ids must be a sequence of token ids, got {ids!r}")
    out = []
    for t in ids:
        if hasattr(t, "item") and not isinstance(t, int):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, int):
            raise ValueError(f"{what}: token id {t!r} is not an integer")
        if t < 0:
            raise ValueError(f"{what}: token id {t} is negative")
        if vocab_size is not None and t >= vocab_size:
            raise ValueError(f"{what}: token id {t} is >= vocab_size {vocab_size}")
        out.append(t)
    if not out:
        raise ValueError(f"{what}: empty prompt (no token ids)")
    return out


@dataclass
class Trace(Sequence[TraceRequest]):
    """Requests in arrival order; parents come before their children."""

    name: str
    requests: list[TraceRequest]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.requests = list(self.requests)
        seen: dict[int, TraceRequest] = {}
        last = 0.0
        for r in self.requests:
            if not isinstance(r, TraceRequest):
                raise ValueError(f"trace {self.name!r}: {r!r} is not a TraceRequest")
            if r.rid in seen:
                raise ValueError(f"trace {self.name!r}: duplicate rid {r.rid}")
            if r.parent is not None:
                if r.parent not in seen:
                    raise ValueError(
                        f"trace {self.name!r}: request {r.rid} has parent {r.parent}, "
                        "which does not come before it"
                    )
            if r.arrival < last:
                raise ValueError(
                    f"trace {self.name!r}: request {r.rid} arrives at {r.arrival}, "
                    f"before the request listed ahead of it ({last}); list requests by arrival"
                )
            last = r.arrival
            seen[r.rid] = r

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i):  # type: ignore[override]
        return self.requests[i]

    def __iter__(self) -> Iterator[TraceRequest]:
        return iter(self.requests)

    def prompts(self) -> list[list[int]]:
        """Prompt token ids of every request, in trace order."""
        return [list(r.prompt_ids) for r in self.requests]

    def by_rid(self, rid: int) -> TraceRequest:
        """The request with this rid."""
        for r in self.requests:
            if r.rid == rid:
                return r
        raise ValueError(f"trace {self.name!r} has no request with rid {rid!r}")

    @property
    def prompt_tokens(self) -> int:
        return sum(len(r.prompt_ids) for r in self.requests)

    def summary(self) -> dict[str, Any]:
        """Sizes and the prefix reuse an unbounded cache of earlier prompts would find."""
        n = len(self.requests)
        reuse = prefix_reuse(self)
        return {
            "name": self.name,
            "requests": n,
            "prompt_tokens": self.prompt_tokens,
            "mean_prompt_len": round(self.prompt_tokens / n, 1) if n else 0.0,
            "max_prompt_len": max((len(r) for r in self.requests), default=0),
            "reusable_tokens": reuse,
            "ideal_hit_rate": round(reuse / self.prompt_tokens, 4) if n else 0.0,
            "duration_s": round(self.requests[-1].arrival, 3) if n else 0.0,
        }


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_reuse(prompts: Trace | Sequence[Sequence[int]]) -> int:
    """Prompt tokens that an unbounded cache of all earlier prompts would already hold."""
    seqs = prompts.prompts() if isinstance(prompts, Trace) else prompts
    root: dict[int, dict] = {}
    total = 0
    for seq in seqs:
        node, matching = root, True
        for t in seq:
            child = node.get(t) if matching else None
            if child is None:
                matching = False
                child = node[t] = {}
            else:
                total += 1
            node = child
    return total


# ---------------------------------------------------------------------------------------------
# Tokenisation


_SHIPPED: Tokenize | None = None


def shipped_tokenize() -> Tokenize:
    """The shipped tiny model's tokenizer as a str -> ids function (no BOS/EOS added)."""
    global _SHIPPED
    if _SHIPPED is None:
        from radixlab.checkpoint import load_tokenizer

        tok = load_tokenizer()

        def encode(text: str) -> list[int]:
            return list(tok.encode(text, add_special_tokens=False))

        _SHIPPED = encode
    return _SHIPPED


def byte_tokenize(text: str) -> list[int]:
    """UTF-8 bytes as token ids: a tokenizer-free stand-in for tests and quick experiments."""
    return list(text.encode("utf-8"))


class _Pieces:
    """Tokenises text pieces once each, so a shared piece always gets the same ids."""

    def __init__(self, tokenize: Tokenize | None) -> None:
        self.tokenize = tokenize if tokenize is not None else shipped_tokenize()
        self.memo: dict[str, tuple[int, ...]] = {}

    def ids(self, piece: str) -> tuple[int, ...]:
        got = self.memo.get(piece)
        if got is None:
            got = tuple(_check_token_ids(self.tokenize(piece), f"tokenize({piece[:40]!r})"))
            self.memo[piece] = got
        return got


@dataclass
class _Draft:
    """A request before rids are assigned: its text pieces and its parent draft."""

    pieces: tuple[str, ...]
    arrival: float
    parent: int | None  # index into the draft list
    max_new_tokens: int


def _finish(
    name: str, drafts: list[_Draft], tokenize: Tokenize | None, params: dict[str, Any]
) -> Trace:
    """Sort drafts by arrival (parents first on ties), tokenise, and number them."""
    order = sorted(range(len(drafts)), key=lambda i: (drafts[i].arrival, i))
    rid_of = {d: rid for rid, d in enumerate(order)}
    pieces = _Pieces(tokenize)
    requests = []
    for rid, d in enumerate(order):
        draft = drafts[d]
        ids: list[int] = []
        for p in draft.pieces:
            ids.extend(pieces.ids(p))
        requests.append(
            TraceRequest(
                rid=rid,
                prompt_ids=tuple(ids),
                arrival=round(draft.arrival, 6),
                parent=None if draft.parent is None else rid_of[draft.parent],
                max_new_tokens=draft.max_new_tokens,
                text="".join(draft.pieces),
            )
        )
    return Trace(name, requests, params)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_time(name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not math.isfinite(value) or value < 0 or (name == "rate" and value == 0):
        need = "a number > 0 or None" if allow_none else "a number >= 0"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return float(value)


class _Clock:
    """Session start times (Poisson at `rate`, or all at 0) and think times between turns."""

    def __init__(self, rng: random.Random, rate: float | None, think_time: float) -> None:
        self.rng, self.rate, self.think_time, self.t = rng, rate, think_time, 0.0

    def start(self) -> float:
        if self.rate is None:
            return 0.0
        self.t += self.rng.expovariate(self.rate)
        return self.t

    def after(self, t: float) -> float:
        if self.think_time == 0:
            return t
        return t + self.rng.expovariate(1.0 / self.think_time)


def _common(seed: int, max_new_tokens: int, rate: float | None, think_time: float):
    _check_int("seed", seed, 0)
    _check_int("max_new_tokens", max_new_tokens, 1)
    rate = _check_time("rate", rate, allow_none=True)
    think_time = _check_time("think_time", think_time)
    text_rng, time_rng = random.Random(seed), random.Random(seed + 1_000_003)
    return text_rng, _Clock(time_rng, rate, think_time)


def _chat_pieces(messages: Sequence[tuple[str, str]], generation_prompt: bool) -> list[str]:
    """`corpus.format_chat` as separate pieces, so markers and contents tokenise apart."""
    tag = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
    out: list[str] = []
    for role, text in messages:
        out += [tag[role], text, END]
    if generation_prompt:
        out.append(ASSISTANT)
    return out


# ---------------------------------------------------------------------------------------------
# Generators


def few_shot(
    n_requests: int = 32,
    n_examples: int = 8,
    n_tasks: int = 1,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Questions behind a shared block of solved examples; `n_tasks` blocks, mixed at random."""
    _check_int("n_requests", n_requests, 1)
    _check_int("n_examples", n_examples, 1)
    _check_int("n_tasks", n_tasks, 1)
    rng, clock = _common(seed, max_new_tokens, rate, 0.0)
    blocks = [corpus.fewshot_examples(rng, n_examples) for _ in range(n_tasks)]
    drafts = []
    for _ in range(n_requests):
        task = rng.randrange(n_tasks)
        q, _a = corpus.qa_pair(rng)
        drafts.append(_Draft((blocks[task], f"Q: {q}\nA:"), clock.start(), None, max_new_tokens))
    params = dict(n_requests=n_requests, n_examples=n_examples, n_tasks=n_tasks, seed=seed)
    return _finish("few-shot", drafts, tokenize, params)


def shared_system_prompt(
    n_requests: int = 32,
    n_rules: int = 20,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Independent one-turn chats that all start with the same long system prompt."""
    _check_int("n_requests", n_requests, 1)
    _check_int("n_rules", n_rules, 1)
    rng, clock = _common(seed, max_new_tokens, rate, 0.0)
    system = corpus.long_system_prompt(rng, n_rules)
    drafts = []
    for _ in range(n_requests):
        q, _a = corpus.qa_pair(rng)
        pieces = _chat_pieces([("system", system), ("user", q)], True)
        drafts.append(_Draft(tuple(pieces), clock.start(), None, max_new_tokens))
    params = dict(n_requests=n_requests, n_rules=n_rules, seed=seed)
    return _finish("system-prompt", drafts, tokenize, params)


def multi_turn_chat(
    n_conversations: int = 8,
    n_turns: int = 4,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    think_time: float = 1.0,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Conversations where each turn's prompt is the last prompt + its answer + a new question."""
    _check_int("n_conversations", n_conversations, 1)
    _check_int("n_turns", n_turns, 1)
    rng, clock = _common(seed, max_new_tokens, rate, think_time)
    system = rng.choice(corpus.SYSTEM_PROMPTS[:3])
    drafts: list[_Draft] = []
    for _ in range(n_conversations):
        messages = corpus.chat(rng, n_turns, system)
        t, parent = clock.start(), None
        for turn in range(n_turns):
            pieces = _chat_pieces(messages[: 2 + 2 * turn], True)
            drafts.append(_Draft(tuple(pieces), t, parent, max_new_tokens))
            parent, t = len(drafts) - 1, clock.after(t)
    params = dict(n_conversations=n_conversations, n_turns=n_turns, seed=seed)
    return _finish("chat", drafts, tokenize, params)


def tree_of_thought(
    n_trees: int = 2,
    depth: int = 2,
    branching: int = 3,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    think_time: float = 0.5,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Trees of reasoning: each node's prompt is its parent's prompt plus one more thought."""
    _check_int("n_trees", n_trees, 1)
    _check_int("depth", depth, 0)
    _check_int("branching", branching, 1)
    rng, clock = _common(seed, max_new_tokens, rate, think_time)
    drafts: list[_Draft] = []
    for _ in range(n_trees):
        q, _a = corpus.qa_pair(rng)
        root = _chat_pieces([("system", corpus.SYSTEM_PROMPTS[3]), ("user", q)], True)
        drafts.append(_Draft(tuple(root), clock.start(), None, max_new_tokens))
        frontier = [len(drafts) - 1]
        for level in range(1, depth + 1):
            nxt = []
            for p in frontier:
                for _b in range(branching):
                    thought, action, _obs = corpus.agent_step(rng)
                    step = f"Thought {level}: {thought} Action: {action} "
                    d = _Draft(drafts[p].pieces + (step,), clock.after(drafts[p].arrival), p,
                               max_new_tokens)
                    drafts.append(d)
                    nxt.append(len(drafts) - 1)
            frontier = nxt
    params = dict(n_trees=n_trees, depth=depth, branching=branching, seed=seed)
    return _finish("tree-of-thought", drafts, tokenize, params)


def agent_loop(
    n_agents: int = 4,
    n_steps: int = 6,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    think_time: float = 0.5,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Tool-using agents: each call's prompt is the whole context so far plus the tool's reply."""
    _check_int("n_agents", n_agents, 1)
    _check_int("n_steps", n_steps, 1)
    rng, clock = _common(seed, max_new_tokens, rate, think_time)
    drafts: list[_Draft] = []
    for _ in range(n_agents):
        messages = corpus.agent_transcript(rng, n_steps - 1)
        t, parent = clock.start(), None
        for step in range(n_steps):
            pieces = _chat_pieces(messages[: 2 + 2 * step], True)
            drafts.append(_Draft(tuple(pieces), t, parent, max_new_tokens))
            parent, t = len(drafts) - 1, clock.after(t)
    params = dict(n_agents=n_agents, n_steps=n_steps, seed=seed)
    return _finish("agent", drafts, tokenize, params)


def long_document_qa(
    n_questions: int = 16,
    n_documents: int = 1,
    doc_sentences: int = 40,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Many questions about each of a few long documents; the document is the shared prefix."""
    _check_int("n_questions", n_questions, 1)
    _check_int("n_documents", n_documents, 1)
    _check_int("doc_sentences", doc_sentences, 1)
    rng, clock = _common(seed, max_new_tokens, rate, 0.0)
    docs = [corpus.document(rng, doc_sentences) for _ in range(n_documents)]
    drafts = []
    for _ in range(n_questions):
        doc = docs[rng.randrange(n_documents)]
        q, _a = corpus.qa_pair(rng)
        pieces = [SYSTEM, corpus.SYSTEM_PROMPTS[0], END, USER, doc, f" {q}", END, ASSISTANT]
        drafts.append(_Draft(tuple(pieces), clock.start(), None, max_new_tokens))
    params = dict(n_questions=n_questions, n_documents=n_documents,
                  doc_sentences=doc_sentences, seed=seed)
    return _finish("long-document", drafts, tokenize, params)


def document_sections(
    n_questions: int = 40,
    doc_sentences: Sequence[int] = (24, 6),
    n_sections: int = 4,
    section_sentences: int = 16,
    p_section: float = 0.5,
    *,
    seed: int = 0,
    max_new_tokens: int = 8,
    rate: float | None = None,
    tokenize: Tokenize | None = None,
) -> Trace:
    """Questions about documents of different lengths, part of them about one of a document's
    sections (the document, then the section's text, then the question): shared prefixes nested
    at several depths, where lpm (longest match first) and dfs-weight (heaviest subtree first)
    admit in different orders."""
    _check_int("n_questions", n_questions, 1)
    if isinstance(doc_sentences, (str, bytes)) or not isinstance(doc_sentences, Sequence) or \
            not doc_sentences:
        raise ValueError(f"doc_sentences must be a non-empty list of ints, got {doc_sentences!r}")
    for n in doc_sentences:
        _check_int("doc_sentences", n, 1)
    _check_int("n_sections", n_sections, 1)
    _check_int("section_sentences", section_sentences, 1)
    ok = not isinstance(p_section, bool) and isinstance(p_section, int | float)
    if not ok or not 0 <= p_section <= 1:
        raise ValueError(f"p_section must be a number in [0, 1], got {p_section!r}")
    rng, clock = _common(seed, max_new_tokens, rate, 0.0)
    docs = [corpus.document(rng, n) for n in doc_sentences]
    sections = [[corpus.document(rng, section_sentences) for _ in range(n_sections)]
                for _ in docs]
    drafts = []
    for _ in range(n_questions):
        d = rng.randrange(len(docs))
        body = [docs[d]]
        if rng.random() < p_section:
            body += [" ", sections[d][rng.randrange(n_sections)]]
        q, _a = corpus.qa_pair(rng)
        pieces = [SYSTEM, corpus.SYSTEM_PROMPTS[0], END, USER, *body, f" {q}", END, ASSISTANT]
        drafts.append(_Draft(tuple(pieces), clock.start(), None, max_new_tokens))
    params = dict(n_questions=n_questions, doc_sentences=list(doc_sentences),
                  n_sections=n_sections, section_sentences=section_sentences,
                  p_section=p_section, seed=seed)
    return _finish("document-sections", drafts, tokenize, params)


def _vocabulary() -> list[str]:
    words = set()
    for table in (corpus.CAPITALS, corpus.COLORS, corpus.SOUNDS, corpus.PLACES):
        for k, v in table.items():
            words.update(k.split())
            if isinstance(v, str):
                words.update(v.split())
    words.update(corpus.NAMES + corpus.TOWNS + corpus.TOOLS + corpus.DAYS)
    return sorted(w for w in words if w not in {"a", "an", "the"})


def no_sharing(
    n_requests: int = 32,
    n_sentences: int = 6,
    max_shared: int = 4,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    rate: float | None = None,
    tokenize: Tokenize | None = None,
) -> Trace:
    """A control: prompts that share no prefix longer than `max_shared` tokens with each other."""
    _check_int("n_requests", n_requests, 1)
    _check_int("n_sentences", n_sentences, 1)
    _check_int("max_shared", max_shared, 0)
    rng, clock = _common(seed, max_new_tokens, rate, 0.0)
    pieces_of = _Pieces(tokenize)
    words = _vocabulary()
    drafts: list[_Draft] = []
    kept: list[tuple[int, ...]] = []
    for i in range(n_requests):
        for _attempt in range(2000):
            text = " ".join(rng.choice(words) for _ in range(3)) + ": "
            text += corpus.document(rng, n_sentences)
            ids = pieces_of.ids(text)
            if all(common_prefix_len(ids, k) <= max_shared for k in kept):
                break
        else:
            raise ValueError(
                f"no_sharing could not find {n_requests} prompts sharing at most "
                f"{max_shared} tokens (stuck at request {i}); raise max_shared or ask for fewer"
            )
        kept.append(ids)
        drafts.append(_Draft((text,), clock.start(), None, max_new_tokens))
    params = dict(n_requests=n_requests, n_sentences=n_sentences, max_shared=max_shared,
                  seed=seed)
    return _finish("no-sharing", drafts, pieces_of.tokenize, params)


def merge_traces(*traces: Trace, name: str = "mixed") -> Trace:
    """Interleave traces by arrival time (ties: argument order), renumbering rids and parents."""
    if not traces:
        raise ValueError("merge_traces needs at least one trace")
    for t in traces:
        if not isinstance(t, Trace):
            raise ValueError(f"merge_traces takes Trace objects, got {t!r}")
    items = [(r.arrival, k, i, r) for k, t in enumerate(traces) for i, r in enumerate(t)]
    items.sort(key=lambda x: x[:3])
    new_rid = {(k, r.rid): n for n, (_, k, _, r) in enumerate(items)}
    requests = [
        TraceRequest(n, r.prompt_ids, r.arrival,
                     None if r.parent is None else new_rid[(k, r.parent)],
                     r.max_new_tokens, r.text)
        for n, (_, k, _, r) in enumerate(items)
    ]
    params = {"parts": [t.name for t in traces], "sizes": [len(t) for t in traces]}
    return Trace(name, requests, params)


WORKLOADS: dict[str, Callable[..., Trace]] = {
    "few-shot": few_shot,
    "system-prompt": shared_system_prompt,
    "chat": multi_turn_chat,
    "tree-of-thought": tree_of_thought,
    "agent": agent_loop,
    "long-document": long_document_qa,
    "no-sharing": no_sharing,
}


def make_workload(name: str, **kwargs: Any) -> Trace:
    """Build a named workload (`WORKLOADS` lists the names) with generator keyword arguments."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
    return WORKLOADS[name](**kwargs)


def sized(name: str, n_requests: int, **kwargs: Any) -> Trace:
    """A named workload with about `n_requests` requests, whatever its natural size knobs."""
    _check_int("n_requests", n_requests, 1)
    if name == "chat":
        turns = kwargs.pop("n_turns", 4)
        return multi_turn_chat(max(1, -(-n_requests // turns)), turns, **kwargs)
    if name == "agent":
        steps = kwargs.pop("n_steps", 6)
        return agent_loop(max(1, -(-n_requests // steps)), steps, **kwargs)
    if name == "tree-of-thought":
        depth, branching = kwargs.pop("depth", 2), kwargs.pop("branching", 3)
        per_tree = sum(branching**d for d in range(depth + 1))
        return tree_of_thought(max(1, -(-n_requests // per_tree)), depth, branching, **kwargs)
    if name == "long-document":
        return long_document_qa(n_requests, **kwargs)
    return make_workload(name, n_requests=n_requests, **kwargs)


# ---------------------------------------------------------------------------------------------
# JSON Lines


def save_trace(trace: Trace, path: str | Path, *, include: str = "both") -> Path:
    """Write a trace as JSON Lines: a header, then one request per line (ids, text or both)."""
    if include not in ("both", "ids", "text"):
        raise ValueError(f"include must be 'both', 'ids' or 'text', got {include!r}")
    if include == "text" and any(r.text is None for r in trace):
        raise ValueError("include='text' needs every request to carry its text")
    path = Path(path)
    header = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "name": trace.name,
              "params": trace.params}
    lines = [json.dumps(header)]
    for r in trace:
        row: dict[str, Any] = {"rid": r.rid, "arrival": r.arrival, "parent": r.parent,
                               "max_new_tokens": r.max_new_tokens}
        if include in ("both", "ids"):
            row["prompt_ids"] = list(r.prompt_ids)
        if include in ("both", "text") and r.text is not None:
            row["text"] = r.text
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


_FIELDS = {"rid", "arrival", "parent", "max_new_tokens", "prompt_ids", "text"}


def _read_rows(path: Path):
    """(line number, JSON object) of each non-blank line; errors name the file and line."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TraceFormatError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise TraceFormatError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise TraceFormatError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _header(row: dict, name: str) -> tuple[str, dict]:
    """The trace name and params of a header line."""
    if row["format"] != TRACE_FORMAT:
        raise ValueError(f"unknown format {row['format']!r}, expected {TRACE_FORMAT!r}")
    if row.get("version") != TRACE_VERSION:
        raise ValueError(f"unsupported version {row.get('version')!r}")
    params = row.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError("header params must be an object")
    return str(row.get("name", name)), params


def _request(row: dict, encode: Tokenize, vocab_size: int | None) -> TraceRequest:
    """One request line as a `TraceRequest` (text tokenised when there are no ids)."""
    unknown = set(row) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    if "rid" not in row:
        raise ValueError("missing field 'rid'")
    if "prompt_ids" not in row and "text" not in row:
        raise ValueError("needs 'prompt_ids' or 'text'")
    text, ids = row.get("text"), row.get("prompt_ids")
    if ids is None:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {text!r}")
        ids = encode(text)
    ids = _check_token_ids(ids, f"request {row['rid']!r}", vocab_size)
    return TraceRequest(rid=row["rid"], prompt_ids=tuple(ids), arrival=row.get("arrival", 0.0),
                        parent=row.get("parent"), max_new_tokens=row.get("max_new_tokens", 16),
                        text=text)


def load_trace(
    path: str | Path, *, tokenize: Tokenize | None = None, vocab_size: int | None = None
) -> Trace:
    """Read a JSON Lines trace; lines with only text are tokenised (shipped tokenizer default).
    A bad file raises `TraceFormatError` whose message starts with `path:line:`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file {str(path)!r} does not exist")
    name, params = path.stem, {}
    requests: list[TraceRequest] = []
    seen: set[int] = set()
    tokenizer: list[Tokenize] = [tokenize] if tokenize is not None else []

    def encode(text: str) -> list[int]:
        if not tokenizer:
            tokenizer.append(shipped_tokenize())
        return tokenizer[0](text)

    header_seen = False
    for lineno, row in _read_rows(path):
        try:
            if "format" in row:
                if requests or header_seen:
                    raise ValueError("header line must come first, and only once")
                name, params = _header(row, name)
                header_seen = True
                continue
            req = _request(row, encode, vocab_size)
            if req.rid in seen:
                raise ValueError(f"duplicate rid {req.rid}")
            if req.parent is not None and req.parent not in seen:
                raise ValueError(
                    f"parent {req.parent} of request {req.rid} is not on an earlier line")
            if requests and req.arrival < requests[-1].arrival:
                raise ValueError(
                    f"request {req.rid} arrives at {req.arrival}, before the line above "
                    f"({requests[-1].arrival}); list requests by arrival")
        except ValueError as e:
            raise TraceFormatError(f"{path}:{lineno}: {e}") from None
        seen.add(req.rid)
        requests.append(req)
    if not requests:
        raise TraceFormatError(f"{path}: no requests in the file")
    return Trace(name, requests, params)
