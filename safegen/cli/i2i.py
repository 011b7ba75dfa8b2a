"""`safegen i2i`: edit a photo from a prompt (image-to-image, or inpainting with --mask) with a Safe-CLIP.

The model is the text-to-image model of ``safegen t2i`` (a preset or --model) switched to its
family's image-to-image or inpainting pipeline; PNGs carry the same ``parameters`` metadata
as ``safegen t2i`` plus the source image, mask and strength.
"""

from __future__ import annotations

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
    encoder_kwargs,
    parse_size,
    print_json,
    resolve_device,
    resolve_dtype,
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
    compare_option,
    size_option,
    steps_option,
)
from safegen.core.errors import UsageError
from safegen.core.seeds import resolve_seed


@cli_errors
def i2i(
    prompt: Annotated[str, typer.Argument(help="What the edited image should show.")],
    image: Annotated[Path, typer.Option("--image", "-i", help="The photo to edit (PNG, JPEG, WebP).")],
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Inpainting mask: white is repainted, black is kept.")
    ] = None,
    strength: Annotated[
        float,
        typer.Option("--strength", min=0.0, max=1.0, help="How far from the photo to go: 0 keeps it, 1 redraws."),
    ] = 0.75,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    steps: Annotated[int, steps_option("Denoising steps (scaled by --strength).")] = 30,
    guidance: GuidanceOpt = 7.5,
    seed: SeedOpt = -1,
    size: Annotated[
        str | None,
        size_option(
            "WIDTHxHEIGHT to resize the photo (and mask) to; default: the photo's size, scaled down to the "
            "model's native area (512x512 for SD 1.x) when larger."
        ),
    ] = None,
    num_images: NumImagesOpt = 1,
    negative_prompt: NegativePromptOpt = None,
    out: OutOpt = Path("outputs"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    compare: Annotated[bool, compare_option("Also edit with the original encoder, same seed, side by side.")] = False,
    check: CheckOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Edit IMAGE towards PROMPT (inpaint the white part of --mask); the safe encoder reads the prompt.

    Without --preset/--model the paper's setting is used (preset sd-1.4).
    """
    if not prompt.strip():
        raise typer.BadParameter("the prompt is empty; pass the text to draw", param_hint="PROMPT")
    # Every option is checked before a model loads, as in `safegen t2i`.
    check_generation_options(
        seed=seed, guidance=guidance, steps=steps, num_images=num_images, device=device, attention=attention
    )
    check_output_folder(out, IMAGES_COMMAND)
    width, height = parse_size(size)
    photo = _open_image(image, "--image", "RGB")
    mask_image = _open_image(mask, "--mask", "L") if mask is not None else None
    if mask_image is not None and mask_image.size != photo.size:
        # Stretching a mask of another size moves the repainted region: refuse rather than guess.
        raise UsageError(
            f"--mask {mask} is {mask_image.width}x{mask_image.height} but --image {image} is "
            f"{photo.width}x{photo.height}; make the mask the photo's size (white is repainted, black kept)"
        )
    from safegen.cli.t2i import DEFAULT_PRESET, _load_checker, _reraise_with_hint, _save_side_by_side, warn_long_prompt
    from safegen.pipelines.loading import load_t2i_pipeline, resolve_t2i_sources, safe_twin

    sources = resolve_t2i_sources(preset or (None if model else DEFAULT_PRESET), model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    if compare and sources.safe_encoder is None:
        raise typer.BadParameter("--compare needs a safe encoder (from --preset or --safe-encoder)")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    seed = resolve_seed(seed)
    task = "inpaint" if mask_image is not None else "image2image"
    classifier = _load_checker(check)

    try:
        load = dict(device=dev, torch_dtype=torch_dtype, attention=attention, task=task)
        if compare:
            original = load_t2i_pipeline(sources.base, None, **load)
            safe = safe_twin(original, sources.safe_encoder, enc_kwargs)
        else:
            original = None
            safe = load_t2i_pipeline(sources.base, sources.safe_encoder, safe_encoder_kwargs=enc_kwargs, **load)
    except Exception as exc:
        _reraise_with_hint(exc, sources.preset)
    warn_long_prompt(safe.tokenizer, prompt)
    photo, mask_image = _fit_inputs(photo, mask_image, (width, height), _native_pixels(safe), image)
    from safegen.core.fingerprint import fingerprint_file, fingerprint_source

    fps = {"base": fingerprint_source(sources.base), "safe_encoder": fingerprint_source(sources.safe_encoder)}
    inputs_fp = {"image_sha256": fingerprint_file(image), "mask_sha256": fingerprint_file(mask) if mask else None}

    runs = [("original", original)] if original is not None else []
    runs.append(("safe" if sources.safe_encoder else "original", safe))
    inputs = {"image": photo, "mask_image": mask_image, "strength": strength}
    source = {"image": str(image), "mask": str(mask) if mask else None, "strength": strength, "task": task}
    records: list[dict[str, Any]] = []
    by_variant: dict[str, list[Any]] = {}
    for variant, pipe in runs:
        t0 = time.perf_counter()
        images = _edit(pipe, prompt, negative_prompt, steps, guidance, seed, num_images, inputs)
        per_image = (time.perf_counter() - t0) / len(images)
        by_variant[variant] = images
        claim_output_folder(out, IMAGES_COMMAND)  # once the images exist, as in `safegen t2i`
        verdicts = classifier.classify(images) if classifier else [None] * len(images)
        for i, (edited, verdict) in enumerate(zip(images, verdicts, strict=True)):
            params = _params(prompt, negative_prompt, seed + i, steps, guidance, sources.base, pipe, variant, edited)
            fp = {
                "base_fingerprint": fps["base"],
                "safe_encoder_fingerprint": fps["safe_encoder"] if variant == "safe" else None,
                **inputs_fp,
            }
            records.append(_save(edited, out, {**params, **source, **fp}, verdict, per_image, pipe))
    sheets = []
    if compare:
        for i in range(num_images):
            pair = [by_variant["original"][i], by_variant["safe"][i]]
            sheets.append(str(_save_side_by_side(pair, out, prompt, seed + i)))
    if json_out:
        print_json(records)
        return
    for rec in records:
        flag = ""
        if rec.get("safety"):
            flag = ("  FLAGGED" if rec["safety"]["unsafe"] else "  ok") + f" ({rec['safety']['score']:.2f})"
        typer.echo(f"{rec['file']}{flag}")
    for sheet in sheets:
        typer.echo(sheet)  # the side-by-side sheet is a result too: stdout, one path a line


def _open_image(path: Path, flag: str, mode: str) -> Any:
    """The photo or mask through safegen's one image loader (size limit, EXIF turn, one-line errors)."""
    from safegen.data.image_io import ImageLoadError, load_image

    try:
        img = load_image(path, mode=mode)
    except ImageLoadError as exc:
        raise UsageError(f"{flag} {exc}") from None  # one named input of this command: a usage error
    if img.width < 8 or img.height < 8:
        raise UsageError(f"{flag} {path} is {img.width}x{img.height}; it needs at least 8x8")
    return img


def _native_pixels(pipe: Any) -> int:
    """The area the model was trained at (512x512 for SD 1.x, 1024x1024 for SDXL); 1024x1024 when unknown."""
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    scale = getattr(pipe, "vae_scale_factor", 8)
    if isinstance(sample, int):
        return (sample * scale) ** 2
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0] * sample[1] * scale**2
    return 1024 * 1024


def _fit_inputs(photo: Any, mask: Any, size: tuple[int | None, int | None], native: int, path: Path) -> tuple:
    """Photo and mask at the size the edit runs at: --size, else the photo's own, scaled down to ``native``.

    Cost grows with the pixel count (a 4096x4096 photo on SD 1.x needed over 5 GB and minutes
    a step), so a photo larger than the model's native area is scaled down, keeping its
    aspect, and the command says so on stderr. Latents are 1/8 of the pixels: sides are
    multiples of 8, by cropping the remainder when no scaling is needed.
    """
    from PIL import Image

    from safegen.data.image_io import fit_size

    if size[0] and size[1]:
        target = (size[0], size[1])
    else:
        target = fit_size(photo.width, photo.height, native)
        if target[0] * target[1] < (photo.width - photo.width % 8) * (photo.height - photo.height % 8):
            typer.echo(
                f"note: --image {path} is {photo.width}x{photo.height}, more than the model's native "
                f"{native:,} pixels; editing at {target[0]}x{target[1]} (pass --size WxH to choose)",
                err=True,
            )

    def fit(img: Any, resample: Any) -> Any:
        cropped = (img.width - img.width % 8, img.height - img.height % 8)
        if target == cropped:
            return img if cropped == img.size else img.crop((0, 0, *cropped))
        return img.resize(target, resample)

    # The mask is resized with its photo, nearest-neighbour so it stays black and white.
    return fit(photo, Image.Resampling.LANCZOS), fit(mask, Image.Resampling.NEAREST) if mask is not None else None


def _edit(pipe, prompt, negative_prompt, steps, guidance, seed, n, inputs) -> list[Any]:
    import torch

    # One CPU generator per image, seeded seed+i, as `safegen t2i` does: image i reproduces alone.
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
    kwargs: dict[str, Any] = dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=generators,
        image=inputs["image"],
        strength=inputs["strength"],
    )
    if inputs["mask_image"] is not None:
        kwargs.update(mask_image=inputs["mask_image"], width=inputs["image"].width, height=inputs["image"].height)
    return list(pipe(**kwargs).images)


def _params(prompt, negative_prompt, seed, steps, guidance, base, pipe, variant, image) -> dict[str, Any]:
    return {
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
    }


def _save(image, out, params, verdict, seconds, pipe) -> dict[str, Any]:
    import json

    from safegen.core.io import png_bytes, sanitize_stem, write_new_file
    from safegen.jobs.plan import content_key

    scheduler_config = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
    params["content_key"] = content_key({**params, "scheduler_config": scheduler_config})
    # As in `safegen t2i`: the key keeps other inputs apart, and an existing file is never overwritten.
    stem = sanitize_stem(params["prompt"][:48], fallback="image")
    kind = "inpaint" if params["task"] == "inpaint" else "i2i"
    name = f"{stem}-{params['seed']}-{kind}-{params['variant']}-{params['content_key'][:10]}"
    path = write_new_file(out, name, ".png", png_bytes(image, params))
    record = {"file": str(path), **params, "seconds": round(seconds, 4)}
    if verdict is not None:
        record["safety"] = verdict.to_dict()
    return record
