"""Atomic file and folder writes: a killed run never leaves a half-written checkpoint or export."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read from /proc where possible (setting it to read it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path, *, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by ``tempfile`` (0600 / 0700) the permissions a plain
    ``open`` / ``mkdir`` would have under the user's umask; for a folder, everything inside it too
    (some writers, transformers' ``save_pretrained`` among them, also go through private temp files)."""
    mask = current_umask()
    path = Path(path)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)
    if directory:
        for sub in path.rglob("*"):
            if not sub.is_symlink():
                os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def append_line(path: Path, line: str) -> None:
    """Append one line (a metrics record); a line is written by a single write call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")


@contextlib.contextmanager
def atomic_directory(final: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    An existing ``final`` is moved aside first and deleted after the rename, so at every
    instant either the old or the new complete folder exists under its name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    apply_umask(tmp, directory=True)
    old = None
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"'{final}' already exists")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
