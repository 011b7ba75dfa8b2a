"""Safe-CLIP quadruples (safe text, unsafe text, safe image?, unsafe image?) from the two file
formats the field uses: a JSONL of ``{safe_text, unsafe_text, safe_image?, unsafe_image?, tag?}``
and the official ViSU JSON. Training (:mod:`safegen_train.data`) and evaluation
(:mod:`safegen.evaluation.retrieval_eval`) both read through here.

All readers return a list of :class:`Record`. Problems are collected, not raised one at a
time: a :class:`DataError` names the first few bad records (file:line or file:key) and
the total count; ``skip_bad=True`` drops them with a warning instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError

_logger = logging.getLogger(__name__)

MAX_LISTED = 5
COCO_SPLITS = ("train2017", "val2017", "test2017")


class DataError(SafegenError):
    """Training data cannot be used as it is (bad records, missing files, empty split)."""


@dataclass
class Record:
    """One safe/unsafe pair; image paths are absolute (or None when the record has no image)."""

    safe_text: str
    unsafe_text: str
    safe_image: str | None = None
    unsafe_image: str | None = None
    tag: str | None = None
    where: str = ""  # file:line, for error messages


class RecordProblems:
    """Collects bad records; raises one error listing the first few, or drops them."""

    # What the error tells a training user to do; other callers (evaluation) pass their own.
    SKIP_HINT = "fix them or pass skip_bad_records (--set skip_bad_records=true) to drop them"

    def __init__(self, source: str, hint: str = SKIP_HINT):
        self.source = source
        self.hint = hint
        self.items: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.items.append(f"{where}: {reason}")

    def finish(self, records: list[Record], bad_ids: set[int], *, skip_bad: bool) -> list[Record]:
        if self.items:
            listed = "; ".join(self.items[:MAX_LISTED])
            more = f" (and {len(self.items) - MAX_LISTED} more)" if len(self.items) > MAX_LISTED else ""
            if not skip_bad:
                raise DataError(
                    f"{len(self.items)} bad record(s) in '{self.source}': {listed}{more}; {self.hint}"
                )
            _logger.warning("skipping %d bad record(s) in '%s': %s%s", len(self.items), self.source, listed, more)
        kept = [r for i, r in enumerate(records) if i not in bad_ids]
        if not kept:
            raise DataError(f"no usable records in '{self.source}' (empty split or every record bad)")
        return kept


def _resolve_image(value: Any, base: Path) -> tuple[str | None, str | None]:
    """(absolute path, problem) for an image field; relative paths are relative to ``base``."""
    if value is None or value == "":
        return None, None
    if not isinstance(value, str):
        return None, f"image path must be a string, got {type(value).__name__}"
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        return str(path), f"image file not found: {path}"
    return str(path), None


def read_jsonl(
    path: str | Path, *, skip_bad: bool = False, check_images: bool = True, hint: str = RecordProblems.SKIP_HINT
) -> list[Record]:
    """Read ``{safe_text, unsafe_text, safe_image?, unsafe_image?, tag?}`` lines.

    Image paths are relative to the JSONL file's folder, or absolute. Blank lines are
    skipped; unknown keys are allowed (kept out of the record).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    problems, records, bad = RecordProblems(str(path), hint), [], set()
    base = path.parent
    # Binary lines split on b"\n" only: text mode would also split on a lone "\r" inside a caption.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path.name}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add(where, f"not UTF-8 text (byte {exc.start})")
                continue
            if not line.strip():
                continue
            obj, reason = parse_json_line(line)
            if reason:
                problems.add(where, reason)
                continue
            if not isinstance(obj, dict):
                problems.add(where, f"expected an object, got {type(obj).__name__}")
                continue
            rec, reason = record_from_mapping(obj, where, base, check_images)
            if reason:
                problems.add(where, reason)
                if rec is None:
                    continue
                bad.add(len(records))
            records.append(rec)
    return problems.finish(records, bad, skip_bad=skip_bad)


def parse_json_line(line: str) -> tuple[Any, str | None]:
    """(value, None) or (None, reason): invalid JSON, nesting too deep for the parser, or an integer
    longer than Python converts (4300 digits) are one bad record, never an exception that ends the run."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg})"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # int('1' * 5000): "Exceeds the limit (4300 digits) ..."
        return None, f"unreadable JSON value ({str(exc).split(';')[0]})"


def record_from_mapping(obj: dict, where: str, base: Path, check_images: bool) -> tuple[Record | None, str | None]:
    # Accept ViSU-Text's column names (safe, nsfw) next to ours.
    safe = obj.get("safe_text", obj.get("safe"))
    unsafe = obj.get("unsafe_text", obj.get("nsfw"))
    for name, value in (("safe_text", safe), ("unsafe_text", unsafe)):
        if not isinstance(value, str) or not value.strip():
            got = "missing" if value is None else f"{value!r}"
            return None, f"field '{name}' must be a non-empty string ({got})"
    reasons = []
    images = {}
    for name in ("safe_image", "unsafe_image"):
        value = obj.get(name)
        if check_images:
            images[name], reason = _resolve_image(value, base)
            if reason:
                reasons.append(f"field '{name}': {reason}")
        else:
            images[name] = None
    tag = obj.get("tag")
    rec = Record(safe.strip(), unsafe.strip(), images["safe_image"], images["unsafe_image"], _tag(tag), where)
    return rec, "; ".join(reasons) or None


def _tag(tag: Any) -> str | None:
    if tag is None:
        return None
    if isinstance(tag, (list, tuple)):
        return ",".join(str(t) for t in tag)
    return str(tag)


def read_visu(
    path: str | Path,
    *,
    coco_root: str | Path | None = None,
    unsafe_image_root: str | Path | None = None,
    skip_bad: bool = False,
    check_images: bool = True,
) -> list[Record]:
    """Read the official ViSU JSON: ``{"<i>": {coco_id, nsfw_im_path, safe, nsfw, tag}}``.

    The mapping may be wrapped as ``{"info": ..., "data": {...}}``. Safe images are COCO
    files named by the 12-digit zero-padded ``coco_id``, looked up in ``coco_root``'s
    train2017/val2017/test2017. Unsafe images are ``nsfw_im_path`` as the release wrote it:
    an absolute path is used as it is, a relative one is read under ``unsafe_image_root``
    (default: the JSON's folder); when the file is not there and ``unsafe_image_root`` is
    set, the file of the same name directly under that root is used (the release's
    absolute paths point at its authors' machines). A path that resolves nowhere makes the
    record bad (an error naming it, or dropped with ``skip_bad``), never silently text-only.
    Without ``coco_root`` the records have no safe image; records without
    ``nsfw_im_path`` have no unsafe image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    except (RecursionError, ValueError) as exc:  # nesting too deep, 5000-digit numbers, not UTF-8
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise DataError(f"{path}: unreadable JSON ({reason})") from None
    if isinstance(data, dict) and "data" in data and isinstance(data["data"], (dict, list)):
        data = data["data"]
    items = data.items() if isinstance(data, dict) else enumerate(data)
    problems, records, bad = RecordProblems(str(path)), [], set()
    coco = Path(coco_root).expanduser() if coco_root else None
    unsafe_root = Path(unsafe_image_root).expanduser() if unsafe_image_root else path.parent
    for key, item in items:
        where = f"{path.name}[{key}]"
        if not isinstance(item, dict):
            problems.add(where, f"expected an object, got {type(item).__name__}")
            continue
        rec, reason = record_from_mapping(
            {"safe_text": item.get("safe"), "unsafe_text": item.get("nsfw"), "tag": item.get("tag")},
            where,
            path.parent,
            False,
        )
        if rec is None:
            problems.add(where, reason or "bad record")
            continue
        reasons = []
        if check_images and coco is not None:
            rec.safe_image, reason = _find_coco(coco, item.get("coco_id"))
            if reason:
                reasons.append(reason)
        if check_images and item.get("nsfw_im_path"):
            rec.unsafe_image, reason = _resolve_unsafe(item.get("nsfw_im_path"), unsafe_root, unsafe_image_root)
            if reason:
                reasons.append(f"nsfw_im_path: {reason}")
        if reasons:
            problems.add(where, "; ".join(reasons))
            bad.add(len(records))
        records.append(rec)
    return problems.finish(records, bad, skip_bad=skip_bad)


def _resolve_unsafe(value: Any, root: Path, explicit_root: Any) -> tuple[str | None, str | None]:
    found, reason = _resolve_image(value, root)
    if reason is None or not isinstance(value, str):
        return found, reason
    if explicit_root:
        moved = root / Path(value).name  # the release's absolute paths, relocated under the given root
        if moved.is_file():
            return str(moved), None
        return found, reason if str(moved) == found else f"{reason} (nor {moved})"
    return found, f"{reason}; set unsafe_image_root to the folder holding the ViSU unsafe images"


def _find_coco(root: Path, coco_id: Any) -> tuple[str | None, str | None]:
    try:
        name = f"{int(coco_id):012d}.jpg"
    except (TypeError, ValueError):
        return None, f"coco_id must be an integer, got {coco_id!r}"
    for split in COCO_SPLITS:
        candidate = root / split / name
        if candidate.is_file():
            return str(candidate), None
    return None, f"COCO image {name} not found under {root}/{{{','.join(COCO_SPLITS)}}}"
