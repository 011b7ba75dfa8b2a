"""The prompt set every method of one evaluation reads: parsed once, long prompts truncated once.

Why a prepared file: methods differ in how they tokenize. Diffusers' pipelines truncate a
prompt longer than the tokenizer's window silently, while its deprecated Safe Latent
Diffusion pipeline fails on any batch that mixes such a prompt with shorter ones. Cutting
every long prompt here, to exactly the tokens the text encoder would keep, gives every
method the same text, and the report can count how many prompts were cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.io import atomic_write_text
from safegen.data.prompt_files import PromptRow, read_prompts

#: metadata keys the prepared file adds to each row (see readers.METADATA_COLUMNS)
SOURCE_LINE_KEY = "source_line"
TRUNCATED_KEY = "truncated_from"


@dataclass
class PreparedPrompts:
    """A prompt file rewritten as JSONL for every method of an evaluation."""

    path: Path
    rows: int
    max_tokens: int | None
    truncated: list[str] = field(default_factory=list)  # ids of rows whose prompt was cut
    bad_rows: list[str] = field(default_factory=list)  # "file:line: reason" of rows left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "rows": self.rows,
            "tokenizer_max_tokens": self.max_tokens,
            "truncated": len(self.truncated),
            "truncated_ids": self.truncated,
            "bad_rows": self.bad_rows,
        }


def _content_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without the start/end tokens."""
    ids = tokenizer(text, truncation=False, add_special_tokens=False).input_ids
    return list(ids)


def truncate_prompt(tokenizer: Any, prompt: str, room: int = 0) -> str | None:
    """The prompt cut to what the text encoder reads (its window less start and end), or None when it fits.

    ``room``: tokens to leave free after the prompt (an attack appending words asks for them).
    The kept token ids are decoded back to text; when that text does not re-tokenize to the
    same ids (rare byte-level pieces), the longest whole-word prefix that fits is used instead.
    """
    limit = max(0, int(tokenizer.model_max_length) - 2 - room)  # start and end tokens take two places
    ids = _content_ids(tokenizer, prompt)
    if len(ids) <= limit:
        return None
    kept = ids[:limit]
    text = tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
    if _content_ids(tokenizer, text) == kept:
        return text
    words = prompt.split()
    lo, hi = 0, len(words)
    while lo < hi:  # longest prefix of whole words that fits
        mid = (lo + hi + 1) // 2
        if len(_content_ids(tokenizer, " ".join(words[:mid]))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) or text


def _row_json(row: PromptRow, prompt: str, truncated: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": row.id, "prompt": prompt}
    for name in ("seed", "negative_prompt", "steps", "guidance", "n", "width", "height"):
        value = getattr(row, name)
        if value is not None:
            obj[name] = value
    obj.update(row.meta)
    obj[SOURCE_LINE_KEY] = row.line
    if truncated:
        obj[TRUNCATED_KEY] = row.prompt
    return obj


def prepare_prompts(
    source: str | Path, out: str | Path, tokenizer: Any, *, limit: int | None = None
) -> PreparedPrompts:
    """Read ``source`` (first ``limit`` valid rows), truncate long prompts, write ``out`` (JSONL).

    The file is rewritten only when its content changes, so a resumed evaluation sees the
    same file it ran on.
    """
    source, out = Path(source), Path(out)
    parsed = read_prompts(source)
    rows = parsed.rows[:limit] if limit else parsed.rows
    max_tokens = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    lines, truncated = [], []
    for row in rows:
        cut = truncate_prompt(tokenizer, row.prompt) if tokenizer is not None else None
        if cut is not None:
            truncated.append(row.id)
        lines.append(json.dumps(_row_json(row, cut if cut is not None else row.prompt, cut is not None)))
    text = "\n".join(lines) + "\n"
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        atomic_write_text(out, text)
    return PreparedPrompts(out, len(rows), max_tokens, truncated, [str(e) for e in parsed.errors])
