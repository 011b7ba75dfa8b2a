"""Writing an export folder without ever destroying a user's files.

An export is built in a temporary sibling folder and published when complete. The
published folder carries a marker, :data:`MARKER`, listing the files the export wrote, so
a later export knows what it may replace:

- a new path, or an empty folder: the finished folder is renamed into place (atomic);
- a folder an earlier export wrote (marker present): the files the marker lists are
  replaced, anything a user added beside them stays;
- any other non-empty folder: refused (the rule of :mod:`safegen.core.output_folder`), unless
  ``overwrite``; then the export's files are moved in and nothing else is touched (a
  user's file with the name of an export file is renamed to ``<name>.before-export``, not
  deleted);
- ``.``, the current folder or one of its parents, the checkpoint's own folder tree, and
  an existing file: always refused.

Folders and files are created with the user's umask (temporary files start private).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safegen.core.errors import SafegenError
from safegen.core.io import apply_umask
from safegen.core.output_folder import ForeignFolderError, check_output_folder

_logger = logging.getLogger(__name__)

MARKER = ".safegen-export.json"  # also what makes the folder the export's for safegen.core.output_folder
EXPORT_COMMAND = "safegen-train export"


class ExportTargetError(SafegenError):
    """The export folder cannot be written as asked (the message says why and what to pass)."""


def _written_by_export(folder: Path) -> list[str] | None:
    """The files an earlier export wrote into ``folder`` (None when it has no readable marker)."""
    try:
        data = json.loads((folder / MARKER).read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(
        isinstance(f, str) and "/" not in f and f not in ("", ".", "..") for f in files
    ):
        return None
    return files


def check_export_target(out_dir: Path, *, overwrite: bool = False, source: Path | None = None) -> None:
    """Refuse an export folder that would lose data; called before any model is loaded."""
    out_dir = Path(out_dir)
    resolved = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if str(out_dir) in (".", "..", "") or resolved == cwd or resolved in cwd.parents:
        raise ExportTargetError(
            f"export folder '{out_dir}' is the current folder or one of its parents; "
            "pass a new folder (e.g. out/safe-clip)"
        )
    if source is not None:
        src = Path(source).resolve()
        if resolved == src or resolved in src.parents or src in resolved.parents:
            raise ExportTargetError(
                f"export folder '{out_dir}' overlaps the checkpoint '{source}'; "
                "pass a folder that neither holds nor lies inside the checkpoint"
            )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportTargetError(f"export folder '{out_dir}' is an existing file; pass a folder path")
    if out_dir.is_dir() and not overwrite:
        try:  # the rule of every output folder; --overwrite is safe here: _publish never deletes a user's file
            remedy = "--overwrite to add the export's files (yours stay)"
            check_output_folder(out_dir, EXPORT_COMMAND, flag="export folder", remedy=remedy)
        except ForeignFolderError as exc:
            raise ExportTargetError(str(exc)) from None


@contextlib.contextmanager
def export_directory(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success publish it at ``final`` as the module docstring says."""
    final = Path(final)
    check_export_target(final, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")
        apply_umask(tmp, directory=True)
        _publish(tmp, final, files, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path, files: list[str], *, overwrite: bool) -> None:
    check_export_target(final, overwrite=overwrite)  # again: the folder may have changed during the export
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        os.replace(tmp, final)  # rename onto a missing or empty folder: atomic
        return
    previous = _written_by_export(final) or []
    # Files of the earlier export that this one does not write again are removed; user files never.
    for name in previous:
        if name not in files:
            path = final / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (final / MARKER).unlink()  # the folder is not a complete export until the new marker lands
    for name in files:
        target = final / name
        if name not in previous and (target.exists() or target.is_symlink()):
            kept = _set_aside(target)  # a user's file of the same name: renamed, never deleted
            _logger.warning("export: kept the existing '%s' as '%s'", target, kept.name)
        elif target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    os.replace(tmp / MARKER, final / MARKER)


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.before-export`` (or ``.before-export-N``), a free name."""
    candidate, n = path.with_name(f"{path.name}.before-export"), 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.before-export-{n}")
    os.replace(path, candidate)
    return candidate


def remove_export(folder: Path) -> bool:
    """Delete what an export wrote in ``folder`` (its marker's files), and the folder when that
    leaves it empty; False when ``folder`` has no marker (then nothing is touched)."""
    folder = Path(folder)
    files = _written_by_export(folder)
    if files is None:
        return False
    for name in [*files, MARKER]:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
    return True
