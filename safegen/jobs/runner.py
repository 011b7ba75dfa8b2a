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

The parts: :mod:`~safegen.jobs.config` (what to do, what was done),
:mod:`~safegen.jobs.plan` (rows to image jobs), :mod:`~safegen.jobs.resume` (what a re-run
reuses), :mod:`~safegen.jobs.generation` (the pipeline call),
:mod:`~safegen.jobs.writing` (the writer thread), :mod:`~safegen.jobs.run_folder` (logs,
locks, merges, summary); this module runs them in order.

Python use, without the CLI::

    from safegen.jobs import BatchConfig, run_batch
    result = run_batch(BatchConfig(prompts="i2p.csv", out="runs/i2p", preset="sd-1.4", batch_size=8))
    print(result.images_per_s, result.flagged)
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import torch
from accelerate import PartialState

from safegen.core.devices import resolve_device, resolve_dtype
from safegen.core.fingerprint import fingerprint_pipeline, fingerprint_source
from safegen.core.io import atomic_write_json, clip_text
from safegen.core.output_folder import check_output_folder, claim_output_folder
from safegen.core.seeds import MAX_SEED, random_seed
from safegen.data.prompt_files import PromptFile, PromptRow, read_prompts
from safegen.jobs.config import BatchConfig, BatchResult
from safegen.jobs.generation import PromptCache, generate_images, scheduler_signature
from safegen.jobs.manifest import ManifestWriter, part_name, read_manifest
from safegen.jobs.plan import Defaults, ImageJob, make_batches, plan_jobs, shard_jobs
from safegen.jobs.resume import clean_temp_files, plan_resume, record_ok, report_changes
from safegen.jobs.run_folder import (
    BATCH_COMMAND,
    RUN_JSON,
    append_errors_log,
    append_run_log,
    errors_log_path,
    lock_for_run,
    merge_shard_files,
    package_versions,
    read_previous_run,
)
from safegen.jobs.writing import ImageWriter
from safegen.pipelines.loading import load_t2i_pipeline, resolve_t2i_sources
from safegen.safety import load_classifier

_logger = logging.getLogger(__name__)

# The counts of a result that runs.jsonl keeps, a line per run.
_RUN_LOG_FIELDS = (
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
        self._run_info: dict[str, Any] = {}  # what runs.jsonl records of this run's inputs

    # ------------------------------------------------------------------- run
    def run(self) -> BatchResult:
        """Generate everything not yet done for this process's shard; see :class:`BatchResult`.

        Everything that can be checked without a model is checked first (output folder,
        device, prompt file, the folder lock), so a mistake costs no model load.
        """
        cfg = self.config
        check_output_folder(self.out, BATCH_COMMAND)  # before the lock: a user's folder gets no lock file
        device = resolve_device(cfg.device)
        rank, world = self._distributed(device)
        if self._state is not None and device != "cpu":
            device = str(self._state.device)
        shard_index, num_shards = self._shard(rank, world)
        result = BatchResult(out=str(self.out), shard_index=shard_index, num_shards=num_shards)
        locks = lock_for_run(self.out, shard_index, num_shards)
        try:
            claim_output_folder(self.out, BATCH_COMMAND)
            self._run_locked(result, device, world, shard_index, num_shards)
        finally:
            for lock in reversed(locks):
                lock.release()
        return result

    def _run_locked(self, result: BatchResult, device: str, world: int, shard_index: int, num_shards: int) -> None:
        """The run, under this process's locks; fills ``result`` in."""
        # 1. Read the prompts first: a bad file fails fast, before any model loads.
        rows = self._read_prompt_file(result)
        # 2. The seed of rows without one; -1 keeps the one the last run in this folder picked.
        previous = read_previous_run(self.out)
        self.seed = self._pick_seed(previous)
        # 3. Load the pipeline and the classifier; fingerprint the weights.
        self._load(device)
        self.resolved = self._resolved_config(device, world, shard_index, num_shards)
        # 4. Plan every shard's images (with their content keys) and take this shard's.
        mine = self._plan(rows, shard_index, num_shards)
        result.planned = len(mine)
        # 5. Reuse images made from the same inputs; report changed rows (or refuse, before any write).
        todo, changed = self._plan_resume(mine, result, num_shards)
        # 6. Record the run's start: run.json, the errors log's header; clear a killed run's temp files.
        errors_path = self._record_start(previous, len(rows), result, changed, shard_index, num_shards)
        # 7. Generate batch by batch while the writer thread writes the previous batch.
        self._generate_all(todo, result, device, errors_path)
        # 8. Log the run; merge the shards' files once every process is done.
        self._log_run(result)
        self._finish_shards(result)

    # ----------------------------------------------------------------- steps
    def _distributed(self, device: str) -> tuple[int, int]:
        """(process index, process count), starting the process group under torchrun/accelerate."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        # Long timeout: shards may finish hours apart and meet only at the final barrier.
        self._state = PartialState(cpu=device == "cpu", timeout=timedelta(hours=48))
        return self._state.process_index, self._state.num_processes

    def _shard(self, rank: int, world: int) -> tuple[int, int]:
        """Global (index, count): scheduler shards split further over the processes of each."""
        return self.config.shard_index * world + rank, self.config.num_shards * world

    def _read_prompt_file(self, result: BatchResult) -> list[PromptRow]:
        """Step 1: the valid rows to run (``limit`` applied); bad rows are counted into ``result``."""
        cfg = self.config
        self.prompt_file = read_prompts(cfg.prompts, strict=cfg.strict)
        rows = self.prompt_file.rows[: cfg.limit] if cfg.limit else self.prompt_file.rows
        result.bad_rows = len(self.prompt_file.errors)
        result.errors = [clip_text(str(e), 500) for e in self.prompt_file.errors[:20]]
        return rows

    def _pick_seed(self, previous: dict[str, Any] | None) -> int:
        """Step 2: the configured seed; for -1, the seed the last run recorded, else a new random one."""
        if self.config.seed != -1:
            return self.config.seed
        old_seed = (previous or {}).get("config", {}).get("seed")
        if isinstance(old_seed, int) and 0 <= old_seed <= MAX_SEED:
            return int(old_seed)
        return random_seed()

    def _load(self, device: str) -> None:
        """Step 3: the pipeline (given or loaded), its fingerprints and scheduler signature, the classifier."""
        cfg = self.config
        if self.pipe is None:
            self._load_pipeline(device)
        else:
            base = cfg.model or getattr(getattr(self.pipe, "config", None), "_name_or_path", None)
            self.base_id = str(base) if base else type(self.pipe).__name__
            self.safe_id = getattr(self.pipe, "safe_encoder_id", None)
            self.base_fingerprint, self.safe_fingerprint = fingerprint_pipeline(self.pipe, cfg.model)
        self.scheduler_signature = scheduler_signature(getattr(self.pipe, "scheduler", None))
        if hasattr(self.pipe, "set_progress_bar_config"):
            self.pipe.set_progress_bar_config(disable=True)
        if self.classifier is None and cfg.check:
            options = {} if cfg.threshold is None else {"threshold": cfg.threshold}
            self.classifier = load_classifier(cfg.check, **options)

    def _load_pipeline(self, device: str) -> None:
        """Load the configured pipeline (preset, model, safe encoder) and fingerprint its sources."""
        cfg = self.config
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

    def _default_size(self) -> tuple[int, int]:
        unet = getattr(self.pipe, "unet", None)
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        side = int(unet.config.sample_size) * int(scale) if unet is not None else 512
        return self.config.width or side, self.config.height or side

    def _resolved_config(self, device: str, world: int, shard_index: int, num_shards: int) -> dict[str, Any]:
        """The config as this run applies it (model defaults filled in): run.json's ``config``."""
        cfg = self.config
        width, height = self._default_size()
        return {
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

    def _plan(self, rows: list[PromptRow], shard_index: int, num_shards: int) -> list[ImageJob]:
        """Step 4: every shard's jobs into ``all_jobs``, this shard's into ``jobs`` (returned)."""
        cfg = self.config
        defaults = Defaults(
            steps=cfg.steps,
            guidance=cfg.guidance,
            width=self.resolved["width"],
            height=self.resolved["height"],
            negative_prompt=cfg.negative_prompt,
            n=cfg.n,
            seed=self.seed,
        )
        all_jobs = plan_jobs(rows, defaults, root=self.out, context=self.key_context())
        if num_shards == 1:
            merge_shard_files(self.out)  # parts left by an earlier sharded run
        self.jobs, self.all_jobs = shard_jobs(all_jobs, num_shards, shard_index), all_jobs
        return self.jobs

    def _plan_resume(
        self, mine: list[ImageJob], result: BatchResult, num_shards: int
    ) -> tuple[list[ImageJob], list[tuple[ImageJob, list[str]]]]:
        """Step 5: (jobs to generate, changed jobs and what changed); reused images are counted into ``result``."""
        cfg = self.config
        plan = plan_resume(self.out, mine, self._run_fields())
        result.skipped, changed = plan.reused, plan.changed
        if cfg.on_change == "refuse" and num_shards > 1:
            # Every shard decides on the whole plan, so they refuse together: none is left
            # waiting at the final barrier for a shard that stopped.
            changed = plan_resume(self.out, self.all_jobs, self._run_fields()).changed
        # Raises before any write with on_change="refuse".
        report_changes(changed, result, prompts=cfg.prompts, out=self.out, on_change=cfg.on_change)
        return plan.todo, changed

    def _record_start(
        self,
        previous: dict[str, Any] | None,
        n_rows: int,
        result: BatchResult,
        changed: list[tuple[ImageJob, list[str]]],
        shard_index: int,
        num_shards: int,
    ) -> Path:
        """Step 6: write run.json (shard 0, or any shard of a new folder), start the errors log; returns its path."""
        prompt_sha = hashlib.sha256(Path(self.config.prompts).read_bytes()).hexdigest()
        self._run_info = {
            "prompts": self.resolved["prompts"],
            "prompt_file_sha256": prompt_sha,
            "fingerprints": {"base": self.base_fingerprint, "safe_encoder": self.safe_fingerprint},
            "scheduler": self.scheduler_signature,
        }
        if previous is None or shard_index == 0:
            atomic_write_json(self.out / RUN_JSON, self._run_json(prompt_sha, n_rows, result))
        errors_path = errors_log_path(self.out, shard_index, num_shards)
        append_errors_log(errors_path, self._errors_log_header(result, changed, shard_index))
        clean_temp_files(self.out, {Path(j.file).name for j in self.jobs})
        if result.skipped:
            _logger.info("resuming: %d of %d images already done with the same inputs", result.skipped, len(self.jobs))
        return errors_path

    def _run_json(self, prompt_sha: str, n_rows: int, result: BatchResult) -> dict[str, Any]:
        return {
            "config": self.resolved,
            "prompt_file_sha256": prompt_sha,
            "fingerprints": {
                "base": self.base_fingerprint,
                "safe_encoder": self.safe_fingerprint,
                "scheduler": self.scheduler_signature,
            },
            "rows": n_rows,
            "bad_rows": result.bad_rows,
            "planned_images": len(self.all_jobs),
            "changed_images": result.changed,
            "classifier": self.classifier.describe() if self.classifier is not None else None,
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _errors_log_header(
        self, result: BatchResult, changed: list[tuple[ImageJob, list[str]]], shard_index: int
    ) -> list[str]:
        """The lines a run starts its errors log with: the prompt file's problems (shard 0), the changed rows."""
        lines = [f"# run started {datetime.now(timezone.utc).isoformat(timespec='seconds')}"]
        if shard_index == 0:
            lines += [f"warning: {w}" for w in self.prompt_file.warnings]
            lines += [str(e) for e in self.prompt_file.errors]
        if changed:
            lines.append(f"# {result.changed_rows} row(s) changed since the last run: regenerated")
            lines += [
                f"{self.config.prompts}:{j.line}: id '{clip_text(j.id, 60)}' seed {j.seed}: changed ({', '.join(w)})"
                for j, w in changed
            ]
        return lines

    def _generate_all(self, todo: list[ImageJob], result: BatchResult, device: str, errors_path: Path) -> None:
        """Step 7: generate ``todo`` batch by batch, hand each batch to the writer, count into ``result``.

        Stops after the current batch on SIGINT/SIGTERM (``result.interrupted``).
        """
        start = time.perf_counter()
        manifest = ManifestWriter(self.out / part_name(result.shard_index, result.num_shards))
        writer = ImageWriter(self, manifest)
        writer.start()
        cache = PromptCache(self.pipe, device)
        previous_handlers = self._install_signals()
        errors_log = open(errors_path, "a", encoding="utf-8")
        submitted = 0
        try:
            for batch in make_batches(todo, self.config.batch_size):
                if self._stop_signal is not None:
                    break
                for jobs, images in self._generate_batch(batch, cache, result, errors_log):
                    result.stall_seconds += writer.submit(jobs, images)
                    submitted += len(jobs)
                if self.progress is not None:
                    self.progress(result.skipped + submitted, len(self.jobs))
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

    def _generate_batch(
        self, batch: list[ImageJob], cache: PromptCache, result: BatchResult, errors_log: IO[str]
    ) -> list[tuple[list[ImageJob], list[Any]]]:
        """A batch's images as (jobs, images) pieces; a failed batch is retried row by row.

        With ``strict`` a failure stops the run; otherwise a row that fails alone is recorded
        as failed (:meth:`_record_failure`) and the rest of its batch is still made.
        """
        try:
            return [(batch, self._generate(batch, cache))]
        except Exception as exc:  # retried row by row: one bad row must not take its batch with it
            if self.config.strict:
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
                    self._record_failure(job, row_exc, result, errors_log)
            errors_log.flush()
            return pieces

    def _record_failure(self, job: ImageJob, exc: Exception, result: BatchResult, errors_log: IO[str]) -> None:
        """A row that could not be generated: a line in the errors log, the result and the log."""
        result.failed += 1
        reason = f"generation failed: {clip_text(str(exc), 300)}"
        line = f"{self.config.prompts}:{job.line}: id '{clip_text(job.id, 60)}' seed {job.seed}: {reason}"
        errors_log.write(line + "\n")
        result.failures.append({"id": job.id, "seed": job.seed, "line": job.line, "reason": reason})
        if len(result.errors) < 20:
            result.errors.append(line)
        _logger.error("%s", line)

    def _generate(self, batch: list[ImageJob], cache: PromptCache) -> list[Any]:
        return generate_images(self.pipe, batch, cache, self.call_kwargs)

    def _log_run(self, result: BatchResult) -> None:
        """Step 8: a line in runs.jsonl with this run's counts and inputs."""
        append_run_log(self.out, {**{k: getattr(result, k) for k in _RUN_LOG_FIELDS}, **self._run_info})

    def _finish_shards(self, result: BatchResult) -> None:
        """Step 8: under torchrun/accelerate, meet every process and let rank 0 merge the shard files."""
        if self._state is not None:
            # Every process must reach the barrier, interrupted or not.
            flag = torch.tensor([int(result.interrupted)], device=self._state.device)
            torch.distributed.all_reduce(flag)
            self._state.wait_for_everyone()
            merge = not int(flag.item()) and self.config.num_shards == 1  # the same on every rank
            if merge and self._state.is_main_process:
                merge_shard_files(self.out)
            if merge:  # every rank waits for rank 0's merge, so none tells the user to merge
                self._state.wait_for_everyone()
                result.merged = True
        elif result.num_shards == 1:
            result.merged = True

    # ------------------------------------------------------- records, keys
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

    def _run_fields(self) -> dict[str, Any]:
        """The manifest fields every image of this run shares: scheduler and weight fingerprints."""
        return {
            "scheduler": self.scheduler_signature,
            "base_fingerprint": self.base_fingerprint,
            "safe_encoder_fingerprint": self.safe_fingerprint,
        }

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
            if wanted.get((str(r["id"]), int(r["seed"]))) == r.get("content_key") and record_ok(self.out, r)
        ]

    # --------------------------------------------------------------- signals
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

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: finishing the current batch, then stopping "
            "(Ctrl-C again to abort at once)\n"
        )
        sys.stderr.flush()


def run_batch(config: BatchConfig | None = None, /, *, pipe: Any = None, classifier: Any = None, **options: Any):
    """Run a batch job: ``run_batch(BatchConfig(...))`` or ``run_batch(prompts=..., out=..., ...)``.

    Returns this process's :class:`BatchResult`.
    """
    if config is None:
        config = BatchConfig(**options)
    elif options:
        raise TypeError("pass either a BatchConfig or keyword options, not both")
    return BatchRunner(config, pipe=pipe, classifier=classifier).run()
