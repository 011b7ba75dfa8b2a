"""`safegen retrieve build|add|query|info`: a persistent cross-modal index over images and texts.

The index folder records which CLIP built it and a fingerprint of its weights; `add` and
`query` reuse that model unless --model names one (a different model, or new weights in the
same folder, is refused: their embeddings are not comparable). `build` and `add` hold the
index's lock (one writer at a time: a second gets the holder's pid and host) and save after
every chunk of images, so a kill loses at most the chunk in flight. Results go to stdout,
progress and per-file problems to stderr; exit 1 when any file could not be indexed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    Command,
    check_device,
    check_output_folder,
    claim_output_folder,
    cli_errors,
    console,
    encoder_kwargs,
    print_json,
)
from safegen.cli.options import (
    ActivationOpt,
    BaseOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    ProcessorOpt,
    batch_size_option,
    recursive_option,
)
from safegen.core.errors import SafegenError
from safegen.core.terminal import hide_loading_bars

_logger = logging.getLogger(__name__)
INDEX_COMMAND = "safegen retrieve"  # build and add share an index folder; its output marker names this

app = typer.Typer(
    name="retrieve",
    help="Build, grow and query a cross-modal retrieval index with a (safe) CLIP.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

IndexArg = Annotated[Path, typer.Argument(help="Index folder (index.json + embeddings-*.safetensors).")]
ImagesArg = Annotated[list[str] | None, typer.Argument(help="Image files, folders or glob patterns to index.")]
TextsOpt = Annotated[
    Path | None, typer.Option("--texts", help="Text file to index: one text a line; blank and '#' lines skipped.")
]
BatchOpt = Annotated[int, batch_size_option("Items encoded per forward pass.", short=True)]
RecursiveOpt = Annotated[bool, recursive_option("Also index images in sub-folders.")]


def _clip_source(preset: str | None, model: str | None) -> str | None:
    """--model wins; --preset means that preset's Safe-CLIP (the retrieval model of the paper)."""
    if model:
        return model
    if preset:
        from safegen.models.presets import get_preset

        p = get_preset(preset)
        source = p.safe_vision_encoder or p.safe_encoder
        if not source:
            raise SafegenError(f"preset '{preset}' names no Safe-CLIP; pass --model")
        return source
    return None


def _read_texts(path: Path) -> list[str]:
    from safegen.core.io import text_rows

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SafegenError(f"cannot read text file {path}: {exc}") from exc
    return [line for _, line in text_rows(text)]


def _open(
    index: Path,
    source: str | None,
    processor: str | None,
    device: str,
    dtype: str,
    batch_size: int,
    enc_kwargs: dict[str, Any] | None = None,
) -> Any:
    from safegen.cli._common import resolve_device, resolve_dtype
    from safegen.retrieval.retriever import RetrievalIndex
    from safegen.retrieval.sources import open_retriever

    existing = RetrievalIndex.load(index) if (index / "index.json").exists() else None
    source = source or (existing.model if existing is not None else None)
    if not source:
        raise typer.BadParameter(
            "no CLIP model given: pass --model ID_OR_FOLDER or --preset NAME", param_hint="--model"
        )
    dev = resolve_device(device)
    hide_loading_bars()
    return open_retriever(
        source,
        processor=processor,
        encoder_kwargs=enc_kwargs,
        index=existing,
        device=dev,
        torch_dtype=resolve_dtype(dtype, dev),
        batch_size=batch_size,
    )


SAVE_EVERY = 1024  # images between incremental saves of `build` / `add`


def _add(retriever: Any, images: list[str] | None, texts: Path | None, recursive: bool, index: Path) -> int:
    """Index images and texts, saving after every chunk; report problems on stderr; return their number."""
    from safegen.data.image_io import expand_image_args

    err = console()
    problems = 0
    if images:
        expanded = expand_image_args(images, recursive=recursive)
        for problem in expanded.problems:
            typer.echo(f"error: {problem}", err=True)
        problems += len(expanded.problems)
        report = _add_with_progress(
            retriever.add_images,
            list(expanded.paths),
            "images",
            retriever.batch_size,
            save=lambda: retriever.save(index),
        )
        for error in report.errors:
            typer.echo(f"error: {error}", err=True)
        problems += len(report.errors)
        err.print(
            f"images: {report.added} added, {report.skipped} already indexed, {report.changed} changed since "
            f"(re-encoded), {len(report.errors)} unreadable",
            markup=False,
            soft_wrap=True,
        )
    if texts is not None:
        lines = _read_texts(texts)
        report = _add_with_progress(retriever.add_texts, lines, "texts", retriever.batch_size)
        err.print(f"texts: {report.added} added, {report.skipped} already indexed", markup=False, soft_wrap=True)
    return problems


def _add_with_progress(add: Any, items: list, what: str, batch_size: int, save: Any = None) -> Any:
    """``add(items)`` a few batches at a time, under one progress display (counts, ETA).

    ``save`` (the index's incremental save) runs every ``SAVE_EVERY`` items, so a killed
    ``build``/``add`` loses at most the chunk in flight.
    """
    from safegen.core.terminal import job_progress
    from safegen.retrieval.retriever import AddReport

    total, step, unsaved = AddReport(), max(1, batch_size) * 4, 0
    with job_progress(f"encoding {what}", total=len(items)) as bar:
        for start in range(0, len(items), step):
            part = add(items[start : start + step])
            total.added, total.skipped = total.added + part.added, total.skipped + part.skipped
            total.changed += part.changed
            total.errors.extend(part.errors)
            unsaved += part.added + part.changed
            if save is not None and unsaved >= SAVE_EVERY:
                save()
                unsaved = 0
            bar.advance(len(items[start : start + step]))
    return total


@app.command("build", cls=Command)
@cli_errors
def build(
    index: IndexArg,
    images: ImagesArg = None,
    texts: TextsOpt = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    processor: ProcessorOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index at INDEX.")] = False,
    recursive: RecursiveOpt = False,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Create an index from image files/folders and/or a text file."""
    if not images and texts is None:
        raise typer.BadParameter("give images to index and/or --texts FILE", param_hint="IMAGES")
    check_output_folder(index, INDEX_COMMAND, flag="INDEX")
    check_device(device)
    if (index / "index.json").exists() and not overwrite:
        raise SafegenError(f"'{index}' already holds an index; use `safegen retrieve add` or pass --overwrite")
    source = _clip_source(preset, model)
    if not source:
        raise typer.BadParameter(
            "no CLIP model given: pass --model ID_OR_FOLDER or --preset NAME", param_hint="--model"
        )
    from safegen.cli._common import resolve_device, resolve_dtype
    from safegen.core.locking import FolderLock
    from safegen.retrieval.sources import open_retriever

    with FolderLock(index, purpose="retrieval index"):
        claim_output_folder(index, INDEX_COMMAND, flag="INDEX")
        dev = resolve_device(device)
        hide_loading_bars()
        retriever = open_retriever(
            source,
            processor=processor,
            encoder_kwargs=encoder_kwargs(activation, base),
            device=dev,
            torch_dtype=resolve_dtype(dtype, dev),
            batch_size=batch_size,
        )
        problems = _add(retriever, images, texts, recursive, index)
        retriever.save(index)
    console().print(
        f"index {index}: {len(retriever.index)} item(s), model {retriever.model_id}", markup=False, soft_wrap=True
    )
    if problems:
        raise typer.Exit(1)


@app.command("add", cls=Command)
@cli_errors
def add(
    index: IndexArg,
    images: ImagesArg = None,
    texts: TextsOpt = None,
    model: ModelOpt = None,
    processor: ProcessorOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    recursive: RecursiveOpt = False,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Add images and/or texts to an existing index (items already indexed are skipped)."""
    if not images and texts is None:
        raise typer.BadParameter("give images to add and/or --texts FILE", param_hint="IMAGES")
    check_device(device)
    if not (index / "index.json").exists():
        raise SafegenError(f"'{index}' holds no index; create one with `safegen retrieve build`")
    check_output_folder(index, INDEX_COMMAND, flag="INDEX")  # a user's index.json is no index of ours
    from safegen.core.locking import FolderLock

    # The index is read under the lock: a writer that finished meanwhile is never overwritten.
    with FolderLock(index, purpose="retrieval index"):
        retriever = _open(index, model, processor, device, dtype, batch_size, encoder_kwargs(activation, base))
        problems = _add(retriever, images, texts, recursive, index)
        retriever.save(index)
    console().print(f"index {index}: {len(retriever.index)} item(s)", markup=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command("query", cls=Command)
@cli_errors
def query(
    index: IndexArg,
    text: Annotated[str | None, typer.Option("--text", help="Query text.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image file.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many results.")] = 10,
    target: Annotated[str, typer.Option("--target", help="auto (the other modality), image, text or all.")] = "auto",
    model: ModelOpt = None,
    processor: ProcessorOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Print the top-k indexed items for a text or an image query."""
    if (text is None) == (image is None):
        raise typer.BadParameter("give exactly one of --text or --image", param_hint="--text/--image")
    if target not in ("auto", "image", "text", "all"):
        raise typer.BadParameter(f"'{target}' is not one of auto, image, text, all", param_hint="--target")
    if not (index / "index.json").exists():
        raise SafegenError(f"'{index}' holds no index; create one with `safegen retrieve build`")
    retriever = _open(index, model, processor, device, dtype, 32, encoder_kwargs(activation, base))
    if image is not None:
        from safegen.data.image_io import load_image

        hits = retriever.search(load_image(image), k, target=target)
    else:
        hits = retriever.search(text, k, target=target)
    if json_out:
        print_json({"query": text if text is not None else str(image), "hits": [h.to_dict() for h in hits]})
        return
    for hit in hits:
        source = " ".join(hit.source.split())
        typer.echo(f"{hit.rank}\t{hit.score:.4f}\t{hit.kind}\t{source}")


@app.command("info", cls=Command)
@cli_errors
def info(index: IndexArg, json_out: JsonOpt = False) -> None:
    """Describe an index: model, size, dimension and item counts."""
    from safegen.retrieval.retriever import RetrievalIndex

    idx = RetrievalIndex.load(index)
    summary = {
        "index": str(index),
        "model": idx.model,
        "dim": idx.dim,
        "items": len(idx),
        "images": idx.count("image"),
        "texts": idx.count("text"),
        "generation": idx.generation,
    }
    if json_out:
        print_json(summary)
    else:
        typer.echo(json.dumps(summary, indent=2))
