"""What a re-run in the same folder may reuse, and what it says about rows that changed since.

An image is reused only when its manifest line carries the new job's content key and its
file is still there (or it was dropped on purpose); any other image is made again. Rows
whose key differs are reported with what differs (prompt, settings, weights), or the run
is refused with ``on_change="refuse"``, before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.core.io import clip_text, path_inside
from safegen.jobs.config import BatchResult
from safegen.jobs.manifest import read_manifest
from safegen.jobs.plan import FLAGGED_DIR, IMAGES_DIR, ImageJob

_logger = logging.getLogger(__name__)

# Manifest fields compared to say *what* changed in a row since the last run.
_DIFF_FIELDS = (
    ("prompt", "prompt"),
    ("negative_prompt", "negative prompt"),
    ("steps", "steps"),
    ("guidance", "guidance"),
    ("width", "size"),
    ("height", "size"),
    ("scheduler", "scheduler"),
    ("base_fingerprint", "base model weights"),
    ("safe_encoder_fingerprint", "safe encoder weights"),
)


@dataclass
class ResumePlan:
    """Which jobs to generate, how many images are reused, and which jobs changed (with what changed)."""

    todo: list[ImageJob]
    reused: int
    changed: list[tuple[ImageJob, list[str]]]


def record_ok(out: Path, record: dict[str, Any]) -> bool:
    """A manifest line whose image is still there (or was dropped on purpose), inside the folder."""
    if record.get("file") is None:
        return record.get("decision") == "drop"
    try:
        return path_inside(out, str(record["file"])).is_file()
    except (ValueError, OSError):
        return False


def plan_resume(out: Path, jobs: list[ImageJob], run_fields: dict[str, Any]) -> ResumePlan:
    """Compare ``jobs`` with the manifest of ``out``.

    ``run_fields`` are the manifest fields every image of this run shares (scheduler and
    weight fingerprints), used to say what changed.
    """
    latest = {(str(r["id"]), int(r["seed"])): r for r in read_manifest(out)}
    plan = ResumePlan(todo=[], reused=0, changed=[])
    for job in jobs:
        rec = latest.get((job.id, job.seed))
        if rec is None:
            plan.todo.append(job)
            continue
        if rec.get("content_key") == job.content_key:
            if record_ok(out, rec):
                plan.reused += 1
            else:
                plan.todo.append(job)  # same inputs, file gone: redo silently
            continue
        plan.changed.append((job, what_changed(rec, job, run_fields)))
        plan.todo.append(job)
    return plan


def what_changed(record: dict[str, Any], job: ImageJob, run_fields: dict[str, Any]) -> list[str]:
    """Labels of the inputs that differ between a manifest line and the job that replaces it."""
    if not record.get("content_key"):
        return ["made before content keys (older safegen)"]
    now = {**job.determinants(), **run_fields}
    if "scheduler_signature" in record:
        record = {**record, "scheduler": record["scheduler_signature"]}
    found: list[str] = []
    for key, label in _DIFF_FIELDS:
        if record.get(key) != now.get(key) and label not in found:
            found.append(label)
    return found or ["classifier or call settings"]


def report_changes(
    changed: list[tuple[ImageJob, list[str]]],
    result: BatchResult,
    *,
    prompts: str | Path,
    out: Path,
    on_change: str,
) -> None:
    """Count changed rows into ``result`` and warn; with ``on_change="refuse"``, raise instead."""
    if not changed:
        return
    rows = {(j.id, j.line) for j, _ in changed}
    reasons: list[str] = []
    for _, why in changed:
        reasons += [w for w in why if w not in reasons]
    first = changed[0][0]
    where = f"{prompts}:{first.line} id '{clip_text(first.id, 60)}'"
    if on_change == "refuse":
        raise UsageError(
            f"{len(rows)} row(s) changed since the last run in {out} ({', '.join(reasons)}; first: {where}); "
            "--on-change refuse keeps finished runs unchanged: restore the inputs, pick a new --out, "
            "or re-run with --on-change regenerate"
        )
    result.changed, result.changed_rows = len(changed), len(rows)
    _logger.warning(
        "%d row(s) changed since the last run (%s; first: %s): regenerated", len(rows), ", ".join(reasons), where
    )


def clean_temp_files(out: Path, names: set[str]) -> None:
    """Delete temp files a killed run left for the images ``names`` (never another shard's)."""
    for folder in (out / IMAGES_DIR, out / FLAGGED_DIR):
        for tmp in folder.glob(".*.tmp"):
            target = tmp.name[1:-4].rsplit(".", 1)[0]
            if target in names:
                tmp.unlink(missing_ok=True)
