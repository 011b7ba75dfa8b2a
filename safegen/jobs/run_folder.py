"""The bookkeeping of a batch output folder: its logs, its locks, the merge of shard files, its summary.

Besides ``images/`` and the manifest (:mod:`safegen.jobs.manifest`) a batch folder holds
``run.json`` (the latest run's resolved config, weight fingerprints and versions),
``runs.jsonl`` (a line per finished run, so what every run was made from stays known),
``errors.log`` (bad rows and failed images as ``file:line: reason``; a shard writes
``errors.shard-K-of-N.log`` until the merge) and the lock files: one for the folder, or
one per shard.
"""

from __future__ import annotations

import json
import logging
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError
from safegen.core.io import atomic_write_text, clip_text
from safegen.core.locking import FolderLock
from safegen.core.output_folder import check_output_folder
from safegen.jobs.manifest import merge_manifests, read_jsonl, read_manifest

_logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
BATCH_COMMAND = "safegen batch"  # what the output marker of a batch folder names
RUNS_LOG = "runs.jsonl"
ERRORS_LOG = "errors.log"


def package_versions() -> dict[str, str]:
    """Versions that decide what a run produces, for run.json."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("safegen", "torch", "diffusers", "transformers", "accelerate", "pillow", "numpy", "nudenet"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_previous_run(out: Path) -> dict[str, Any] | None:
    """The last run.json, or None; a corrupt one is reported and set aside (the manifest keys decide reuse)."""
    path = out / RUN_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
            raise ValueError("not a JSON object with a 'config' object")
        return data
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        _logger.warning(
            "%s is unreadable (%s); starting a fresh record of this run (finished images are still "
            "reused when their content keys match)",
            path,
            clip_text(str(exc), 120),
        )
        return None


def errors_log_path(out: Path, shard_index: int, num_shards: int) -> Path:
    """The errors log a process appends to: the folder's, or its shard's until the merge."""
    name = ERRORS_LOG if num_shards == 1 else f"errors.shard-{shard_index:05d}-of-{num_shards:05d}.log"
    return out / name


def append_errors_log(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def append_run_log(out: Path, entry: dict[str, Any]) -> None:
    """A line in runs.jsonl: run.json describes the latest run only; this log keeps what every run was made from."""
    entry = {**entry, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with open(out / RUNS_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def lock_for_run(out: Path, shard_index: int, num_shards: int) -> list[FolderLock]:
    """A process's locks: the whole folder, or its shard (plus every shard's when unsharded).

    Shards of one run share the folder by design, each holding its own shard lock; an
    unsharded run (which merges the shard manifests) also takes every shard lock it finds,
    so it never runs beside a live shard. Release the returned locks in reverse order.
    """
    if num_shards > 1:
        name = f".safegen.shard-{shard_index:05d}-of-{num_shards:05d}.lock"
        return [FolderLock(out, purpose=f"batch output folder (shard {shard_index})", name=name).acquire()]
    return lock_run_folder(out)


def lock_run_folder(out: str | Path) -> list[FolderLock]:
    """Exclusive hold of a batch folder: its own lock and every shard lock found in it.

    Taken by unsharded runs and by ``--merge`` (both rewrite the shard manifests), so neither
    runs beside a live shard. Release the returned locks in reverse order.
    """
    out = Path(out)
    purpose = "batch output folder"
    locks = [FolderLock(out, purpose=purpose).acquire()]
    try:
        for path in sorted(out.glob(".safegen.shard-*.lock")):
            locks.append(FolderLock(out, purpose=purpose, name=path.name, remove_if_empty=False).acquire())
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        raise
    return locks


def merge_error_logs(out: str | Path) -> Path:
    """Append every ``errors.shard-*.log`` to ``errors.log`` (atomically), then delete the shard logs.

    Call with the manifests' merge, when no shard is still writing.
    """
    out = Path(out)
    target = out / ERRORS_LOG
    parts = sorted(out.glob("errors.shard-*.log"))
    if not parts:
        return target
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    for part in parts:
        text += f"# merged from {part.name}\n" + part.read_text(encoding="utf-8")
    atomic_write_text(target, text)
    for part in parts:
        part.unlink(missing_ok=True)
    return target


def merge_shard_files(out: str | Path) -> None:
    """Fold the shards' manifests and error logs into the folder's own (no shard may still be writing)."""
    merge_manifests(out)
    merge_error_logs(out)


def merge_run_folder(out: str | Path, *, flag: str = "--merge") -> None:
    """``safegen batch --merge``: fold finished shards' files in, holding every lock of the folder.

    ``out`` must be a batch folder (``flag`` names the option in the refusal otherwise); the
    locks make sure no shard is still appending while its parts are folded in.
    """
    check_output_folder(out, BATCH_COMMAND, flag=flag)  # a user's run.json is no batch
    locks = lock_run_folder(out)
    try:
        merge_shard_files(out)
    finally:
        for lock in reversed(locks):
            lock.release()


def summarize(out: str | Path) -> dict[str, Any]:
    """Counts for a run folder: done, remaining, failed, flagged, dropped, images/s (read-only)."""
    out = Path(out)
    run_json = out / RUN_JSON
    if not run_json.is_file():
        raise SafegenError(f"{out} is not a batch output folder (no {RUN_JSON}); pass the --out of a batch run")
    try:
        info = json.loads(run_json.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SafegenError(
            f"{run_json} is unreadable ({clip_text(str(exc), 120)}); re-run the batch into {out} to rewrite it"
        ) from None
    records = read_manifest(out)
    runs, _ = read_jsonl(out / RUNS_LOG)
    planned = int(info.get("planned_images", 0))
    flagged = sum(1 for r in records if (r.get("safety") or {}).get("unsafe"))
    dropped = sum(1 for r in records if r.get("decision") == "drop")
    decisions: dict[str, int] = {}
    for r in records:
        decisions[r.get("decision", "pass")] = decisions.get(r.get("decision", "pass"), 0) + 1
    made = sum(int(r.get("generated", 0)) for r in runs)
    busy = sum(float(r.get("seconds", 0.0)) for r in runs)
    last = runs[-1] if runs else {}
    return {
        "out": str(out),
        "planned": planned,
        "done": len(records),
        "remaining": max(0, planned - len(records)),
        "bad_rows": int(info.get("bad_rows", 0)),
        "failed_last_run": sum(int(r.get("failed", 0)) for r in runs if r.get("finished") == last.get("finished")),
        "skipped_last_run": int(last.get("skipped", 0)),
        "flagged": flagged,
        "dropped": dropped,
        "decisions": decisions,
        "runs": len(runs),
        "images_per_s": made / busy if busy > 0 else 0.0,
        "base": info.get("config", {}).get("base"),
        "safe_encoder": info.get("config", {}).get("safe_encoder"),
        "shard_manifests": len(list(out.glob("manifest.shard-*.jsonl"))),
    }
