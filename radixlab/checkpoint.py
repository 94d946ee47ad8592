"""Find, check and load Hugging Face checkpoints from local directories (never from a hub).

The course ships its own model in `data/tiny-llama`. Any local directory of a supported family
(`radixlab.architectures`: llama, qwen2, qwen3, mistral) with `config.json`, safetensors weights
and tokenizer files works the same way; `RADIXLAB_MODEL=/path/to/dir` makes one the default
wherever no path is given. A checkpoint is checked before any weights load: its model type and
config against the adapter registry, then each safetensors file's header and size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from radixlab import architectures

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TINY_MODEL_DIR = DATA_DIR / "tiny-llama"
MODEL_ENV = "RADIXLAB_MODEL"


def default_model_dir() -> Path:
    """`$RADIXLAB_MODEL` when set (and not empty), else the shipped `data/tiny-llama`."""
    chosen = os.environ.get(MODEL_ENV, "").strip()
    return Path(chosen).expanduser() if chosen else TINY_MODEL_DIR


def uses_shipped_model(path: str | os.PathLike | None = None) -> bool:
    """Whether `path` (default: what `$RADIXLAB_MODEL` selects) is the shipped tiny model, the
    one every committed notebook output was made with."""
    chosen = Path(path).expanduser() if path is not None else default_model_dir()
    return chosen.resolve() == TINY_MODEL_DIR.resolve()


def resolve_model_dir(path: str | os.PathLike | None = None) -> Path:
    """The checkpoint directory to use (`default_model_dir()` when path is None), checked to
    exist and to hold a config.json."""
    directory = Path(path).expanduser() if path is not None else default_model_dir()
    if not directory.is_dir():
        origin = f" (from ${MODEL_ENV})" if path is None and directory != TINY_MODEL_DIR else ""
        raise FileNotFoundError(
            f"model directory not found: {directory}{origin} "
            "(the course model lives in data/tiny-llama; rebuild it with "
            "`python scripts/train_tiny_model.py`)"
        )
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in model directory {directory}")
    return directory


def check_checkpoint(path: str | os.PathLike | None = None) -> Any:
    """The checkpoint's HF config, after refusing what PagedModel cannot run and unreadable
    weight files; reads no tensor data. ValueError naming the model type, field or file."""
    from transformers import AutoConfig

    directory = resolve_model_dir(path)
    config_file = directory / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {config_file}: {err}") from err
    architectures.lookup(raw.get("model_type") if isinstance(raw, dict) else None)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    architectures.check(config)
    _check_weight_files(directory)
    return config


def _check_weight_files(directory: Path) -> None:
    """Every safetensors file the directory names opens (header parsed, size matches it)."""
    index = directory / "model.safetensors.index.json"
    files = set(directory.glob("*.safetensors"))
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"cannot read the shard index {index}: {err!r}") from err
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            raise FileNotFoundError(f"{index} names weight files that are missing: {missing}")
        files |= {directory / s for s in shards}
    from safetensors import safe_open

    for file in sorted(files):
        try:
            with safe_open(file, framework="pt"):
                pass
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ValueError(f"corrupt or truncated safetensors file {file}: {err}") from err


def load_hf_model(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """`AutoModelForCausalLM.from_pretrained` on a local directory, in eval mode, offline, after
    `check_checkpoint` (so an unsupported model is refused before its weights load)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar for a 4 MB file is noise in a notebook
    directory = resolve_model_dir(path)
    config = check_checkpoint(directory)
    model = AutoModelForCausalLM.from_pretrained(
        directory, config=config, dtype=dtype, local_files_only=True
    )
    return model.eval()


def load_tokenizer(path: str | os.PathLike | None = None):
    """`AutoTokenizer.from_pretrained` on a local directory, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir(path), local_files_only=True)


def load_config(path: str | os.PathLike | None = None):
    """`AutoConfig.from_pretrained` on a local directory, offline."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_dir(path), local_files_only=True)
