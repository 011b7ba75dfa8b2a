"""`safegen i2t`: caption images with a LLaVA-family model through a Safe-CLIP vision tower.

Captions go to stdout (text, or JSON lines with --json), or to a JSONL file with --out;
progress and per-file problems go to stderr. Exit 0 when every image was captioned, 1
when any file could not be read or the run failed, 2 for usage errors.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Annotated, Any

import typer

from ..loading import Sources, resolve_i2t_sources
from ._common import (
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    SafeEncoderOpt,
    cli_errors,
    console,
    resolve_device,
    resolve_dtype,
)

_logger = logging.getLogger(__name__)


@cli_errors
def i2t(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns ('photos/*.jpg').")],
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    prompt: Annotated[
        str, typer.Option("--prompt", help="Instruction given with each image.")
    ] = "Describe this image.",
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", min=0.0, help="Sampling temperature; 0 decodes greedily.")
    ] = 0.2,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Caption length limit.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per generate call.")] = 8,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Sampling seed; -1 picks one (always recorded).")] = -1,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also read images in sub-folders.")] = False,
    compare: Annotated[
        bool, typer.Option("--compare", help="Caption with the original and the safe tower, side by side.")
    ] = False,
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write JSON lines to this file instead of stdout.")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Caption images; with a safe encoder, unsafe content should be left out of the caption."""
    from ..image_io import expand_image_args

    sources = resolve_i2t_sources(preset, model, safe_encoder)
    if compare and sources.safe_encoder is None:
        raise typer.BadParameter(
            "--compare needs a safe encoder (from --preset or --safe-encoder)", param_hint="--compare"
        )
    expanded = expand_image_args(images, recursive=recursive)
    err = console()
    for problem in expanded.problems:
        _report(problem)
    if not expanded.paths:
        raise typer.BadParameter("no image files found in the given arguments", param_hint="IMAGES")

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    seed = random.randrange(2**31) if seed < 0 else seed

    records, failed = _run(
        expanded.paths,
        sources,
        compare=compare,
        device=dev,
        torch_dtype=torch_dtype,
        gen=dict(prompt=prompt, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
        batch_size=batch_size,
        err=err,
    )
    _emit(records, compare=compare, json_out=json_out, out=out, err=err)
    n_bad = failed + len(expanded.problems)
    if n_bad:
        err.print(
            f"{len(records) - failed} image(s) captioned, {n_bad} problem(s) reported above",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _run(
    paths: list[Path],
    sources: Sources,
    *,
    compare: bool,
    device: str,
    torch_dtype: Any,
    gen: dict[str, Any],
    batch_size: int,
    err: Any,
) -> tuple[list[dict[str, Any]], int]:
    """Caption every readable file (twice with --compare) and build one record per path, in order.

    Images are read one batch at a time, so a folder of thousands never sits decoded in
    memory; with --compare the second pass reads the files again after the tower swap.
    """
    from ..image_io import iter_images
    from ..pipelines.image_to_text import SafeLlavaCaptioner

    bad: dict[str, str] = {}

    def batches():
        for start in range(0, len(paths), batch_size):
            batch = []
            for path, image, error in iter_images(paths[start : start + batch_size]):
                if error is None:
                    batch.append((path, image))
                elif str(path) not in bad:
                    _report(str(error))
                    bad[str(path)] = error.reason
            yield batch

    err.print(f"loading {sources.base} ...", markup=False, soft_wrap=True)
    _quiet_loading()
    captioner = SafeLlavaCaptioner.from_pretrained(
        sources.base,
        safe_encoder=None if compare else sources.safe_encoder,
        device=device,
        torch_dtype=torch_dtype,
        keep_original=False,
    )
    passes = ["original", "safe"] if compare else ["caption"]
    captions: dict[str, dict[str, str]] = {name: {} for name in passes}
    from ..terminal import job_progress

    with job_progress("captioning", total=len(paths) * len(passes)) as progress:
        for name in passes:
            if name == "safe":
                captioner.set_safe_encoder(sources.safe_encoder, keep_original=False)
            progress.describe(f"captioning ({name})")
            done = 0
            for batch in batches():
                texts = (
                    captioner.caption(
                        [im for _, im in batch],
                        gen["prompt"],
                        temperature=gen["temperature"],
                        max_new_tokens=gen["max_new_tokens"],
                        batch_size=batch_size,
                        seed=gen["seed"],
                    )
                    if batch
                    else []
                )
                captions[name].update((str(p), t) for (p, _), t in zip(batch, texts, strict=True))
                done = min(done + batch_size, len(paths))
                progress.update(passes.index(name) * len(paths) + done)

    common = {"model": sources.base, "safe_encoder": sources.safe_encoder, "preset": sources.preset, **gen}
    records = []
    for path in map(str, paths):
        if path in bad:
            records.append({"image": path, "error": bad[path]})
        else:
            records.append({"image": path, **{name: captions[name].get(path) for name in passes}, **common})
    return records, len(bad)


def _emit(records: list[dict[str, Any]], *, compare: bool, json_out: bool, out: Path | None, err: Any) -> None:
    """Write JSONL to --out, JSON lines to stdout with --json, else readable text to stdout."""
    from ..outputs import atomic_write_text

    if out is not None:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        err.print(f"wrote {len(records)} record(s) to {out}", markup=False, soft_wrap=True)
        return
    for rec in records:
        if json_out:  # error records too: machine readers see every input
            typer.echo(json.dumps(rec, ensure_ascii=False))
        elif "error" in rec:
            continue  # already reported on stderr
        elif compare:
            typer.echo(
                f"{rec['image']}\n  original: {_one_line(rec['original'])}\n  safe:     {_one_line(rec['safe'])}"
            )
        else:
            typer.echo(f"{rec['image']}\t{_one_line(rec['caption'])}")


def _quiet_loading() -> None:
    """transformers 5 draws a progress bar per weight file; this command's stderr is for its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _report(problem: str) -> None:
    """One unwrapped line per problem on stderr (rich would wrap long paths and read '[...]' as markup)."""
    typer.echo(f"error: {problem}", err=True)


def _one_line(text: str) -> str:
    """One record per line, and no raw control characters (a model's output must not drive the terminal)."""
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
