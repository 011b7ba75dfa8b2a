"""The batch runner: prompt file in, images + manifest out; resumable, shardable, measured.

Why it is built this way:

- Resumable, and bound to its inputs: an image is recorded in the manifest only after its
  PNG is in place (atomic rename), with a content key over everything that decides its
  pixels (prompt, negative prompt, seed, steps, guidance, size, scheduler, and content
  fingerprints of the base model and the safe encoder). A re-run reuses an image only
  when its key matches exactly; rows that changed since (an edited prompt, new weights in
  the same folder, another file with the same ids) are regenerated and reported, or
  refused with ``on_change="refuse"``. A SIGKILL loses only the batch being generated and
  the one being written, never leaves a half file or a broken manifest line.
- One process per folder (per shard): a second run on the same ``--out`` is refused with
  the holder's pid and host (:mod:`safegen.core.locking`).
- Fast: rows with the same settings are batched, each image keeps its own CPU generator
  (so it is the same alone or in a batch), prompts are encoded once and cached, and PNG
  encoding, hashing, safety checks and writes run on a writer thread while the next
  batch is generated.
- Shardable: under torchrun/``accelerate launch`` each process takes every N-th row
  and appends to its own manifest part; rank 0 merges the parts at the end. Scheduler
  arrays use ``num_shards``/``shard_index`` the same way.

Python use, without the CLI::

    from safegen.jobs import BatchConfig, run_batch
    result = run_batch(BatchConfig(prompts="i2p.csv", out="runs/i2p", preset="sd-1.4", batch_size=8))
    print(result.images_per_s, result.flagged)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError, UsageError
from safegen.core.io import atomic_write_bytes, atomic_write_json, clip_text, path_inside, png_bytes
from safegen.core.locking import FolderLock
from safegen.core.seeds import MAX_SEED, is_valid_seed, random_seed
from safegen.data.prompt_files import PromptFile, read_prompts
from safegen.jobs.manifest import ManifestWriter, merge_manifests, part_name, read_jsonl, read_manifest
from safegen.jobs.plan import FLAGGED_DIR, IMAGES_DIR, Defaults, ImageJob, make_batches, plan_jobs, shard_jobs
from safegen.jobs.policy import ON_UNSAFE, apply_policy

_logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
BATCH_COMMAND = "safegen batch"  # what the output marker of a batch folder names
RUNS_LOG = "runs.jsonl"
ERRORS_LOG = "errors.log"
MAX_STEPS = 10_000
MAX_IMAGES = 10_000
ON_CHANGE = ("regenerate", "refuse")
ATTENTION = ("auto", "sdpa", "xformers", "eager")
# Manifest fields compared to say *what* changed in a row since the last run.
_DIFF_FIELDS = (
    ("prompt", "prompt"),
    ("negative_prompt", "negative prompt"),
    ("steps", "steps"),
    ("guidance", "guidance"),
    ("width", "size"),
    ("height", "size"),
    ("scheduler", "scheduler"),
    ("base_fingerprint", "base model weights"),
    ("safe_encoder_fingerprint", "safe encoder weights"),
)


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
        def bad(name: str, why: str) -> SafegenError:
            return UsageError(f"batch config: {name} {why}")

        if not 1 <= self.steps <= MAX_STEPS:
            raise bad("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise bad("guidance", f"must be a finite number >= 0, got {self.guidance}")
        if self.threshold is not None and (not math.isfinite(self.threshold) or not 0 <= self.threshold <= 1):
            raise bad("threshold", f"must be a number in [0, 1], got {self.threshold}")
        if self.on_change not in ON_CHANGE:
            raise bad("on_change", f"must be one of {', '.join(ON_CHANGE)}, got '{self.on_change}'")
        if self.attention not in ATTENTION:
            raise bad("attention", f"must be one of {', '.join(ATTENTION)}, got '{clip_text(self.attention, 40)}'")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 8):
                raise bad(name, f"must be a positive multiple of 8, got {value}")
        if not 1 <= self.n <= MAX_IMAGES:
            raise bad("n", f"must be between 1 and {MAX_IMAGES}, got {self.n}")
        if not is_valid_seed(self.seed):
            raise bad("seed", f"must be -1 or in [0, 2**63), got {self.seed}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.on_unsafe not in ON_UNSAFE:
            raise bad("on_unsafe", f"must be one of {', '.join(ON_UNSAFE)}, got '{self.on_unsafe}'")
        if self.on_unsafe != "keep" and not self.check:
            raise bad("on_unsafe", f"'{self.on_unsafe}' needs a classifier: pass check (--check NAME)")
        if self.keep_flagged and not self.check:
            raise bad("keep_flagged", "needs a classifier: pass check (--check NAME)")
        if self.limit is not None and self.limit < 1:
            raise bad("limit", f"must be >= 1, got {self.limit}")
        if self.num_shards < 1:
            raise bad("num_shards", f"must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise bad("shard_index", f"must be in [0, {self.num_shards}), got {self.shard_index}")

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


def package_versions() -> dict[str, str]:
    """Versions that decide what a run produces, for run.json."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("safegen", "torch", "diffusers", "transformers", "accelerate", "pillow", "numpy", "nudenet"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _PromptCache:
    """Encodes each distinct (prompt, negative prompt) once and keeps the embeddings (LRU)."""

    def __init__(self, pipe: Any, device: Any, max_items: int = 1024):
        self.pipe, self.device, self.max_items = pipe, device, max_items
        self._cache: OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = OrderedDict()
        self.encoded = 0

    def embeddings(self, prompts: Sequence[str], negative: str, cfg: bool) -> dict[str, Any]:
        import torch

        parts = []
        for prompt in prompts:
            key = (prompt, negative, cfg)
            hit = self._cache.get(key)
            if hit is None:
                with torch.no_grad():
                    hit = tuple(
                        self.pipe.encode_prompt(
                            prompt=prompt,
                            device=self.device,
                            num_images_per_prompt=1,
                            do_classifier_free_guidance=cfg,
                            negative_prompt=negative,
                        )
                    )
                self.encoded += 1
                self._cache[key] = hit
                if len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            parts.append(hit)
        names = ["prompt_embeds", "negative_prompt_embeds"]
        if len(parts[0]) == 4:  # SDXL: pooled embeddings too
            names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        kwargs = {}
        for i, name in enumerate(names):
            if parts[0][i] is not None:
                kwargs[name] = torch.cat([p[i] for p in parts])  # (B, T, D) or (B, D)
        return kwargs


class _Writer(threading.Thread):
    """Classifies, encodes, writes and records one batch while the next is generated.

    At most one batch waits here: ``submit`` blocks until the previous one is on disk, so
    a kill never loses more than the batch being written and the one being generated.
    """

    def __init__(self, runner: BatchRunner, manifest: ManifestWriter):
        super().__init__(name="safegen-batch-writer", daemon=True)
        self.runner, self.manifest = runner, manifest
        self._queue: queue.Queue = queue.Queue()
        self._free = threading.Semaphore(1)
        self.error: BaseException | None = None
        self.busy = 0.0
        self.written = self.flagged = self.dropped = 0

    def submit(self, jobs: list[ImageJob], images: list[Any]) -> float:
        """Hand a batch over; returns the seconds spent waiting for the previous one."""
        start = time.perf_counter()
        self._free.acquire()
        waited = time.perf_counter() - start
        if self.error is not None:
            self._free.release()
            raise self.error
        self._queue.put((jobs, images))
        return waited

    def drain(self) -> float:
        """Wait until everything submitted is on disk; re-raise a writer failure."""
        start = time.perf_counter()
        self._free.acquire()
        self._free.release()
        if self.error is not None:
            raise self.error
        return time.perf_counter() - start

    def stop(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            start = time.perf_counter()
            try:
                if self.error is None:
                    self._write_batch(*item)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                self.busy += time.perf_counter() - start
                self._free.release()

    def _write_batch(self, jobs: list[ImageJob], images: list[Any]) -> None:
        r = self.runner
        verdicts = r.classifier.classify(images) if r.classifier is not None else [None] * len(images)
        if len(verdicts) != len(images):
            raise SafegenError(
                f"classifier '{r.config.check}' returned {len(verdicts)} results for {len(images)} images"
            )
        records = []
        for job, image, verdict in zip(jobs, images, verdicts, strict=True):
            unsafe = bool(verdict.unsafe) if verdict is not None else False
            out_image, decision = apply_policy(image, unsafe, r.config.on_unsafe)
            params = r.png_params(job)
            record = r.base_record(job)
            record["decision"] = decision
            record["safety"] = None
            if verdict is not None:
                record["safety"] = {"classifier": r.config.check, **verdict.to_dict()}
                params["safety"] = {"classifier": r.config.check, "unsafe": unsafe, "decision": decision}
            if unsafe and r.config.keep_flagged and decision != "keep":
                data = png_bytes(image, params)
                rel = f"{FLAGGED_DIR}/{Path(job.file).name}"
                atomic_write_bytes(path_inside(r.out, rel), data)
                record["flagged_file"] = rel
            if out_image is None:
                record["file"], record["sha256"] = None, None
                self.dropped += 1
            else:
                data = png_bytes(out_image, params)
                atomic_write_bytes(path_inside(r.out, job.file), data)
                record["sha256"] = hashlib.sha256(data).hexdigest()
            self.flagged += int(unsafe)
            records.append(record)
        self.manifest.append(records)
        self.written += len(records)


class BatchRunner:
    """Runs one process's share of a batch job (see the module docstring).

    Args:
        config: the run's settings.
        pipe: an already loaded text-to-image pipeline; None loads it from ``config``.
        classifier: an :class:`~safegen.safety.OutputClassifier`; None loads ``config.check``.
        progress: called after every batch with ``(done_images, total_images)`` of this shard.
        handle_signals: stop gracefully on SIGINT/SIGTERM (only from the main thread).
        call_kwargs: extra keyword arguments for every pipeline call (e.g. Safe Latent
            Diffusion's ``sld_*`` settings when ``safegen eval`` runs it as a baseline); part of
            the settings a resumed run must repeat.
        record_extra: fields added to every manifest line (e.g. ``{"method": "safe-clip"}``).
    """

    def __init__(
        self,
        config: BatchConfig,
        *,
        pipe: Any = None,
        classifier: Any = None,
        progress: Callable[[int, int], None] | None = None,
        handle_signals: bool = True,
        call_kwargs: dict[str, Any] | None = None,
        record_extra: dict[str, Any] | None = None,
    ):
        self.config = config
        self.call_kwargs = dict(call_kwargs or {})
        self.record_extra = dict(record_extra or {})
        self.out = Path(config.out).resolve()
        self.pipe = pipe
        self.classifier = classifier
        self.progress = progress
        self.handle_signals = handle_signals
        self.prompt_file: PromptFile | None = None
        self._stop_signal: int | None = None
        self._state: Any = None  # accelerate PartialState under torchrun/accelerate
        self.base_id: str | None = None
        self.safe_id: str | None = None
        self.seed = config.seed
        self.resolved: dict[str, Any] = {}
        self.base_fingerprint: str | None = None
        self.safe_fingerprint: str | None = None
        self.scheduler_signature: str | None = None
        self.jobs: list[ImageJob] = []  # this shard's jobs, with their content keys (after run())
        self.all_jobs: list[ImageJob] = []  # every shard's jobs (same keys in every process)

    # ----------------------------------------------------------------- setup
    def _distributed(self, device: str) -> tuple[int, int]:
        """(process index, process count), starting the process group under torchrun/accelerate."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        from datetime import timedelta

        from accelerate import PartialState

        # Long timeout: shards may finish hours apart and meet only at the final barrier.
        self._state = PartialState(cpu=device == "cpu", timeout=timedelta(hours=48))
        return self._state.process_index, self._state.num_processes

    def _shard(self, rank: int, world: int) -> tuple[int, int]:
        """Global (index, count): scheduler shards split further over the processes of each."""
        return self.config.shard_index * world + rank, self.config.num_shards * world

    def _load(self, device: str) -> None:
        from safegen.pipelines.loading import resolve_t2i_sources

        cfg = self.config
        from safegen.core.fingerprint import fingerprint_pipeline, fingerprint_source

        if self.pipe is None:
            from safegen.core.devices import resolve_dtype
            from safegen.pipelines.loading import load_t2i_pipeline

            sources = resolve_t2i_sources(cfg.preset, cfg.model, cfg.safe_encoder)
            dtype = resolve_dtype(cfg.dtype, device)
            enc_kwargs = {"activation": cfg.activation, "base": cfg.encoder_base}
            self.pipe = load_t2i_pipeline(
                sources.base,
                sources.safe_encoder,
                device=device,
                torch_dtype=dtype,
                attention=cfg.attention,
                safe_encoder_kwargs={k: v for k, v in enc_kwargs.items() if v is not None},
            )
            self.base_id, self.safe_id = sources.base, getattr(self.pipe, "safe_encoder_id", sources.safe_encoder)
            self.base_fingerprint = fingerprint_source(sources.base)
            self.safe_fingerprint = fingerprint_source(sources.safe_encoder)
        else:
            base = cfg.model or getattr(getattr(self.pipe, "config", None), "_name_or_path", None)
            self.base_id = str(base) if base else type(self.pipe).__name__
            self.safe_id = getattr(self.pipe, "safe_encoder_id", None)
            self.base_fingerprint, self.safe_fingerprint = fingerprint_pipeline(self.pipe, cfg.model)
        scheduler = getattr(self.pipe, "scheduler", None)
        sched_config = dict(getattr(scheduler, "config", None) or {})
        sched_text = json.dumps(sched_config, sort_keys=True, default=str)
        self.scheduler_signature = f"{type(scheduler).__name__}:{hashlib.sha256(sched_text.encode()).hexdigest()[:16]}"
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)
        if self.classifier is None and cfg.check:
            from safegen.safety import load_classifier

            options = {} if cfg.threshold is None else {"threshold": cfg.threshold}
            self.classifier = load_classifier(cfg.check, **options)

    def _default_size(self) -> tuple[int, int]:
        unet = getattr(self.pipe, "unet", None)
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        side = int(unet.config.sample_size) * int(scale) if unet is not None else 512
        return self.config.width or side, self.config.height or side

    def key_context(self) -> dict[str, Any]:
        """What every image of this run shares that decides its pixels (part of each content key)."""
        cfg = self.config
        return {
            "base": self.base_fingerprint,
            "safe_encoder": self.safe_fingerprint,
            "scheduler": self.scheduler_signature,
            "call_kwargs": self.call_kwargs,
            # The written file depends on the policy too (a blurred image is another image).
            "check": cfg.check,
            "threshold": cfg.threshold,
            "on_unsafe": cfg.on_unsafe,
            # How an open_clip checkpoint or LoRA adapter is read changes the encoder built from
            # the same files; only recorded when given, so other runs keep their keys.
            **{k: v for k, v in (("activation", cfg.activation), ("encoder_base", cfg.encoder_base)) if v},
        }

    def _record_ok(self, record: dict[str, Any]) -> bool:
        """A manifest line whose image is still there (or was dropped on purpose), inside the folder."""
        if record.get("file") is None:
            return record.get("decision") == "drop"
        try:
            return path_inside(self.out, str(record["file"])).is_file()
        except (ValueError, OSError):
            return False

    def _resume_plan(self, jobs: list[ImageJob]) -> tuple[list[ImageJob], int, list[tuple[ImageJob, list[str]]]]:
        """(jobs to generate, images reused, jobs whose inputs changed and what changed)."""
        latest = {(str(r["id"]), int(r["seed"])): r for r in read_manifest(self.out)}
        todo: list[ImageJob] = []
        changed: list[tuple[ImageJob, list[str]]] = []
        reused = 0
        for job in jobs:
            rec = latest.get((job.id, job.seed))
            if rec is None:
                todo.append(job)
                continue
            if rec.get("content_key") == job.content_key:
                if self._record_ok(rec):
                    reused += 1
                else:
                    todo.append(job)  # same inputs, file gone: redo silently
                continue
            changed.append((job, self._what_changed(rec, job)))
            todo.append(job)
        return todo, reused, changed

    def _what_changed(self, record: dict[str, Any], job: ImageJob) -> list[str]:
        if not record.get("content_key"):
            return ["made before content keys (older safegen)"]
        now = {
            **job.determinants(),
            "scheduler": self.scheduler_signature,
            "base_fingerprint": self.base_fingerprint,
            "safe_encoder_fingerprint": self.safe_fingerprint,
        }
        if "scheduler_signature" in record:
            record = {**record, "scheduler": record["scheduler_signature"]}
        found: list[str] = []
        for key, label in _DIFF_FIELDS:
            if record.get(key) != now.get(key) and label not in found:
                found.append(label)
        return found or ["classifier or call settings"]

    def _report_changes(self, changed: list[tuple[ImageJob, list[str]]], result: BatchResult) -> None:
        if not changed:
            return
        rows = {(j.id, j.line) for j, _ in changed}
        reasons: list[str] = []
        for _, why in changed:
            reasons += [w for w in why if w not in reasons]
        first = changed[0][0]
        where = f"{self.config.prompts}:{first.line} id '{clip_text(first.id, 60)}'"
        if self.config.on_change == "refuse":
            raise UsageError(
                f"{len(rows)} row(s) changed since the last run in {self.out} ({', '.join(reasons)}; first: {where}); "
                "--on-change refuse keeps finished runs unchanged: restore the inputs, pick a new --out, "
                "or re-run with --on-change regenerate"
            )
        result.changed, result.changed_rows = len(changed), len(rows)
        _logger.warning(
            "%d row(s) changed since the last run (%s; first: %s): regenerated", len(rows), ", ".join(reasons), where
        )

    def _read_previous(self) -> dict[str, Any] | None:
        """The last run.json, or None; a corrupt one is reported and set aside (the manifest keys decide reuse)."""
        path = self.out / RUN_JSON
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
                raise ValueError("not a JSON object with a 'config' object")
            return data
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            _logger.warning(
                "%s is unreadable (%s); starting a fresh record of this run (finished images are still "
                "reused when their content keys match)",
                path,
                clip_text(str(exc), 120),
            )
            return None

    def png_params(self, job: ImageJob) -> dict[str, Any]:
        """The PNG ``parameters``/``safegen`` chunk of an image."""
        s = job.settings
        return {
            "id": job.id,
            "prompt": job.prompt,
            "negative_prompt": s.negative_prompt,
            "seed": job.seed,
            "steps": s.steps,
            "guidance": s.guidance,
            "size": f"{s.width}x{s.height}",
            "model": self.base_id,
            "safe_encoder": self.safe_id,
            "scheduler": self.resolved.get("scheduler"),
            "base_fingerprint": self.base_fingerprint,
            "safe_encoder_fingerprint": self.safe_fingerprint,
            "content_key": job.content_key,
        }

    def base_record(self, job: ImageJob) -> dict[str, Any]:
        """A manifest line without the safety part."""
        return {
            "id": job.id,
            "prompt": job.prompt,
            "seed": job.seed,
            "index": job.index,
            **job.settings.to_dict(),
            "base": self.base_id,
            "safe_encoder": self.safe_id,
            "scheduler": self.resolved.get("scheduler"),
            "scheduler_signature": self.scheduler_signature,
            "base_fingerprint": self.base_fingerprint,
            "safe_encoder_fingerprint": self.safe_fingerprint,
            "content_key": job.content_key,
            "file": job.file,
            "line": job.line,
            "meta": job.meta,
            "shard": self.resolved.get("shard_index", 0),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.record_extra,
        }

    def _clean_temp_files(self, names: set[str]) -> None:
        """Delete temp files a killed run of this shard left (never another shard's)."""
        for folder in (self.out / IMAGES_DIR, self.out / FLAGGED_DIR):
            for tmp in folder.glob(".*.tmp"):
                target = tmp.name[1:-4].rsplit(".", 1)[0]
                if target in names:
                    tmp.unlink(missing_ok=True)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: finishing the current batch, then stopping "
            "(Ctrl-C again to abort at once)\n"
        )
        sys.stderr.flush()

    # ------------------------------------------------------------------- run
    def run(self) -> BatchResult:
        """Generate everything not yet done for this process's shard; see :class:`BatchResult`.

        Everything that can be checked without a model is checked first (output folder,
        device, prompt file, the folder lock), so a mistake costs no model load.
        """
        cfg = self.config
        from safegen.core.devices import resolve_device
        from safegen.core.output_folder import check_output_folder, claim_output_folder

        check_output_folder(self.out, BATCH_COMMAND)  # before the lock: a user's folder gets no lock file
        device = resolve_device(cfg.device)
        rank, world = self._distributed(device)
        if self._state is not None and device != "cpu":
            device = str(self._state.device)
        shard_index, num_shards = self._shard(rank, world)
        result = BatchResult(out=str(self.out), shard_index=shard_index, num_shards=num_shards)
        locks = self._lock(shard_index, num_shards)
        try:
            claim_output_folder(self.out, BATCH_COMMAND)
            self._run_locked(result, device, world, shard_index, num_shards)
        finally:
            for lock in reversed(locks):
                lock.release()
        return result

    def _lock(self, shard_index: int, num_shards: int) -> list[FolderLock]:
        """This process's locks: the whole folder, or its shard (plus every shard's when unsharded).

        Shards of one run share the folder by design, each holding its own shard lock; an
        unsharded run (which merges the shard manifests) also takes every shard lock it finds,
        so it never runs beside a live shard.
        """
        if num_shards > 1:
            name = f".safegen.shard-{shard_index:05d}-of-{num_shards:05d}.lock"
            return [FolderLock(self.out, purpose=f"batch output folder (shard {shard_index})", name=name).acquire()]
        return lock_run_folder(self.out)

    def _run_locked(self, result: BatchResult, device: str, world: int, shard_index: int, num_shards: int) -> None:
        cfg = self.config
        # Read the prompts first: a bad file fails fast, before any model loads.
        self.prompt_file = read_prompts(cfg.prompts, strict=cfg.strict)
        rows = self.prompt_file.rows[: cfg.limit] if cfg.limit else self.prompt_file.rows
        result.bad_rows = len(self.prompt_file.errors)
        result.errors = [clip_text(str(e), 500) for e in self.prompt_file.errors[:20]]

        previous = self._read_previous()
        if cfg.seed == -1:
            old_seed = (previous or {}).get("config", {}).get("seed")
            self.seed = int(old_seed) if isinstance(old_seed, int) and 0 <= old_seed <= MAX_SEED else None
            if self.seed is None:
                self.seed = random_seed()

        self._load(device)
        width, height = self._default_size()
        self.resolved = {
            **cfg.to_dict(),
            "prompts": str(Path(cfg.prompts).resolve()),
            "out": str(self.out),
            "base": self.base_id,
            "safe_encoder": self.safe_id,
            "width": width,
            "height": height,
            "seed": self.seed,
            "device": device,
            "scheduler": type(getattr(self.pipe, "scheduler", None)).__name__,
            "call_kwargs": self.call_kwargs,
            "num_processes": world,
            "shard_index": shard_index,
            "total_shards": num_shards,
        }
        defaults = Defaults(
            steps=cfg.steps,
            guidance=cfg.guidance,
            width=width,
            height=height,
            negative_prompt=cfg.negative_prompt,
            n=cfg.n,
            seed=self.seed,
        )
        all_jobs = plan_jobs(rows, defaults, root=self.out, context=self.key_context())
        if num_shards == 1:
            merge_manifests(self.out)  # parts left by an earlier sharded run
            merge_error_logs(self.out)
        mine = shard_jobs(all_jobs, num_shards, shard_index)
        self.jobs, self.all_jobs = mine, all_jobs
        result.planned = len(mine)
        todo, result.skipped, changed = self._resume_plan(mine)
        if cfg.on_change == "refuse" and num_shards > 1:
            # Every shard decides on the whole plan, so they refuse together: none is left
            # waiting at the final barrier for a shard that stopped.
            changed = self._resume_plan(all_jobs)[2]
        self._report_changes(changed, result)  # raises before any write with on_change="refuse"

        prompt_sha = hashlib.sha256(Path(cfg.prompts).read_bytes()).hexdigest()
        self._run_info = {
            "prompts": self.resolved["prompts"],
            "prompt_file_sha256": prompt_sha,
            "fingerprints": {"base": self.base_fingerprint, "safe_encoder": self.safe_fingerprint},
            "scheduler": self.scheduler_signature,
        }
        if previous is None or shard_index == 0:
            atomic_write_json(
                self.out / RUN_JSON,
                {
                    "config": self.resolved,
                    "prompt_file_sha256": prompt_sha,
                    "fingerprints": {
                        "base": self.base_fingerprint,
                        "safe_encoder": self.safe_fingerprint,
                        "scheduler": self.scheduler_signature,
                    },
                    "rows": len(rows),
                    "bad_rows": result.bad_rows,
                    "planned_images": len(all_jobs),
                    "changed_images": result.changed,
                    "classifier": self.classifier.describe() if self.classifier is not None else None,
                    "versions": package_versions(),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
            )
        errors_name = ERRORS_LOG if num_shards == 1 else f"errors.shard-{shard_index:05d}-of-{num_shards:05d}.log"
        errors_path = self.out / errors_name
        log_lines = [f"# run started {datetime.now(timezone.utc).isoformat(timespec='seconds')}"]
        if shard_index == 0:
            log_lines += [f"warning: {w}" for w in self.prompt_file.warnings]
            log_lines += [str(e) for e in self.prompt_file.errors]
        if changed:
            log_lines.append(f"# {result.changed_rows} row(s) changed since the last run: regenerated")
            log_lines += [
                f"{cfg.prompts}:{j.line}: id '{clip_text(j.id, 60)}' seed {j.seed}: changed ({', '.join(w)})"
                for j, w in changed
            ]
        with open(errors_path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(log_lines) + "\n")
        self._clean_temp_files({Path(j.file).name for j in mine})
        if result.skipped:
            _logger.info("resuming: %d of %d images already done with the same inputs", result.skipped, len(mine))

        start = time.perf_counter()
        manifest = ManifestWriter(self.out / part_name(shard_index, num_shards))
        writer = _Writer(self, manifest)
        writer.start()
        cache = _PromptCache(self.pipe, device)
        previous_handlers = self._install_signals()
        errors_log = open(errors_path, "a", encoding="utf-8")
        submitted = 0
        try:
            for batch in make_batches(todo, cfg.batch_size):
                if self._stop_signal is not None:
                    break
                try:
                    pieces = [(batch, self._generate(batch, cache))]
                except Exception as exc:  # retried row by row: one bad row must not take its batch with it
                    if cfg.strict:
                        raise
                    if len(batch) > 1:
                        _logger.warning("batch of %d failed (%s); retrying its rows one by one", len(batch), exc)
                    pieces = []
                    for job in batch:
                        try:
                            if len(batch) == 1:
                                raise exc  # a single row already failed alone
                            pieces.append(([job], self._generate([job], cache)))
                        except Exception as row_exc:
                            result.failed += 1
                            reason = f"generation failed: {clip_text(str(row_exc), 300)}"
                            line = f"{cfg.prompts}:{job.line}: id '{clip_text(job.id, 60)}' seed {job.seed}: {reason}"
                            errors_log.write(line + "\n")
                            result.failures.append(
                                {"id": job.id, "seed": job.seed, "line": job.line, "reason": reason}
                            )
                            if len(result.errors) < 20:
                                result.errors.append(line)
                            _logger.error("%s", line)
                    errors_log.flush()
                for jobs, images in pieces:
                    result.stall_seconds += writer.submit(jobs, images)
                    submitted += len(jobs)
                if self.progress is not None:
                    self.progress(result.skipped + submitted, len(mine))
            result.stall_seconds += writer.drain()
        finally:
            writer.stop()
            manifest.close()
            self._restore_signals(previous_handlers)
            errors_log.close()
        result.seconds = time.perf_counter() - start
        result.generated, result.flagged, result.dropped = writer.written, writer.flagged, writer.dropped
        result.encoded_prompts = cache.encoded
        result.write_seconds = writer.busy
        result.images_per_s = writer.written / result.seconds if result.seconds > 0 else 0.0
        result.errors_log = str(errors_path)
        if self._stop_signal is not None:
            result.interrupted, result.signal = True, self._stop_signal
        self._log_run(result)
        self._finish_shards(result)

    def current_records(self) -> list[dict[str, Any]]:
        """Manifest lines of the run's images made with exactly this run's inputs (after :meth:`run`).

        Every shard's images count (the keys are the same in every process). Stale lines (a row
        edited since, other weights) are left out: reports built from these count only images
        that match the current configuration.
        """
        wanted = {(j.id, j.seed): j.content_key for j in self.all_jobs}
        return [
            r
            for r in read_manifest(self.out)
            if wanted.get((str(r["id"]), int(r["seed"]))) == r.get("content_key") and self._record_ok(r)
        ]

    def _generate(self, batch: list[ImageJob], cache: _PromptCache) -> list[Any]:
        import torch

        s = batch[0].settings
        unet = getattr(self.pipe, "unet", None)
        cfg_on = s.guidance > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is None
        if hasattr(self.pipe, "encode_prompt"):
            kwargs = cache.embeddings([j.prompt for j in batch], s.negative_prompt, cfg_on)
        else:  # pipelines without prompt_embeds (diffusers' deprecated SLD) take the text itself
            kwargs = {"prompt": [j.prompt for j in batch]}
            if s.negative_prompt:
                kwargs["negative_prompt"] = [s.negative_prompt] * len(batch)
        # One CPU generator per image: the same noise whatever the batch or the device.
        generators = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
        out = self.pipe(
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            width=s.width,
            height=s.height,
            generator=generators,
            output_type="pil",
            **kwargs,
            **self.call_kwargs,
        )
        return list(out.images)

    def _install_signals(self) -> dict[int, Any]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, self._on_signal)
        return handlers

    def _restore_signals(self, handlers: dict[int, Any]) -> None:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _log_run(self, result: BatchResult) -> None:
        entry = {
            k: getattr(result, k)
            for k in (
                "shard_index",
                "num_shards",
                "planned",
                "skipped",
                "generated",
                "failed",
                "bad_rows",
                "flagged",
                "dropped",
                "seconds",
                "images_per_s",
                "interrupted",
                "changed",
            )
        }
        # run.json describes the latest run only; this log keeps what every run was made from.
        entry.update(getattr(self, "_run_info", {}))
        entry["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.out / RUNS_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def _finish_shards(self, result: BatchResult) -> None:
        if self._state is not None:
            import torch

            # Every process must reach the barrier, interrupted or not.
            flag = torch.tensor([int(result.interrupted)], device=self._state.device)
            torch.distributed.all_reduce(flag)
            self._state.wait_for_everyone()
            merge = not int(flag.item()) and self.config.num_shards == 1  # the same on every rank
            if merge and self._state.is_main_process:
                merge_manifests(self.out)
                merge_error_logs(self.out)
            if merge:  # every rank waits for rank 0's merge, so none tells the user to merge
                self._state.wait_for_everyone()
                result.merged = True
        elif result.num_shards == 1:
            result.merged = True


def lock_run_folder(out: str | Path) -> list[FolderLock]:
    """Exclusive hold of a batch folder: its own lock and every shard lock found in it.

    Taken by unsharded runs and by ``--merge`` (both rewrite the shard manifests), so neither
    runs beside a live shard. Release the returned locks in reverse order.
    """
    out = Path(out)
    purpose = "batch output folder"
    locks = [FolderLock(out, purpose=purpose).acquire()]
    try:
        for path in sorted(out.glob(".safegen.shard-*.lock")):
            locks.append(FolderLock(out, purpose=purpose, name=path.name, remove_if_empty=False).acquire())
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        raise
    return locks


def merge_error_logs(out: str | Path) -> Path:
    """Append every ``errors.shard-*.log`` to ``errors.log`` (atomically), then delete the shard logs.

    Call with the manifests' merge, when no shard is still writing.
    """
    from safegen.core.io import atomic_write_text

    out = Path(out)
    target = out / ERRORS_LOG
    parts = sorted(out.glob("errors.shard-*.log"))
    if not parts:
        return target
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    for part in parts:
        text += f"# merged from {part.name}\n" + part.read_text(encoding="utf-8")
    atomic_write_text(target, text)
    for part in parts:
        part.unlink(missing_ok=True)
    return target


def run_batch(config: BatchConfig | None = None, /, *, pipe: Any = None, classifier: Any = None, **options: Any):
    """Run a batch job: ``run_batch(BatchConfig(...))`` or ``run_batch(prompts=..., out=..., ...)``.

    Returns this process's :class:`BatchResult`.
    """
    if config is None:
        config = BatchConfig(**options)
    elif options:
        raise TypeError("pass either a BatchConfig or keyword options, not both")
    return BatchRunner(config, pipe=pipe, classifier=classifier).run()


def summarize(out: str | Path) -> dict[str, Any]:
    """Counts for a run folder: done, remaining, failed, flagged, dropped, images/s (read-only)."""
    out = Path(out)
    run_json = out / RUN_JSON
    if not run_json.is_file():
        raise SafegenError(f"{out} is not a batch output folder (no {RUN_JSON}); pass the --out of a batch run")
    try:
        info = json.loads(run_json.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SafegenError(
            f"{run_json} is unreadable ({clip_text(str(exc), 120)}); re-run the batch into {out} to rewrite it"
        ) from None
    records = read_manifest(out)
    runs, _ = read_jsonl(out / RUNS_LOG)
    planned = int(info.get("planned_images", 0))
    flagged = sum(1 for r in records if (r.get("safety") or {}).get("unsafe"))
    dropped = sum(1 for r in records if r.get("decision") == "drop")
    decisions: dict[str, int] = {}
    for r in records:
        decisions[r.get("decision", "pass")] = decisions.get(r.get("decision", "pass"), 0) + 1
    made = sum(int(r.get("generated", 0)) for r in runs)
    busy = sum(float(r.get("seconds", 0.0)) for r in runs)
    last = runs[-1] if runs else {}
    return {
        "out": str(out),
        "planned": planned,
        "done": len(records),
        "remaining": max(0, planned - len(records)),
        "bad_rows": int(info.get("bad_rows", 0)),
        "failed_last_run": sum(int(r.get("failed", 0)) for r in runs if r.get("finished") == last.get("finished")),
        "skipped_last_run": int(last.get("skipped", 0)),
        "flagged": flagged,
        "dropped": dropped,
        "decisions": decisions,
        "runs": len(runs),
        "images_per_s": made / busy if busy > 0 else 0.0,
        "base": info.get("config", {}).get("base"),
        "safe_encoder": info.get("config", {}).get("safe_encoder"),
        "shard_manifests": len(list(out.glob("manifest.shard-*.jsonl"))),
    }
