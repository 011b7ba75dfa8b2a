"""Shared CLI pieces: option checks, device/dtype resolution, output helpers (options: cli/options.py).

Nothing here imports torch at module import time: `safegen --help` must stay instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

from safegen.core.checks import (  # noqa: F401  (re-exported for the commands)
    check_generation_options,
    check_number,
    check_seed,
)
from safegen.core.devices import check_device, resolve_device, resolve_dtype  # noqa: F401  (re-exported for the commands)
from safegen.core.errors import SafegenError, UsageError
from safegen.core.io import check_out_dir, clip_text  # noqa: F401  (re-exported for the commands)
from safegen.core.output_folder import check_output_folder, claim_output_folder, output_folder  # noqa: F401  (re-exported)


def encoder_kwargs(activation: str | None, base: str | None) -> dict[str, Any]:
    """The loader keywords for --activation / --base (only those given), validated."""
    if activation is not None and activation not in ("quick_gelu", "gelu"):
        raise typer.BadParameter(f"'{activation}' is not quick_gelu or gelu", param_hint="--activation")
    return {k: v for k, v in (("activation", activation), ("base", base)) if v is not None}


def status(console_obj: Any, text: str) -> Any:
    """``console.status`` with plain text: rich parses a status string as markup whatever the console says."""
    from rich.text import Text

    return console_obj.status(Text(clip_text(text, 300)))


def echo_plain(console_obj: Any, text: str) -> None:
    """Print user text (prompts, paths) on a rich console with no markup parsing: `[/bold]` stays text."""
    console_obj.print(text, markup=False, highlight=False, soft_wrap=True)


def console():
    """A rich console on stderr: diagnostics and progress never mix with results on stdout."""
    from rich.console import Console

    # markup=False: prompts and paths are printed as they are; "[/bold]" in a prompt is text, not a tag.
    return Console(stderr=True, highlight=False, markup=False)


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

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SafegenError as exc:
            if debug_enabled():
                raise
            typer.echo(f"error: {clip_text(str(exc), 2000)}", err=True)  # a 10 MB prompt is not echoed whole
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None

    return wrapper


class Command(TyperCommand):
    """A typer command whose usage line follows click's convention: ``t2i [OPTIONS] PROMPT``.

    typer 0.29 prints an argument as its parameter name in braces (``{prompt}``), which reads
    like a literal or a template; the help text and docs call it PROMPT. An argument without
    a metavar gets its upper-cased name, so errors say ``Missing argument 'PROMPT'`` too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = (param.name or "arg").upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = f"{param.metavar}{'...' if param.nargs != 1 else ''}"
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
