"""The manifest: one JSON line per finished image, the record a resumed run trusts.

Why JSON lines: a line is appended only after its image file is in place, so a process
killed at any moment leaves at worst one torn last line, which :func:`read_manifest`
ignores and :func:`repair_manifest` cuts off. Sharded processes append to their own part
files (``manifest.shard-K-of-N.jsonl``); :func:`merge_manifests` folds them into
``manifest.jsonl``. Readers always see the union, latest record per image winning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safegen.core.io import atomic_write_text
from safegen.jobs.plan import job_key

_logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
PART_GLOB = "manifest.shard-*.jsonl"


def part_name(shard_index: int, num_shards: int) -> str:
    """The manifest file a shard appends to (the plain manifest when there is one shard)."""
    if num_shards <= 1:
        return MANIFEST
    return f"manifest.shard-{shard_index:05d}-of-{num_shards:05d}.jsonl"


def record_key(record: dict[str, Any]) -> str:
    return job_key(str(record["id"]), int(record["seed"]))


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSON-lines file and the byte length of its valid prefix.

    A torn last line (no newline, or not parseable) is left out; a bad line in the middle
    (which this package never writes) is skipped with a warning.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            _logger.warning("%s: ignoring a torn last line (%d bytes, no newline)", path, len(data) - pos)
            break
        raw = data[pos:nl].strip()
        if raw:
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                records.append(obj)
            except (ValueError, RecursionError):
                if nl == len(data) - 1 or not data[nl + 1 :].strip():
                    _logger.warning("%s: ignoring a torn last line", path)
                    break
                _logger.warning("%s: skipping an unreadable line at byte %d", path, pos)
        pos = nl + 1
        good_end = pos
    return records, good_end


def repair_manifest(path: str | Path) -> int:
    """Cut a torn last line off ``path``; returns the number of bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    _, good_end = read_jsonl(path)
    size = path.stat().st_size
    if good_end < size:
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
        _logger.warning("%s: removed a torn last line (%d bytes) left by a killed run", path, size - good_end)
    return size - good_end


def manifest_files(out: str | Path) -> list[Path]:
    """The main manifest and every shard part under ``out`` (those that exist)."""
    out = Path(out)
    files = [out / MANIFEST] if (out / MANIFEST).is_file() else []
    return files + sorted(out.glob(PART_GLOB))


def read_manifest(out: str | Path) -> list[dict[str, Any]]:
    """Every finished image under ``out`` (main manifest plus shard parts), one record per image.

    When an image was recorded twice (redone after its file went missing), the later record wins.
    """
    latest: dict[str, dict[str, Any]] = {}
    for path in manifest_files(out):
        records, _ = read_jsonl(path)
        for rec in records:
            try:
                latest[record_key(rec)] = rec
            except (KeyError, TypeError, ValueError):
                _logger.warning("%s: skipping a record without id/seed", path)
    return list(latest.values())


def merge_manifests(out: str | Path) -> Path:
    """Fold shard parts into ``manifest.jsonl`` (atomically) and delete the parts.

    Call only when no shard is still writing (at the end of a distributed run, or after
    every job of a scheduler array finished).
    """
    out = Path(out)
    parts = sorted(out.glob(PART_GLOB))
    target = out / MANIFEST
    if not parts:
        return target
    records = read_manifest(out)
    records.sort(key=lambda r: (str(r.get("id")), int(r.get("seed", 0))))
    atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records))
    for part in parts:
        part.unlink(missing_ok=True)
    _logger.info("merged %d shard manifest(s) into %s (%d images)", len(parts), target, len(records))
    return target


class ManifestWriter:
    """Appends records to one manifest file; each batch is flushed and fsynced as a whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_manifest(self.path)
        self._fh = open(self.path, "ab")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8") for r in records)
        if not data:
            return
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
