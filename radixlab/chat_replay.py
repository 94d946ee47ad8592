"""Play recorded multi-turn conversations through the router, rendered by a chat template.

Every assistant message of a conversation is one request: its prompt is the conversation so far
rendered with the generation prompt, and the "model" answers exactly that message
(`ScriptedExecutor` replaces the cost model's tokens with the recorded ones). What the cache
holds after a turn is therefore what a real engine would hold after generating the message, and
the next prompt is what a real client would send: the hit rate measures the template.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from radixlab import corpus, validate
from radixlab.batch import BatchPlan, Executor, StepResult
from radixlab.drift import (
    THINK_CLOSE,
    THINK_OPEN,
    Drift,
    Message,
    Pieces,
    Rendered,
    find_drift,
    render_chat,
    reply_ids,
)
from radixlab.workloads import Trace, TraceRequest


def agent_conversations(n_conversations: int = 4, n_user_turns: int = 3, n_steps: int = 2, *,
                        seed: int = 0) -> list[list[Message]]:
    """Conversations of `n_user_turns` user requests, each answered after `n_steps` tool calls;
    every assistant message starts with its reasoning in <think>...</think>."""
    n_conversations = validate.positive_int(n_conversations, "n_conversations")
    n_user_turns = validate.positive_int(n_user_turns, "n_user_turns")
    n_steps = validate.count(n_steps, "n_steps")
    rng = random.Random(validate.count(seed, "seed"))
    out = []
    for _ in range(n_conversations):
        messages: list[Message] = [("system", corpus.SYSTEM_PROMPTS[3])]
        for _ in range(n_user_turns):
            q, a = corpus.qa_pair(rng)
            messages.append(("user", q))
            seen = []
            for _ in range(n_steps):
                thought, action, observation = corpus.agent_step(rng)
                messages += [("assistant", f"{THINK_OPEN}{thought}{THINK_CLOSE}{action}"),
                             ("tool", observation)]
                seen.append(observation)
            why = f"The tools said: {' '.join(seen)} " if seen else ""
            messages.append(
                ("assistant", f"{THINK_OPEN}{why}I can answer now.{THINK_CLOSE}Answer: {a}"))
        out.append(messages)
    return out


@dataclass
class ChatReplay:
    """A conversation set as a trace: `replies[rid]` are the tokens request rid answers with,
    `rendered[rid]` its prompt with message spans, `message[rid]` = (conversation, index)."""

    trace: Trace
    replies: dict[int, tuple[int, ...]]
    rendered: dict[int, Rendered]
    message: dict[int, tuple[int, int]]

    def drifts(self) -> dict[int, Drift]:
        """For every request that continues another: where its prompt leaves the parent's
        prompt + reply."""
        out = {}
        for req in self.trace:
            if req.parent is not None:
                prev = self.trace.by_rid(req.parent).prompt_ids + self.replies[req.parent]
                out[req.rid] = find_drift(prev, req.prompt_ids, self.rendered[req.rid].spans)
        return out


def chat_replay(conversations: Sequence[Sequence[Message]], template: str = "keep", *,
                tokenize: Callable[[str], list[int]] | None = None) -> ChatReplay:
    """One request per assistant message, rendered with `template`; a conversation's requests
    continue each other (conversation c arrives at c milliseconds)."""
    pieces = Pieces(tokenize)
    requests, replies, rendered, where = [], {}, {}, {}
    for c, messages in enumerate(conversations):
        parent = None
        for i, (role, text) in enumerate(messages):
            if role != "assistant":
                continue
            r = render_chat(messages[:i], template, tokenize=pieces)
            rid = len(requests)
            reply = reply_ids(text, pieces)
            requests.append(TraceRequest(rid, r.ids, arrival=c / 1000, parent=parent,
                                         max_new_tokens=len(reply)))
            replies[rid], rendered[rid], where[rid] = reply, r, (c, i)
            parent = rid
    return ChatReplay(Trace(f"chat-replay ({template})", requests, {"template": template}),
                      replies, rendered, where)


class ScriptedExecutor:
    """An executor whose sampled tokens are the recorded replies: it runs `base` (for the
    timing and the slots) and answers token k of request rid's output with `replies[rid][k]`."""

    def __init__(self, base: Executor, prompt_lens: dict[int, int],
                 replies: dict[int, Sequence[int]]) -> None:
        self.base = base
        self.prompt_lens = dict(prompt_lens)
        self.replies = {rid: tuple(r) for rid, r in replies.items()}

    def execute(self, plan: BatchPlan) -> StepResult:
        result = self.base.execute(plan)
        tokens = dict(result.next_tokens)
        for w in plan.work:
            if w.sample and w.rid in self.replies:
                k = w.start_pos + len(w.tokens) - self.prompt_lens[w.rid]
                reply = self.replies[w.rid]
                tokens[w.rid] = reply[min(k, len(reply) - 1)]
        return StepResult(tokens, result.elapsed_s, result.computed_tokens)


def replay_metrics(replay: ChatReplay, *, page_size: int = 16, pool_tokens: int = 1 << 16,
                   vocab_size: int = 512):
    """Run the replay on a `Router` + cost model with a radix cache; the router's `Metrics`."""
    from radixlab.cost_model import CostModelExecutor
    from radixlab.memory import KVCacheManager, PageAllocator
    from radixlab.router import Router, run_trace
    from radixlab.tree import RadixTree

    mgr = KVCacheManager(PageAllocator(pool_tokens // page_size), page_size,
                         RadixTree(page_size=page_size))
    router = Router(mgr, vocab_size=vocab_size)
    prompt_lens = {r.rid: len(r.prompt_ids) for r in replay.trace}
    executor = ScriptedExecutor(CostModelExecutor(page_size=page_size, vocab_size=vocab_size),
                                prompt_lens, replay.replies)
    return run_trace(replay.trace, router, executor)
