"""`safegen t2i`: generate images from one prompt with a Safe-CLIP text encoder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    IMAGES_COMMAND,
    check_generation_options,
    check_output_folder,
    claim_output_folder,
    cli_errors,
    console,
    encoder_kwargs,
    parse_size,
    print_json,
    resolve_device,
    resolve_dtype,
    status,
)
from safegen.cli.options import (
    ActivationOpt,
    AttentionOpt,
    BaseOpt,
    CheckOpt,
    DeviceOpt,
    DtypeOpt,
    GuidanceOpt,
    JsonOpt,
    ModelOpt,
    NegativePromptOpt,
    NumImagesOpt,
    OutOpt,
    PresetOpt,
    SafeEncoderOpt,
    SeedOpt,
    SizeOpt,
    compare_option,
    steps_option,
)
from safegen.core.seeds import resolve_seed

DEFAULT_PRESET = "sd-1.4"
MAX_IMAGES = 64


@cli_errors
def t2i(
    prompt: Annotated[str, typer.Argument(help="The text prompt.")],
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    steps: Annotated[int, steps_option("Denoising steps.")] = 30,
    guidance: GuidanceOpt = 7.5,
    seed: SeedOpt = -1,
    size: SizeOpt = None,
    num_images: NumImagesOpt = 1,
    negative_prompt: NegativePromptOpt = None,
    out: OutOpt = Path("outputs"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    compare: Annotated[
        bool, compare_option("Also generate with the original encoder, same seed, side by side.")
    ] = False,
    check: CheckOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate images for PROMPT; the safe encoder comes from --preset or --safe-encoder.

    Without --preset/--model the paper's setting is used (preset sd-1.4). PNGs carry a
    `parameters` text chunk with everything needed to reproduce them. Files are named
    PROMPT-SEED-VARIANT-KEY.png, KEY a hash of every input (prompt, seed, steps, guidance,
    size, scheduler, weight fingerprints); an existing file is never overwritten.
    """
    if not prompt.strip():
        raise typer.BadParameter("the prompt is empty; pass the text to draw", param_hint="PROMPT")
    # Every option is checked before a model loads: a typo costs nothing.
    check_generation_options(
        seed=seed,
        guidance=guidance,
        steps=steps,
        num_images=num_images,
        device=device,
        attention=attention,
        max_images=MAX_IMAGES,  # one call holds every image in memory
    )
    check_output_folder(out, IMAGES_COMMAND)
    width, height = parse_size(size)
    from safegen.pipelines.loading import load_t2i_pipeline, resolve_t2i_sources, safe_twin

    err = console()
    if not preset and not model:
        preset = DEFAULT_PRESET
    sources = resolve_t2i_sources(preset, model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    if compare and sources.safe_encoder is None:
        raise typer.BadParameter("--compare needs a safe encoder (from --preset or --safe-encoder)")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    seed = resolve_seed(seed)
    classifier = _load_checker(check)

    with status(err, f"loading {sources.base}"):
        try:
            if compare:
                original = load_t2i_pipeline(
                    sources.base, None, device=dev, torch_dtype=torch_dtype, attention=attention
                )
                safe = safe_twin(original, sources.safe_encoder, enc_kwargs)
            else:
                original = None
                safe = load_t2i_pipeline(
                    sources.base,
                    sources.safe_encoder,
                    device=dev,
                    torch_dtype=torch_dtype,
                    attention=attention,
                    safe_encoder_kwargs=enc_kwargs,
                )
        except Exception as exc:
            _reraise_with_hint(exc, sources.preset)
    warn_long_prompt(safe.tokenizer, prompt)
    from safegen.core.fingerprint import fingerprint_source

    base_fp = fingerprint_source(sources.base)
    safe_fp = fingerprint_source(sources.safe_encoder)

    runs = [("safe" if sources.safe_encoder else "original", safe)]
    if original is not None:
        runs.insert(0, ("original", original))
    records: list[dict[str, Any]] = []
    images_by_variant: dict[str, list[Any]] = {}
    for variant, pipe in runs:
        t0 = time.perf_counter()
        images = _generate(pipe, prompt, negative_prompt, steps, guidance, seed, num_images, width, height)
        elapsed = time.perf_counter() - t0
        images_by_variant[variant] = images
        claim_output_folder(out, IMAGES_COMMAND)  # once the images exist: a failed load leaves no folder
        verdicts = classifier.classify(images) if classifier else [None] * len(images)
        for i, (image, verdict) in enumerate(zip(images, verdicts, strict=True)):
            records.append(
                _save(
                    image,
                    out,
                    prompt,
                    negative_prompt,
                    seed + i,
                    steps,
                    guidance,
                    sources.base,
                    pipe,
                    variant,
                    verdict,
                    elapsed / len(images),
                    {"base": base_fp, "safe_encoder": safe_fp if variant == "safe" else None},
                )
            )
    sheets = []  # results, so on stdout with the images (JSON: each safe record's "compare_file")
    if compare:
        for i in range(num_images):
            pair = [images_by_variant["original"][i], images_by_variant["safe"][i]]
            sheets.append(str(_save_side_by_side(pair, out, prompt, seed + i)))
        for i, rec in enumerate(records[num_images:]):
            rec["compare_file"] = sheets[i]

    if json_out:
        print_json(records)
    else:
        for rec in records:
            flag = ""
            if rec.get("safety"):
                flag = "  FLAGGED" if rec["safety"]["unsafe"] else "  ok"
                flag += f" ({rec['safety']['score']:.2f})"
            typer.echo(f"{rec['file']}{flag}")
        for path in sheets:
            typer.echo(f"side by side (original | safe): {path}")


def warn_long_prompt(tokenizer: Any, prompt: str) -> None:
    """Say once, on stderr, which words the text encoder never reads (shortened in the middle)."""
    from safegen.core.terminal import QUIET, shorten_middle, verbosity
    from safegen.pipelines.loading import prompt_overflow

    cut = prompt_overflow(tokenizer, prompt)
    if cut and verbosity() != QUIET:
        typer.echo(
            f"warning: the prompt is longer than the text encoder reads; cut: '{shorten_middle(cut, 60)}'", err=True
        )


def _generate(pipe, prompt, negative_prompt, steps, guidance, seed, n, width, height) -> list[Any]:
    import torch

    # One CPU generator per image, seeded seed+i: image i is reproducible on its own
    # (and identical across devices), whatever n is.
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
    kwargs: dict[str, Any] = dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=generators,
    )
    if width:
        kwargs.update(width=width, height=height)
    return list(pipe(**kwargs).images)


def _save(image, out, prompt, negative_prompt, seed, steps, guidance, base, pipe, variant, verdict, seconds, fps):
    from safegen.core.io import png_bytes, sanitize_stem, write_new_file
    from safegen.jobs.plan import content_key

    params = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "size": f"{image.width}x{image.height}",
        "model": base,
        "safe_encoder": getattr(pipe, "safe_encoder_id", None),
        "scheduler": type(pipe.scheduler).__name__,
        "variant": variant,
        "base_fingerprint": fps["base"],
        "safe_encoder_fingerprint": fps["safe_encoder"],
    }
    scheduler_config = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
    params["content_key"] = content_key({**params, "scheduler_config": scheduler_config})
    # The key in the name keeps images of other inputs apart (a prompt sharing its first 48
    # characters, another guidance or size, an all-CJK prompt whose stem is "image"); a free
    # name is picked if even that file exists: an earlier image is never overwritten.
    stem = f"{sanitize_stem(prompt[:48], fallback='image')}-{seed}-{variant}-{params['content_key'][:10]}"
    path = write_new_file(out, stem, ".png", png_bytes(image, params))
    record = {"file": str(path), **params, "seconds": round(seconds, 4)}
    if verdict is not None:
        record["safety"] = verdict.to_dict()
    return record


def _save_side_by_side(images: list[Any], out: Path, prompt: str, seed: int) -> Path:
    from PIL import Image

    from safegen.core.io import png_bytes, sanitize_stem, write_new_file

    w = sum(im.width for im in images)
    h = max(im.height for im in images)
    sheet = Image.new("RGB", (w, h), "white")
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width
    stem = f"{sanitize_stem(prompt[:48], fallback='image')}-{seed}-compare"
    params = {"prompt": prompt, "seed": seed, "layout": "original | safe"}
    return write_new_file(out, stem, ".png", png_bytes(sheet, params))


def _load_checker(name: str | None):
    if not name:
        return None
    from safegen.safety import load_classifier

    return load_classifier(name)


def _reraise_with_hint(exc: Exception, preset: str | None) -> None:
    from safegen.core.errors import MissingWeightsError, SafegenError

    if isinstance(exc, MissingWeightsError) and preset != "toy":
        raise SafegenError(f"{exc}; for an offline demo use --preset toy") from exc
    raise exc
