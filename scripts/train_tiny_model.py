"""Train the course's tiny Llama on the synthetic corpus and save it to data/tiny-llama.

    .venv/bin/python scripts/train_tiny_model.py            # the shipped model
    .venv/bin/python scripts/train_tiny_model.py --steps 50 --out /tmp/m   # a quick try

Writes data/corpus.jsonl (the corpus), the tokenizer (byte-level BPE, 512 ids), config.json,
model.safetensors and TRAINING.md (command, corpus, time taken, final loss). Seeded throughout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radixlab.corpus import END, SPECIAL_TOKENS, training_documents  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_corpus(path: Path, n_docs: int, seed: int) -> list[str]:
    docs = training_documents(n_docs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return docs


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "tiny-llama")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus.jsonl")
    ap.add_argument("--docs", type=int, default=12000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    docs = write_corpus(args.corpus, args.docs, args.seed)
    tokenizer = train_tokenizer(docs, vocab_size=512)
    stream = torch.tensor(
        [t for d in docs for t in tokenizer(d)["input_ids"] + [tokenizer.eos_token_id]],
        dtype=torch.long,
    )
    print(f"corpus: {len(docs)} documents, {len(stream)} tokens", flush=True)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    t_train = time.perf_counter()
    ema = None
    for step in range(args.steps):
        starts = torch.randint(0, len(stream) - args.seq - 1, (args.batch,), generator=gen)
        batch = torch.stack([stream[s : s + args.seq + 1] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss:.3f}  ema {ema:.3f}  "
                  f"{time.perf_counter() - t_train:.0f}s", flush=True)
    train_s = time.perf_counter() - t_train

    # Final loss on a fixed held-out slice (the corpus tail), so the figure is reproducible.
    model.eval()
    with torch.no_grad():
        tail = stream[-(args.seq * 8 + 1):]
        held = torch.stack([tail[i * args.seq : (i + 1) * args.seq] for i in range(8)])
        final_loss = model(input_ids=held, labels=held.clone()).loss.item()

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    total_s = time.perf_counter() - t0
    threads = os.environ.get("OMP_NUM_THREADS")
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    cmd = env + "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    (args.out / "TRAINING.md").write_text(
        f"""# How this model was made

- command: `{cmd}` (run from the repository root)
- corpus: `data/corpus.jsonl`, {len(docs)} documents made by `radixlab.corpus.training_documents`
  (seed {args.seed}): templated chats, few-shot Q&A, town reports with questions, tool-using
  agent transcripts; {len(stream)} tokens with this tokenizer
- tokenizer: byte-level BPE from `tokenizers`, {len(tokenizer)} ids, special tokens {SPECIAL_TOKENS}
- model: LlamaForCausalLM, hidden 128, 4 layers, 4 query heads / 2 KV heads (grouped-query
  attention), MLP 512, tied embeddings, {n_params} parameters
- training: {args.steps} steps of AdamW (lr {args.lr}, cosine to 10%), batch {args.batch} x
  {args.seq} tokens, seed {args.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads
- time: {train_s:.0f} s of training, {total_s:.0f} s in all, on a 2-core CPU
- final loss: {final_loss:.3f} (held-out tail of the corpus), last training-batch EMA {ema:.3f}
"""
    )
    print(f"saved to {args.out}; final loss {final_loss:.3f}; {total_s:.0f}s", flush=True)


if __name__ == "__main__":
    main()
