"""`safegen eval t2i`: unsafe rate and quality of several methods on the same prompts and seeds.

Generation goes through the batch runner (one run folder per method and prompt set), so an
evaluation is resumable and shardable like any batch job: re-running the same command
skips finished images and rebuilds the report from the manifests.

Output layout::

    OUT/report.json, report.md, *.png           the report (report.json: the contract)
    OUT/runs/<method>/prompts/                 batch run on the evaluated prompts
    OUT/runs/<method>/quality/                 batch run on the quality prompts (optional)
    OUT/contact_<method>.png                   sample sheet, flagged images blurred
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .methods import DEFAULT_SAFETY_CONCEPT, Method, build_methods
from .stats import group_by, split_categories, summarize

_logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("original", "safe-clip", "negative-prompt", "sld-medium", "safe-clip+sld-medium")


@dataclass
class T2IEvalConfig:
    """Settings of a text-to-image evaluation (saved in report.json)."""

    prompts: str = field(metadata={"help": "Prompt file (I2P CSV, research CSV, txt, jsonl)."})
    out: str = field(metadata={"help": "Output folder."})
    base: str = field(metadata={"help": "Base pipeline id or folder."})
    safe_encoder: str | None = field(default=None, metadata={"help": "Safe-CLIP text encoder."})
    methods: Sequence[str] = field(default=DEFAULT_METHODS, metadata={"help": "Methods to compare."})
    classifier: str = field(default="nudenet", metadata={"help": "Output classifier name."})
    steps: int = field(default=30, metadata={"help": "Denoising steps."})
    guidance: float = field(default=7.5, metadata={"help": "Guidance scale of rows without their own."})
    width: int | None = None
    height: int | None = None
    seed: int = field(default=0, metadata={"help": "Seed of rows without their own."})
    batch_size: int = 4
    limit: int | None = field(default=None, metadata={"help": "First N prompts only."})
    negative_prompt: str = field(default=DEFAULT_SAFETY_CONCEPT, metadata={"help": "For the negative-prompt method."})
    safety_concept: str = field(default=DEFAULT_SAFETY_CONCEPT, metadata={"help": "SLD's safety concept."})
    quality_prompts: str | None = field(default=None, metadata={"help": "Safe prompts for quality retention."})
    quality_limit: int | None = None
    clip_score_model: str | None = field(default=None, metadata={"help": "CLIP for the CLIP score."})
    fid: bool = field(default=False, metadata={"help": "FID against the original's images (needs torchmetrics)."})
    device: str = "cpu"
    dtype: str = "auto"
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self) -> None:
        if not self.methods:
            raise UsageError("methods: name at least one method (e.g. original,safe-clip)")
        if self.steps < 1:
            raise UsageError(f"steps must be at least 1, got {self.steps}")


def _run_method(cfg: T2IEvalConfig, method: Method, prompts: str, folder: Path, classifier: Any, limit: int | None):
    from ..batch import BatchConfig, BatchRunner

    bcfg = BatchConfig(
        prompts=prompts,
        out=folder,
        model=cfg.base,
        steps=cfg.steps,
        guidance=cfg.guidance,
        width=cfg.width,
        height=cfg.height,
        negative_prompt=method.negative_prompt or "",
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        device=cfg.device,
        dtype=cfg.dtype,
        check=getattr(classifier, "name", None) if classifier is not None else None,
        limit=limit,
        num_shards=cfg.num_shards,
        shard_index=cfg.shard_index,
    )
    from ..terminal import job_progress

    with job_progress(f"{method.name}: {Path(prompts).name}") as bar:
        runner = BatchRunner(
            bcfg,
            pipe=method.pipe,
            classifier=classifier,
            call_kwargs=method.call_kwargs,
            record_extra={"method": method.name},
            progress=lambda done, total: bar.update(done, total),
        )
        result = runner.run()
    _record_timing(folder, result.generated, result.seconds)
    return result


def _record_timing(folder: Path, images: int, seconds: float) -> None:
    """Accumulate generation time across resumed runs (a resumed run generates only the rest)."""
    from ..outputs import atomic_write_json

    path = folder / "timing.json"
    prev = json.loads(path.read_text()) if path.is_file() else {"images": 0, "seconds": 0.0}
    if images:
        prev = {"images": prev["images"] + images, "seconds": prev["seconds"] + seconds}
        atomic_write_json(path, prev)


def _seconds_per_image(folder: Path) -> float | None:
    path = folder / "timing.json"
    if not path.is_file():
        return None
    t = json.loads(path.read_text())
    return t["seconds"] / t["images"] if t.get("images") else None


def _load_images(folder: Path, records: list[dict[str, Any]]) -> list[Any]:
    from PIL import Image

    images = []
    for rec in records:
        with Image.open(folder / rec["file"]) as im:
            images.append(im.convert("RGB"))
    return images


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Unsafe rate overall and per prompt category from manifest lines that carry safety scores."""
    scored = [r for r in records if r.get("safety")]
    entry = summarize([r["safety"]["unsafe"] for r in scored], [float(r["safety"]["score"]) for r in scored])
    by = group_by(scored, lambda r: split_categories((r.get("meta") or {}).get("categories")) or ["uncategorised"])
    if set(by) != {"uncategorised"}:
        entry["by_category"] = {
            c: summarize([r["safety"]["unsafe"] for r in rs], [float(r["safety"]["score"]) for r in rs])
            for c, rs in sorted(by.items())
        }
    return entry


def evaluate_t2i(cfg: T2IEvalConfig, *, log: Callable[[str], None] = _logger.info) -> dict[str, Any] | None:
    """Generate with every method (resumable), then build the report; None on non-reporting shards."""
    from ..batch import read_manifest
    from ..devices import resolve_dtype
    from ..loading import load_t2i_pipeline
    from ..safety import load_classifier
    from .quality import ClipScorer, fid, fid_available
    from .report import contact_sheet

    out = Path(cfg.out)
    base_pipe = load_t2i_pipeline(cfg.base, None, device=cfg.device, torch_dtype=resolve_dtype(cfg.dtype, cfg.device))
    classifier = load_classifier(cfg.classifier)
    methods = build_methods(
        list(cfg.methods),
        base_pipe,
        safe_encoder=cfg.safe_encoder,
        negative_prompt=cfg.negative_prompt,
        safety_concept=cfg.safety_concept,
    )
    for m in methods:
        if not m.available:
            continue
        log(f"{m.name}: generating on {cfg.prompts}")
        _run_method(cfg, m, cfg.prompts, out / "runs" / m.name / "prompts", classifier, cfg.limit)
        if cfg.quality_prompts:
            log(f"{m.name}: generating on the quality prompts {cfg.quality_prompts}")
            _run_method(cfg, m, cfg.quality_prompts, out / "runs" / m.name / "quality", classifier, cfg.quality_limit)

    # Only one process writes the report: the last shard of a Slurm array re-runs unsharded,
    # torchrun's rank 0 after the runner's own merge.
    if cfg.num_shards > 1 or int(os.environ.get("RANK", "0")) != 0:
        log("shard finished; run the same command without --num-shards to build the report")
        return None

    scorer = (
        ClipScorer(cfg.clip_score_model, device=cfg.device) if cfg.clip_score_model and cfg.quality_prompts else None
    )
    want_fid = cfg.fid and cfg.quality_prompts
    if want_fid and fid_available() != "torchmetrics":
        log("FID asked for, but torchmetrics with scipy is not installed: FID left out")
        want_fid = False
    if want_fid and not any(m.name == "original" and m.available for m in methods):
        log("FID compares against the original's images: add 'original' to --methods; FID left out")
        want_fid = False
    quality_images: dict[str, list[Any]] = {}  # loaded once, reused for FID after the loop

    report_methods: dict[str, Any] = {}
    for m in methods:
        if not m.available:
            report_methods[m.name] = {"unavailable": m.unavailable, "unsafe_rate": None, "n_images": 0}
            continue
        folder = out / "runs" / m.name / "prompts"
        records = [r for r in read_manifest(folder) if r.get("method", m.name) == m.name]
        entry = aggregate(records)
        entry["seconds_per_image"] = _seconds_per_image(folder)
        entry["safe_encoder"] = m.safe_encoder_id
        entry["call_kwargs"] = m.call_kwargs
        sample = [r for r in records if r.get("file")][:32]
        if sample:
            sheet = contact_sheet(_load_images(folder, sample), [bool(r["safety"]["unsafe"]) for r in sample])
            sheet.save(out / f"contact_{m.name}.png")
        if cfg.quality_prompts:
            qfolder = out / "runs" / m.name / "quality"
            qrecs = [r for r in read_manifest(qfolder) if r.get("file")]
            qimages, qprompts = _load_images(qfolder, qrecs), [r["prompt"] for r in qrecs]
            quality: dict[str, Any] = {}
            if scorer is not None:
                scores = scorer(qimages, qprompts)
                quality["clip_score"] = sum(scores) / len(scores) if scores else None
            if hasattr(classifier, "fidelity"):
                # Classifiers that can read the scene (the toy one) also say whether the safe
                # prompts still get what they asked for.
                fid_scores = [f for f in classifier.fidelity(qimages, qprompts) if f is not None]
                quality["attribute_fidelity"] = sum(fid_scores) / len(fid_scores) if fid_scores else None
            entry["unsafe_rate_on_quality_prompts"] = aggregate(qrecs)["unsafe_rate"] if qrecs else None
            if want_fid:
                quality_images[m.name] = qimages
            entry["quality"] = quality
            entry["quality_seconds_per_image"] = _seconds_per_image(qfolder)
        report_methods[m.name] = entry

    for name, images in quality_images.items():
        report_methods[name]["quality"]["fid_vs_original"] = fid(quality_images["original"], images)

    config = dict(vars(cfg))
    config["methods"] = list(cfg.methods)
    return {
        "kind": "t2i",
        "config": config,
        "classifier": classifier.describe(),
        "methods": report_methods,
        "notes": [
            "unsafe_rate: share of generated images the classifier flags; ci95: percentile bootstrap, 2000 resamples.",
            "Each method used the same prompts, seeds, steps and guidance; only the method differs.",
        ],
    }
