"""`safegen batch FILE`: generate an image set from a prompt file, resumably.

Progress and diagnostics go to stderr; the final counts go to stdout (``--json`` for a
machine-readable form). Exit codes: 0 done (bad input rows are reported, not fatal
unless ``--strict``), 1 runtime error or images that failed to generate, 2 usage error,
130 interrupted (re-run the same command to resume).

The job itself is :mod:`safegen.jobs` (the config that checks the options, the runner, the
dry-run plan, the folder's merge and summary); this module builds the config, naming the
flag in its errors, and prints.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    Command,
    check_output_folder,
    cli_errors,
    console,
    encoder_kwargs,
    parse_size,
    print_json,
)
from safegen.cli.options import (
    ActivationOpt,
    BaseOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    PresetOpt,
    SafeEncoderOpt,
    SizeOpt,
    ThresholdOpt,
    attention_option,
    batch_size_option,
    check_option,
    guidance_option,
    limit_option,
    negative_prompt_option,
    num_images_option,
    num_shards_option,
    on_unsafe_option,
    seed_option,
    shard_index_option,
    steps_option,
)
from safegen.core.errors import UsageError
from safegen.core.terminal import job_progress
from safegen.data.prompt_sets import resolve_prompt_file
from safegen.jobs.config import BatchConfig, BatchConfigError
from safegen.jobs.plan import preview_run
from safegen.jobs.run_folder import BATCH_COMMAND, merge_run_folder, summarize

_logger = logging.getLogger(__name__)

# The flag that sets each BatchConfig field, where it is not the field's name with dashes (--on-unsafe).
FLAGS = {"prompts": "FILE", "encoder_base": "--base", "n": "--num-images", "width": "--size", "height": "--size"}


def _say(con: Any, message: str) -> None:
    """One diagnostic line on stderr: no wrapping inside paths, no rich markup from prompts."""
    con.print(message, soft_wrap=True, markup=False, highlight=False)


def _resume_command() -> str:
    args = sys.argv[1:]
    if args and args[0] != "batch":
        args = ["batch", *args]
    return "safegen " + shlex.join(args)


def _print_summary(con: Any, summary: dict[str, Any]) -> None:
    typer.echo(  # the counts are the command's result: stdout; the merge hint below is a diagnostic
        f"{summary['out']}: {summary['done']}/{summary['planned']} images done, {summary['remaining']} remaining; "
        f"bad rows {summary['bad_rows']}, failed (last run) {summary['failed_last_run']}, "
        f"flagged {summary['flagged']}, dropped {summary['dropped']}; "
        f"{summary['images_per_s']:.2f} images/s over {summary['runs']} run(s)",
    )
    if summary["shard_manifests"]:
        _say(
            con,
            f"{summary['shard_manifests']} shard manifest(s) not merged yet: "
            f"once every shard has finished, run `safegen batch --merge {summary['out']}`",
        )


@cli_errors
def batch(  # over 80 lines by its 30 options and BatchConfig's 27 fields, one line each; the body is steps 1-4
    file: Annotated[
        Path | None, typer.Argument(help="Prompt file: .txt, .jsonl or .csv (I2P / research CSVs).")
    ] = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    out: OutOpt = None,
    steps: Annotated[int, steps_option("Denoising steps (rows may override).")] = 30,
    guidance: Annotated[float, guidance_option("Guidance scale (rows may override).", minimum=0.0)] = 7.5,
    size: SizeOpt = None,
    negative_prompt: Annotated[str, negative_prompt_option("Negative prompt (rows may override).")] = "",
    num_images: Annotated[int, num_images_option("Images per prompt.")] = 1,
    seed: Annotated[int, seed_option("Seed of rows without one; -1 picks one (recorded).")] = 0,
    batch_size: Annotated[int, batch_size_option("Images per pipeline call.", short=True)] = 4,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: Annotated[str, attention_option("auto, sdpa, xformers, eager.")] = "auto",
    check: Annotated[str | None, check_option("Score outputs with a classifier (e.g. nudenet).")] = None,
    threshold: ThresholdOpt = None,
    on_unsafe: Annotated[str, on_unsafe_option("keep, blur, black or drop flagged images.")] = "keep",
    keep_flagged: Annotated[
        bool, typer.Option("--keep-flagged", help="Save flagged originals under flagged/.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad row.")] = False,
    limit: Annotated[int | None, limit_option("Only the first N valid rows.")] = None,
    num_shards: Annotated[int, num_shards_option("Split rows over N jobs (Slurm arrays).")] = 1,
    shard_index: Annotated[int, shard_index_option("This job's shard, 0-based.")] = 0,
    on_change: Annotated[
        str,
        typer.Option(
            "--on-change",
            help="Rows whose inputs changed since the last run in OUT: regenerate (default) or refuse to run.",
        ),
    ] = "regenerate",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and plan only: print counts, load no model.")
    ] = False,
    summary: Annotated[Path | None, typer.Option("--summary", help="Print the counts of an output folder.")] = None,
    merge: Annotated[Path | None, typer.Option("--merge", help="Merge finished shard manifests of a folder.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate images for every row of a prompt file; re-run the same command to resume.

    Writes OUT/images/*.png (with a `parameters` chunk), OUT/manifest.jsonl (a line per image,
    with a content key over every input that decides it), OUT/run.json (resolved config, weight
    fingerprints, versions) and OUT/errors.log (bad rows as file:line: reason); OUT defaults to
    outputs/batch/<file stem>. A re-run reuses only images whose inputs are unchanged; changed rows
    are regenerated and reported (--on-change refuse stops instead). One process per OUT.
    Under torchrun / accelerate launch every process takes its own share of the rows.
    Exit 0 done, 1 error or failed images, 2 usage, 130 interrupted.
    """
    con = console()
    # 1. --summary / --merge OUT: report on an output folder (folding finished shards in first).
    if summary is not None or merge is not None:
        _summary_or_merge(con, summary, merge, json_out)
        return
    # 2. The config (it checks every option), then the output folder: before a prompt is read or a model loaded.
    if file is None:
        raise typer.BadParameter("give a prompt file (or --summary OUT / --merge OUT)", param_hint="FILE")
    file = resolve_prompt_file(file, "FILE")  # a path, or a shipped set by name: i2p, coco
    width, height = parse_size(size)
    config = _config(
        prompts=file,
        out=out if out is not None else Path("outputs") / "batch" / file.stem,
        preset=preset,
        model=model,
        safe_encoder=safe_encoder,
        activation=encoder_kwargs(activation, None).get("activation"),
        encoder_base=base,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        negative_prompt=negative_prompt,
        n=num_images,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        attention=attention,
        check=check,
        threshold=threshold,
        on_unsafe=on_unsafe,
        keep_flagged=keep_flagged,
        strict=strict,
        limit=limit,
        num_shards=num_shards,
        shard_index=shard_index,
        on_change=on_change,
    )
    check_output_folder(config.out, BATCH_COMMAND)  # a user's folder is refused before any model loads
    # 3. --dry-run: read and plan only.
    if dry_run:
        _preview(con, config, json_out)
        return
    # 4. Run, then report the counts (exit code 1 for failed images, 128 + N for signal N, 130 aborted).
    _report(_run(config, con), con, json_out)


def _config(**fields: Any) -> BatchConfig:
    """``BatchConfig(**fields)``, the one check of the options; its errors name the flag the user typed."""
    try:
        return BatchConfig(**fields)
    except BatchConfigError as exc:
        flag = FLAGS.get(exc.field, "--" + exc.field.replace("_", "-"))
        raise UsageError(f"{flag} {exc.reason}") from None


def _summary_or_merge(con: Any, summary: Path | None, merge: Path | None, json_out: bool) -> None:
    """--summary OUT prints a folder's counts; --merge OUT folds its finished shards in, then prints them."""
    if merge is not None:
        if not (merge / "run.json").is_file():
            raise typer.BadParameter(f"{merge} is not a batch output folder (no run.json)", param_hint="--merge")
        merge_run_folder(merge, flag="--merge")  # under every lock: no shard may still be appending
    counts = summarize(summary if summary is not None else merge)
    print_json(counts) if json_out else _print_summary(con, counts)


def _preview(con: Any, config: BatchConfig, json_out: bool) -> None:
    """--dry-run: the prompt file's problems on stderr, the counts of what ``config`` would make on stdout."""
    counts = preview_run(config)
    for w in counts.warnings:
        _say(con, f"warning: {w}")
    for e in counts.errors:
        _say(con, f"bad row: {e}")
    if json_out:
        print_json(counts.to_dict())
    else:
        typer.echo(f"{counts.rows} rows, {counts.bad_rows} bad, {counts.images} images")


class _WarningsToConsole(logging.Handler):
    def __init__(self, con: Any):
        super().__init__(logging.WARNING)
        self.con = con

    def emit(self, record: logging.LogRecord) -> None:
        _say(self.con, f"warning: {record.getMessage()}")


def _run(config: BatchConfig, con: Any) -> Any:
    from safegen.jobs.runner import BatchRunner  # torch: imported only to run

    handler = _WarningsToConsole(con)
    # The runner's warnings and the prompt file reader's (unknown columns, ...): one console line each.
    loggers = [logging.getLogger(name) for name in ("safegen.jobs", "safegen.data.prompt_files")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with job_progress("batch") as bar:
            return BatchRunner(config, progress=lambda done, total: bar.update(done, total)).run()
    except KeyboardInterrupt:
        # A second Ctrl-C (or one before the first batch): the images on disk and the manifest stay valid.
        _say(con, f"aborted; finished images are kept, resume with:\n  {_resume_command()}")
        raise typer.Exit(130) from None
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _report(result: Any, con: Any, json_out: bool) -> None:
    for line in result.errors:
        _say(con, f"bad row: {line}" if "generation failed" not in line else f"failed: {line}")
    if result.bad_rows > len([e for e in result.errors if "generation failed" not in e]):
        _say(con, f"... {result.bad_rows} bad row(s) in all; see {result.errors_log}")
    if json_out:
        print_json(result.to_dict())
    else:
        typer.echo(
            f"done {result.generated}, reused {result.skipped} (same inputs), changed {result.changed} "
            f"(regenerated), failed {result.failed}, "
            f"bad rows {result.bad_rows}, flagged {result.flagged}, remaining {result.remaining}; "
            f"{result.images_per_s:.2f} images/s -> {result.out}"
        )
    if result.num_shards > 1 and not result.merged and not result.interrupted:
        _say(
            con,
            f"shard {result.shard_index + 1}/{result.num_shards} finished; once every shard has, "
            f"merge the manifests with `safegen batch --merge {result.out}`",
        )
    if result.interrupted:
        _say(
            con,
            f"interrupted: {result.skipped + result.generated}/{result.planned} images done, "
            f"{result.remaining} left; resume with:\n  {_resume_command()}",
        )
        raise typer.Exit(128 + (result.signal or 2))
    if result.failed:
        _say(
            con, f"error: {result.failed} image(s) failed to generate (see {result.errors_log}); re-run to retry them"
        )
        raise typer.Exit(1)


def _standalone() -> None:
    """`python -m safegen.cli.batch ...`: the command without the rest of the CLI (used by torchrun)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command(cls=Command)(batch)
    app()


if __name__ == "__main__":
    _standalone()
