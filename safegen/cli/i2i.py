"""`safegen i2i`: edit a photo from a prompt (image-to-image, or inpainting with --mask) with a Safe-CLIP.

The model is the text-to-image model of ``safegen t2i`` (a preset or --model) switched to its
family's image-to-image or inpainting pipeline; PNGs carry the same ``parameters`` metadata
as ``safegen t2i`` plus the source image, mask and strength.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    check_output_folder,
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
from safegen.cli.t2i import DEFAULT_PRESET, check_compare, load_checker, load_pipelines, safety_flag, warn_long_prompt
from safegen.core.errors import UsageError

# The photo, its mask and how far to go; --size resizes them (t2i's --size sets the output's).
ImageOpt = Annotated[Path, typer.Option("--image", "-i", help="The photo to edit (PNG, JPEG, WebP).")]
MaskOpt = Annotated[Path | None, typer.Option("--mask", help="Inpainting mask: white is repainted, black is kept.")]
StrengthOpt = Annotated[
    float, typer.Option("--strength", min=0.0, max=1.0, help="How far from the photo to go: 0 keeps it, 1 redraws.")
]
EditSizeOpt = Annotated[
    str | None,
    size_option(
        "WIDTHxHEIGHT to resize the photo (and mask) to; default: the photo's size, scaled down to the "
        "model's native area (512x512 for SD 1.x) when larger."
    ),
]


@cli_errors
def i2i(
    prompt: Annotated[str, typer.Argument(help="What the edited image should show.")],
    image: ImageOpt,
    mask: MaskOpt = None,
    strength: StrengthOpt = 0.75,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    steps: Annotated[int, steps_option("Denoising steps (scaled by --strength).")] = 30,
    guidance: GuidanceOpt = 7.5,
    seed: SeedOpt = -1,
    size: EditSizeOpt = None,
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
    from safegen.jobs import prompt_images
    from safegen.pipelines.loading import native_pixels, resolve_t2i_sources

    # 1. Every option is checked before a model loads, as in `safegen t2i`; then the photo and mask are read.
    config = prompt_images.PromptImagesConfig(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        seed=seed,
        n=num_images,
        device=device,
        attention=attention,
    )
    check_output_folder(out, prompt_images.IMAGES_COMMAND)
    width, height = parse_size(size)
    photo, mask_image = _open_inputs(image, mask)
    sources = resolve_t2i_sources(preset or (None if model else DEFAULT_PRESET), model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    check_compare(compare, sources.safe_encoder)
    # 2. The classifier and the family's image-to-image (or, with --mask, inpainting) pipelines.
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    classifier = load_checker(check)
    task = "inpaint" if mask_image is not None else "image2image"
    load = dict(device=dev, torch_dtype=torch_dtype, attention=attention, task=task)
    original, safe = load_pipelines(sources, compare, enc_kwargs, **load)
    warn_long_prompt(safe.tokenizer, prompt)
    # 3. Photo and mask at the size the edit runs at.
    photo, mask_image = _fit_inputs(photo, mask_image, (width, height), native_pixels(safe), image)
    # 4. Edit, check and write each variant's images; with --compare, side-by-side sheets too.
    edit = prompt_images.Edit(photo, mask_image, strength, image, mask)
    records, by_variant = prompt_images.make_images(
        config, out, sources, safe, original, classifier=classifier, edit=edit
    )
    sheets = prompt_images.write_comparison_sheets(by_variant, out, config) if compare else []
    # 5. Results on stdout: the files (or their JSON records), then the sheets, one path a line.
    if json_out:
        print_json(records)
        return
    for rec in records:
        typer.echo(f"{rec['file']}{safety_flag(rec)}")
    for sheet in sheets:
        typer.echo(sheet)


def _open_inputs(image: Path, mask: Path | None) -> tuple[Any, Any]:
    """The photo (RGB) and the mask (L, the photo's size: stretching one moves the repainted region)."""
    photo = _open_image(image, "--image", "RGB")
    mask_image = _open_image(mask, "--mask", "L") if mask is not None else None
    if mask_image is not None and mask_image.size != photo.size:
        # Refuse rather than guess.
        raise UsageError(
            f"--mask {mask} is {mask_image.width}x{mask_image.height} but --image {image} is "
            f"{photo.width}x{photo.height}; make the mask the photo's size (white is repainted, black kept)"
        )
    return photo, mask_image


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


def _fit_inputs(photo: Any, mask: Any, size: tuple[int | None, int | None], native: int, path: Path) -> tuple:
    """Photo and mask at --size, else at the photo's own size scaled down to ``native`` (said on stderr)."""
    from safegen.data.image_io import edit_size, fit_edit_images

    target, scaled_down = edit_size(photo.width, photo.height, size, native)
    if scaled_down:
        typer.echo(
            f"note: --image {path} is {photo.width}x{photo.height}, more than the model's native "
            f"{native:,} pixels; editing at {target[0]}x{target[1]} (pass --size WxH to choose)",
            err=True,
        )
    return fit_edit_images(photo, mask, target)
