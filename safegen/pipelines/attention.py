"""Choosing the attention kernel: xformers when installed on a GPU, PyTorch SDPA otherwise."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from safegen.core.checks import ATTENTION_CHOICES
from safegen.core.errors import SafegenError

_logger = logging.getLogger(__name__)

ATTENTION_MODES = ATTENTION_CHOICES


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def configure_attention(pipe: Any, mode: str = "auto", device: str = "cpu") -> str:
    """Set the UNet/VAE attention processor; returns the mode actually used.

    ``auto`` picks xformers on CUDA when the ``gpu`` extra is installed, else SDPA
    (diffusers' default on PyTorch 2). ``eager`` is the plain matmul-softmax path, useful
    for debugging numerical differences.
    """
    if mode not in ATTENTION_MODES:
        raise SafegenError(f"unknown attention '{mode}'; choose one of: {', '.join(ATTENTION_MODES)}")
    on_cuda = str(device).startswith("cuda")
    if mode == "auto":
        mode = "xformers" if on_cuda and xformers_available() else "sdpa"
    if mode == "xformers":
        if not on_cuda:
            raise SafegenError("xformers attention needs a CUDA device; use --attention sdpa on this machine")
        if not xformers_available():
            raise SafegenError("xformers is not installed; `pip install 'safegen[gpu]'` or use --attention sdpa")
        pipe.enable_xformers_memory_efficient_attention()
    else:
        processor = AttnProcessor2_0() if mode == "sdpa" else AttnProcessor()
        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is not None and hasattr(module, "set_attn_processor"):
                module.set_attn_processor(processor)
    _logger.info("attention: %s", mode)
    return mode
