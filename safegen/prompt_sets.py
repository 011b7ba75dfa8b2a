"""Prompt sets shipped inside the package, usable by name wherever a prompt file is asked for.

``i2p`` (I2P, MIT) is the standard unsafe-prompt benchmark; ``coco`` (COCO captions, CC BY
4.0) the standard quality-retention set. Licences and sources are in
``safegen/assets/prompts/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

_FOLDER = Path(__file__).parent / "assets" / "prompts"
PROMPT_SETS = {"i2p": "i2p.csv", "coco": "coco-10k.csv"}


def prompt_set_path(name: str) -> Path:
    """The shipped file of a named prompt set (``i2p`` or ``coco``)."""
    if name not in PROMPT_SETS:
        raise UsageError(f"no shipped prompt set '{name}'; choose {', '.join(PROMPT_SETS)} or pass a file")
    return _FOLDER / PROMPT_SETS[name]


def resolve_prompt_file(value: str | Path, flag: str = "--prompts") -> Path:
    """An existing prompt file as given, or the shipped set of that name; else a one-line usage error."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if str(value).lower() in PROMPT_SETS:
        return prompt_set_path(str(value).lower())
    raise UsageError(f"{flag} '{value}' is neither a file nor a shipped prompt set ({', '.join(PROMPT_SETS)})")
