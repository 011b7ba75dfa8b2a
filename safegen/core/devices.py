"""Devices and dtypes, one home: which device, which dtype ('auto' included), and the keyword
each library's loaders take a dtype under.

Lives below the library and the CLI so neither defines its own. Torch, transformers and
diffusers are imported inside the functions: the CLI imports this module for ``--help``,
which must stay instant.
"""

from __future__ import annotations

import re
from typing import Any

from safegen.core.errors import SafegenError, UsageError

DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")
_DEVICE = re.compile(r"^(auto|cpu|mps|xpu|cuda(:\d{1,3})?)$")


def check_device(device: str) -> str:
    """``device`` if it names a device kind safegen can use, else a usage error (before any model loads)."""
    if not _DEVICE.match(str(device)):
        shown = str(device) if len(str(device)) <= 40 else str(device)[:40] + "..."
        raise UsageError(f"--device '{shown}' is not a device; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an unusable CUDA request is refused."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SafegenError(f"--device {device} asked for, but no CUDA device is visible; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str, *, gpu_default: str = "fp16") -> Any:
    """A dtype name ('auto', 'fp32', 'fp16', 'bf16' or torch's long names) -> ``torch.dtype`` for ``device``.

    'auto' is fp32 off the GPU and ``gpu_default`` on CUDA: fp16 for diffusion models and CLIP
    (what their checkpoints are published in), bf16 for language models, whose activations
    overflow fp16.
    """
    import torch

    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    table.update({"bf16": torch.bfloat16, "bfloat16": torch.bfloat16})
    if dtype == "auto":
        return table[gpu_default] if device.startswith("cuda") else torch.float32
    if dtype not in table:
        raise UsageError(f"unknown dtype '{dtype}' (--dtype); choose auto, fp32, fp16 or bf16")
    if table[dtype] == torch.float16 and device == "cpu":
        raise SafegenError("fp16 is not supported on the CPU here; use --dtype fp32 (or bf16)")
    return table[dtype]


def dtype_keyword(library: str) -> str:
    """The keyword ``library``'s ``from_pretrained`` takes a dtype under.

    transformers 5 and current diffusers call it ``dtype``; transformers 4.x and older
    diffusers ``torch_dtype`` (still accepted there, with a deprecation warning).
    """
    if library == "transformers":
        import transformers

        return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    if library == "diffusers":
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    raise ValueError(f"unknown library '{library}'; expected 'transformers' or 'diffusers'")
