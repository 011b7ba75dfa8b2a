"""`safegen i2t`: caption images with a LLaVA-family model through a Safe-CLIP vision tower.

Captions go to stdout (text, or JSON lines with --json). With ``--out DIR`` (a folder, as
for every other command) they go to ``DIR/captions.jsonl`` instead, a line per image and
variant written as each batch finishes, keyed by a hash of the image bytes, the prompt, the
generation settings and the weight fingerprints: re-running the command reuses captions
whose key matches and re-captions the rest (changed images or settings are reported). One
process per DIR. Progress and per-file problems go to stderr. Exit 0 when every image was
captioned, 1 when any file could not be read or the run failed, 2 for usage errors.

The job itself is :mod:`safegen.jobs.captioning`; this module checks options and prints.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    check_device,
    check_number,
    check_output_folder,
    check_seed,
    cli_errors,
    console,
    echo_plain,
    encoder_kwargs,
)
from safegen.cli.options import (
    ActivationOpt,
    BaseOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    SafeEncoderOpt,
    batch_size_option,
    caption_prompt_option,
    compare_option,
    max_new_tokens_option,
    out_option,
    recursive_option,
    seed_option,
    temperature_option,
)
from safegen.core.errors import UsageError
from safegen.core.terminal import hide_loading_bars

_logger = logging.getLogger(__name__)


@cli_errors
def i2t(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns ('photos/*.jpg').")],
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    prompt: Annotated[str, caption_prompt_option("Instruction given with each image.")] = "Describe this image.",
    temperature: Annotated[
        float, temperature_option("Sampling temperature; 0 decodes greedily.", short=True, minimum=0.0)
    ] = 0.2,
    max_new_tokens: Annotated[int, max_new_tokens_option("Caption length limit.", maximum=4096)] = 128,
    batch_size: Annotated[int, batch_size_option("Images per generate call.", short=True)] = 8,
    seed: Annotated[int, seed_option("Sampling seed; -1 picks one (always recorded).")] = -1,
    recursive: Annotated[bool, recursive_option("Also read images in sub-folders.")] = False,
    compare: Annotated[bool, compare_option("Caption with the original and the safe tower, side by side.")] = False,
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None, out_option("Output folder: captions.jsonl (resumable, a line per image) and run.json.")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    image_fit: Annotated[
        str,
        typer.Option(
            "--image-fit", help="pad (original LLaVA-1.5), crop (llava-hf's centre crop) or auto (pad for LLaVA)."
        ),
    ] = "auto",
) -> None:
    """Caption images; with a safe encoder, unsafe content should be left out of the caption."""
    from safegen.data.image_io import expand_image_args
    from safegen.jobs.captioning import I2T_COMMAND, CaptionConfig, run_captioning
    from safegen.pipelines.loading import resolve_i2t_sources

    # Over 80 lines with the signature, which declares one option a line; the body is steps 1-4.
    # 1. Options and the output folder are checked before any image is read or model loaded.
    check_seed(seed)
    check_number(temperature, "--temperature")
    check_device(device)
    if out is not None:
        check_output_folder(out, I2T_COMMAND)
    sources = resolve_i2t_sources(preset, model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    if compare and sources.safe_encoder is None:
        raise typer.BadParameter(
            "--compare needs a safe encoder (from --preset or --safe-encoder)", param_hint="--compare"
        )
    # 2. The image files the arguments name; arguments that name none are reported.
    expanded = expand_image_args(images, recursive=recursive)
    err = console()
    if not expanded.paths:
        # Nothing to caption: the problems are the error, said once (not each, then a usage block about them).
        raise UsageError(f"no image files found: {'; '.join(expanded.problems) or 'the arguments name none'}")
    for problem in expanded.problems:
        _report(problem)
    # 3. Caption them (resuming in --out), progress and unreadable files on stderr.
    config = CaptionConfig(
        images=expanded.paths,
        base=sources.base,
        safe_encoder=sources.safe_encoder,
        preset=sources.preset,
        encoder_kwargs=enc_kwargs,
        prompt=prompt,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        compare=compare,
        out=out,
        device=device,
        dtype=dtype,
        image_fit=image_fit,
    )
    result = run_captioning(config, _TerminalReporter(err))
    # 4. Captions on stdout (a summary on stderr with --out); exit 1 if any file was a problem.
    _emit(result.records, compare=compare, json_out=json_out, out=out, err=err, stats=result.stats)
    n_bad = result.failed + len(expanded.problems)
    if n_bad:
        echo_plain(err, f"{len(result.records) - result.failed} image(s) captioned, {n_bad} problem(s) reported above")
        raise typer.Exit(1)


class _TerminalReporter:
    """The captioning job's progress on stderr: a transient bar per pass, a line per unreadable file."""

    def __init__(self, err: Any):
        self.err = err
        self._progress: Any = None
        self._task: Any = None

    def loading(self, model: str) -> None:
        echo_plain(self.err, f"loading {model} ...")
        hide_loading_bars()

    def unreadable(self, problem: str) -> None:
        _report(problem)

    def pass_started(self, variant: str, total: int) -> None:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                console=self.err,
                transient=True,
            )
            self._progress.start()
        self._task = self._progress.add_task(f"captioning ({variant})", total=total)

    def advanced(self, images: int) -> None:
        self._progress.advance(self._task, images)

    def passes_done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _emit(
    records: list[dict[str, Any]],
    *,
    compare: bool,
    json_out: bool,
    out: Path | None,
    err: Any,
    stats: dict[str, int] | None = None,
) -> None:
    """With --out, a summary on stderr (captions are in OUT/captions.jsonl); else captions on stdout."""
    if out is not None:
        from safegen.jobs.captioning import CAPTIONS

        stats = stats or {}
        echo_plain(
            err,
            f"{len(records)} image(s): {stats.get('captioned', 0)} caption(s) made, {stats.get('reused', 0)} reused "
            f"(same image and settings), {stats.get('changed', 0)} changed since the last run and redone "
            f"-> {out / CAPTIONS}",
        )
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


def _report(problem: str) -> None:
    """One unwrapped line per problem on stderr (rich would wrap long paths and read '[...]' as markup)."""
    typer.echo(f"error: {problem}", err=True)


def _one_line(text: str) -> str:
    """One record per line, and no raw control characters (a model's output must not drive the terminal)."""
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
