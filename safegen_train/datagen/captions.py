"""Safe captions in: ``.txt`` (a caption a line), ``.jsonl`` or ``.csv`` with a caption column.

Why a reader of its own rather than the batch prompt reader: captions carry what a prompt
file does not (the source image a caption came from, the concepts the user wants for it,
a COCO id for the ViSU export) and every caption must be usable: an empty one is an error
naming ``file:line``, not a silently skipped row.

Columns / keys: ``caption`` (or ``text``, ``safe_text``, ``safe``, ``prompt``), optional
``id``, ``image`` (the real safe image; without it ``render`` draws one), ``concept`` or
``concepts`` (a name or a list; else the rewrite stage assigns them), ``coco_id``; other
columns are kept as metadata.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.core.io import jsonl_rows, text_rows

_logger = logging.getLogger(__name__)

CAPTION_KEYS = ("caption", "text", "safe_text", "safe", "prompt")
SUFFIXES = (".txt", ".jsonl", ".csv")
# Real captions are a sentence or two (COCO's average about 50 characters); 1000 leaves room
# for long descriptive ones while keeping every rewrite prompt within a small LM's context.
DEFAULT_MAX_CAPTION_CHARS = 1000


class CaptionFileError(UsageError):
    """A captions file cannot be used (missing, empty, an empty caption, a duplicate id)."""


@dataclass
class Caption:
    """One safe caption and where it came from."""

    id: str
    text: str
    line: int
    image: str | None = None  # absolute path of the real safe image, if the file names one
    concepts: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_captions(path: str | Path) -> list[Caption]:
    """Every caption of ``path`` in file order; raises :class:`CaptionFileError` (one line) on bad input."""
    path = Path(path)
    if not path.is_file():
        raise CaptionFileError(f"captions file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CaptionFileError(f"captions file '{path}' must end in {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CaptionFileError(f"captions file '{path}' is not UTF-8 text") from None
    if suffix == ".txt":
        rows = [(i, {"caption": line}) for i, line in text_rows(text)]
    elif suffix == ".jsonl":
        rows = []
        for i, line in jsonl_rows(text):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CaptionFileError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise CaptionFileError(f"{path}:{i}: expected an object with a caption field")
            rows.append((i, obj))
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(i + 2, dict(r)) for i, r in enumerate(reader)]
    if not rows:
        raise CaptionFileError(f"captions file '{path}' has no captions")
    captions, seen = [], {}
    for line, obj in rows:
        captions.append(_caption(obj, line, path))
        cap = captions[-1]
        if cap.id in seen:
            raise CaptionFileError(
                f"{path}:{line}: id '{cap.id}' already used on line {seen[cap.id]}; ids must be unique"
            )
        seen[cap.id] = line
    return captions


def _caption(obj: dict[str, Any], line: int, path: Path) -> Caption:
    lower = {str(k).strip().lower(): v for k, v in obj.items() if k is not None}
    key = next((k for k in CAPTION_KEYS if k in lower), None)
    if key is None:
        raise CaptionFileError(f"{path}:{line}: no caption field (one of {', '.join(CAPTION_KEYS)})")
    value = lower.pop(key)
    if not isinstance(value, str) or not value.strip():
        raise CaptionFileError(f"{path}:{line}: empty caption; remove the row or write its caption")
    row_id = lower.pop("id", None)
    row_id = str(row_id).strip() if row_id not in (None, "") else str(line)
    image = lower.pop("image", None) or None
    if image is not None:
        p = Path(str(image)).expanduser()
        image = str(p if p.is_absolute() else (path.parent / p).resolve())
        if not Path(image).is_file():
            raise CaptionFileError(f"{path}:{line}: image '{image}' not found")
    concepts = lower.pop("concepts", None)
    single = lower.pop("concept", None)
    if concepts is None and single not in (None, ""):
        concepts = [single]
    if isinstance(concepts, str):
        concepts = [c.strip() for c in concepts.split(",") if c.strip()]
    if concepts is not None and (not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts)):
        raise CaptionFileError(f"{path}:{line}: concepts must be a name or a list of names")
    return Caption(row_id, " ".join(value.split()), line, image, concepts or None, lower)
