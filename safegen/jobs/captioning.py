"""Captioning jobs: image files in, a caption per image (and per tower with ``compare``) out; resumable.

``safegen i2t`` runs one. Without an output folder the captions only come back as records.
With ``out`` they are appended to ``out/captions.jsonl`` as each batch finishes, a line per
image and variant, keyed by a hash of the image bytes, the prompt, the generation settings
and the weight fingerprints: a re-run reuses captions whose key matches and captions the
rest again (a changed image or setting is counted as changed). ``out/run.json`` records
the settings, the seed included, so a random seed picked once is reused by a resumed run;
unreadable files are appended to ``out/errors.log``. One process per folder (a folder lock).

Images are read one batch at a time, so a folder of thousands never sits decoded in
memory; with ``compare`` the second pass reads the files again after the tower swap.

Python use, without the CLI::

    from safegen.jobs.captioning import CaptionConfig, run_captioning
    config = CaptionConfig(images=[Path("cat.png")], base="llava-hf/llava-1.5-7b-hf", out=Path("runs/cap"))
    print(run_captioning(config).records[0]["caption"])
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.devices import check_device, resolve_device, resolve_dtype
from safegen.core.errors import UsageError
from safegen.core.fingerprint import fingerprint_source
from safegen.core.io import atomic_write_json
from safegen.core.locking import FolderLock
from safegen.core.output_folder import claim_output_folder
from safegen.core.seeds import MAX_SEED, resolve_seed
from safegen.data.image_io import iter_images
from safegen.jobs.manifest import ManifestWriter, read_jsonl
from safegen.jobs.plan import content_key
from safegen.pipelines.image_to_text import SafeLlavaCaptioner

CAPTIONS = "captions.jsonl"
RUN_JSON = "run.json"
ERRORS_LOG = "errors.log"
I2T_COMMAND = "safegen i2t"  # what the output marker of a captions folder names
MAX_NEW_TOKENS = 4096


@dataclass
class CaptionConfig:
    """What a captioning job does; checked once, here, with errors that name the field."""

    images: list[Path] = field(metadata={"help": "Image files to caption; the records keep this order."})
    base: str = field(metadata={"help": "Captioner (LLaVA family): hub id or folder."})
    safe_encoder: str | None = field(default=None, metadata={"help": "Safe-CLIP vision tower; None: the original."})
    preset: str | None = field(default=None, metadata={"help": "Preset the sources came from (recorded only)."})
    encoder_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Loader keywords of the safe tower (activation, base)."}
    )
    prompt: str = field(default="Describe this image.", metadata={"help": "Instruction given with each image."})
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature; 0 decodes greedily."})
    max_new_tokens: int = field(default=128, metadata={"help": "Caption length limit."})
    seed: int = field(default=-1, metadata={"help": "Sampling seed; -1: the last run's in out, else a random one."})
    batch_size: int = field(default=8, metadata={"help": "Images per generate call."})
    compare: bool = field(default=False, metadata={"help": "Caption with the original and the safe tower."})
    out: Path | None = field(default=None, metadata={"help": "Output folder (captions.jsonl, run.json); None: none."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps."})
    dtype: str = field(default="auto", metadata={"help": "auto, fp32, fp16, bf16."})
    image_fit: str = field(default="auto", metadata={"help": "pad, crop or auto (pad for LLaVA)."})

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> UsageError:
            return UsageError(f"caption config: {name} {why}")

        self.images = [Path(p) for p in self.images]
        self.out = Path(self.out) if self.out is not None else None
        if not self.images:
            raise bad("images", "is empty: give at least one image file")
        if not -1 <= self.seed <= MAX_SEED:
            raise bad("seed", f"must be -1 or in [0, 2**63), got {self.seed}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise bad("temperature", f"must be a finite number >= 0, got {self.temperature}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise bad("max_new_tokens", f"must be between 1 and {MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.compare and self.safe_encoder is None:
            raise bad("compare", "needs a safe encoder to compare the original with")
        check_device(self.device)


@dataclass
class CaptionResult:
    """What a captioning job did: a record per image, in order, and the counts."""

    # {"image", <variant>: caption for each variant, settings...}, or {"image", "error"} for an unreadable file
    records: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0  # files that could not be read
    captioned: int = 0  # captions made by this run
    reused: int = 0  # captions an earlier run in out made from the same inputs
    changed: int = 0  # captions in out whose inputs changed since (made again)

    @property
    def stats(self) -> dict[str, int]:
        return {"captioned": self.captioned, "reused": self.reused, "changed": self.changed}


class CaptionReporter:
    """What a captioning job says as it goes; this base class says nothing (library use).

    Subclass it, or pass any object with these five methods (``safegen i2t`` prints on stderr).
    """

    def loading(self, model: str) -> None:
        """The captioner ``model`` is about to load (only when something is left to caption)."""

    def unreadable(self, problem: str) -> None:
        """A file could not be read: reported once, then left out of every pass."""

    def pass_started(self, variant: str, total: int) -> None:
        """A pass over ``total`` images begins: ``caption``, or ``original`` then ``safe`` with ``compare``."""

    def advanced(self, images: int) -> None:
        """A batch of the current pass is done (``images`` is the batch size)."""

    def passes_done(self) -> None:
        """The last pass ended (or failed)."""


def run_captioning(config: CaptionConfig, reporter: CaptionReporter | None = None) -> CaptionResult:
    """Run a captioning job (see the module docstring); ``reporter`` hears about progress and problems."""
    return CaptioningJob(config, reporter).run()


class CaptioningJob:
    """One run of a :class:`CaptionConfig`; :meth:`run` does the work."""

    def __init__(self, config: CaptionConfig, reporter: CaptionReporter | None = None):
        self.config = config
        self.reporter = reporter or CaptionReporter()
        self.variants = ["original", "safe"] if config.compare else ["caption"]
        self.result = CaptionResult()
        self.gen: dict[str, Any] = {}  # prompt, temperature, max_new_tokens, seed: part of every key
        self.common: dict[str, Any] = {}  # the settings every record carries
        self.captions: dict[str, dict[str, str]] = {name: {} for name in self.variants}
        self.bad: dict[str, str] = {}  # unreadable file -> reason
        self.base_fp: str | None = None
        self.safe_fp: str | None = None
        self.digests: dict[str, str | None] = {}

    def run(self) -> CaptionResult:
        cfg = self.config
        # 1. Device and dtype: an unusable device fails here, before the folder is touched.
        device = resolve_device(cfg.device)
        torch_dtype = resolve_dtype(cfg.dtype, device)
        # 2. Hold the output folder (claimed under the lock, which removes the marker again if nothing is written).
        lock = FolderLock(cfg.out, purpose="i2t output folder").acquire() if cfg.out is not None else None
        try:
            if cfg.out is not None:
                claim_output_folder(cfg.out, I2T_COMMAND)
            # 3. The settings every caption is keyed by, the seed resolved (-1: the last run's, else random).
            self.gen = {
                "prompt": cfg.prompt,
                "temperature": cfg.temperature,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": self._pick_seed(),
            }
            # 4. Caption what earlier runs left, pass by pass, then a record per image.
            todo = self._plan()
            self._caption(todo, device, torch_dtype)
            self.result.records = self._records()
            self.result.failed = len(self.bad)
        finally:
            if lock is not None:
                lock.release()
        # 5. The unreadable files go to errors.log (captions.jsonl holds captions only).
        if cfg.out is not None and cfg.out.is_dir():
            self._log_errors(cfg.out)
        return self.result

    def _pick_seed(self) -> int:
        """The seed a resumed run used (so a random seed picked once keeps its captions reusable)."""
        cfg = self.config
        if cfg.seed >= 0:
            return cfg.seed
        seed = previous_seed(cfg.out) if cfg.out is not None else None
        return resolve_seed(seed)

    def _plan(self) -> dict[str, list[Path]]:
        """Each variant's files to caption; captions in out with the same key are reused (and counted)."""
        cfg = self.config
        self.base_fp, self.safe_fp = fingerprint_source(cfg.base), fingerprint_source(cfg.safe_encoder)
        self.digests = {str(p): image_sha256(p) for p in cfg.images}
        previous: dict[tuple[str, str], dict[str, Any]] = {}
        if cfg.out is not None:
            for rec in read_jsonl(cfg.out / CAPTIONS)[0]:
                if rec.get("content_key") and isinstance(rec.get("image"), str):
                    previous[(rec["image"], str(rec.get("variant")))] = rec
        todo: dict[str, list[Path]] = {}
        for name in self.variants:
            todo[name] = []
            for p in cfg.images:
                rec = previous.get((str(p), name))
                if rec is not None and rec["content_key"] == self._key(str(p), name):
                    self.captions[name][str(p)] = rec.get("caption")
                    self.result.reused += 1
                    continue
                self.result.changed += int(rec is not None)
                todo[name].append(p)
        return todo

    def _key(self, path: str, variant: str) -> str:
        """The content key of one caption: image bytes, variant, settings, weights."""
        cfg = self.config
        tower = None if variant == "original" else self.safe_fp
        context = {"model": self.base_fp, "safe_encoder": tower, "image_fit": cfg.image_fit}
        if tower is not None and cfg.encoder_kwargs:
            context["encoder_kwargs"] = cfg.encoder_kwargs  # the same files read another way are another tower
        return content_key({"image_sha256": self.digests[path], "variant": variant, **self.gen}, context)

    def _caption(self, todo: dict[str, list[Path]], device: str, torch_dtype: Any) -> None:
        """Load the captioner (only if anything is left to do) and run every pass over ``todo``."""
        cfg = self.config
        self.common = {"model": cfg.base, "safe_encoder": cfg.safe_encoder, "preset": cfg.preset, **self.gen}
        self.common["image_fit"] = cfg.image_fit
        if not any(todo.values()):
            return
        writer = None
        try:
            self.reporter.loading(cfg.base)
            captioner = SafeLlavaCaptioner.from_pretrained(
                cfg.base,
                safe_encoder=None if cfg.compare else cfg.safe_encoder,
                safe_encoder_kwargs=cfg.encoder_kwargs,
                device=device,
                torch_dtype=torch_dtype,
                keep_original=False,
                image_fit=cfg.image_fit,
            )
            # pad or crop: changes what the tower sees of non-square images
            self.common["image_fit"] = captioner.image_fit
            if cfg.out is not None:
                writer = self._start_output(cfg.out)
            try:
                for name in self.variants:
                    self._caption_pass(captioner, name, todo[name], writer)
            finally:
                self.reporter.passes_done()
        finally:
            if writer is not None:
                writer.close()

    def _start_output(self, out: Path) -> ManifestWriter:
        """run.json and the captions file, written once a model is loaded (a failed load leaves no files)."""
        cfg = self.config
        atomic_write_json(
            out / RUN_JSON,
            {
                "images": len(cfg.images),
                "model": cfg.base,
                "safe_encoder": cfg.safe_encoder,
                "preset": cfg.preset,
                "compare": cfg.compare,
                "gen": self.gen,
                "fingerprints": {"model": self.base_fp, "safe_encoder": self.safe_fp},
            },
        )
        return ManifestWriter(out / CAPTIONS)

    def _caption_pass(
        self, captioner: SafeLlavaCaptioner, variant: str, paths: list[Path], writer: ManifestWriter | None
    ) -> None:
        """Caption ``paths`` with one tower (swapped in for ``safe``); each batch is appended as it finishes."""
        cfg, gen = self.config, self.gen
        if variant == "safe":
            captioner.set_safe_encoder(cfg.safe_encoder, keep_original=False, **(cfg.encoder_kwargs or {}))
        self.reporter.pass_started(variant, len(paths))
        for batch in self._batches(paths):
            texts = (
                captioner.caption(
                    [im for _, im in batch],
                    gen["prompt"],
                    temperature=gen["temperature"],
                    max_new_tokens=gen["max_new_tokens"],
                    batch_size=cfg.batch_size,
                    seed=gen["seed"],
                )
                if batch
                else []
            )
            done = [(str(p), t) for (p, _), t in zip(batch, texts, strict=True)]
            self.captions[variant].update(done)
            self.result.captioned += len(done)
            if writer is not None:
                writer.append(
                    {"image": p, "variant": variant, "caption": t, "content_key": self._key(p, variant), **self.common}
                    for p, t in done
                )
            self.reporter.advanced(cfg.batch_size)

    def _batches(self, paths: list[Path]) -> Iterator[list[tuple[Path, Any]]]:
        """The readable images of ``paths``, a batch at a time; unreadable files are reported once."""
        size = self.config.batch_size
        for start in range(0, len(paths), size):
            batch = []
            for path, image, error in iter_images(paths[start : start + size]):
                if error is None:
                    batch.append((path, image))
                elif str(path) not in self.bad:
                    self.reporter.unreadable(str(error))
                    self.bad[str(path)] = error.reason
            yield batch

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for path in map(str, self.config.images):
            if path in self.bad:
                records.append({"image": path, "error": self.bad[path]})
            else:
                records.append(
                    {"image": path, **{name: self.captions[name].get(path) for name in self.variants}, **self.common}
                )
        return records

    def _log_errors(self, out: Path) -> None:
        """Append this run's unreadable files to OUT/errors.log."""
        errors = [f"{r['image']}: {r['error']}" for r in self.result.records if "error" in r]
        if errors:
            with open(out / ERRORS_LOG, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in errors))


def previous_seed(out: Path) -> int | None:
    """The seed the last run in ``out`` recorded in run.json, or None."""
    try:
        seed = json.loads((out / RUN_JSON).read_text(encoding="utf-8"))["gen"]["seed"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return seed if isinstance(seed, int) and 0 <= seed < 2**63 else None


def image_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes (None if it cannot be read: it is reported when the pass reads it)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
