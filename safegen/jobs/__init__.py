"""Jobs over many inputs: batch generation from prompt files (planning, runner, manifest) and captioning.

Importing this package imports none of its modules, so not torch either: a name loads its
module when first used, and readers of a finished run (``safegen batch --summary``,
:func:`read_manifest`) stay light. The modules: ``config``, ``plan``, ``resume``,
``generation``, ``writing``, ``manifest``, ``run_folder``, ``runner`` (batch generation),
``policy`` (flagged images), ``captioning`` (``safegen i2t``).

>>> from safegen.jobs import BatchConfig, run_batch
>>> result = run_batch(BatchConfig(prompts="prompts.csv", out="runs/a", preset="sd-1.4", batch_size=8))
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY = {
    "ON_UNSAFE": "safegen.jobs.policy",
    "BatchConfig": "safegen.jobs.config",
    "BatchResult": "safegen.jobs.config",
    "BatchRunner": "safegen.jobs.runner",
    "CaptionConfig": "safegen.jobs.captioning",
    "CaptionResult": "safegen.jobs.captioning",
    "Defaults": "safegen.jobs.plan",
    "GenSettings": "safegen.jobs.plan",
    "ImageJob": "safegen.jobs.plan",
    "PromptFile": "safegen.data.prompt_files",
    "PromptRow": "safegen.data.prompt_files",
    "RowError": "safegen.data.prompt_files",
    "apply_policy": "safegen.jobs.policy",
    "make_batches": "safegen.jobs.plan",
    "merge_manifests": "safegen.jobs.manifest",
    "plan_jobs": "safegen.jobs.plan",
    "read_manifest": "safegen.jobs.manifest",
    "read_prompts": "safegen.data.prompt_files",
    "repair_manifest": "safegen.jobs.manifest",
    "run_batch": "safegen.jobs.runner",
    "run_captioning": "safegen.jobs.captioning",
    "shard_jobs": "safegen.jobs.plan",
    "summarize": "safegen.jobs.run_folder",
    "txt_row_id": "safegen.data.prompt_files",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safegen.jobs' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
