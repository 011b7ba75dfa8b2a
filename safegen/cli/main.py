"""Entry point of the `safegen` command: registers one command module each.

Known errors print one line and exit 1; usage errors exit 2 (typer); tracebacks only
with SAFEGEN_DEBUG=1. ``-v`` / ``-q`` before the command set how loud the terminal is
(see :mod:`safegen.core.terminal`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from safegen.cli import batch as batch_cmd
from safegen.cli import eval as eval_cmd
from safegen.cli import i2i as i2i_cmd
from safegen.cli import i2t as i2t_cmd
from safegen.cli import presets as presets_cmd
from safegen.cli import retrieve as retrieve_cmd
from safegen.cli import serve as serve_cmd
from safegen.cli import t2i as t2i_cmd
from safegen.cli._common import Command, debug_enabled
from safegen.core.errors import SafegenError
from safegen.core.io import clip_text

app = typer.Typer(
    name="safegen",
    help="Safe-CLIP for generative models: safe text-to-image, image-to-text and retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _terminal(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the libraries' logs and bars.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results (stdout) and errors (stderr).")] = False,
) -> None:
    """Safe-CLIP for generative models: safe text-to-image, image-to-text and retrieval."""
    from safegen.core.terminal import NORMAL, QUIET, VERBOSE, configure

    if verbose and quiet:
        raise typer.BadParameter("choose one of -v and -q", param_hint="-v/-q")
    configure(VERBOSE if verbose else QUIET if quiet else NORMAL)


app.command("t2i", cls=Command)(t2i_cmd.t2i)
app.command("i2i", cls=Command)(i2i_cmd.i2i)
app.command("presets", cls=Command)(presets_cmd.presets)
app.command("batch", cls=Command)(batch_cmd.batch)
app.command("i2t", cls=Command)(i2t_cmd.i2t)
app.add_typer(retrieve_cmd.app, name="retrieve")
app.add_typer(eval_cmd.app, name="eval")
app.command("serve", cls=Command)(serve_cmd.serve)


def main() -> None:
    try:
        app(standalone_mode=True)
    except SafegenError as exc:
        if debug_enabled():
            raise
        sys.stderr.write(f"error: {clip_text(str(exc), 2000)}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
