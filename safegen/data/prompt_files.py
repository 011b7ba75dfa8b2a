"""Prompt-file readers: ``.txt``, ``.jsonl`` and ``.csv`` into validated :class:`PromptRow` s.

Why a reader of its own: prompt files come from many hands (I2P, the research CSVs of
concept-erasure repos, hand-written text files) and one bad row must not sink a run of
thousands. Each bad row becomes a :class:`RowError` naming ``file:line`` and the reason,
the other rows still run, and ``strict=True`` turns the first one into an exception.
Problems with the file as a whole (not UTF-8, empty, no ``prompt`` column) raise
:class:`~safegen.core.errors.PromptFileError`.

Columns (CSV headers or JSONL keys, case-insensitive) and their aliases:

============== ==================================================================
field          accepted names
============== ==================================================================
prompt         ``prompt``
id             ``id``, ``case_number``
seed           ``seed``, ``evaluation_seed``, ``sd_seed``
guidance       ``guidance``, ``guidance_scale``, ``cfg``, ``sd_guidance_scale``,
               ``evaluation_guidance``
steps          ``steps``, ``num_inference_steps``
negative       ``negative_prompt``, ``negative``
n              ``n``, ``num_images``, ``num_images_per_prompt``, ``images_per_prompt``
size           ``size`` (``WxH``), ``width``, ``height``
============== ==================================================================

Known metadata columns (``categories``, I2P's ``hard``/``*_percentage``/``lexica_url``/
``sd_model``/``sd_image_width``/``sd_image_height``, COCO's ``source``/``coco_id``) are kept
as row metadata and written to the manifest. I2P's ``sd_image_*`` columns are the size of
the original lexica.art image, not an evaluation setting, so they do not override the
size. Any other column is kept as metadata too, with a warning (it is often a typo).

Ids: the ``id`` column when present, else the row's line number in the file; a ``.txt``
row's id is a short hash of its text instead (:func:`txt_row_id`), so inserting or removing a
line leaves every other row's id, and its finished images, as they were. Ids name output
files and identify finished work on resume, so they must be unique.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.errors import PromptFileError
from safegen.core.io import split_lines, text_rows
from safegen.core.seeds import MAX_SEED

_logger = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".ndjson", ".csv")
# Rows nest at most this deep: metadata is copied into manifests, and deep values break encoders.
MAX_JSON_DEPTH = 32

# canonical field -> accepted column/key names (lower case)
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "id": ("id", "case_number"),
    "seed": ("seed", "evaluation_seed", "sd_seed"),
    "guidance": ("guidance", "guidance_scale", "cfg", "sd_guidance_scale", "evaluation_guidance"),
    "steps": ("steps", "num_inference_steps"),
    "negative_prompt": ("negative_prompt", "negative"),
    "n": ("n", "num_images", "num_images_per_prompt", "images_per_prompt"),
    "size": ("size",),
    "width": ("width",),
    "height": ("height",),
}
_FIELD_OF = {name: fld for fld, names in ALIASES.items() for name in names}

#: columns of the known prompt sets that carry information but no generation setting
METADATA_COLUMNS = frozenset(
    {
        "categories",
        "category",
        "hard",
        "inappropriate_percentage",
        "nudity_percentage",
        "q16_percentage",
        "sd_safety_percentage",
        "prompt_toxicity",
        "lexica_url",
        "sd_model",
        "sd_image_width",
        "sd_image_height",
        "source",
        "coco_id",
        "tag",
        "concept",
        "class",
        "label",
        "source_line",  # written by safegen eval's prepared prompt files
        "truncated_from",
        "safe_prompt",  # safegen eval attack: the safe twin of an unsafe prompt
        "axis",  # safegen eval t2i: which generalisation axis a prompt measures (rates per axis)
        "structure",  # the sentence shape a prompt was written in
    }
)
# pandas' unnamed index column (I2P starts with one)
_INDEX_COLUMNS = frozenset({"", "unnamed: 0", "index"})


@dataclass
class PromptRow:
    """One valid row of a prompt file; ``None`` fields fall back to the run's defaults.

    Args:
        id: unique id (``id``/``case_number`` column, else the line number; a ``.txt`` row: :func:`txt_row_id`).
        prompt: the text prompt.
        line: 1-based line of the file where the row starts (for messages).
        seed: base seed of the row (image ``j`` of the row uses ``seed + j``).
        negative_prompt, steps, guidance, n, width, height: per-row overrides.
        meta: metadata columns (categories, ...) copied to the manifest.
    """

    id: str
    prompt: str
    line: int
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    n: int | None = None
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RowError:
    """A row that was skipped, with where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class PromptFile:
    """What a reader got out of a file: valid rows, bad rows, and warnings about the file."""

    path: Path
    rows: list[PromptRow]
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _BadRow(ValueError):
    """Internal: a value that makes the current row invalid."""


def read_prompts(path: str | Path, *, strict: bool = False) -> PromptFile:
    """Read a ``.txt``, ``.jsonl`` or ``.csv`` prompt file (format chosen by the suffix).

    Bad rows are collected in ``.errors`` (``file:line: reason``) and left out of ``.rows``;
    with ``strict=True`` the first bad row raises :class:`PromptFileError` instead.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PromptFileError(f"{path}: unsupported prompt file type '{suffix}'; use .txt, .jsonl or .csv")
    if not path.is_file():
        raise PromptFileError(f"{path}: no such prompt file")
    text = _decode(path)
    if not text.strip():
        raise PromptFileError(f"{path}: the file is empty; it needs at least one prompt")
    result = PromptFile(path=path, rows=[])
    if suffix == ".txt":
        items = _txt_items(text)
    elif suffix == ".csv":
        items = _csv_items(path, text, result)
    else:
        items = _jsonl_items(path, text, result)
    seen: dict[str, int] = {}
    for line, fields, meta in items:
        try:
            if isinstance(fields, _BadRow):
                raise fields
            row = _make_row(line, fields, meta)
            if row.id in seen:
                raise _BadRow(f"duplicate id '{row.id}' (first used on line {seen[row.id]}); ids must be unique")
            seen[row.id] = line
            result.rows.append(row)
        except _BadRow as exc:
            err = RowError(str(path), line, str(exc))
            if strict:
                raise PromptFileError(f"{err} (--strict stops at the first bad row)") from None
            result.errors.append(err)
    if not result.rows and not result.errors:
        raise PromptFileError(f"{path}: no prompts found (only blank lines, comments or a header)")
    for warning in result.warnings:
        _logger.warning(warning)
    return result


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:  # unreadable (permissions, a folder named like a file, I/O error)
        raise PromptFileError(f"{path}: cannot read the prompt file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PromptFileError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}); "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


_Item = tuple[int, "dict[str, Any] | _BadRow", dict[str, Any]]


def txt_row_id(prompt: str, occurrence: int = 1) -> str:
    """The id of a ``.txt`` row: 12 hex digits of its text's SHA-256; the k-th repeat of a line gets ``-k``.

    A line number would change with every line inserted above, and every later row would
    count as changed; the text's hash changes only when the line itself does.
    """
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
    return digest if occurrence == 1 else f"{digest}-{occurrence}"


def _txt_items(text: str) -> Iterator[_Item]:
    seen: dict[str, int] = {}
    # Lines end at \n or \r\n only: U+2028, U+0085 or a form feed belong to the prompt.
    for line_no, line in text_rows(text):
        seen[line] = seen.get(line, 0) + 1
        yield line_no, {"prompt": line, "id": txt_row_id(line, seen[line])}, {}


def _is_unknown(name: str) -> bool:
    key = name.strip().lower()
    return key not in _FIELD_OF and key not in METADATA_COLUMNS and key not in _INDEX_COLUMNS


def _classify_columns(names: Iterable[str], where: str, result: PromptFile) -> dict[str, str]:
    """Map each column to a canonical field, ``meta:NAME`` or ``skip``; warn about unknown ones."""
    mapping: dict[str, str] = {}
    taken: dict[str, str] = {}
    unknown = []
    for name in names:
        key = name.strip().lower()
        fld = _FIELD_OF.get(key)
        if fld is not None:
            if fld in taken:
                # e.g. both `seed` and `evaluation_seed`: the first one listed in ALIASES wins.
                first = taken[fld]
                if ALIASES[fld].index(key) < ALIASES[fld].index(first.strip().lower()):
                    mapping[first], taken[fld] = f"meta:{first}", name
                    mapping[name] = fld
                else:
                    mapping[name] = f"meta:{name}"
                result.warnings.append(
                    f"{where}: columns '{first}' and '{name}' both give the {fld}; using '{taken[fld]}'"
                )
                continue
            taken[fld] = name
            mapping[name] = fld
        elif key in _INDEX_COLUMNS:
            mapping[name] = "skip"
        else:
            mapping[name] = f"meta:{name}"
            if _is_unknown(name):
                unknown.append(name)
    if unknown:
        known = ", ".join(sorted(_FIELD_OF))
        result.warnings.append(
            f"{where}: unknown column(s) {', '.join(repr(u) for u in unknown)} kept as metadata only "
            f"(generation columns: {known})"
        )
    return mapping


def _csv_items(path: Path, text: str, result: PromptFile) -> Iterator[_Item]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        while not any(h.strip() for h in header):
            header = next(reader)
    except StopIteration:
        raise PromptFileError(f"{path}: the file is empty; it needs a header row and at least one prompt") from None
    except csv.Error as exc:
        raise PromptFileError(f"{path}:{reader.line_num}: cannot parse the CSV header ({exc})") from None
    header_line = reader.line_num
    mapping = _classify_columns(header, f"{path}:{header_line}", result)
    if "prompt" not in mapping.values():
        raise PromptFileError(
            f"{path}:{header_line}: no 'prompt' column (columns found: {', '.join(repr(h) for h in header)}); "
            "the first row must be a header naming a 'prompt' column"
        )
    prev_end = header_line
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield prev_end + 1, _BadRow(f"cannot parse this CSV row ({exc})"), {}
            prev_end = reader.line_num
            continue
        start, prev_end = prev_end + 1, reader.line_num
        if not values or not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield start, _BadRow(f"the row has {len(values)} fields but the header has {len(header)}"), {}
            continue
        fields: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for name, value in zip(header, values, strict=True):
            target = mapping[name]
            if target == "skip":
                continue
            if target.startswith("meta:"):
                meta[name] = value
            elif value.strip() != "" or target == "prompt":
                fields[target] = value
        yield start, fields, meta


def _jsonl_items(path: Path, text: str, result: PromptFile) -> Iterator[_Item]:
    warned: set[str] = set()
    for line_no, raw in enumerate(split_lines(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("//"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, _BadRow(f"invalid JSON ({exc.msg} at column {exc.colno})"), {}
            continue
        except RecursionError:
            yield line_no, _BadRow(f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"), {}
            continue
        except ValueError as exc:  # e.g. an integer of thousands of digits (Python's int-size guard)
            yield line_no, _BadRow(f"unreadable JSON value ({str(exc)[:120]})"), {}
            continue
        if _json_depth(obj) > MAX_JSON_DEPTH:
            yield line_no, _BadRow(f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"), {}
            continue
        if isinstance(obj, str):
            obj = {"prompt": obj}
        if not isinstance(obj, dict):
            yield line_no, _BadRow(f"expected a JSON object with a 'prompt', got {type(obj).__name__}"), {}
            continue
        unknown = [k for k in obj if k not in warned and _is_unknown(k)]
        if unknown:
            warned.update(unknown)
            result.warnings.append(
                f"{path}:{line_no}: unknown key(s) {', '.join(repr(u) for u in unknown)} kept as metadata only "
                f"(generation keys: {', '.join(sorted(_FIELD_OF))})"
            )
        fields: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for key, value in obj.items():
            fld = _FIELD_OF.get(key.strip().lower())
            if fld is None:
                if key.strip().lower() not in _INDEX_COLUMNS:
                    meta[key] = value
            elif fld in fields:
                yield line_no, _BadRow(f"the {fld} is given twice (as '{key}' and another alias)"), {}
                break
            elif value is not None:
                fields[fld] = value
        else:
            if "prompt" not in fields:
                yield line_no, _BadRow("no 'prompt' key"), {}
                continue
            yield line_no, fields, meta


def _json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value, computed without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((v, depth + 1) for v in value)
    return deepest


def _as_int(fld: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise _BadRow(f"{fld} must be an integer, got {value!r}")
    if isinstance(value, float):
        number = value
    elif isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise _BadRow(f"{fld} must be an integer, got {value!r}") from None
    if isinstance(number, float):
        if not number.is_integer():
            raise _BadRow(f"{fld} must be an integer, got {value!r}")
        number = int(number)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise _BadRow(f"{fld} must be {bound}, got {number}")
    return number


def _as_float(fld: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _BadRow(f"{fld} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _BadRow(f"{fld} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise _BadRow(f"{fld} must be a finite number >= 0, got {value!r}")
    return number


def _as_side(fld: str, value: Any) -> int:
    side = _as_int(fld, value, 8, 16384)
    if side % 8:
        raise _BadRow(f"{fld} must be a multiple of 8, got {side}")
    return side


def _make_row(line: int, fields: dict[str, Any], meta: dict[str, Any]) -> PromptRow:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise _BadRow(f"prompt must be text, got {type(prompt).__name__}")
    if not prompt.strip():
        raise _BadRow("empty prompt")
    if "\x00" in prompt:
        raise _BadRow("the prompt contains a NUL character")
    raw_id = fields.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        row_id = str(line)
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        row_id = str(raw_id).strip()
    elif isinstance(raw_id, float) and raw_id.is_integer():
        row_id = str(int(raw_id))
    else:
        raise _BadRow(f"id must be text or an integer, got {raw_id!r}")
    row = PromptRow(id=row_id, prompt=prompt.strip(), line=line, meta=meta)
    if "seed" in fields:
        row.seed = _as_int("seed", fields["seed"], 0, MAX_SEED)
    if "negative_prompt" in fields:
        if not isinstance(fields["negative_prompt"], str):
            raise _BadRow("negative_prompt must be text")
        row.negative_prompt = fields["negative_prompt"]
    if "steps" in fields:
        row.steps = _as_int("steps", fields["steps"], 1, 10_000)
    if "guidance" in fields:
        row.guidance = _as_float("guidance", fields["guidance"])
    if "n" in fields:
        row.n = _as_int("n (images per prompt)", fields["n"], 1, 10_000)
    if "size" in fields:
        parts = str(fields["size"]).lower().split("x")
        if len(parts) != 2:
            raise _BadRow(f"size must be WIDTHxHEIGHT (e.g. 512x512), got {fields['size']!r}")
        row.width, row.height = _as_side("width", parts[0]), _as_side("height", parts[1])
    if "width" in fields:
        row.width = _as_side("width", fields["width"])
    if "height" in fields:
        row.height = _as_side("height", fields["height"])
    return row
