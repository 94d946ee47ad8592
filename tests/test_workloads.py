"""Workload generators: determinism, the sharing structure each promises, the JSONL format."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab import corpus
from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.workloads import (
    WORKLOADS,
    Trace,
    TraceFormatError,
    TraceRequest,
    agent_loop,
    byte_tokenize,
    common_prefix_len,
    few_shot,
    load_trace,
    long_document_qa,
    make_workload,
    merge_traces,
    multi_turn_chat,
    no_sharing,
    prefix_reuse,
    save_trace,
    shared_system_prompt,
    shipped_tokenize,
    sized,
    tree_of_thought,
)

B = byte_tokenize


def small(name: str, **kw) -> Trace:
    return sized(name, 12, tokenize=B, **kw)


def check_well_formed(trace: Trace) -> None:
    assert [r.rid for r in trace] == list(range(len(trace)))
    for r in trace:
        assert len(r.prompt_ids) > 0
        assert list(r.prompt_ids) == B(r.text)
        if r.parent is not None:
            parent = trace.by_rid(r.parent)
            assert parent.rid < r.rid
            assert parent.arrival <= r.arrival
    arrivals = [r.arrival for r in trace]
    assert arrivals == sorted(arrivals)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_is_deterministic_and_well_formed(name):
    a, b = small(name, seed=3), small(name, seed=3)
    assert a == b
    assert small(name, seed=4).prompts() != a.prompts()
    check_well_formed(a)
    assert a.name == name
    assert len(a) >= 12


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_rate_gives_increasing_poisson_arrivals(name):
    trace = sized(name, 40, rate=10.0, tokenize=B, seed=1)
    check_well_formed(trace)
    roots = [r.arrival for r in trace if r.parent is None]
    assert len(set(roots)) == len(roots)
    assert 0 < roots[0]


def test_poisson_rate_mean_gap():
    trace = few_shot(400, 2, rate=20.0, tokenize=B, seed=0)
    mean_gap = trace[-1].arrival / len(trace)
    assert 0.04 < mean_gap < 0.06


def test_few_shot_prompts_share_their_task_examples_exactly():
    trace = few_shot(20, n_examples=5, n_tasks=3, tokenize=B, seed=2)
    blocks = {}
    for r in trace:
        block, _, question = r.text.rpartition("Q: ")
        assert block.count("Q: ") == 5
        blocks.setdefault(block, []).append(r)
    assert len(blocks) == 3
    for block, reqs in blocks.items():
        for r in reqs:
            assert list(r.prompt_ids[: len(B(block))]) == B(block)
            assert r.text.endswith("\nA:")
    a, b = (reqs[0] for reqs in list(blocks.values())[:2])
    assert common_prefix_len(a.prompt_ids, b.prompt_ids) < len(B(next(iter(blocks))))


def test_system_prompt_is_shared_by_all():
    trace = shared_system_prompt(10, n_rules=5, tokenize=B)
    sys_len = len(B(trace[0].text.split(corpus.USER)[0]))
    assert sys_len > 200
    for a, b in combinations(trace, 2):
        assert common_prefix_len(a.prompt_ids, b.prompt_ids) >= sys_len


def test_chat_turn_extends_previous_prompt_plus_answer():
    trace = multi_turn_chat(3, n_turns=4, tokenize=B, seed=5)
    assert len(trace) == 12
    children = [r for r in trace if r.parent is not None]
    assert len(children) == 9
    for r in children:
        p = trace.by_rid(r.parent)
        assert r.prompt_ids[: len(p.prompt_ids)] == p.prompt_ids
        rest = r.text[len(p.text):]
        answer, end, tail = rest.partition(corpus.END)
        assert answer and end and tail.startswith(corpus.USER)
        assert tail.endswith(corpus.END + corpus.ASSISTANT)
    for r in trace:
        assert r.text.endswith(corpus.ASSISTANT)
        turns = r.text.count(corpus.USER)
        depth, q = 1, r
        while q.parent is not None:
            q, depth = trace.by_rid(q.parent), depth + 1
        assert turns == depth


def test_think_time_zero_keeps_parent_first():
    trace = multi_turn_chat(2, 3, think_time=0.0, tokenize=B)
    check_well_formed(trace)
    assert all(r.arrival == 0.0 for r in trace)


def test_tree_of_thought_branches_share_parent_prompt():
    trace = tree_of_thought(n_trees=2, depth=2, branching=3, tokenize=B, seed=1)
    assert len(trace) == 2 * (1 + 3 + 9)
    kids: dict[int, list[TraceRequest]] = {}
    for r in trace:
        if r.parent is not None:
            kids.setdefault(r.parent, []).append(r)
    assert sorted(len(v) for v in kids.values()) == [3] * 8
    for pid, group in kids.items():
        parent = trace.by_rid(pid)
        for r in group:
            assert r.prompt_ids[: len(parent)] == parent.prompt_ids
            assert len(r) > len(parent)
    roots = [r for r in trace if r.parent is None]
    assert common_prefix_len(roots[0].prompt_ids, roots[1].prompt_ids) < len(roots[0])


def test_agent_context_grows_by_tool_observations():
    trace = agent_loop(n_agents=2, n_steps=5, tokenize=B, seed=0)
    assert len(trace) == 10
    for r in trace:
        steps = r.text.count(corpus.TOOL)
        if r.parent is None:
            assert steps == 0
        else:
            p = trace.by_rid(r.parent)
            assert r.prompt_ids[: len(p)] == p.prompt_ids
            assert steps == p.text.count(corpus.TOOL) + 1
            assert "Action: " in r.text[len(p.text):]


def test_long_document_questions_share_their_document():
    trace = long_document_qa(n_questions=12, n_documents=2, doc_sentences=10, tokenize=B, seed=1)
    docs = {}
    for r in trace:
        content = r.text.split(corpus.USER)[1]
        doc = content[: content.rindex(". ") + 1]
        assert doc.startswith("This is the ") and doc.count(". ") >= 10
        docs.setdefault(r.text[: r.text.index(doc) + len(doc)], []).append(r)
    assert len(docs) == 2
    for prefix, group in docs.items():
        assert len(group) >= 2
        for a in group:
            assert list(a.prompt_ids[: len(B(prefix))]) == B(prefix)


@settings(max_examples=15)
@given(st.integers(0, 10_000), st.integers(0, 6))
def test_no_sharing_bound_holds(seed, max_shared):
    trace = no_sharing(16, n_sentences=2, max_shared=max_shared + 2, tokenize=B, seed=seed)
    for a, b in combinations(trace.prompts(), 2):
        assert common_prefix_len(a, b) <= max_shared + 2


def test_no_sharing_has_little_reuse_and_sharing_workloads_much():
    reuse = {n: small(n, seed=0).summary()["ideal_hit_rate"] for n in WORKLOADS}
    assert reuse["no-sharing"] < 0.02
    for name, rate in reuse.items():
        if name != "no-sharing":
            assert rate > 0.3, (name, rate)


def test_no_sharing_impossible_bound_raises():
    with pytest.raises(ValueError, match="max_shared"):
        no_sharing(40, max_shared=0, tokenize=lambda s: [1] + B(s))


def naive_reuse(prompts):
    total = 0
    for i, p in enumerate(prompts):
        total += max((common_prefix_len(p, q) for q in prompts[:i]), default=0)
    return total


@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), max_size=12))
def test_prefix_reuse_matches_naive(prompts):
    assert prefix_reuse(prompts) == naive_reuse(prompts)


def test_sized_and_make_workload():
    assert len(sized("chat", 10, tokenize=B)) == 12  # 3 conversations of 4 turns
    assert len(sized("tree-of-thought", 14, tokenize=B)) == 26
    assert len(make_workload("few-shot", n_requests=5, tokenize=B)) == 5
    with pytest.raises(ValueError, match="'fewshot'"):
        make_workload("fewshot")
    with pytest.raises(ValueError, match="n_requests"):
        sized("chat", 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: few_shot(0, tokenize=B), "n_requests must be an int >= 1, got 0"),
        (lambda: few_shot(2.5, tokenize=B), "n_requests"),
        (lambda: few_shot(3, n_examples=0, tokenize=B), "n_examples"),
        (lambda: few_shot(3, seed=-1, tokenize=B), "seed"),
        (lambda: few_shot(3, max_new_tokens=0, tokenize=B), "max_new_tokens"),
        (lambda: few_shot(3, rate=0, tokenize=B), "rate"),
        (lambda: few_shot(3, rate=float("nan"), tokenize=B), "rate"),
        (lambda: multi_turn_chat(2, 2, think_time=-1, tokenize=B), "think_time"),
        (lambda: tree_of_thought(1, depth=-1, tokenize=B), "depth"),
        (lambda: tree_of_thought(1, branching=0, tokenize=B), "branching"),
        (lambda: agent_loop(1, n_steps=0, tokenize=B), "n_steps"),
        (lambda: long_document_qa(2, doc_sentences=0, tokenize=B), "doc_sentences"),
        (lambda: no_sharing(2, max_shared=-1, tokenize=B), "max_shared"),
        (lambda: few_shot(2, tokenize=lambda s: []), "empty prompt"),
        (lambda: few_shot(2, tokenize=lambda s: [-1]), "negative"),
        (lambda: few_shot(2, tokenize=lambda s: ["a"]), "not an integer"),
    ],
)
def test_bad_generator_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rid=-1, prompt_ids=[1]), "rid"),
        (dict(rid=0, prompt_ids=[]), "empty"),
        (dict(rid=0, prompt_ids="abc"), "sequence of token ids"),
        (dict(rid=0, prompt_ids=[1], arrival=-0.5), "arrival"),
        (dict(rid=0, prompt_ids=[1], arrival=float("inf")), "arrival"),
        (dict(rid=0, prompt_ids=[1], parent=-2), "parent"),
        (dict(rid=0, prompt_ids=[1], max_new_tokens=0), "max_new_tokens"),
        (dict(rid=0, prompt_ids=[1], text=5), "text"),
    ],
)
def test_bad_trace_request(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TraceRequest(**kwargs)


def test_bad_trace_order():
    r0, r1 = TraceRequest(0, [1], 1.0), TraceRequest(1, [2], 0.5)
    with pytest.raises(ValueError, match="list requests by arrival"):
        Trace("t", [r0, r1])
    with pytest.raises(ValueError, match="duplicate rid 0"):
        Trace("t", [r0, TraceRequest(0, [2], 2.0)])
    with pytest.raises(ValueError, match="parent 7"):
        Trace("t", [TraceRequest(0, [1], parent=7)])


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_save_load_round_trip(tmp_path, name):
    trace = small(name, rate=5.0, seed=2)
    path = save_trace(trace, tmp_path / f"{name}.jsonl")
    assert load_trace(path) == trace
    ids_only = load_trace(save_trace(trace, tmp_path / "ids.jsonl", include="ids"))
    assert ids_only.prompts() == trace.prompts() and ids_only[0].text is None
    text_only = load_trace(save_trace(trace, tmp_path / "t.jsonl", include="text"), tokenize=B)
    assert text_only.prompts() == trace.prompts()


def test_load_headerless_minimal_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"rid": 0, "prompt_ids": [5, 6]}\n\n{"rid": 1, "text": "hi", "parent": 0}\n')
    trace = load_trace(path, tokenize=B)
    assert trace.name == "mine"
    assert trace.prompts() == [[5, 6], [104, 105]]
    assert trace[1].parent == 0 and trace[1].max_new_tokens == 16


GOOD = '{"rid": 0, "prompt_ids": [1, 2], "arrival": 1.0}'


@pytest.mark.parametrize(
    "lines, lineno, match",
    [
        ([GOOD, "{not json"], 2, "not valid JSON"),
        ([GOOD, "[1, 2]"], 2, "expected a JSON object"),
        (['{"prompt_ids": [1]}'], 1, "missing field 'rid'"),
        (['{"rid": 0}'], 1, "needs 'prompt_ids' or 'text'"),
        (['{"rid": 0, "prompt_ids": [1], "colour": 1}'], 1, "unknown field"),
        (['{"rid": 0, "prompt_ids": []}'], 1, "empty prompt"),
        (['{"rid": 0, "prompt_ids": [1, "x"]}'], 1, "not an integer"),
        (['{"rid": 0, "prompt_ids": [1, 999]}'], 1, "999 is >= vocab_size 512"),
        (['{"rid": 0, "prompt_ids": [1], "arrival": -1}'], 1, "arrival"),
        (['{"rid": 0, "prompt_ids": [1], "max_new_tokens": 0}'], 1, "max_new_tokens"),
        (['{"rid": 0, "text": 3}'], 1, "text must be a string"),
        ([GOOD, GOOD], 2, "duplicate rid 0"),
        ([GOOD, '{"rid": 1, "prompt_ids": [1], "parent": 5, "arrival": 2}'], 2, "parent 5"),
        ([GOOD, '{"rid": 1, "prompt_ids": [1], "arrival": 0.5}'], 2, "list requests by arrival"),
        ([GOOD, '{"format": "radixlab-trace", "version": 1}'], 2, "header line must come first"),
        (['{"format": "other", "version": 1}'], 1, "unknown format"),
        (['{"format": "radixlab-trace", "version": 9}'], 1, "unsupported version"),
    ],
)
def test_bad_trace_files_name_file_and_line(tmp_path, lines, lineno, match):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError, match=match) as info:
        load_trace(path, tokenize=B, vocab_size=512)
    assert str(info.value).startswith(f"{path}:{lineno}: ")


@pytest.mark.parametrize("raw, lineno, match", [
    (GOOD.encode() + b"\n" + b'{"rid": 1, "text": "caf\xe9"}\n', 2, r"not valid UTF-8 \(byte 23"),
    (GOOD.encode() + b"\n" + b"[" * 200_000 + b"\n", 2, "nested too deeply"),
    (b"\n\n" + b'{"rid": 0, "prompt_ids": [1, {"a": [[[1]]]}]}\n', 3, "not an integer"),
])
def test_undecodable_and_pathological_lines_name_file_and_line(tmp_path, raw, lineno, match):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(raw)
    with pytest.raises(TraceFormatError, match=match) as info:
        load_trace(path, tokenize=B, vocab_size=512)
    assert str(info.value).startswith(f"{path}:{lineno}: ")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TraceFormatError, match="no requests"):
        load_trace(empty)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_trace(tmp_path / "nope.jsonl")


def test_save_trace_bad_include(tmp_path):
    trace = small("few-shot")
    with pytest.raises(ValueError, match="'xml'"):
        save_trace(trace, tmp_path / "x.jsonl", include="xml")
    noted = Trace("n", [TraceRequest(0, [1])])
    with pytest.raises(ValueError, match="text"):
        save_trace(noted, tmp_path / "y.jsonl", include="text")
    assert not (tmp_path / "y.jsonl").exists()


def test_saved_file_is_json_lines(tmp_path):
    trace = small("chat")
    path = save_trace(trace, tmp_path / "c.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["format"] == "radixlab-trace" and rows[0]["name"] == "chat"
    assert len(rows) == len(trace) + 1
    assert rows[2]["parent"] == trace[1].parent


def test_merge_traces_interleaves_and_remaps_parents():
    chat = multi_turn_chat(3, 3, rate=2.0, tokenize=B, seed=1)
    shots = few_shot(10, 2, rate=4.0, tokenize=B, seed=2)
    mixed = merge_traces(chat, shots)
    check_well_formed(mixed)
    assert len(mixed) == len(chat) + len(shots)
    assert mixed.params["parts"] == ["chat", "few-shot"]
    assert sorted(mixed.prompts()) == sorted(chat.prompts() + shots.prompts())
    for r in mixed:
        if r.parent is not None:
            parent = mixed.by_rid(r.parent)
            assert r.prompt_ids[: len(parent)] == parent.prompt_ids
    assert sum(r.parent is not None for r in mixed) == sum(r.parent is not None for r in chat)
    with pytest.raises(ValueError, match="at least one"):
        merge_traces()
    with pytest.raises(ValueError, match="Trace objects"):
        merge_traces(chat, [1, 2])


@pytest.mark.skipif(not (TINY_MODEL_DIR / "tokenizer.json").exists(),
                    reason="the shipped tokenizer (data/tiny-llama) is not built")
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_shipped_tokenizer_ids_match_text_and_vocab(name):
    tokenize = shipped_tokenize()
    trace = sized(name, 8, tokenize=tokenize)
    for r in trace:
        assert list(r.prompt_ids) == tokenize(r.text)
        assert max(r.prompt_ids) < 512
    assert sized(name, 8) == trace  # the default tokenizer is the shipped one


SHIPPED_TRACES = sorted((TINY_MODEL_DIR.parent / "traces").glob("*.jsonl"))


def test_shipped_traces_exist_for_every_workload():
    assert sorted(p.stem for p in SHIPPED_TRACES) == sorted(WORKLOADS)


@pytest.mark.skipif(not (TINY_MODEL_DIR / "tokenizer.json").exists(),
                    reason="the shipped tokenizer (data/tiny-llama) is not built")
@pytest.mark.parametrize("path", SHIPPED_TRACES, ids=lambda p: p.stem)
def test_shipped_traces_match_the_shipped_tokenizer(path):
    trace = load_trace(path, vocab_size=512)
    assert trace.name == path.stem
    tokenize = shipped_tokenize()
    for r in trace:
        assert list(r.prompt_ids) == tokenize(r.text), "rerun scripts/make_traces.py"


@st.composite
def random_traces(draw):
    n = draw(st.integers(1, 8))
    arrivals = sorted(draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=n, max_size=n)))
    requests = []
    for i in range(n):
        parent = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None
        ids = draw(st.lists(st.integers(0, 511), min_size=1, max_size=12))
        text = draw(st.one_of(st.none(), st.text(max_size=20)))
        requests.append(TraceRequest(i, ids, arrivals[i], parent, draw(st.integers(1, 64)), text))
    return Trace(draw(st.sampled_from(["t", "chat", "x y"])), requests, {"k": 1})


@settings(max_examples=60)
@given(random_traces())
def test_save_load_round_trip_property(tmp_path_factory, trace):
    path = tmp_path_factory.mktemp("rt") / "t.jsonl"
    assert load_trace(save_trace(trace, path)) == trace
