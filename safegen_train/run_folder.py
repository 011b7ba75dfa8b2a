"""The run folder of ``safegen-train fit``: one run per folder, one process at a time.

- A folder that already holds a run (its config, metrics, checkpoints, state or export) is
  refused unless the caller resumes it or asks to overwrite it: two runs in one folder would
  mix their metrics and checkpoints, and ``--resume latest`` would pick the wrong one.
- ``overwrite`` removes only what a run writes there (the names in :data:`RUN_FILES`, the
  checkpoint folders, the files its export's marker lists); anything else the user keeps
  in the folder stays.
- :class:`RunLock` is an exclusive lock on the folder (an OS file lock through ``filelock``,
  released by the kernel even when the holder is killed), so a second ``fit`` into the same
  folder stops at once with the holder's pid and host instead of interleaving checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from safegen.core.errors import SafegenError
from safegen.core.output_folder import MARKER as OUTPUT_MARKER
from safegen.core.output_folder import ForeignFolderError, check_output_folder
from safegen_train.config import ConfigError
from safegen_train.export_folder import remove_export

LOCK_NAME = ".safegen-train.lock"
OWNER_NAME = ".safegen-train.lock.owner"
FIT_COMMAND = "safegen-train fit"  # what the output marker of a run folder names
RUN_FILES = ("config.json", "metrics.jsonl", "state.json", "checkpoints", "model")


class RunFolderError(ConfigError):
    """The run folder cannot be used as asked (holds another run, or is a file): a usage error."""


class RunInUseError(SafegenError):
    """Another process holds the run folder: a runtime condition (exit 1), not a usage error."""


def previous_run_files(output_dir: Path) -> list[str]:
    """Names in ``output_dir`` that an earlier run wrote (empty for a new or unrelated folder)."""
    return [name for name in RUN_FILES if (Path(output_dir) / name).exists()]


def check_output_dir(output_dir: Path, *, resume: str | None, overwrite: bool) -> None:
    """Refuse a run folder that would mix two runs; called before any model or data is loaded."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise RunFolderError(f"output_dir '{output_dir}' is a file; pass a folder (--output-dir)")
    try:  # a folder of the user's is refused even with --overwrite: that removes only a run's files
        check_output_folder(output_dir, FIT_COMMAND, flag="--output-dir")
    except ForeignFolderError as exc:
        raise RunFolderError(str(exc)) from None
    if resume and overwrite:
        raise RunFolderError(
            "--resume and --overwrite contradict each other: resume continues the run, overwrite starts it again"
        )
    if resume or overwrite:
        return
    found = previous_run_files(output_dir)
    if found:
        raise RunFolderError(
            f"output_dir '{output_dir}' already holds a run ({', '.join(found)}); "
            "continue it with --resume latest, start it again with --overwrite, or pick another --output-dir"
        )


def clear_previous_run(output_dir: Path) -> list[str]:
    """Delete what an earlier run wrote in ``output_dir`` (only :data:`RUN_FILES`); return the names removed."""
    # Here, not at the top: checkpoint imports torch, and the CLI checks a run folder (check_output_dir)
    # before anything heavy loads, so that a refused folder is said at once.
    from safegen_train.checkpoint import STEP_DIR

    output_dir = Path(output_dir)
    removed = []
    for name in previous_run_files(output_dir):
        path = output_dir / name
        if name == "model":  # the run's export: only the files its marker lists
            if remove_export(path):
                removed.append(name)
        elif name == "checkpoints" and path.is_dir() and not path.is_symlink():
            for sub in path.iterdir():  # step-N, best and interrupted saves; nothing else
                if sub.is_dir() and (STEP_DIR.match(sub.name) or sub.name == "best" or sub.name.endswith(".tmp")):
                    shutil.rmtree(sub)
            with contextlib.suppress(OSError):
                path.rmdir()
            removed.append(name)
        elif path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed


class RunLock:
    """Exclusive, non-blocking lock on a run folder; a context manager.

    The holder writes its pid, host and start time beside the lock file so that a refused
    process can say who holds the folder.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self._lock = FileLock(str(self.output_dir / LOCK_NAME), timeout=0)

    def acquire(self) -> None:
        self._created = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunInUseError(
                f"run folder '{self.output_dir}' is in use by {self.holder()}; "
                "wait for it to finish or pick another --output-dir"
            ) from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.output_dir / OWNER_NAME).write_text(json.dumps(owner) + "\n")

    def holder(self) -> str:
        """'pid 123 on host h (since ...)', or a plain phrase when the owner file is unreadable."""
        try:
            owner = json.loads((self.output_dir / OWNER_NAME).read_text())
            return f"pid {owner['pid']} on host {owner['host']} (since {owner['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                (self.output_dir / OWNER_NAME).unlink()
            except OSError:
                pass
            self._lock.release()
            # a run that failed before writing anything leaves no folder behind
            left = {p.name for p in self.output_dir.iterdir()}
            if getattr(self, "_created", False) and left <= {LOCK_NAME, OUTPUT_MARKER}:
                with contextlib.suppress(OSError):
                    (self.output_dir / OUTPUT_MARKER).unlink(missing_ok=True)
                    (self.output_dir / LOCK_NAME).unlink()
                    self.output_dir.rmdir()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
