"""`safegen t2i`: generate images from one prompt with a Safe-CLIP text encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    check_output_folder,
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
    from safegen.jobs import prompt_images
    from safegen.pipelines.loading import resolve_t2i_sources

    # 1. Every option is checked before a model loads: a typo costs nothing.
    config = prompt_images.PromptImagesConfig(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance=guidance,
        seed=seed,
        n=num_images,
        device=device,
        attention=attention,
        max_images=MAX_IMAGES,  # one call holds every image in memory
    )
    check_output_folder(out, prompt_images.IMAGES_COMMAND)
    width, height = parse_size(size)
    sources = resolve_t2i_sources(preset or (None if model else DEFAULT_PRESET), model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    check_compare(compare, sources.safe_encoder)
    # 2. The classifier and the pipelines (with --compare the original too, sharing the UNet and VAE).
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    classifier = load_checker(check)
    with status(console(), f"loading {sources.base}"):
        original, safe = load_pipelines(
            sources, compare, enc_kwargs, device=dev, torch_dtype=torch_dtype, attention=attention
        )
    warn_long_prompt(safe.tokenizer, prompt)
    # 3. Generate, check and write each variant's images; with --compare, side-by-side sheets too.
    size_inputs = {"width": width, "height": height} if width else {}
    records, by_variant = prompt_images.make_images(
        config, out, sources, safe, original, classifier=classifier, inputs=size_inputs
    )
    sheets = prompt_images.write_comparison_sheets(by_variant, out, config) if compare else []
    for rec, sheet in zip(records[num_images:], sheets, strict=True):
        rec["compare_file"] = sheet  # JSON: each safe image names its sheet
    # 4. Results on stdout: the files (or their JSON records), then the sheets.
    if json_out:
        print_json(records)
        return
    for rec in records:
        typer.echo(f"{rec['file']}{safety_flag(rec)}")
    for path in sheets:
        typer.echo(f"side by side (original | safe): {path}")


def check_compare(compare: bool, safe_encoder: str | None) -> None:
    if compare and safe_encoder is None:
        raise typer.BadParameter("--compare needs a safe encoder (from --preset or --safe-encoder)")


def load_checker(name: str | None) -> Any:
    """The --check classifier, or None."""
    if not name:
        return None
    from safegen.safety import load_classifier

    return load_classifier(name)


def load_pipelines(sources: Any, compare: bool, enc_kwargs: dict[str, Any], **load: Any) -> tuple[Any, Any]:
    """``(original or None, safe)``; missing hub weights name the offline demo preset."""
    from safegen.core.errors import MissingWeightsError, SafegenError
    from safegen.pipelines.loading import load_t2i_pipelines

    try:
        return load_t2i_pipelines(
            sources.base, sources.safe_encoder, compare=compare, safe_encoder_kwargs=enc_kwargs, **load
        )
    except MissingWeightsError as exc:
        if sources.preset == "toy":
            raise
        raise SafegenError(f"{exc}; for an offline demo use --preset toy") from exc


def warn_long_prompt(tokenizer: Any, prompt: str) -> None:
    """Say once, on stderr, which words the text encoder never reads (shortened in the middle)."""
    from safegen.core.terminal import QUIET, shorten_middle, verbosity
    from safegen.pipelines.loading import prompt_overflow

    cut = prompt_overflow(tokenizer, prompt)
    if cut and verbosity() != QUIET:
        typer.echo(
            f"warning: the prompt is longer than the text encoder reads; cut: '{shorten_middle(cut, 60)}'", err=True
        )


def safety_flag(record: dict[str, Any]) -> str:
    """'  FLAGGED (0.93)' or '  ok (0.12)' after a checked image's path; '' when unchecked."""
    if not record.get("safety"):
        return ""
    flag = "  FLAGGED" if record["safety"]["unsafe"] else "  ok"
    return flag + f" ({record['safety']['score']:.2f})"
