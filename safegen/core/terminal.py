"""What a terminal user sees: how loud the libraries are, and one progress display per job.

The CLI calls :func:`configure` once with ``-v`` / ``-q``; library code stays silent about
it and only calls :func:`quiet_libraries` after importing diffusers/transformers, which
does something only when a command asked for a quiet terminal.

- default: safegen's warnings on stderr; no FutureWarnings, no loading or denoising bars,
  no library chatter below ERROR ("kept in float32", hub retries, ...);
- ``-v`` (verbosity 1): safegen's info lines and the libraries' own logs and bars;
- ``-q`` (verbosity -1): nothing but results (stdout) and errors (stderr).

:func:`job_progress` is the one progress display (rich, on stderr: description, bar,
done/total, elapsed, ETA) every long command uses; under ``-q`` it draws nothing.
Nothing here imports torch or the model libraries at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

_logger = logging.getLogger(__name__)

QUIET, NORMAL, VERBOSE = -1, 0, 1
_CHATTY_LIBRARIES = r"(diffusers|transformers|huggingface_hub|torch|open_clip|timm|peft|accelerate)"
_state: dict[str, Any] = {"verbosity": None}  # None: no command configured the terminal (library use)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners and CliRunner swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _SafegenFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


def _not_handled_below(record: logging.LogRecord) -> bool:
    """Skip records a command already shows through its own handler (e.g. batch's console)."""
    name = record.name
    while name and name != "safegen":
        logger = logging.root.manager.loggerDict.get(name)
        if isinstance(logger, logging.Logger) and logger.handlers:
            return False
        name = name.rpartition(".")[0]
    return True


def configure(verbosity: int = NORMAL) -> None:
    """Set how loud this process is (see the module docstring); safe to call more than once."""
    _state["verbosity"] = verbosity
    level = {QUIET: "error", NORMAL: "error", VERBOSE: "info"}[max(QUIET, min(VERBOSE, verbosity))]
    # Read by the libraries when they first configure their loggers (before any import here).
    for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        if verbosity >= VERBOSE:
            os.environ[var] = level
        else:
            os.environ.setdefault(var, level)  # a user's own setting wins over the quiet default
    if verbosity < VERBOSE:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
        # Library deprecation notices are for the code's authors, not the terminal user.
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("ignore", category=UserWarning, module=_CHATTY_LIBRARIES)
    root = logging.getLogger("safegen")
    root.handlers = [h for h in root.handlers if not getattr(h, "_safegen_terminal", False)]
    handler = _StderrHandler()
    handler.setFormatter(_SafegenFormatter())
    handler._safegen_terminal = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    handler.addFilter(_not_handled_below)
    root.setLevel({QUIET: logging.ERROR, NORMAL: logging.WARNING}.get(verbosity, logging.INFO))
    # Libraries already imported in this process (tests, notebooks) need telling directly.
    if "diffusers" in sys.modules or "transformers" in sys.modules:
        quiet_libraries()


def verbosity() -> int | None:
    """The configured verbosity, or None when no command configured the terminal."""
    return _state["verbosity"]


def quiet_libraries() -> None:
    """Apply the configured loudness to diffusers/transformers/hub (no-op for library users)."""
    level = _state["verbosity"]
    if level is None:
        return
    loud = level >= VERBOSE
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as d_logging

        d_logging.set_verbosity_info() if loud else d_logging.set_verbosity_error()
        d_logging.enable_progress_bar() if loud else d_logging.disable_progress_bar()
    if "transformers" in sys.modules:
        from transformers.utils import logging as t_logging

        t_logging.set_verbosity_info() if loud else t_logging.set_verbosity_error()
        t_logging.enable_progress_bar() if loud else t_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        enable_progress_bars() if loud else disable_progress_bars()


def hide_loading_bars() -> None:
    """No per-weight-file progress bar from transformers 5's loaders: commands that draw their
    own progress (i2t, retrieve) keep stderr for it."""
    from transformers.utils import logging as t_logging

    t_logging.disable_progress_bar()


@contextlib.contextmanager
def transformers_errors_only() -> Iterator[None]:
    """transformers' logging at error level inside the block, restored after it (library code:
    warnings a load is expected to raise, such as unused weights of a full CLIP, are not news)."""
    from transformers.utils import logging as t_logging

    level = t_logging.get_verbosity()
    t_logging.set_verbosity_error()
    try:
        yield
    finally:
        t_logging.set_verbosity(level)


def pipeline_progress_bar(pipe: Any) -> None:
    """Show a pipeline's own denoising bar only under ``-v`` (when a command configured the terminal)."""
    level = _state["verbosity"]
    if level is not None and hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=level < VERBOSE)


class JobProgress:
    """Handle of one progress display: ``advance(n)``, ``update(done, total)``, ``describe(text)``, ``close()``."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, done: int | None = None, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def open_progress(description: str, total: int | None = None, *, done: int = 0, enabled: bool = True) -> JobProgress:
    """Start one rich progress display on stderr (counts, elapsed, ETA); ``close()`` it when the job ends.

    Draws nothing under ``-q`` or with ``enabled=False`` (e.g. on non-zero ranks of a
    distributed run), so callers need no branches of their own.
    """
    if not enabled or _state["verbosity"] == QUIET:
        return JobProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True, highlight=False),
        transient=False,
    )
    task = progress.add_task(description, total=total, completed=done)
    progress.start()
    return JobProgress(progress, task)


@contextlib.contextmanager
def job_progress(description: str, total: int | None = None) -> Iterator[JobProgress]:
    """:func:`open_progress` as a context manager: the display closes with the block."""
    bar = open_progress(description, total)
    try:
        yield bar
    finally:
        bar.close()


def shorten_middle(text: str, width: int = 80) -> str:
    """``text`` cut in the middle to at most ``width`` characters, so both ends stay readable."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    keep = max(2, width - 5)
    return f"{text[: keep - keep // 2]} ... {text[-(keep // 2) :]}"
