"""Incremental detokenization: the deltas add up to `tokenizer.decode(ids)` for byte-level BPE
(multi-byte characters split over tokens) and SentencePiece-style Metaspace tokenizers (leading
spaces); stop strings cut a delta stream exactly where the whole text would be cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixlab.checkpoint import TINY_MODEL_DIR
from radixlab.detokenize import REPLACEMENT, IncrementalDetokenizer, StopStrings

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "tokenizer.json").exists(),
                                reason="shipped tokenizer absent")
TEXTS = ["naïve café 😀 ok", "世界 你好, 🎉🎉 fin", " leading space and  two", "Ünïcödé\n\tend"]


@pytest.fixture(scope="module")
def bpe():
    from radixlab.checkpoint import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def metaspace():
    """A SentencePiece-style ("▁") BPE tokenizer with byte fallback, trained here, offline."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(["hello world, the world says hello", "a cat and a hat"] * 20,
                            trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):                    # byte pieces, as SentencePiece's byte_fallback has
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])  # Llama 2's
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


def _deltas(tokenizer, ids):
    d = IncrementalDetokenizer(tokenizer)
    out = [d.push(t) for t in ids]
    out[-1] += d.finish()
    return out, d


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_bpe_multibyte_characters(bpe, text):
    ids = bpe.encode(text)
    naive = "".join(bpe.decode([t]) for t in ids)
    assert REPLACEMENT in naive or naive == text     # one token at a time breaks characters
    deltas, d = _deltas(bpe, ids)
    assert "".join(deltas) == bpe.decode(ids, skip_special_tokens=True) == d.text
    assert all(REPLACEMENT not in x for x in deltas)  # held back until complete
    assert "" in deltas or len(ids) == len(text.encode()) or text.isascii()


def test_metaspace_leading_spaces(metaspace):
    ids = metaspace.encode("hello world, a hat and a cat 😀", add_special_tokens=False)
    naive = "".join(metaspace.decode([t]) for t in ids)
    assert " world" not in naive                     # each piece alone loses its space
    assert REPLACEMENT in naive                      # and the emoji's byte pieces break
    deltas, _ = _deltas(metaspace, ids)
    assert "".join(deltas) == metaspace.decode(ids) == "hello world, a hat and a cat 😀"
    assert " world" in deltas or any(x.startswith(" w") for x in deltas)


def test_special_tokens_are_skipped(bpe):
    ids = bpe.encode("hi there") + [bpe.eos_token_id]
    deltas, _ = _deltas(bpe, ids)
    assert "".join(deltas) == "hi there" == bpe.decode(ids, skip_special_tokens=True)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab é中😀\n,", min_size=1, max_size=24))
def test_deltas_add_up_for_any_text(bpe, text):
    ids = bpe.encode(text)
    deltas, _ = _deltas(bpe, ids)
    assert "".join(deltas) == bpe.decode(ids)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 511), min_size=1, max_size=20))
def test_deltas_add_up_for_any_ids_even_broken_utf8(bpe, ids):
    deltas, _ = _deltas(bpe, ids)
    assert "".join(deltas) == bpe.decode(ids, skip_special_tokens=True)


def _stopped(text, stops):
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


@settings(max_examples=200)
@given(st.text(alphabet="abc", max_size=20), st.lists(st.text(alphabet="abc", max_size=3),
       max_size=3), st.lists(st.integers(1, 4), min_size=1, max_size=20))
def test_stop_strings_cut_where_the_whole_text_would_be_cut(text, stops, sizes):
    s, out, pos, stopped = StopStrings(stops), "", 0, False
    for n in sizes * 20:
        if pos >= len(text):
            break
        piece, stopped = s.feed(text[pos:pos + n])
        out += piece
        pos += n
        if stopped:
            break
    out += s.flush()
    assert (out, stopped) == _stopped(text, stops)
