"""Find and load Hugging Face checkpoints from local directories (never from a hub).

The course ships its own model in `data/tiny-llama`; any local Llama- or Qwen2-family directory
with `config.json`, safetensors weights and tokenizer files works the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TINY_MODEL_DIR = DATA_DIR / "tiny-llama"


def resolve_model_dir(path: str | os.PathLike | None = None) -> Path:
    """The checkpoint directory to use, checked to exist and to hold a config.json."""
    directory = Path(path) if path is not None else TINY_MODEL_DIR
    if not directory.is_dir():
        raise FileNotFoundError(
            f"model directory not found: {directory} "
            "(the course model lives in data/tiny-llama; rebuild it with "
            "`python scripts/train_tiny_model.py`)"
        )
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in model directory {directory}")
    return directory


def load_hf_model(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """`AutoModelForCausalLM.from_pretrained` on a local directory, in eval mode, offline."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar for a 4 MB file is noise in a notebook
    directory = resolve_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    return model.eval()


def load_tokenizer(path: str | os.PathLike | None = None):
    """`AutoTokenizer.from_pretrained` on a local directory, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir(path), local_files_only=True)


def load_config(path: str | os.PathLike | None = None):
    """`AutoConfig.from_pretrained` on a local directory, offline."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_dir(path), local_files_only=True)
