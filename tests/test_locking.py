"""The folder lock: one process per folder, a clear one-line refusal, no stale locks, no empty folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safegen.core.errors import SafegenError
from safegen.core.locking import FolderLock, FolderLockedError, lock_folder, lock_owner

HOLDER = """
import sys, time
from safegen.core.locking import lock_folder
lock = lock_folder(sys.argv[1], purpose="test folder")
(__import__("pathlib").Path(sys.argv[1]) / "held").write_text("1")
time.sleep(60)
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=env)
    deadline = time.monotonic() + 60
    while not (folder / "held").exists():
        assert proc.poll() is None, "holder process died"
        assert time.monotonic() < deadline, "holder never took the lock"
        time.sleep(0.05)
    return proc


def test_second_lock_is_refused_with_pid_and_host(tmp_path):
    with lock_folder(tmp_path / "out", purpose="batch output folder") as held:
        assert held.held and (tmp_path / "out" / ".safegen.lock").exists()
        owner = lock_owner(tmp_path / "out")
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(FolderLockedError) as info:
            FolderLock(tmp_path / "out", purpose="batch output folder").acquire()
        msg = str(info.value)
        assert "\n" not in msg
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in msg
        assert msg.startswith(f"batch output folder {tmp_path / 'out'} is in use")
    # released: the next one gets it
    with lock_folder(tmp_path / "out"):
        pass


def test_lock_held_by_other_process_and_freed_by_kill(tmp_path):
    folder = tmp_path / "run"
    proc = _start_holder(folder)
    try:
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid} on host"):
            lock_folder(folder)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the kernel dropped the dead holder's lock: no manual cleanup needed
    with lock_folder(folder) as lock:
        assert lock_owner(folder)["pid"] == os.getpid()
        assert lock.held


def test_created_folder_removed_when_nothing_written(tmp_path):
    target = tmp_path / "a" / "b"
    with lock_folder(target):
        assert target.is_dir()
    assert not (tmp_path / "a").exists()
    # a folder with results stays, lock files and all
    with lock_folder(target):
        (target / "result.txt").write_text("x")
    assert (target / "result.txt").read_text() == "x"
    # an existing empty folder is never removed
    empty = tmp_path / "empty"
    empty.mkdir()
    with lock_folder(empty):
        pass
    assert empty.is_dir()


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("mine")
    with pytest.raises(SafegenError, match="is a file, not a folder"):
        lock_folder(f)
    assert f.read_text() == "mine"


def test_release_is_idempotent(tmp_path):
    lock = lock_folder(tmp_path / "x")
    lock.release()
    lock.release()
    assert not lock.held
