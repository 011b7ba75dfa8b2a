"""Shared CLI pieces: option aliases, device/dtype resolution, output helpers.

Nothing here imports torch at module import time: `safegen --help` must stay instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..devices import resolve_device, resolve_dtype  # noqa: F401  (re-exported for the commands)
from ..errors import SafegenError

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
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp16 on cuda, fp32 on cpu), fp32, fp16, bf16.")]
SeedOpt = Annotated[int, typer.Option("--seed", "-s", help="Random seed; -1 picks one (always recorded).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def console():
    """A rich console on stderr: diagnostics and progress never mix with results on stdout."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def debug_enabled() -> bool:
    return os.environ.get("SAFEGEN_DEBUG", "") not in ("", "0", "false")


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """'512x768' -> (width 512, height 768); None -> model defaults."""
    if not size:
        return None, None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"'{size}' is not WIDTHxHEIGHT (e.g. 512x512)", param_hint="--size") from None
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise typer.BadParameter(f"width and height must be positive multiples of 8, got {w}x{h}", param_hint="--size")
    return w, h


def cli_errors(func):
    """Turn known errors into one line on stderr and exit code 1 (tracebacks with SAFEGEN_DEBUG=1)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SafegenError as exc:
            if debug_enabled():
                raise
            from ..errors import UsageError

            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None

    return wrapper
