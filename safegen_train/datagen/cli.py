"""``safegen-train data``: make Safe-CLIP training data from safe captions.

    safegen-train data rewrite captions.txt --model LM --out runs/rw [--taxonomy tax.yaml] [--batch-size 16]
    safegen-train data filter runs/rw --out runs/flt [--clip openai/clip-vit-large-patch14] [--min-similarity 0.6]
    safegen-train data render runs/flt --out runs/rd --model SD --classifier nudenet [--clip CLIP] [-n 3]
    safegen-train data build runs/rd --out data/mine        # or runs/flt for text-only pairs
    safegen-train data rewrite captions.txt -m toy --out runs/rw   # the toy preset's shipped rewriter, offline
    safegen-train data toy-rewriter runs/toy_rewriter       # train the toy world's tiny rewriting LM again
    safegen-train data preprocess data/mine/train.jsonl data/mine/val.jsonl --model CLIP --out cache/px

Every stage prints a JSON summary on stdout. Exit codes: 0 ok, 1 runtime error, 2 bad
input or usage (one line; traceback with SAFEGEN_DEBUG=1). Nothing here imports torch
until a command runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.core.errors import SafegenError, UsageError
from safegen_train.datagen.captions import DEFAULT_MAX_CAPTION_CHARS

app = typer.Typer(
    name="data",
    help="Make training data: rewrite safe captions, filter, render images, build quadruples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


PREPROCESS_COMMAND = "safegen-train data preprocess"  # what the output marker of a cache folder names


def _one_line(func):
    """Usage errors (bad input, bad model, bad taxonomy) exit 2, other known failures 1, each as one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SafegenError as exc:
            if os.environ.get("SAFEGEN_DEBUG", "") not in ("", "0", "false"):
                raise
            sys.stderr.write(f"safegen-train data: {exc}\n")
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None

    return wrapper


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _problem(line: str) -> None:
    sys.stderr.write(f"safegen-train data: rejected: {line}\n")


def _toy_rewriter() -> str:
    """The toy preset's rewriter folder (``-m toy``), or a usage error saying how to train one."""
    from safegen.models.presets import get_preset

    folder = Path(get_preset("toy").resolved().safe_encoder).parent / "rewriter"  # beside the toy Safe-CLIP
    if not (folder / "config.json").is_file():
        raise UsageError(f"--model toy: no toy rewriter in {folder}; train one: safegen-train data toy-rewriter DIR")
    return str(folder)


def _taxonomy(value: str | None) -> Any:
    from safegen_train.datagen.taxonomy import default_taxonomy, load_taxonomy

    if value in (None, "i2p"):
        return default_taxonomy()
    if value == "toy":
        from safegen_train.toy.rewriter import toy_taxonomy

        return toy_taxonomy()
    return load_taxonomy(value)


@app.command()
@_one_line
def rewrite(
    captions: Annotated[Path, typer.Argument(help="Safe captions: .txt, .jsonl or .csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumable).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Rewriter: causal/chat LM, hub id or folder; 'toy': the shipped one.")
    ],
    taxonomy: Annotated[
        str | None, typer.Option("--taxonomy", help="Taxonomy file (.yaml/.json), 'i2p' (default) or 'toy'.")
    ] = None,
    concept: Annotated[list[str] | None, typer.Option("--concept", help="Use only this concept (repeat).")] = None,
    per_caption: Annotated[int, typer.Option("--per-caption", help="Concepts per caption; 0: all.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generation call.")] = 8,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0: greedy.")] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 0.95,
    top_k: Annotated[int, typer.Option("--top-k", help="Top-k sampling; 0: off.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest reply in tokens.")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first row (row i: seed + i).")] = 0,
    engine: Annotated[str, typer.Option("--engine", help="auto, transformers or vllm.")] = "auto",
    chat: Annotated[str, typer.Option("--chat", help="auto, yes or no: wrap prompts in the chat template.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, fp32, fp16, bf16.")] = "auto",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N captions.")] = None,
    num_shards: Annotated[int, typer.Option("--num-shards", help="Split the captions over N jobs.")] = 1,
    shard_index: Annotated[int, typer.Option("--shard-index", help="This job's shard (0-based).")] = 0,
    max_caption_chars: Annotated[
        int,
        typer.Option(
            "--max-caption-chars", help="Longer captions are reported (file:line), recorded as rejected and skipped."
        ),
    ] = DEFAULT_MAX_CAPTION_CHARS,
) -> None:
    """Rewrite safe captions into unsafe ones, one row per caption and concept (resumable, shardable)."""
    from safegen_train.datagen.rewrite import RewriteConfig, Rewriter

    if model == "toy":
        model = _toy_rewriter()
        taxonomy = taxonomy or "toy"

    cfg = RewriteConfig(
        captions=captions,
        out=out,
        model=model,
        taxonomy=taxonomy if taxonomy not in (None, "i2p", "toy") else None,
        concepts=concept or None,
        concepts_per_caption=per_caption,
        seed=seed,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        engine=engine,
        chat=chat,
        device=device,
        dtype=dtype,
        limit=limit,
        num_shards=num_shards,
        shard_index=shard_index,
        max_caption_chars=max_caption_chars,
    )
    report = _problem  # a rejected caption is one stderr line; the run goes on and the JSON summary counts them
    _print(Rewriter(cfg, taxonomy=_taxonomy(taxonomy), report=report).run().to_dict())


@app.command("filter")
@_one_line
def filter_(
    rewrites: Annotated[Path, typer.Argument(help="Output folder of `data rewrite`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    clip: Annotated[str | None, typer.Option("--clip", help="Base CLIP for closeness (omit to skip).")] = None,
    min_similarity: Annotated[float, typer.Option("--min-similarity", help="Least cos(safe, unsafe).")] = 0.6,
    text_classifier: Annotated[
        str, typer.Option("--text-classifier", help="'wordlist' or a text-classification model.")
    ] = "wordlist",
    unsafe_label: Annotated[
        list[str] | None, typer.Option("--unsafe-label", help="A label of the model that means unsafe (repeat).")
    ] = None,
    text_threshold: Annotated[float, typer.Option("--text-threshold", help="Least label score.")] = 0.5,
    keep_duplicates: Annotated[bool, typer.Option("--keep-duplicates", help="Do not drop repeats.")] = False,
) -> None:
    """Keep rewrites that show their concept, stay close to their caption and are not repeats."""
    from safegen_train.datagen.filters import FilterConfig, run_filters

    cfg = FilterConfig(
        rewrites=rewrites,
        out=out,
        clip=clip,
        min_similarity=min_similarity,
        text_classifier=text_classifier,
        text_threshold=text_threshold,
        unsafe_labels=unsafe_label or None,
        dedupe=not keep_duplicates,
    )
    _print(run_filters(cfg).to_dict())


@app.command()
@_one_line
def render(
    filtered: Annotated[Path, typer.Argument(help="Output folder of `data filter`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumable).")],
    preset: Annotated[str | None, typer.Option("--preset", help="Text-to-image preset (original encoder).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Text-to-image model: hub id or folder.")] = None,
    classifier: Annotated[str, typer.Option("--classifier", help="Output classifier: nudenet, toy, ...")] = "nudenet",
    threshold: Annotated[float | None, typer.Option("--threshold", help="Classifier threshold.")] = None,
    concept_threshold: Annotated[float, typer.Option("--concept-threshold", help="Least concept score.")] = 0.5,
    clip: Annotated[str | None, typer.Option("--clip", help="CLIP for image-text similarity (omit to skip).")] = None,
    min_image_similarity: Annotated[
        float, typer.Option("--min-image-similarity", help="Least cos(image, unsafe caption).")
    ] = 0.2,
    n: Annotated[int, typer.Option("-n", help="Images (seeds) per unsafe caption.")] = 3,
    render_safe: Annotated[str, typer.Option("--render-safe", help="auto, always or never.")] = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Guidance scale.")] = 7.5,
    seed: Annotated[int, typer.Option("--seed", help="Offset added to every row's seed.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per pipeline call.")] = 4,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, fp32, fp16, bf16.")] = "auto",
    num_shards: Annotated[int, typer.Option("--num-shards", help="Split the images over N jobs.")] = 1,
    shard_index: Annotated[int, typer.Option("--shard-index", help="This job's shard (0-based).")] = 0,
) -> None:
    """Draw unsafe (and missing safe) images with the original encoder; keep those that show the concept."""
    from safegen_train.datagen.render import RenderConfig, run_render

    cfg = RenderConfig(
        filtered=filtered,
        out=out,
        preset=preset,
        model=model,
        classifier=classifier,
        threshold=threshold,
        concept_threshold=concept_threshold,
        clip=clip,
        min_image_similarity=min_image_similarity,
        n=n,
        render_safe=render_safe,
        steps=steps,
        guidance=guidance,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        num_shards=num_shards,
        shard_index=shard_index,
    )
    _print(run_render(cfg).to_dict())


@app.command()
@_one_line
def build(
    source: Annotated[Path, typer.Argument(help="Output folder of `data render` (or `data filter`: text only).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder.")],
    val_fraction: Annotated[float, typer.Option("--val", help="Share of source captions in validation.")] = 0.1,
    test_fraction: Annotated[float, typer.Option("--test", help="Share of source captions in test.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 0,
    name: Annotated[str, typer.Option("--name", help="Dataset name for the card.")] = (
        "safegen synthetic safe/unsafe quadruples"
    ),
) -> None:
    """Write quadruples (train/val/test JSONL split by source caption), a ViSU export and a dataset card."""
    from safegen_train.datagen.build import BuildConfig, run_build

    cfg = BuildConfig(
        source=source, out=out, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, name=name
    )
    _print(run_build(cfg).to_dict())


@app.command()
@_one_line
def preprocess(
    data: Annotated[list[str], typer.Argument(help="Training/validation data: .jsonl, ViSU .json or folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder (resumable; set preprocessed_cache to it).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The CLIP you will train (its image processor).")],
    split: Annotated[str, typer.Option("--split", help="Split of dataset folders.")] = "train",
    coco_root: Annotated[str | None, typer.Option("--coco-root", help="ViSU JSON: COCO root.")] = None,
    unsafe_image_root: Annotated[
        str | None, typer.Option("--unsafe-image-root", help="ViSU JSON: folder of the unsafe images.")
    ] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Images per shard file.")] = 1024,
    workers: Annotated[int, typer.Option("--workers", help="Decoding processes (0: this one).")] = 0,
    activation: Annotated[
        str | None, typer.Option("--activation", help="open_clip checkpoints: the towers' activation.")
    ] = None,
) -> None:
    """Decode, resize and crop every image once into uint8 shards that training reads instead (resumable)."""
    from safegen_train.model import load_image_processor
    from safegen_train.preprocess import images_of_sources, preprocess_images

    if shard_size < 1 or workers < 0:
        raise UsageError(f"--shard-size must be >= 1 and --workers >= 0 (got {shard_size}, {workers})")
    from safegen.core.output_folder import check_output_folder, output_folder

    check_output_folder(out, PREPROCESS_COMMAND)  # before the model loads
    from safegen.data.quadruples import DataError
    from safegen_train.config import ConfigError

    try:  # the data and the model are this command's input: a problem with either is a usage error
        paths = images_of_sources(data, split=split, coco_root=coco_root, unsafe_image_root=unsafe_image_root)
        processor = load_image_processor(model, activation=activation)
    except (ConfigError, DataError) as exc:
        raise UsageError(str(exc)) from None
    with output_folder(out, PREPROCESS_COMMAND):
        summary = preprocess_images(paths, out, processor, shard_size=shard_size, workers=workers)
    _print(summary.to_dict())


@app.command("toy-rewriter")
@_one_line
def toy_rewriter(
    out: Annotated[Path, typer.Argument(help="Folder for the model and tokenizer.")],
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
) -> None:
    """Train the toy world's tiny rewriting LM (a LlamaForCausalLM, about 30 s on a CPU)."""
    from safegen.core.output_folder import check_output_folder, output_folder

    check_output_folder(out, "safegen-train data toy-rewriter", flag="OUT")  # before 20 s of training
    import torch

    from safegen_train.toy.rewriter import train_toy_rewriter

    torch.set_num_threads(min(4, torch.get_num_threads()))
    with output_folder(out, "safegen-train data toy-rewriter", flag="OUT"):
        _, _, report = train_toy_rewriter(out, steps=steps, seed=seed)
    _print({"out": str(out), **report})
