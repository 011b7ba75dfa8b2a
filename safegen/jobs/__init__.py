"""Batch generation from prompt files: readers, job planning, the runner and its manifest.

Importing this package does not import torch; the runner loads the heavy stacks when it runs.

>>> from safegen.jobs import BatchConfig, run_batch
>>> result = run_batch(BatchConfig(prompts="prompts.csv", out="runs/a", preset="sd-1.4", batch_size=8))
"""

from __future__ import annotations

from safegen.data.prompt_files import PromptFile, PromptRow, RowError, read_prompts, txt_row_id
from safegen.jobs.config import BatchConfig, BatchResult
from safegen.jobs.manifest import merge_manifests, read_manifest, repair_manifest
from safegen.jobs.plan import Defaults, GenSettings, ImageJob, make_batches, plan_jobs, shard_jobs
from safegen.jobs.policy import ON_UNSAFE, apply_policy
from safegen.jobs.run_folder import summarize
from safegen.jobs.runner import BatchRunner, run_batch

__all__ = [
    "ON_UNSAFE",
    "BatchConfig",
    "BatchResult",
    "BatchRunner",
    "Defaults",
    "GenSettings",
    "ImageJob",
    "PromptFile",
    "PromptRow",
    "RowError",
    "apply_policy",
    "make_batches",
    "merge_manifests",
    "plan_jobs",
    "read_manifest",
    "read_prompts",
    "repair_manifest",
    "run_batch",
    "shard_jobs",
    "summarize",
    "txt_row_id",
]
