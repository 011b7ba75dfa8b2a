"""Readers for prompt sets safegen cannot ship: the user supplies the file, safegen knows its layout.

Why by reference: MMA-Diffusion's adversarial prompts and Ring-A-Bell's nudity prompts are
gated Hugging Face datasets (access on request), and P4D's optimised prompts come from its
gated dataset or from running P4D. Their owners decide who gets them, so safegen only reads
a copy the user has, ``--prompts NAME:PATH``.

Each reader maps the set's own columns (a CSV, or a JSONL as ``datasets``' ``to_json``
writes) to safegen's prompt rows and writes a JSONL the rest of safegen reads. The file's
name holds a hash of the source bytes, so the same copy always gives the same file and a
changed copy a new one.

Layouts (read from the projects' code):

- ``mma-diffusion``: ``YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark``, 1,000 rows,
  the attack prompt in ``adv_prompt`` and the prompt it imitates in ``target_prompt``
  (``mma-diffusion-target`` reads that one). No seeds: rows take the run's ``--seed``.
- ``p4d``: P4D's output CSV (``run_p4dn.py`` / ``run_p4dk.py``): I2P's columns with
  ``prompt`` replaced by the optimised prompt, plus ``nudity_toxicity``; seeds in
  ``evaluation_seed``, ids in ``case_number``.
- ``ring-a-bell-nudity``: ``Chia15/RingABell-Nudity``, laid out as Ring-A-Bell's public
  violence files (``prompt,case_number,evaluation_seed``); a ``.txt`` copy (a prompt a line)
  is read as it is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safegen.core.errors import PromptFileError, UsageError
from safegen.core.io import jsonl_rows


@dataclass(frozen=True)
class ExternalSet:
    """How to read one externally held prompt set."""

    prompt_column: str
    concept: str  # the I2P category its prompts target, written as `categories` when a row has none
    where: str  # where a user gets the file
    licence: str


EXTERNAL_SETS: dict[str, ExternalSet] = {
    "mma-diffusion": ExternalSet(
        "adv_prompt",
        "sexual",
        "huggingface.co/datasets/YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark (access on request)",
        "gated dataset, research use as its owners grant; the code repository is CC BY-NC-ND 3.0",
    ),
    "mma-diffusion-target": ExternalSet(
        "target_prompt",
        "sexual",
        "huggingface.co/datasets/YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark (access on request)",
        "gated dataset, research use as its owners grant; the code repository is CC BY-NC-ND 3.0",
    ),
    "p4d": ExternalSet(
        "prompt",
        "sexual",
        "huggingface.co/datasets/joycenerd/p4d, or the CSV that P4D's run_p4dn.py/run_p4dk.py writes",
        "P4D's code is MIT; its dataset's terms are its owners'",
    ),
    "ring-a-bell-nudity": ExternalSet(
        "prompt",
        "sexual",
        "huggingface.co/datasets/Chia15/RingABell-Nudity (access on request)",
        "gated dataset; Ring-A-Bell's code and public violence prompts are MIT",
    ),
}

_SEED_COLUMNS = ("evaluation_seed", "seed", "sd_seed")
_ID_COLUMNS = ("case_number", "id")
_INDEX_COLUMNS = {"", "unnamed: 0", "index"}


def cache_folder() -> Path:
    """Where converted sets are written: ``$SAFEGEN_CACHE/prompt_sets`` or ``~/.cache/safegen/prompt_sets``."""
    root = os.environ.get("SAFEGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "safegen"
    )
    return Path(root) / "prompt_sets"


def _records(path: Path, data: bytes) -> list[dict[str, Any]]:
    text = data.decode("utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in jsonl_rows(text):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{path}:{n}: not JSON ({exc.msg})") from None
        return rows
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    raise PromptFileError(f"{path}: expected the set as .csv or .jsonl (a .txt copy can be passed as it is)")


def read_external(name: str, path: str | Path) -> list[dict[str, Any]]:
    """The rows of a user-supplied copy of set ``name`` as safegen prompt objects ({id, prompt, seed?, ...})."""
    spec = EXTERNAL_SETS[name]
    path = Path(path).expanduser()
    records = _records(path, path.read_bytes())
    if records and spec.prompt_column not in records[0]:
        raise PromptFileError(
            f"{path}: no '{spec.prompt_column}' column, so not {name}'s layout (columns: {', '.join(records[0])})"
        )
    out = []
    for n, rec in enumerate(records):
        prompt = str(rec.get(spec.prompt_column) or "").strip()
        if not prompt:
            continue  # an empty attack prompt generates nothing to judge
        row: dict[str, Any] = {"id": next((str(rec[c]) for c in _ID_COLUMNS if rec.get(c) not in (None, "")), str(n))}
        row["prompt"] = prompt
        seed = next((rec[c] for c in _SEED_COLUMNS if rec.get(c) not in (None, "")), None)
        if seed is not None:
            row["seed"] = int(float(seed))
        row["categories"] = rec.get("categories") or spec.concept
        out.append(row)
    return out


def convert_external(name: str, path: str | Path, flag: str = "--prompts") -> Path:
    """Write the user's copy of ``name`` as a safegen JSONL (named by the copy's hash) and return its path."""
    from safegen.core.io import atomic_write_text

    source = Path(path).expanduser()
    if not source.is_file():
        spec = EXTERNAL_SETS[name]
        raise UsageError(f"{flag} {name}:{path}: no such file; get {name} from {spec.where}")
    if source.suffix.lower() == ".txt":
        return source  # a prompt a line: safegen's own format already
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = cache_folder() / f"{name}-{digest}.jsonl"
    if not out.is_file():
        rows = read_external(name, source)
        if not rows:
            raise PromptFileError(f"{source}: no prompts in the '{EXTERNAL_SETS[name].prompt_column}' column")
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out
