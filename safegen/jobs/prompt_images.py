"""One prompt's images, as `safegen t2i` and `safegen i2i` make them: seeded, checked, written once.

Image i of a call comes from its own CPU generator seeded seed+i, so it reproduces alone (and
the same on every device) whatever n is. Every PNG carries a ``parameters`` chunk with all
its inputs and their content key (:func:`safegen.jobs.plan.content_key`, the scheduler's
config included), which also ends the file's name, PROMPT-SEED-[KIND-]VARIANT-KEY.png: images
of other inputs (a prompt sharing its first 48 characters, another guidance or size, an
all-CJK prompt whose stem is "image") never share a name, and an existing file is never
overwritten. The folder is claimed only once images exist, so a failed load leaves none.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from safegen.core.checks import MAX_IMAGES, check_generation_options
from safegen.core.errors import UsageError
from safegen.core.fingerprint import fingerprint_file, fingerprint_source
from safegen.core.io import png_bytes, sanitize_stem, write_new_file
from safegen.core.output_folder import claim_output_folder
from safegen.core.seeds import resolve_seed
from safegen.jobs.plan import content_key
from safegen.pipelines.loading import Sources

_logger = logging.getLogger(__name__)

# t2i and i2i write free-named PNGs into the same default --out (outputs/): one kind of folder.
IMAGES_COMMAND = "safegen t2i/i2i"


@dataclass
class PromptImagesConfig:
    """What one `safegen t2i` / `i2i` call makes; checked here, before any model loads."""

    prompt: str
    negative_prompt: str | None = None
    steps: int = 30
    guidance: float = 7.5
    seed: int = -1  # -1: a random one, drawn here (and recorded in every image)
    n: int = 1
    device: str = "auto"
    attention: str = "auto"
    max_images: int = MAX_IMAGES  # `safegen t2i` holds every image of its one call in memory: it allows fewer

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise UsageError("PROMPT: the prompt is empty; pass the text to draw")
        check_generation_options(
            seed=self.seed,
            guidance=self.guidance,
            steps=self.steps,
            num_images=self.n,
            device=self.device,
            attention=self.attention,
            max_images=self.max_images,
        )
        self.seed = resolve_seed(self.seed)


def variants(original: Any, safe: Any, safe_encoder: str | None) -> list[tuple[str, Any]]:
    """``(variant, pipeline)`` in the order they run: the original first (with --compare), then the safe one.

    Without a safe encoder the one pipeline is the original model, and is named so.
    """
    runs = [("original", original)] if original is not None else []
    runs.append(("safe" if safe_encoder else "original", safe))
    return runs


def source_fingerprints(base: str, safe_encoder: str | None) -> dict[str, str | None]:
    """Weight fingerprints of the base model and the safe encoder, recorded in every image."""
    return {"base": fingerprint_source(base), "safe_encoder": fingerprint_source(safe_encoder)}


@dataclass
class Edit:
    """An image edit's inputs (`safegen i2i`): the photo and mask it runs on, and the files they came from."""

    photo: Any
    mask: Any  # None: image-to-image; else inpainting, white repainted
    strength: float
    image_path: Path
    mask_path: Path | None = None

    @property
    def task(self) -> str:
        return "inpaint" if self.mask is not None else "image2image"

    @property
    def kind(self) -> str:
        """The word an edit's file names carry."""
        return "inpaint" if self.mask is not None else "i2i"

    def call_inputs(self) -> dict[str, Any]:
        """The pipeline call's inputs; an inpainting call runs at the photo's size."""
        inputs: dict[str, Any] = {"image": self.photo, "strength": self.strength}
        if self.mask is not None:
            inputs.update(mask_image=self.mask, width=self.photo.width, height=self.photo.height)
        return inputs

    def source(self) -> dict[str, Any]:
        """What an edited image records about its inputs: the files, the strength and the task."""
        mask = str(self.mask_path) if self.mask_path else None
        return {"image": str(self.image_path), "mask": mask, "strength": self.strength, "task": self.task}

    def hashes(self) -> dict[str, str | None]:
        """The input files' hashes, recorded beside the weight fingerprints."""
        mask = fingerprint_file(self.mask_path) if self.mask_path else None
        return {"image_sha256": fingerprint_file(self.image_path), "mask_sha256": mask}


def generate(pipe: Any, config: PromptImagesConfig, **inputs: Any) -> list[Any]:
    """``config.n`` images of ``config.prompt``; ``inputs`` are the call's extras (size, photo, mask)."""
    import torch  # on first use: a config that fails its checks costs no torch import

    generators = [torch.Generator("cpu").manual_seed(config.seed + i) for i in range(config.n)]
    output = pipe(
        prompt=config.prompt,
        negative_prompt=config.negative_prompt,
        num_inference_steps=config.steps,
        guidance_scale=config.guidance,
        num_images_per_prompt=config.n,
        generator=generators,
        **inputs,
    )
    return list(output.images)


def make_images(
    config: PromptImagesConfig,
    out: Path,
    sources: Sources,
    safe: Any,
    original: Any = None,
    *,
    classifier: Any = None,
    inputs: dict[str, Any] | None = None,
    edit: Edit | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Generate, check and write every variant's images: a record per image, and the images by variant.

    ``original`` (--compare) runs first. ``inputs`` are extras of a text-to-image call (width,
    height); an ``edit`` brings its own, and its inputs go into the records and file names.
    """
    fingerprints = source_fingerprints(sources.base, sources.safe_encoder)
    source, hashes = (edit.source(), edit.hashes()) if edit else ({}, {})
    call_inputs = edit.call_inputs() if edit else (inputs or {})
    records: list[dict[str, Any]] = []
    by_variant: dict[str, list[Any]] = {}
    for variant, pipe in variants(original, safe, sources.safe_encoder):
        # 1. Generate, timed.
        t0 = time.perf_counter()
        images = generate(pipe, config, **call_inputs)
        per_image = (time.perf_counter() - t0) / len(images)
        by_variant[variant] = images
        # 2. Claim the folder once the images exist: a failed load or generation leaves no folder.
        claim_output_folder(out, IMAGES_COMMAND)
        # 3. Check them with the classifier (flags, never hides).
        verdicts = classifier.classify(images) if classifier else [None] * len(images)
        # 4. Write each with its parameters.
        for i, (image, verdict) in enumerate(zip(images, verdicts, strict=True)):
            params = {
                **image_params(image, pipe, config, config.seed + i, variant, sources.base),
                **source,
                "base_fingerprint": fingerprints["base"],
                "safe_encoder_fingerprint": fingerprints["safe_encoder"] if variant == "safe" else None,
                **hashes,
            }
            kind = edit.kind if edit else None
            records.append(write_image(image, out, params, pipe, verdict, per_image, kind=kind))
    return records, by_variant


def image_params(image: Any, pipe: Any, config: PromptImagesConfig, seed: int, variant: str, model: str) -> dict:
    """What decides one image, as its PNG chunk and record carry it."""
    return {
        "prompt": config.prompt,
        "negative_prompt": config.negative_prompt,
        "seed": seed,
        "steps": config.steps,
        "guidance": config.guidance,
        "size": f"{image.width}x{image.height}",
        "model": model,
        "safe_encoder": getattr(pipe, "safe_encoder_id", None),
        "scheduler": type(pipe.scheduler).__name__,
        "variant": variant,
    }


def write_image(
    image: Any, out: Path, params: dict[str, Any], pipe: Any, verdict: Any, seconds: float, *, kind: str | None = None
) -> dict[str, Any]:
    """Write one PNG under a free name that ends in its content key; its record (file, parameters, time, safety)."""
    scheduler_config = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
    params["content_key"] = content_key({**params, "scheduler_config": scheduler_config})
    stem = sanitize_stem(params["prompt"][:48], fallback="image")
    name = "-".join(
        [stem, str(params["seed"]), *([kind] if kind else []), params["variant"], params["content_key"][:10]]
    )
    path = write_new_file(out, name, ".png", png_bytes(image, params))
    record = {"file": str(path), **params, "seconds": round(seconds, 4)}
    if verdict is not None:
        record["safety"] = verdict.to_dict()
    return record


def write_comparison_sheets(by_variant: dict[str, list[Any]], out: Path, config: PromptImagesConfig) -> list[str]:
    """A side-by-side sheet (original | safe) per seed; their paths."""
    return [
        str(
            write_side_by_side([by_variant["original"][i], by_variant["safe"][i]], out, config.prompt, config.seed + i)
        )
        for i in range(config.n)
    ]


def write_side_by_side(images: list[Any], out: Path, prompt: str, seed: int) -> Path:
    """``images`` left to right on one white sheet, written under a free name."""
    sheet = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width
    stem = f"{sanitize_stem(prompt[:48], fallback='image')}-{seed}-compare"
    params = {"prompt": prompt, "seed": seed, "layout": "original | safe"}
    return write_new_file(out, stem, ".png", png_bytes(sheet, params))
