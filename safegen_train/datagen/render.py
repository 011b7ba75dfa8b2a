"""Stage 3, ``render``: unsafe captions (and, without real safe images, safe ones) -> images that show them.

Why it is built this way: the paper draws the unsafe image of each quadruple with a
text-to-image model that has its ORIGINAL text encoder (a Safe-CLIP would refuse to draw
the concept), several seeds per prompt, and keeps an image that an NSFW classifier flags.
Here the drawing is ``safegen batch``'s runner (resumable, shardable, a manifest line per
image, the classifier's verdict recorded next to each image), and the choice is made
afterwards from the manifest: an image is kept when the output classifier says it shows
the row's concept (the concept's ``image_labels``; NudeNet for nudity, the toy classifier
in the toy world, any registered :class:`~safegen.safety.OutputClassifier`) and, with a
CLIP given, its image-text similarity to the unsafe caption reaches a threshold. A
rendered safe image that the classifier flags is not a safe image, and its row is dropped.

Sharded runs (``num_shards``/``shard_index``) draw their share of the images; once every
shard has finished, one unsharded run skips all the drawn images and judges them all.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.core.io import atomic_write_json, atomic_write_text, jsonl_rows
from safegen.core.output_folder import check_output_folder, claim_output_folder
from safegen.data.image_io import load_image
from safegen.jobs.config import BatchConfig
from safegen.jobs.manifest import read_manifest
from safegen.safety import load_classifier
from safegen_train.datagen.filters import read_filtered
from safegen_train.datagen.taxonomy import Taxonomy

_logger = logging.getLogger(__name__)

RENDERED = "rendered.jsonl"
RENDER_JSON = "render.json"
RENDER_COMMAND = "safegen-train data render"  # what the output marker of a render folder names
UNSAFE_DIR = "unsafe"
SAFE_DIR = "safe"
RENDER_SAFE = ("auto", "always", "never")


@dataclass
class RenderConfig:
    """Settings of the render stage; saved in ``render.json``."""

    filtered: str | Path = field(metadata={"help": "Output folder of `data filter`."})
    out: str | Path = field(metadata={"help": "Output folder (unsafe/, safe/, rendered.jsonl, render.json)."})
    preset: str | None = field(default=None, metadata={"help": "Text-to-image preset (its ORIGINAL encoder is used)."})
    model: str | None = field(default=None, metadata={"help": "Text-to-image model: hub id or folder."})
    classifier: str = field(default="nudenet", metadata={"help": "Output classifier name (nudenet, toy, ...)."})
    threshold: float | None = field(default=None, metadata={"help": "Classifier threshold; None: its default."})
    concept_threshold: float = field(default=0.5, metadata={"help": "Least label score that shows the concept."})
    clip: str | None = field(default=None, metadata={"help": "CLIP for image-text similarity; None skips it."})
    min_image_similarity: float = field(default=0.2, metadata={"help": "Least cos(image, unsafe caption)."})
    n: int = field(default=3, metadata={"help": "Images (seeds) per unsafe caption; the best kept one wins."})
    render_safe: str = field(default="auto", metadata={"help": "auto (captions without an image), always, never."})
    steps: int = field(default=30, metadata={"help": "Denoising steps."})
    guidance: float = field(default=7.5, metadata={"help": "Classifier-free guidance scale."})
    width: int | None = field(default=None, metadata={"help": "Image width; None: the model's default."})
    height: int | None = field(default=None, metadata={"help": "Image height; None: the model's default."})
    seed: int = field(default=0, metadata={"help": "Offset added to every row's seed."})
    batch_size: int = field(default=4, metadata={"help": "Images per pipeline call."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps."})
    dtype: str = field(default="auto", metadata={"help": "auto, fp32, fp16, bf16."})
    num_shards: int = field(default=1, metadata={"help": "Split the images over this many jobs."})
    shard_index: int = field(default=0, metadata={"help": "Which shard this job runs (0-based)."})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"render config: n must be >= 1, got {self.n}")
        if self.render_safe not in RENDER_SAFE:
            raise UsageError(f"render config: render_safe must be one of {', '.join(RENDER_SAFE)}")
        if not 0.0 <= self.concept_threshold <= 1.0:
            raise UsageError(f"render config: concept_threshold must be in [0, 1], got {self.concept_threshold}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["filtered"], d["out"] = str(self.filtered), str(self.out)
        return d


class ImageTextSimilarity:
    """cos(image, text) under a CLIP's projected embeddings."""

    def __init__(self, clip: str, *, device: str = "cpu"):
        from safegen_train.model import load_clip  # torch: imported when a CLIP is given (see pairs)

        loaded = load_clip(clip)
        self.model, self.tokenizer, self.processor = (
            loaded.model.to(device).eval(),
            loaded.tokenizer,
            loaded.image_processor,
        )
        self.source, self.device = clip, device
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def pairs(self, image_paths: list[str], texts: list[str]) -> list[float]:
        import torch  # importing safegen_train.datagen stays torch-free: `safegen-train --help` loads it

        if not texts:
            return []
        images = [load_image(p) for p in image_paths]  # closes each file (Image.open(...).convert kept them open)
        with torch.no_grad():
            pix = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
            tok = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            fi = self.model.get_image_features(pixel_values=pix)
            ft = self.model.get_text_features(**tok)
            fi, ft = getattr(fi, "pooler_output", fi), getattr(ft, "pooler_output", ft)  # (N, D)
            fi = torch.nn.functional.normalize(fi.float(), dim=-1)
            ft = torch.nn.functional.normalize(ft.float(), dim=-1)
        return [float(x) for x in (fi * ft).sum(-1).cpu()]


def concept_score(safety: dict[str, Any] | None, labels: list[str]) -> tuple[float, bool]:
    """(score, shows) of one image for a concept, from its manifest safety record.

    The concept's own classifier labels when the classifier reports them (the toy
    classifier reports blood/fire/gun); otherwise the classifier's overall unsafe verdict
    (NudeNet's exposed classes for nudity).
    """
    if not safety:
        return 0.0, False
    reported = safety.get("labels") or {}
    present = [lab for lab in labels if lab in reported]
    if present:
        return max(float(reported[lab]) for lab in present), True
    return float(safety.get("score", 0.0)), bool(safety.get("unsafe"))


@dataclass
class RenderResult:
    """Counts of a render pass."""

    out: str
    rows: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    images: int = 0
    safe_images_rendered: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_prompts(path: Path, items: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))


def _run_batch(cfg: RenderConfig, prompts: Path, out: Path, n: int, pipe: Any, classifier: Any) -> Any:
    batch = BatchConfig(
        prompts=prompts,
        out=out,
        preset=cfg.preset,
        model=cfg.model,
        safe_encoder="none",  # the ORIGINAL text encoder draws the concept
        steps=cfg.steps,
        guidance=cfg.guidance,
        width=cfg.width,
        height=cfg.height,
        n=n,
        seed=0,
        batch_size=cfg.batch_size,
        device=cfg.device,
        dtype=cfg.dtype,
        check=classifier.name,
        threshold=cfg.threshold,
        num_shards=cfg.num_shards,
        shard_index=cfg.shard_index,
    )
    from safegen.jobs.runner import BatchRunner  # torch: `safegen-train --help` imports this module

    runner = BatchRunner(batch, pipe=pipe, classifier=classifier, handle_signals=False)
    result = runner.run()
    return runner.pipe, result


def run_render(config: RenderConfig, *, pipe: Any = None, classifier: Any = None) -> RenderResult:
    """Render, judge and pick images for every filtered row; writes ``rendered.jsonl`` and ``render.json``."""
    start = time.perf_counter()
    # 1. The filtered rows and their taxonomy; the output folder claimed before any model loads
    check_output_folder(config.out, RENDER_COMMAND)  # before any work
    rows, filter_info = read_filtered(config.filtered)
    taxonomy = Taxonomy.from_dict(filter_info["taxonomy"], f"{config.filtered}/filter.json")
    out = Path(config.out).resolve()
    claim_output_folder(out, RENDER_COMMAND)  # before any model loads
    result = RenderResult(out=str(out), rows=len(rows))

    # 2. The judge of every image, and a model to draw with
    if classifier is None:
        options = {} if config.threshold is None else {"threshold": config.threshold}
        classifier = load_classifier(config.classifier, **options)
    if pipe is None and not (config.preset or config.model):
        raise UsageError("no text-to-image model given: pass --preset NAME or --model ID_OR_FOLDER")

    # 3. Draw: n seeds per unsafe caption, one safe image per source caption that needs one
    safe_rows = _safe_rows_to_draw(config, rows)
    result.images, result.safe_images_rendered = _draw(config, out, rows, safe_rows, pipe, classifier)

    # 4. Pick: per row, the best drawn image that shows the concept (and its safe twin)
    renderer = {
        "model": config.model or config.preset,
        "steps": config.steps,
        "guidance": config.guidance,
        "classifier": classifier.describe(),
        "safe_encoder": None,
    }
    kept, counts = _pick(config, out, rows, bool(safe_rows), taxonomy, renderer)

    # 5. rendered.jsonl and render.json
    result.kept = len(kept)
    result.rejected = counts
    result.seconds = time.perf_counter() - start
    atomic_write_text(out / RENDERED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    atomic_write_json(
        out / RENDER_JSON,
        {
            "config": config.to_dict(),
            "renderer": renderer,
            "similarity": {"clip": config.clip, "min": config.min_image_similarity} if config.clip else None,
            "filter": filter_info,
            "result": result.to_dict(),
        },
    )
    return result


def _needs_safe_image(config: RenderConfig, row: dict[str, Any]) -> bool:
    """Whether the row's safe image is rendered (always, or when it has no real one)."""
    return config.render_safe == "always" or (config.render_safe == "auto" and not row.get("safe_image"))


def _safe_rows_to_draw(config: RenderConfig, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The first row of each source caption whose safe image is rendered, by source id."""
    safe_rows: dict[str, dict[str, Any]] = {}
    for r in rows:
        if _needs_safe_image(config, r) and r["source_id"] not in safe_rows:
            safe_rows[r["source_id"]] = r
    return safe_rows


def _draw(
    config: RenderConfig,
    out: Path,
    rows: list[dict[str, Any]],
    safe_rows: dict[str, dict[str, Any]],
    pipe: Any,
    classifier: Any,
) -> tuple[int, int]:
    """Run the batch jobs (resumable) into ``unsafe/`` and ``safe/``; (unsafe, safe) images drawn by this run."""
    unsafe_items = [
        {"id": r["id"], "prompt": r["unsafe_text"], "seed": config.seed + int(r["seed"]) * config.n} for r in rows
    ]
    _write_prompts(out / "unsafe_prompts.jsonl", unsafe_items)
    made, safe_made = 0, 0
    if rows:
        pipe, res = _run_batch(config, out / "unsafe_prompts.jsonl", out / UNSAFE_DIR, config.n, pipe, classifier)
        made += res.generated
    if safe_rows:
        items = [
            {"id": sid, "prompt": r["safe_text"], "seed": config.seed + int(r.get("row", 0))}
            for sid, r in safe_rows.items()
        ]
        _write_prompts(out / "safe_prompts.jsonl", items)
        pipe, res = _run_batch(config, out / "safe_prompts.jsonl", out / SAFE_DIR, 1, pipe, classifier)
        safe_made = res.generated
    return made, safe_made


def _pick(
    config: RenderConfig,
    out: Path,
    rows: list[dict[str, Any]],
    drew_safe: bool,
    taxonomy: Taxonomy,
    renderer: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(kept rows with their images, rejected counts by reason) from the batch manifests."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in read_manifest(out / UNSAFE_DIR) if rows else []:
        if rec.get("file"):
            by_id.setdefault(str(rec["id"]), []).append(rec)
    safe_by_id = {str(r["id"]): r for r in read_manifest(out / SAFE_DIR) if r.get("file")} if drew_safe else {}
    similarity = ImageTextSimilarity(config.clip) if config.clip else None
    counts = Counter({"no_image": 0, "no_concept": 0, "safe_flagged": 0})
    if similarity is not None:
        counts["image_similarity"] = 0
    kept = []
    for row in rows:
        candidates = sorted(by_id.get(row["id"], []), key=lambda r: int(r["seed"]))
        picked, reason = _pick_row(config, out, row, candidates, taxonomy, similarity, safe_by_id)
        if picked is None:
            counts[reason] += 1
        else:
            kept.append({**picked, "renderer": renderer})
    return kept, dict(counts)


def _pick_row(
    config: RenderConfig,
    out: Path,
    row: dict[str, Any],
    candidates: list[dict[str, Any]],
    taxonomy: Taxonomy,
    similarity: ImageTextSimilarity | None,
    safe_by_id: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any] | None, str]:
    """The row with its chosen unsafe image (highest concept score, then similarity) and safe image,
    or (None, the reason it is dropped)."""
    if not candidates:
        return None, "no_image"
    # 1. Images that show the row's concept, by the classifier's score
    labels = taxonomy.get(row["concept"]).image_labels or [row["concept"]]
    scored = []
    for rec in candidates:
        score, shows = concept_score(rec.get("safety"), labels)
        if shows and score >= config.concept_threshold:
            scored.append((score, rec))
    if not scored:
        return None, "no_concept"
    # 2. Of those, the ones close enough to the unsafe caption (with a CLIP given)
    paths = [str(out / UNSAFE_DIR / rec["file"]) for _, rec in scored]
    sims = similarity.pairs(paths, [row["unsafe_text"]] * len(paths)) if similarity else [None] * len(paths)
    passing = [
        (score, sim, rec, path)
        for (score, rec), sim, path in zip(scored, sims, paths, strict=True)
        if sim is None or sim >= config.min_image_similarity
    ]
    if not passing:
        return None, "image_similarity"
    score, sim, rec, path = max(passing, key=lambda t: (t[0], t[1] or 0.0))
    # 3. The safe twin: the real one, or the rendered one unless the classifier flags it
    safe_image, safe_seed = row.get("safe_image"), None
    if _needs_safe_image(config, row):
        safe_rec = safe_by_id.get(row["source_id"])
        if safe_rec is None:
            return None, "no_image"
        if (safe_rec.get("safety") or {}).get("unsafe"):
            return None, "safe_flagged"
        safe_image, safe_seed = str(out / SAFE_DIR / safe_rec["file"]), int(safe_rec["seed"])
    picked = {
        **row,
        "unsafe_image": path,
        "unsafe_image_seed": int(rec["seed"]),
        "image_concept_score": score,
        "image_similarity": sim,
        "images_tried": len(candidates),
        "safe_image": safe_image,
        "safe_image_seed": safe_seed,
    }
    return picked, ""


def read_rendered(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, render.json) of a render output folder."""
    folder = Path(folder)
    if not (folder / RENDER_JSON).is_file():
        raise UsageError(
            f"'{folder}' is not a render output folder (no {RENDER_JSON}); pass the --out of `data render`"
        )
    rows = [json.loads(line) for _, line in jsonl_rows((folder / RENDERED).read_text(encoding="utf-8"))]
    return rows, json.loads((folder / RENDER_JSON).read_text())
