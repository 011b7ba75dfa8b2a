"""Every option that more than one command takes, declared once (typer's shared ``Annotated`` aliases).

A flag's names, short form and bounds live here; its default stays in each command's
signature (typer's convention). Where commands word a flag's help differently, the option is
a function taking the help text (``steps_option("Denoising steps (rows may override).")``),
so each command keeps its own words; an alias (``SizeOpt``) is the form most commands share.
Nothing here imports torch: `safegen --help` must stay instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# ----------------------------------------------------------------------------- models
PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="Named preset (see `safegen presets`).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Base model: hub id or local folder.")]
SafeEncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--safe-encoder",
        "-e",
        help="Safe-CLIP encoder: hub id, folder, open_clip checkpoint or LoRA adapter; 'none' for the original.",
    ),
]
ActivationOpt = Annotated[
    str | None,
    typer.Option(
        "--activation",
        help="Activation of an open_clip checkpoint that records none: quick_gelu (OpenAI) or gelu (LAION).",
    ),
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="What the safe encoder builds on: a LoRA adapter's base CLIP, or the open_clip model name of a "
        "bare open_clip checkpoint (e.g. ViT-H-14).",
    ),
]


def captioner_option(help: str) -> Any:
    return typer.Option("--captioner", help=help)


def safe_vision_encoder_option(help: str) -> Any:
    return typer.Option("--safe-vision-encoder", help=help)


def processor_option(help: str = "CLIPProcessor source, for checkpoints that ship weights only.") -> Any:
    return typer.Option("--processor", help=help)


ProcessorOpt = Annotated[str | None, processor_option()]

# ----------------------------------------------------------------------------- hardware
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp16 on cuda, fp32 on cpu), fp32, fp16, bf16.")]


def attention_option(help: str = "auto, sdpa, xformers or eager.") -> Any:
    return typer.Option("--attention", help=help)


AttentionOpt = Annotated[str, attention_option()]


# ----------------------------------------------------------------------------- generation
def steps_option(help: str | None) -> Any:
    return typer.Option("--steps", min=1, help=help)


def guidance_option(
    help: str | None = "Classifier-free guidance scale.", *, cfg: bool = True, minimum: float | None = None
) -> Any:
    """--guidance (and its alias --cfg, which `safegen serve` does not take)."""
    return typer.Option("--guidance", *(("--cfg",) if cfg else ()), min=minimum, help=help)


GuidanceOpt = Annotated[float, guidance_option()]


def seed_option(help: str | None = "Random seed; -1 picks one (always recorded).", *, short: bool = True) -> Any:
    """--seed (and -s, which the eval commands do not take)."""
    return typer.Option("--seed", *(("-s",) if short else ()), help=help)


SeedOpt = Annotated[int, seed_option()]


def size_option(help: str = "WIDTHxHEIGHT; default: the model's.") -> Any:
    return typer.Option("--size", help=help)


SizeOpt = Annotated[str | None, size_option()]


def num_images_option(help: str = "Images to generate.") -> Any:
    return typer.Option("--num-images", "-n", min=1, help=help)


NumImagesOpt = Annotated[int, num_images_option()]


def negative_prompt_option(help: str | None = "What to steer away from.") -> Any:
    return typer.Option("--negative-prompt", help=help)


NegativePromptOpt = Annotated[str | None, negative_prompt_option()]


def batch_size_option(help: str | None = None, *, short: bool = False) -> Any:
    """--batch-size (and -b, which batch, i2t and retrieve take)."""
    return typer.Option("--batch-size", *(("-b",) if short else ()), min=1, help=help)


def limit_option(help: str) -> Any:
    return typer.Option("--limit", min=1, help=help)


def num_shards_option(help: str | None = None) -> Any:
    return typer.Option("--num-shards", min=1, help=help)


def shard_index_option(help: str | None = None) -> Any:
    return typer.Option("--shard-index", min=0, help=help)


# ----------------------------------------------------------------------------- captioning
def caption_prompt_option(help: str | None = None) -> Any:
    return typer.Option("--prompt", help=help)


def temperature_option(help: str, *, short: bool = False, minimum: float | None = None) -> Any:
    """--temperature (and -t, which `safegen i2t` takes)."""
    return typer.Option("--temperature", *(("-t",) if short else ()), min=minimum, help=help)


def max_new_tokens_option(help: str | None = None, *, maximum: int | None = None) -> Any:
    return typer.Option("--max-new-tokens", min=1, max=maximum, help=help)


def recursive_option(help: str) -> Any:
    return typer.Option("--recursive", "-r", help=help)


# ----------------------------------------------------------------------------- evaluation and safety
def prompts_option(help: str) -> Any:
    return typer.Option("--prompts", help=help)


def methods_option(help: str) -> Any:
    return typer.Option("--methods", help=help)


def classifier_option(help: str) -> Any:
    return typer.Option("--classifier", help=help)


def safety_concept_option(help: str | None = None) -> Any:
    return typer.Option("--safety-concept", help=help)


def check_option(help: str = "Score outputs with a classifier (nudenet, toy); flags, never hides.") -> Any:
    return typer.Option("--check", help=help)


CheckOpt = Annotated[str | None, check_option()]
ThresholdOpt = Annotated[float | None, typer.Option("--threshold", help="Classifier threshold.")]


def on_unsafe_option(help: str) -> Any:
    return typer.Option("--on-unsafe", help=help)


def compare_option(help: str) -> Any:
    return typer.Option("--compare", help=help)


# ----------------------------------------------------------------------------- output
def out_option(help: str = "Output folder.") -> Any:
    return typer.Option("--out", "-o", help=help)


OutOpt = Annotated[Path, out_option()]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
