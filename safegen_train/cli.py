"""``safegen-train``: fit, export and evaluate Safe-CLIP encoders.

    safegen-train fit --config cfg.yaml [--set loss.vision_patch_unsafe=0.5] [--max-steps 100] [--dry-run]
    safegen-train fit --config cfg.yaml --resume latest      # keeps the run's --set values
    safegen-train fit --config cfg.yaml --overwrite          # start again in a folder holding a run
    safegen-train export runs/x/checkpoints/best out/safeclip [--what text]
    safegen-train eval data/val.jsonl --model base_clip --safe out/safeclip [--json]
    safegen-train config-help        # every config field with its default and meaning
    safegen-train data rewrite|filter|render|build|preprocess ...   # make (or pre-decode) training data

Multi-process: ``accelerate launch -m safegen_train.cli fit ...`` (GPUs) or
``torchrun --nproc_per_node N -m safegen_train.cli fit ...``.

Exit codes: 0 ok, 1 runtime error (one line; traceback with SAFEGEN_DEBUG=1), 2 usage error.
Nothing here imports torch until a command runs, so ``--help`` and ``--dry-run`` are instant.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.core.errors import SafegenError

_logger = logging.getLogger(__name__)

app = typer.Typer(
    name="safegen-train",
    help="Train Safe-CLIP encoders (fit), merge and export them (export), compare retrieval (eval).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(msg: str) -> None:
    """One line on stderr, whatever the message holds (newlines folded, a huge value cut)."""
    line = " ".join(str(msg).splitlines())
    if len(line) > 2000:
        line = line[:2000] + f"... ({len(line) - 2000} more characters)"
    sys.stderr.write(f"safegen-train: {line}\n")


def _debug() -> bool:
    return os.environ.get("SAFEGEN_DEBUG", "") not in ("", "0", "false")


def _one_line_errors(func):
    """Known failures (SafegenError) print one line and exit 1; SAFEGEN_DEBUG=1 shows the traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SafegenError as exc:
            if _debug():
                raise
            _err(str(exc))
            raise typer.Exit(1) from None

    return wrapper


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        logging.getLogger("safegen_train").setLevel(logging.INFO)


def resolve_config(config_file: Path | None, overrides: dict[str, Any]) -> Any:
    """File values, then flag overrides, validated as one :class:`TrainConfig`."""
    from safegen_train.config import TrainConfig, apply_overrides, read_config_file

    data, lines, source = {}, {}, None
    if config_file is not None:
        data, lines = read_config_file(config_file)
        source = str(config_file)
    merged = apply_overrides(data, overrides)
    # lines point into the file only for keys the flags did not override
    lines = {k: v for k, v in lines.items() if k not in overrides}
    return TrainConfig.from_dict(merged, source=source, lines=lines)


@app.command()
@_one_line_errors
def fit(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML or JSON config file (see config-help).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any field: key=value (loss.x=... for loss fields).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base CLIP: folder, hub id, open_clip file.")
    ] = None,
    train_data: Annotated[str | None, typer.Option("--train-data", help="Training data (.jsonl, ViSU .json).")] = None,
    val_data: Annotated[str | None, typer.Option("--val-data", help="Validation data.")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", "-o", help="Run folder.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Global batch per optimizer step.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Maximum epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    finetune: Annotated[str | None, typer.Option("--finetune", help="lora or full.")] = None,
    towers: Annotated[str | None, typer.Option("--towers", help="both, text or vision.")] = None,
    mixed_precision: Annotated[str | None, typer.Option("--mixed-precision", help="no, fp16 or bf16.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="'latest' or a checkpoint folder; the run's --set values are kept."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start again in a folder holding an earlier run (its files removed).")
    ] = False,
    cpu: Annotated[bool | None, typer.Option("--cpu/--no-cpu", help="Force the CPU.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Train a Safe-CLIP from a config file plus flag overrides."""
    # 1. The settings: config file, --set values and flags; a resume adds the run's start overrides
    flags = dict(
        model=model,
        train_data=train_data,
        val_data=val_data,
        output_dir=output_dir,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        finetune=finetune,
        towers=towers,
        mixed_precision=mixed_precision,
        seed=seed,
        resume=resume,
        cpu=cpu,
    )
    overrides = _fit_overrides(set_ or [], flags)
    cfg, start = _fit_config(config, overrides)
    if dry_run:
        sys.stdout.write(json.dumps(cfg.to_dict(), indent=2) + "\n")
        return

    # 2. The data sources and the run folder, checked before anything heavy loads
    _check_fit_target(cfg, overwrite=overwrite)
    _setup_logging(verbose)
    if start:
        _logger.info("resume: applying the run's start overrides again: %s", start)

    # 3. The run, recording the overrides it started with (a resume keeps those of its start)
    recorded = {k: v for k, v in overrides.items() if k != "resume"}
    result = _run_fit(cfg, overwrite=overwrite, overrides={**start, **recorded} if cfg.resume else recorded)

    # 4. One JSON line saying where everything went
    if _is_main_process():
        sys.stdout.write(json.dumps(_fit_summary(result)) + "\n")


def _run_fit(cfg: Any, *, overwrite: bool, overrides: dict[str, Any]) -> Any:
    """The training run; settings found wrong once the run is read (e.g. a resume changing lr) exit 2 (usage)."""
    from safegen_train.config import ConfigError
    from safegen_train.trainer import fit as run_fit

    try:
        return run_fit(cfg, overwrite=overwrite, overrides=overrides)
    except ConfigError as exc:
        if _debug():
            raise
        _err(str(exc))
        raise typer.Exit(2) from None


def _fit_summary(result: Any) -> dict[str, Any]:
    return {
        "output_dir": str(result.output_dir),
        "global_step": result.global_step,
        "stopped_early": result.stopped_early,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "export_dir": str(result.export_dir) if result.export_dir else None,
    }


def _fit_overrides(items: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """The --set values, then the flags given (a flag wins over a --set of the same field)."""
    from safegen_train.config import parse_override

    overrides: dict[str, Any] = {}
    for item in items:
        key, value = parse_override(item)
        overrides[key] = value
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return overrides


def _fit_config(config: Path | None, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(the validated TrainConfig, the start overrides a resume applies again); a bad setting exits 2."""
    from safegen_train.config import ConfigError

    start: dict[str, Any] = {}
    try:
        cfg = resolve_config(config, overrides)
        if cfg.resume:
            # A resume applies the overrides the run was started with again (those that change what
            # it learns), so `--resume latest` alone continues the same run; new values that differ
            # from them are refused by fit, naming the field.
            start = _start_overrides(cfg.resume, Path(cfg.output_dir))
            cfg = resolve_config(config, {**start, **overrides})
    except ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    return cfg, start


def _check_fit_target(cfg: Any, *, overwrite: bool) -> None:
    """The data sources exist and the run folder may be used (new, resumed or --overwrite); else exit 2."""
    from safegen_train.config import ConfigError
    from safegen_train.run_folder import check_output_dir

    try:
        cfg.require_sources()
        check_output_dir(Path(cfg.output_dir), resume=cfg.resume, overwrite=overwrite)
    except ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None


def _start_overrides(resume: str, output_dir: Path) -> dict[str, Any]:
    """The run's recorded start overrides that fix what it learns (run-length flags such as
    --max-steps are not carried over: a resume usually means to go further)."""
    from safegen_train.checkpoint import start_overrides
    from safegen_train.config import RESUME_MAY_CHANGE

    return {k: v for k, v in start_overrides(resume, output_dir).items() if k.split(".")[0] not in RESUME_MAY_CHANGE}


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@app.command()
@_one_line_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (runs/x/checkpoints/best or step-...).")],
    out: Annotated[Path, typer.Argument(help="Export folder (written atomically).")],
    what: Annotated[str, typer.Option("--what", help="model (CLIPModel), text or vision (one tower).")] = "model",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base CLIP, if moved since training.")] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Write into a non-empty folder not made by export (its files are kept)."),
    ] = False,
    fmt: Annotated[
        str,
        typer.Option("--format", help="transformers (folder for from_pretrained) or open_clip (with --what model)."),
    ] = "transformers",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Merge a checkpoint into plain CLIP weights (safetensors + model card).

    OUT must be new, empty, or an earlier export (whose files are replaced); any other folder
    needs --overwrite, and files that export did not write are never deleted. Runs keep the
    release's two bests: checkpoints/best-loss (lowest validation loss) and
    checkpoints/best-recall (highest recall-sum); checkpoints/best is the later of them.
    """
    from safegen_train.export import EXPORT_KINDS

    if what not in EXPORT_KINDS:
        _err(f"--what must be one of {', '.join(EXPORT_KINDS)}, got '{what}'")
        raise typer.Exit(2)
    if not (checkpoint / "state.json").is_file():
        _err(f"'{checkpoint}' is not a checkpoint folder (no state.json); pass runs/<run>/checkpoints/<name>")
        raise typer.Exit(2)
    from safegen_train.export_folder import ExportTargetError, check_export_target

    try:
        check_export_target(out, overwrite=overwrite, source=checkpoint)
    except ExportTargetError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    _setup_logging(verbose)
    from safegen_train.export import export_checkpoint

    if fmt not in ("transformers", "open_clip"):
        _err(f"--format must be transformers or open_clip, got '{fmt}'")
        raise typer.Exit(2)
    if fmt == "open_clip" and what != "model":
        _err("--format open_clip writes both towers (an open_clip CLIP); use it with --what model")
        raise typer.Exit(2)
    path = export_checkpoint(checkpoint, out, what=what, model=model, overwrite=overwrite, fmt=fmt)
    sys.stdout.write(json.dumps({"export_dir": str(path), "what": what, "format": fmt}) + "\n")


@app.command("eval")
@_one_line_errors
def eval_(
    data: Annotated[str, typer.Argument(help="Validation data with images (.jsonl, ViSU .json).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Original CLIP (folder or hub id).")],
    safe: Annotated[
        str | None,
        typer.Option("--safe", help="Safe CLIP to compare: export (--what model|text|vision), id, checkpoint, LoRA."),
    ] = None,
    activation: Annotated[
        str | None, typer.Option("--activation", help="quick_gelu or gelu, for a --safe open_clip checkpoint.")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="LoRA base CLIP or open_clip model name of --safe.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split for datasets sources.")] = "validation",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Encoding batch size.")] = 64,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Retrieval table (recall@1/5/10/20 on S-V, S-G, U-V, U-G), original and safe side by side.

    --safe takes any `safegen-train export`: a full CLIP (--what model), or one tower (--what text
    or vision), evaluated with --model's other tower.
    """
    _setup_logging(verbose)
    from safegen_train.data import Collator, PairDataset, load_records
    from safegen_train.model import load_clip, load_safe_clip
    from safegen_train.validation import embed_dataset, format_table, recall_sum, retrieval_table

    ds = PairDataset(load_records(data, split=split))
    if not ds.has_safe_image:
        _err(f"'{data}' has no images: retrieval needs safe_image (and unsafe_image for S-G/U-G)")
        raise typer.Exit(2)
    tables, sums = {}, {}
    original = None
    for name, source in (("original", model), ("safe", safe)):
        if source is None:
            continue
        if name == "original":
            loaded = original = load_clip(source)
        else:
            loaded = load_safe_clip(source, original=original, activation=activation, base=base)
        max_len = loaded.model.config.text_config.max_position_embeddings
        collate = Collator(loaded.tokenizer, loaded.image_processor, max_len)
        table = retrieval_table(embed_dataset(loaded.model.eval(), ds, collate, batch_size=batch_size))
        tables[name], sums[name] = table, recall_sum(table)
    if json_out:
        sys.stdout.write(json.dumps({"tables": tables, "recall_sum": sums, "records": len(ds)}, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(tables) + "\n")
        for name, value in sums.items():
            sys.stdout.write(f"recall-sum {name}: {value:.1f}\n" if value is not None else "")


def _with_safe_tower(source: str, original: Any) -> Any:
    """A one-tower export (``export --what text|vision``) evaluated as the original CLIP with that
    tower replaced; None when ``source`` is not a one-tower folder (then it loads as a full CLIP)."""
    config_file = Path(source).expanduser() / "config.json"
    if original is None or not config_file.is_file():
        return None
    try:
        kind = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    if kind not in ("clip_text_model", "clip_vision_model"):
        return None
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    cls = CLIPTextModelWithProjection if kind == "clip_text_model" else CLIPVisionModelWithProjection
    tower = cls.from_pretrained(str(config_file.parent))
    clip = copy.deepcopy(original.model)
    missing, unexpected = clip.load_state_dict(tower.state_dict(), strict=False)
    if unexpected:
        raise SafegenError(
            f"--safe '{source}' ({kind}) does not fit --model's CLIP (unexpected {unexpected[:2]}); "
            "pass the CLIP it was trained from as --model"
        )
    _logger.info("--safe '%s' is a %s export: evaluated with --model's other tower", source, kind)
    return dataclasses.replace(original, model=clip, source=source)


@app.command("config-help")
def config_help() -> None:
    """List every fit config field with its default and meaning."""
    from safegen_train.config import LossConfig, TrainConfig, field_help

    for name, default, text in field_help(TrainConfig):
        sys.stdout.write(f"{name:26s} {json.dumps(default, default=str):28s} {text}\n")
    for name, default, text in field_help(LossConfig):
        sys.stdout.write(f"loss.{name:21s} {json.dumps(default):28s} {text}\n")


def _register_subcommands() -> None:
    """``safegen-train data ...``: the paper's data pipeline (safegen_train/datagen/cli.py)."""
    from safegen_train.datagen.cli import app as data_app

    app.add_typer(data_app, name="data")


_register_subcommands()


def run(argv: list[str] | None = None) -> int:
    """Run the app on ``argv`` and return the process exit code (0 ok, 1 runtime error, 2 usage error).

    click's standalone mode would exit by itself; it is off so that known errors print one line
    (no traceback unless SAFEGEN_DEBUG=1), which means the exit code must be carried back here.
    """
    try:
        code = app(args=argv, prog_name="safegen-train", standalone_mode=False)
    except SafegenError as exc:
        if _debug():
            raise
        _err(str(exc))
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - click usage errors, then anything unexpected
        show = getattr(exc, "show", None)
        exit_code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):  # click's UsageError family (and NoArgsIsHelp): 2
            show()
            return exit_code
        if type(exc).__name__ == "Abort":
            _err("aborted")
            return 1
        if _debug():
            raise
        _err(f"{type(exc).__name__}: {exc}")
        return 1
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console entry point: exits with :func:`run`'s code."""
    sys.exit(run())


if __name__ == "__main__":
    main()
