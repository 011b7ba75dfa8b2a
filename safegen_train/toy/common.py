"""Small helpers shared by the toy trainers: seeding, threads, image tensors, tokenizer."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safegen import create_clip_tokenizer

_logger = logging.getLogger(__name__)

# The CLIP tokenizer of the toy world: the real CLIP BPE cut to 4,000 merges, so every
# word of the world's captions is one or two tokens and the vocabulary has 4,514 entries.
# 40 tokens hold the longest sentence shape (prefix, held-out phrase and suffix: 35).
TOY_NUM_MERGES = 4000
TOY_MAX_LENGTH = 40
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed python, numpy and torch; cap torch threads (2 shared cores here: default 2)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads or int(os.environ.get("SAFEGEN_TOY_THREADS", "2")))


def images_to_uint8(images: Sequence[Any]) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) uint8 tensor (compact storage for a whole training set)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])  # (N, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def clip_normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float pixels as CLIPImageProcessor gives them at the native size."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images_u8.float() / 255.0 - mean) / std


def unit_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1] (what diffusers' VAE expects)."""
    return images_u8.float() / 127.5 - 1.0


def create_toy_tokenizer() -> Any:
    """The toy CLIP tokenizer (CLIP BPE, reduced merges, 32 tokens)."""
    return create_clip_tokenizer(TOY_NUM_MERGES, model_max_length=TOY_MAX_LENGTH)


def tokenize(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Captions -> (N, TOY_MAX_LENGTH) ids padded to max length (as Stable Diffusion pads)."""
    out = tokenizer(list(texts), padding="max_length", truncation=True, max_length=TOY_MAX_LENGTH, return_tensors="pt")
    return out["input_ids"]


def save_fp16(model: torch.nn.Module, folder: str, **kwargs: Any) -> None:
    """save_pretrained with fp16 tensors (small files); the model in memory is left in fp32.

    The config keeps ``dtype: float32`` so that ``from_pretrained`` (whose default in
    transformers 5 is the config's dtype) gives fp32 models: the toy models run on CPUs,
    where fp16 arithmetic is slow. fp16 is a storage format here only.
    """
    model.half()
    try:
        model.save_pretrained(folder, **kwargs)
    finally:
        model.float()
    mark_config_fp32(Path(folder) / "config.json")


def mark_config_fp32(config_file: str | Path) -> None:
    """Set every ``dtype``/``torch_dtype`` of a saved config to float32 (weights may stay fp16 on disk)."""
    config_file = Path(config_file)
    config = json.loads(config_file.read_text())

    def set_fp32(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("dtype", "torch_dtype"):
                if key in node:
                    node[key] = "float32"
            for value in node.values():
                set_fp32(value)

    set_fp32(config)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
