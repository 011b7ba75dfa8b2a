"""Seeds, one home: the range every entry point accepts, how a random seed is drawn, the check.

A seed is an int in [0, 2**63) (torch generators take 64-bit seeds; JSON and CSV carry them
as integers). -1 (or no seed) asks for a random one, drawn below 2**31 so that a user can
read it back from the output and retype it.
"""

from __future__ import annotations

import random

MAX_SEED = 2**63 - 1
RANDOM = -1  # the "pick one for me" value of --seed and JSON seed fields
_RANDOM_BELOW = 2**31


def random_seed() -> int:
    """A fresh seed that is short enough to retype."""
    return random.randrange(_RANDOM_BELOW)


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a random one for None and negative values."""
    return random_seed() if seed is None or seed < 0 else seed


def is_valid_seed(seed: int, *, allow_random: bool = True) -> bool:
    """Whether ``seed`` is in [0, MAX_SEED] (or is :data:`RANDOM`, when allowed)."""
    return (allow_random and seed == RANDOM) or 0 <= seed <= MAX_SEED
