"""What a batch run is asked to do (:class:`BatchConfig`) and what one process of it did (:class:`BatchResult`).

The config is checked once, in ``__post_init__``, with errors that name the field
(:class:`BatchConfigError`; the CLI names the flag instead); the resolved config is what
``run.json`` records. The result is what the CLI prints (and ``--json`` dumps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from safegen.core.checks import (
    ATTENTION_CHOICES,
    MAX_IMAGES,
    MAX_STEPS,
    check_attention,
    check_count,
    check_number,
    check_seed,
)
from safegen.core.devices import check_device
from safegen.core.errors import UsageError
from safegen.core.io import clip_text
from safegen.jobs.policy import ON_UNSAFE

ON_CHANGE = ("regenerate", "refuse")
ATTENTION = ATTENTION_CHOICES  # kept for importers; the checks use core/checks


class BatchConfigError(UsageError):
    """A :class:`BatchConfig` field that does not make a runnable request.

    ``field`` names it and ``reason`` says what is wrong and what to do; the message is
    "batch config: FIELD REASON" (the CLI says "--FLAG REASON" instead).
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"batch config: {field} {reason}")
        self.field = field
        self.reason = reason


def _check(name: str, check: Callable[[], object]) -> None:
    """Run one of core/checks' checks on field ``name``; its error becomes the field's.

    Those checks put the name they are given (or their flag) first, then the reason: the
    reason is kept, so the limits and their wording have one home.
    """
    try:
        check()
    except UsageError as exc:
        raise BatchConfigError(name, str(exc).split(" ", 1)[-1]) from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BatchConfigError(name, f"must be one of {', '.join(choices)}, got '{clip_text(str(value), 40)}'")


@dataclass
class BatchConfig:
    """Everything a batch run needs; saved (resolved) as ``run.json`` in the output folder."""

    prompts: str | Path = field(metadata={"help": "Prompt file: .txt, .jsonl or .csv."})
    out: str | Path = field(metadata={"help": "Output folder (images/, manifest.jsonl, run.json)."})
    preset: str | None = field(default=None, metadata={"help": "Named preset (see `safegen presets`)."})
    model: str | None = field(default=None, metadata={"help": "Base pipeline: hub id or folder."})
    safe_encoder: str | None = field(default=None, metadata={"help": "Safe-CLIP encoder; 'none' for the original."})
    activation: str | None = field(default=None, metadata={"help": "Activation of a bare open_clip encoder."})
    encoder_base: str | None = field(
        default=None, metadata={"help": "LoRA base CLIP, or open_clip model name, of the safe encoder (--base)."}
    )
    steps: int = field(default=30, metadata={"help": "Denoising steps (rows may override)."})
    guidance: float = field(default=7.5, metadata={"help": "Classifier-free guidance scale (rows may override)."})
    width: int | None = field(default=None, metadata={"help": "Image width; None: the model's default."})
    height: int | None = field(default=None, metadata={"help": "Image height; None: the model's default."})
    negative_prompt: str = field(default="", metadata={"help": "Negative prompt (rows may override)."})
    n: int = field(default=1, metadata={"help": "Images per prompt (rows may override)."})
    seed: int = field(default=0, metadata={"help": "Seed of rows without one; -1 picks one (recorded)."})
    batch_size: int = field(default=4, metadata={"help": "Images generated per pipeline call."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps."})
    dtype: str = field(default="auto", metadata={"help": "auto, fp32, fp16, bf16."})
    attention: str = field(default="auto", metadata={"help": "auto, sdpa, xformers, eager."})
    check: str | None = field(default=None, metadata={"help": "Output classifier name (e.g. nudenet)."})
    threshold: float | None = field(default=None, metadata={"help": "Classifier threshold; None: its default."})
    on_unsafe: str = field(default="keep", metadata={"help": "keep, blur, black or drop flagged images."})
    keep_flagged: bool = field(default=False, metadata={"help": "Save flagged originals under flagged/."})
    strict: bool = field(default=False, metadata={"help": "Stop at the first bad row."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N valid rows."})
    num_shards: int = field(default=1, metadata={"help": "Split the rows over this many independent jobs."})
    shard_index: int = field(default=0, metadata={"help": "Which shard this job runs (0-based)."})
    on_change: str = field(
        default="regenerate",
        metadata={"help": "Rows changed since the last run in this folder: regenerate them, or refuse to run."},
    )

    def __post_init__(self) -> None:
        # In the order `safegen batch` has always reported them (it names each field by its flag).
        bad = BatchConfigError
        _check_choice("on_unsafe", self.on_unsafe, ON_UNSAFE)
        needs_classifier = "needs a classifier to know what is unsafe: set check (--check NAME, e.g. nudenet)"
        if self.on_unsafe != "keep" and not self.check:
            raise bad("on_unsafe", f"'{self.on_unsafe}' {needs_classifier}")
        if self.keep_flagged and not self.check:
            raise bad("keep_flagged", needs_classifier)
        if self.num_shards < 1:
            raise bad("num_shards", f"must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            shards = f"one of the {self.num_shards} shards, counting from 0"
            raise bad("shard_index", f"must be in [0, {self.num_shards}) ({shards}), got {self.shard_index}")
        _check_choice("on_change", self.on_change, ON_CHANGE)
        _check("seed", lambda: check_seed(self.seed, "seed"))
        _check("guidance", lambda: check_number(self.guidance, "guidance"))
        _check("steps", lambda: check_count(self.steps, "steps", MAX_STEPS))
        _check("n", lambda: check_count(self.n, "n", MAX_IMAGES))
        _check("device", lambda: check_device(self.device))
        _check("attention", lambda: check_attention(self.attention))
        _check("threshold", lambda: check_number(self.threshold, "threshold", maximum=1.0))
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 8):
                raise bad(name, f"must be a positive multiple of 8, got {value}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise bad("limit", f"must be >= 1, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"], d["out"] = str(self.prompts), str(self.out)
        return d

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


@dataclass
class BatchResult:
    """What one process of a run did (the CLI prints it; ``--json`` dumps :meth:`to_dict`)."""

    out: str
    planned: int = 0  # images this shard owns
    skipped: int = 0  # reused: done by an earlier run with exactly the same inputs (content key)
    changed: int = 0  # images whose inputs changed since the last run (regenerated)
    changed_rows: int = 0
    generated: int = 0  # images made by this run (dropped ones included)
    failed: int = 0  # images whose generation or writing failed
    bad_rows: int = 0
    flagged: int = 0
    dropped: int = 0
    encoded_prompts: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    write_seconds: float = 0.0  # writer-thread busy time (overlapped with generation)
    stall_seconds: float = 0.0  # time generation waited for the writer
    interrupted: bool = False
    signal: int | None = None
    shard_index: int = 0
    num_shards: int = 1
    merged: bool = False
    errors_log: str | None = None
    errors: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # {id, seed, line, reason} per failed image

    @property
    def remaining(self) -> int:
        return self.planned - self.skipped - self.generated

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["remaining"] = self.remaining
        return d
