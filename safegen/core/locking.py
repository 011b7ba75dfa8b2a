"""One process at a time per output folder: an exclusive, non-blocking folder lock.

Why: two processes writing one folder (two ``safegen batch`` runs on one ``--out``, two
``retrieve add`` on one index, two trainings into one run folder) each believe they own it:
work is done twice, manifests and indexes interleave, and one process's temp-file cleanup
can delete the other's file in flight. The lock is an OS file lock (``flock`` through the
``filelock`` package), so the kernel drops it when its holder dies, even by SIGKILL: a
stale lock never needs a manual cleanup.

A second process does not wait: it gets :class:`FolderLockedError`, one line naming the
holder's pid and host (read from a small owner file written next to the lock).

Use::

    from safegen.core.locking import lock_folder

    with lock_folder(out, purpose="batch output folder"):
        ...  # only this process writes under `out`

The lock lives in the folder itself (``.safegen.lock`` and ``.safegen.lock.owner``), so
it guards the folder wherever it is mounted from. ``lock_folder`` creates the folder if
needed and, when it created it and nothing but the lock files is inside on release,
removes it again: a run that fails before writing anything leaves no empty folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from safegen.core.errors import SafegenError
from safegen.core.output_folder import MARKER as OUTPUT_MARKER

_logger = logging.getLogger(__name__)

LOCK_NAME = ".safegen.lock"
OWNER_SUFFIX = ".owner"


class FolderLockedError(SafegenError):
    """Another live process holds the lock of a folder (the message names its pid and host)."""

    def __init__(self, folder: Path, purpose: str, owner: dict[str, Any] | None):
        self.folder, self.owner = folder, owner or {}
        if owner:
            who = f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}"
            since = f" since {owner['started']}" if owner.get("started") else ""
        else:
            who, since = "another process", ""
        super().__init__(f"{purpose} {folder} is in use by {who}{since}; wait for it to finish, or use another folder")


def lock_owner(folder: str | Path, name: str = LOCK_NAME) -> dict[str, Any] | None:
    """Who last took the lock of ``folder`` (pid, host, started, command), or None if unknown."""
    try:
        data = json.loads((Path(folder) / (name + OWNER_SUFFIX)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class FolderLock:
    """An exclusive lock on one folder, held from :meth:`acquire` to :meth:`release`.

    Args:
        folder: the folder to guard (created by :meth:`acquire` when missing).
        purpose: how error messages name the folder, e.g. ``"batch output folder"``.
        name: the lock file's name inside the folder.
        remove_if_empty: on release, remove the folder when this lock created it and only the
            lock files are inside (so a failed first run leaves nothing behind).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        purpose: str = "folder",
        name: str = LOCK_NAME,
        remove_if_empty: bool = True,
    ):
        self.folder = Path(folder)
        self.purpose = purpose
        self.name = name
        self.remove_if_empty = remove_if_empty
        self._lock: Any = None
        self._created: list[Path] = []

    @property
    def lock_path(self) -> Path:
        return self.folder / self.name

    @property
    def owner_path(self) -> Path:
        return self.folder / (self.name + OWNER_SUFFIX)

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> FolderLock:
        """Take the lock now or raise :class:`FolderLockedError` (never waits)."""
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise SafegenError(f"{self.purpose} {self.folder} is a file, not a folder; pass a folder path")
        self._created = _make_dirs(self.folder)
        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            self._remove_created()
            raise FolderLockedError(self.folder, self.purpose, lock_owner(self.folder, self.name)) from None
        except OSError as exc:
            self._remove_created()
            raise SafegenError(f"cannot lock {self.purpose} {self.folder}: {exc.strerror or exc}") from None
        self._lock = lock
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:3])[:200],
        }
        try:
            # Plain write (no temp file): the lock is ours, nobody else writes this file now.
            self.owner_path.write_text(json.dumps(owner) + "\n", encoding="utf-8")
        except OSError as exc:  # the lock still holds; only the message of a contender loses detail
            _logger.warning("could not record the lock owner in %s: %s", self.owner_path, exc)
        return self

    def release(self) -> None:
        """Give the lock up (idempotent); remove the folder if this lock created it and it stayed empty."""
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        try:
            if self._only_lock_files_inside():
                self.owner_path.unlink(missing_ok=True)
                self.lock_path.unlink(missing_ok=True)
                (self.folder / OUTPUT_MARKER).unlink(missing_ok=True)
        finally:
            lock.release()
        self._remove_created()

    def _only_lock_files_inside(self) -> bool:
        if not (self.remove_if_empty and self._created):
            return False
        try:
            names = {p.name for p in self.folder.iterdir()}
        except OSError:
            return False
        # The output marker is claimed under the lock: without any output it goes too.
        return names <= {self.lock_path.name, self.owner_path.name, OUTPUT_MARKER}

    def _remove_created(self) -> None:
        """Remove, deepest first, the folders acquire() created, as long as they are empty."""
        if not self.remove_if_empty:
            self._created = []
            return
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): leave it and its parents
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_folder(folder: str | Path, *, purpose: str = "folder", remove_if_empty: bool = True) -> FolderLock:
    """An acquired :class:`FolderLock` on ``folder`` (use it as a context manager to release it)."""
    return FolderLock(folder, purpose=purpose, remove_if_empty=remove_if_empty).acquire()


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; returns the folders created, deepest first."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafegenError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    return missing
