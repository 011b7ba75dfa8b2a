"""``safegen-train``: fit, export and evaluate Safe-CLIP encoders.

    safegen-train fit --config cfg.yaml [--set loss.vision_patch_unsafe=0.5] [--max-steps 100] [--dry-run]
    safegen-train fit --config cfg.yaml --resume latest
    safegen-train export runs/x/checkpoints/best out/safeclip [--what text]
    safegen-train eval data/val.jsonl --model base_clip --safe out/safeclip [--json]
    safegen-train config-help        # every config field with its default and meaning
    safegen-train data rewrite|filter|render|build ...   # make training data (safegen_train/datagen)

Multi-process: ``accelerate launch -m safegen_train.cli fit ...`` (GPUs) or
``torchrun --nproc_per_node N -m safegen_train.cli fit ...``.

Exit codes: 0 ok, 1 runtime error (one line; traceback with SAFEGEN_DEBUG=1), 2 usage error.
Nothing here imports torch until a command runs, so ``--help`` and ``--dry-run`` are instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.errors import SafegenError

_logger = logging.getLogger(__name__)

app = typer.Typer(
    name="safegen-train",
    help="Train Safe-CLIP encoders (fit), merge and export them (export), compare retrieval (eval).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(msg: str) -> None:
    sys.stderr.write(f"safegen-train: {msg}\n")


def _debug() -> bool:
    return os.environ.get("SAFEGEN_DEBUG", "") not in ("", "0", "false")


def _one_line_errors(func):
    """Known failures (SafegenError) print one line and exit 1; SAFEGEN_DEBUG=1 shows the traceback."""
    import functools

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
    from .config import TrainConfig, apply_overrides, read_config_file

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
    resume: Annotated[str | None, typer.Option("--resume", help="'latest' or a checkpoint folder.")] = None,
    cpu: Annotated[bool | None, typer.Option("--cpu/--no-cpu", help="Force the CPU.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Train a Safe-CLIP from a config file plus flag overrides."""
    from .config import ConfigError, parse_override

    overrides: dict[str, Any] = {}
    for item in set_ or []:
        key, value = parse_override(item)
        overrides[key] = value
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
    overrides.update({k: v for k, v in flags.items() if v is not None})
    try:
        cfg = resolve_config(config, overrides)
    except ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    if dry_run:
        sys.stdout.write(json.dumps(cfg.to_dict(), indent=2) + "\n")
        return
    try:
        cfg.require_sources()
    except ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    _setup_logging(verbose)
    from .train import fit as run_fit

    result = run_fit(cfg)
    summary = {
        "output_dir": str(result.output_dir),
        "global_step": result.global_step,
        "stopped_early": result.stopped_early,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "export_dir": str(result.export_dir) if result.export_dir else None,
    }
    if _is_main_process():
        sys.stdout.write(json.dumps(summary) + "\n")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@app.command()
@_one_line_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (runs/x/checkpoints/best or step-...).")],
    out: Annotated[Path, typer.Argument(help="Export folder (written atomically).")],
    what: Annotated[str, typer.Option("--what", help="model (CLIPModel), text or vision (one tower).")] = "model",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base CLIP, if moved since training.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Merge a checkpoint into plain transformers CLIP weights (safetensors + model card)."""
    from .export import EXPORT_KINDS

    if what not in EXPORT_KINDS:
        _err(f"--what must be one of {', '.join(EXPORT_KINDS)}, got '{what}'")
        raise typer.Exit(2)
    if not (checkpoint / "state.json").is_file():
        _err(f"'{checkpoint}' is not a checkpoint folder (no state.json); pass runs/<run>/checkpoints/<name>")
        raise typer.Exit(2)
    _setup_logging(verbose)
    from .export import export_checkpoint

    path = export_checkpoint(checkpoint, out, what=what, model=model)
    sys.stdout.write(json.dumps({"export_dir": str(path), "what": what}) + "\n")


@app.command("eval")
@_one_line_errors
def eval_(
    data: Annotated[str, typer.Argument(help="Validation data with images (.jsonl, ViSU .json).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Original CLIP (folder or hub id).")],
    safe: Annotated[str | None, typer.Option("--safe", help="Safe CLIP to compare (export folder or id).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split for datasets sources.")] = "validation",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Encoding batch size.")] = 64,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Retrieval table (recall@1/5/10/20 on S-V, S-G, U-V, U-G), original and safe side by side."""
    _setup_logging(verbose)
    from .data import Collator, PairDataset, load_records
    from .model import load_clip
    from .validation import embed_dataset, format_table, recall_sum, retrieval_table

    ds = PairDataset(load_records(data, split=split))
    if not ds.has_safe_image:
        _err(f"'{data}' has no images: retrieval needs safe_image (and unsafe_image for S-G/U-G)")
        raise typer.Exit(2)
    tables, sums = {}, {}
    for name, source in (("original", model), ("safe", safe)):
        if source is None:
            continue
        loaded = load_clip(source)
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


@app.command("config-help")
def config_help() -> None:
    """List every fit config field with its default and meaning."""
    from .config import LossConfig, TrainConfig, field_help

    for name, default, text in field_help(TrainConfig):
        sys.stdout.write(f"{name:26s} {json.dumps(default, default=str):28s} {text}\n")
    for name, default, text in field_help(LossConfig):
        sys.stdout.write(f"loss.{name:21s} {json.dumps(default):28s} {text}\n")


def _register_subcommands() -> None:
    """``safegen-train data ...``: the paper's data pipeline (safegen_train/datagen/cli.py)."""
    from .datagen.cli import app as data_app

    app.add_typer(data_app, name="data")


_register_subcommands()


def main() -> None:
    """Entry point: known errors as one line (exit 1), usage errors exit 2."""
    try:
        app(standalone_mode=False)
    except SafegenError as exc:
        if _debug():
            raise
        _err(str(exc))
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - usage errors from click come through here
        name = type(exc).__name__
        if name in (
            "UsageError",
            "BadParameter",
            "NoSuchOption",
            "MissingParameter",
            "BadOptionUsage",
            "NoArgsIsHelp",
        ):
            if hasattr(exc, "show"):
                exc.show()
            else:
                _err(str(exc))
            sys.exit(2)
        if _debug():
            raise
        _err(f"{name}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
