"""Whose folder is it: every command writes only into folders that are safegen's own.

Why: commands write fixed names (``manifest.jsonl``, ``run.json``, ``README.md``,
``train.jsonl``...) and resume from what they find. Pointed at a folder of the user's, a
command would overwrite the user's files, or read them as its own torn output and "repair"
them. So there is one rule, checked by every command that writes a folder:

- a missing or empty folder is claimed: safegen creates it and writes :data:`MARKER`
  (atomically, before its first output), naming the command;
- a folder whose marker names the same command is safegen's: it is resumed as before;
- anything else is refused before any work, in one line naming the folder, its files and
  what to do: a folder of the user's (files but no marker), or another command's output
  (``data rewrite`` must not read a ``batch`` manifest as its own).

Folders written before the marker existed are recognised by the bookkeeping files safegen
always left in them (folder locks, the export marker); a user can also hand any folder over
by creating an empty marker (``touch DIR/.safegen-output.json``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from safegen.core.errors import UsageError
from safegen.core.io import atomic_write_bytes, check_out_dir, clip_text

MARKER = ".safegen-output.json"
# Files safegen keeps in a folder for itself: locks, their owner files, the marker and its temp
# file. They do not make a folder the user's, and a folder holding only them counts as empty.
_BOOKKEEPING = re.compile(
    r"\.safegen(-train)?\.lock(\.owner)?|\.safegen\.shard-.+\.lock(\.owner)?|\.safegen-output\.json|"
    r"\.\.safegen-output\.json\..+\.tmp"
)
# Other files that say which command wrote a folder: the export's own file list, and the locks
# safegen left in its folders before the marker existed (None: any command that locks its
# folder, so the asking one is trusted).
_KNOWN = {
    ".safegen-export.json": "safegen-train export",
    ".safegen-train.lock": "safegen-train fit",
    ".safegen.lock": None,
}
_SHOWN = 5  # file names quoted in a refusal


class ForeignFolderError(UsageError):
    """An output folder holds files safegen did not write, or another command's output (exit 2)."""

    def __init__(self, message: str, folder: Path, names: list[str]):
        super().__init__(message)
        self.folder, self.names = folder, names


def is_bookkeeping(name: str) -> bool:
    """True for the files safegen keeps in a folder for itself (locks, the marker)."""
    return _BOOKKEEPING.fullmatch(name) is not None


def _marker_owner(folder: Path) -> str | None:
    """The command a readable marker names, ``""`` for a marker the user created by hand, None without one."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        owner = json.loads(path.read_text(encoding="utf-8")).get("command")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return ""  # safegen writes it atomically: an unreadable one is the user's hand-over
    return owner if isinstance(owner, str) else ""


def folder_owner(folder: str | Path) -> tuple[str | None, list[str]]:
    """(the command whose output ``folder`` is, or None; the names in it that are not bookkeeping).

    The owner is ``""`` when the folder is safegen's but says for no particular command (a
    hand-over marker, or a folder lock from before the marker).
    """
    folder = Path(folder)
    try:
        names = sorted(p.name for p in folder.iterdir())
    except FileNotFoundError:
        return None, []
    owner = _marker_owner(folder)
    if owner is None:
        for known, command in _KNOWN.items():
            if known in names:
                owner = command or ""
                break
    return owner, [n for n in names if not is_bookkeeping(n)]


def check_output_folder(folder: str | Path, command: str, *, flag: str = "--out", remedy: str = "") -> Path:
    """Refuse ``folder`` unless ``command`` may write there (see the module docstring); writes nothing.

    Called before any model loads, so a wrong folder costs nothing. ``remedy`` adds what else the
    user may do with a folder of their own (``export --overwrite``).
    """
    folder = check_out_dir(folder, flag)
    owner, names = folder_owner(folder)
    where = f"{flag} {clip_text(str(folder), 200)}"
    if owner is None and names:
        shown = ", ".join(clip_text(n, 60) for n in names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        raise ForeignFolderError(
            f"{where} holds files safegen did not write ({shown}); nothing was changed: choose a new or empty "
            f"folder{', or ' + remedy if remedy else ''} (to hand this one over to safegen, create {MARKER} in it)",
            folder,
            names,
        )
    if owner and owner != command:
        raise ForeignFolderError(
            f"{where} holds the output of `{owner}`, not of `{command}`; nothing was changed: choose another folder",
            folder,
            names,
        )
    return folder


def claim_output_folder(folder: str | Path, command: str, *, flag: str = "--out") -> bool:
    """Check ``folder`` and make it ``command``'s (create it, write the marker); True if it was created."""
    folder = check_output_folder(folder, command, flag=flag)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if _marker_owner(folder) != command:  # new, legacy or handed over: record who writes here now
        data = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        payload = (json.dumps(data) + "\n").encode("utf-8")
        try:
            # A hand-over marker is replaced; otherwise never: two shards claiming at once both succeed
            # (the second finds the first's marker, naming the same command).
            atomic_write_bytes(folder / MARKER, payload, overwrite=(folder / MARKER).exists())
        except FileExistsError:
            check_output_folder(folder, command, flag=flag)
    return created


def remove_if_unused(folder: str | Path) -> None:
    """Remove ``folder`` when it holds only bookkeeping (a run that failed before writing anything)."""
    folder = Path(folder)
    if folder_owner(folder)[1]:
        return
    with contextlib.suppress(OSError):
        (folder / MARKER).unlink()
        folder.rmdir()  # fails, and keeps the folder, if anything else (another process's lock) is inside


@contextlib.contextmanager
def output_folder(folder: str | Path, command: str, *, flag: str = "--out") -> Iterator[Path]:
    """Claim ``folder`` for the block; a folder it created and left without output is removed again."""
    created = claim_output_folder(folder, command, flag=flag)
    try:
        yield Path(folder)
    finally:
        if created:
            remove_if_unused(folder)
