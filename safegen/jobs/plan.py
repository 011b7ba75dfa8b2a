"""From prompt rows to image jobs, shards and batches.

Why it matters: an image is identified by its row id and seed, so a resumed or sharded
run can tell what is done; a batch only mixes images whose generation settings match,
so batching changes speed, never results (each image draws its noise from its own
generator seeded with its own seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from safegen.core.io import path_inside, sanitize_stem
from safegen.data.prompt_files import PromptRow, read_prompts

if TYPE_CHECKING:
    from safegen.jobs.config import BatchConfig

_logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
FLAGGED_DIR = "flagged"


@dataclass(frozen=True)
class GenSettings:
    """Everything besides prompt and seed that shapes an image; rows sharing it can be batched."""

    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "negative_prompt": self.negative_prompt,
        }


@dataclass(frozen=True)
class Defaults:
    """Run-wide values for whatever a row leaves out."""

    steps: int = 30
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    negative_prompt: str = ""
    n: int = 1
    seed: int = 0


@dataclass
class ImageJob:
    """One image to make: which row, which seed, which settings, which file."""

    id: str
    prompt: str
    seed: int
    index: int  # image number within its row (seed = row seed + index)
    settings: GenSettings
    file: str  # path relative to the output folder
    line: int
    ordinal: int  # position of the row among the file's valid rows (sharding key)
    meta: dict[str, Any] = field(default_factory=dict)
    content_key: str = ""  # hash of everything that determines the image (see content_key())

    @property
    def key(self) -> str:
        """The job's identity (row id and seed): which manifest line it owns."""
        return job_key(self.id, self.seed)

    def determinants(self) -> dict[str, Any]:
        """The job's own inputs that decide its pixels (the run adds model fingerprints and the scheduler)."""
        return {"prompt": self.prompt, "seed": self.seed, **self.settings.to_dict()}


def job_key(row_id: str, seed: int) -> str:
    """The identity of an image across runs: its row id and its seed."""
    return f"{row_id}\x1f{seed}"


def content_key(determinants: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    """SHA-256 over a job's inputs and the run's context (model fingerprints, scheduler, ...).

    Two images share a key only when every input that decides their pixels is the same, so a
    resumed run can trust a finished image exactly when its recorded key equals the new one.
    """
    payload = {"v": 1, **(context or {}), **determinants}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_stem(row_id: str) -> str:
    """A file-name stem for an id: sanitised, plus a short hash when sanitising changed it.

    The hash keeps ids like ``a/b`` and ``a_b`` (or long ids cut to the same prefix) apart.
    """
    stem = sanitize_stem(row_id, fallback="row")
    if stem != row_id:
        stem = f"{stem}-{hashlib.sha1(row_id.encode('utf-8')).hexdigest()[:8]}"
    return stem


def image_name(row_id: str, seed: int) -> str:
    return f"{file_stem(row_id)}_s{seed}.png"


def plan_jobs(
    rows: Sequence[PromptRow], defaults: Defaults, root: Any = None, context: dict[str, Any] | None = None
) -> list[ImageJob]:
    """Expand rows into image jobs (``n`` per row, seeds ``seed, seed+1, ...``), in file order.

    ``root`` (the output folder), when given, is used to check every file path stays inside it.
    ``context`` (model fingerprints, scheduler, ...) goes into every job's :func:`content_key`.
    """
    jobs: list[ImageJob] = []
    for ordinal, row in enumerate(rows):
        settings = GenSettings(
            steps=row.steps if row.steps is not None else defaults.steps,
            guidance=row.guidance if row.guidance is not None else defaults.guidance,
            width=row.width if row.width is not None else defaults.width,
            height=row.height if row.height is not None else defaults.height,
            negative_prompt=row.negative_prompt if row.negative_prompt is not None else defaults.negative_prompt,
        )
        base_seed = row.seed if row.seed is not None else defaults.seed
        for index in range(row.n if row.n is not None else defaults.n):
            seed = base_seed + index
            rel = f"{IMAGES_DIR}/{image_name(row.id, seed)}"
            if root is not None:
                path_inside(root, rel)  # raises if an id could ever escape the folder
            jobs.append(
                ImageJob(
                    id=row.id,
                    prompt=row.prompt,
                    seed=seed,
                    index=index,
                    settings=settings,
                    file=rel,
                    line=row.line,
                    ordinal=ordinal,
                    meta=row.meta,
                )
            )
            jobs[-1].content_key = content_key(jobs[-1].determinants(), context)
    return jobs


def shard_jobs(jobs: Iterable[ImageJob], num_shards: int, shard_index: int) -> list[ImageJob]:
    """The jobs of one shard: rows dealt round-robin by their position in the file.

    Sharding by row position (not by what is left to do) keeps shards disjoint even when
    processes start at different times and see different progress.
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {shard_index}")
    return [j for j in jobs if j.ordinal % num_shards == shard_index]


def make_batches(jobs: Iterable[ImageJob], batch_size: int) -> list[list[ImageJob]]:
    """Group jobs with identical settings into batches of at most ``batch_size``.

    Groups appear in the order of their first job, so progress follows the file order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[GenSettings, list[ImageJob]] = {}
    for job in jobs:
        groups.setdefault(job.settings, []).append(job)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            batches.append(group[start : start + batch_size])
    return batches


@dataclass
class RunPreview:
    """What a batch run of a prompt file would make, counted without a model (``safegen batch --dry-run``)."""

    rows: int
    bad_rows: int
    images: int
    warnings: list[str]
    errors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preview_run(config: BatchConfig) -> RunPreview:
    """What a run of ``config`` would make, counted without a model: its prompt file read, its images planned.

    The rows are the ones the runner takes (``strict``, ``limit``). Only the count matters
    here, so a size left to the model counts as any, and seed -1 (picked at run time) as 0.
    """
    prompt_file = read_prompts(config.prompts, strict=config.strict)
    rows = prompt_file.rows[: config.limit] if config.limit else prompt_file.rows
    defaults = Defaults(n=config.n, seed=max(config.seed, 0), width=config.width or 8, height=config.height or 8)
    jobs = plan_jobs(rows, defaults, config.out)
    return RunPreview(
        rows=len(rows),
        bad_rows=len(prompt_file.errors),
        images=len(jobs),
        warnings=prompt_file.warnings,
        errors=[str(e) for e in prompt_file.errors],
    )
