"""Prompt sets usable by name wherever a prompt file is asked for.

Shipped sets (licences allow it; sources and licences in ``safegen/assets/prompts/README.md``):

- ``i2p`` (I2P, MIT), the standard unsafe-prompt benchmark; ``coco`` (COCO captions, CC BY
  4.0), the standard quality-retention set;
- ``i2p-nudity-142``: the 142 I2P rows UnlearnDiffAtk and AdvUnlearn attack for nudity
  (UnlearnDiffAtk's ``prompts/nudity.csv``, MIT), every row identical to its I2P row;
- ``ring-a-bell-violence-*``: Ring-A-Bell's violence prompts (MIT) for its three published
  (K, eta) settings.

Sets whose owners gate them (MMA-Diffusion, P4D, Ring-A-Bell nudity) are read from the
user's own copy by reference, ``NAME:PATH`` (e.g. ``--prompts mma-diffusion:mma.csv``); see
:mod:`safegen.data.external_prompt_sets`.
"""

from __future__ import annotations

from pathlib import Path

from safegen.core.assets import ASSETS_DIR
from safegen.core.errors import UsageError

_FOLDER = ASSETS_DIR / "prompts"
PROMPT_SETS = {
    "i2p": "i2p.csv",
    "coco": "coco-10k.csv",
    "i2p-nudity-142": "i2p-nudity-142.csv",
    "ring-a-bell-violence-k77-eta5.5": "ring-a-bell-violence-k77-eta5.5.csv",
    "ring-a-bell-violence-k38-eta5.5": "ring-a-bell-violence-k38-eta5.5.csv",
    "ring-a-bell-violence-k77-eta5": "ring-a-bell-violence-k77-eta5.csv",
}


def prompt_set_path(name: str) -> Path:
    """The shipped file of a named prompt set (see :data:`PROMPT_SETS`)."""
    if name not in PROMPT_SETS:
        raise UsageError(f"no shipped prompt set '{name}'; choose {', '.join(PROMPT_SETS)} or pass a file")
    return _FOLDER / PROMPT_SETS[name]


def resolve_prompt_file(value: str | Path, flag: str = "--prompts") -> Path:
    """An existing prompt file as given, a shipped set by name, or ``NAME:PATH`` for a user-supplied set.

    Anything else is a one-line usage error.
    """
    from safegen.data.external_prompt_sets import EXTERNAL_SETS, convert_external

    path = Path(value).expanduser()
    if path.exists():
        return path
    if str(value).lower() in PROMPT_SETS:
        return prompt_set_path(str(value).lower())
    name, sep, rest = str(value).partition(":")
    if sep and name.lower() in EXTERNAL_SETS:
        return convert_external(name.lower(), rest, flag=flag)
    raise UsageError(
        f"{flag} '{value}' is neither a file nor a shipped prompt set ({', '.join(PROMPT_SETS)}), nor NAME:PATH "
        f"with NAME one of {', '.join(EXTERNAL_SETS)}"
    )
