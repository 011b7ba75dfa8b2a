"""Checks of the values generating commands and their configs take: steps, guidance, counts, seeds, attention.

Each raises :class:`~safegen.core.errors.UsageError` naming the flag (the CLI exits 2), so a
typo is reported before any model loads. The device check lives with the devices
(:func:`safegen.core.devices.check_device`).
"""

from __future__ import annotations

import math

from safegen.core.devices import check_device
from safegen.core.errors import UsageError
from safegen.core.io import clip_text
from safegen.core.seeds import is_valid_seed

ATTENTION_CHOICES = ("auto", "sdpa", "xformers", "eager")
MAX_STEPS = 10_000
MAX_IMAGES = 10_000


def check_attention(mode: str) -> str:
    if mode not in ATTENTION_CHOICES:
        raise UsageError(f"--attention '{clip_text(mode, 40)}' is unknown; choose {', '.join(ATTENTION_CHOICES)}")
    return mode


def check_seed(seed: int, flag: str = "--seed") -> int:
    if not is_valid_seed(seed):
        raise UsageError(f"{flag} must be -1 (random) or in [0, 2**63), got {clip_text(str(seed), 40)}")
    return seed


def check_number(value: float | None, flag: str, *, minimum: float = 0.0, maximum: float | None = None) -> None:
    """A finite number in [minimum, maximum] (NaN and inf fail every comparison, so test them first)."""
    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
        raise UsageError(f"{flag} must be a finite number {bound}, got {value}")


def check_count(value: int | None, flag: str, maximum: int) -> None:
    if value is not None and not 1 <= value <= maximum:
        raise UsageError(f"{flag} must be between 1 and {maximum}, got {clip_text(str(value), 40)}")


def check_generation_options(
    *,
    seed: int,
    guidance: float,
    steps: int,
    num_images: int,
    device: str,
    attention: str,
    max_images: int = MAX_IMAGES,
) -> None:
    """The checks every generating command runs before a model loads (t2i, i2i, batch)."""
    check_seed(seed)
    check_number(guidance, "--guidance")
    check_count(steps, "--steps", MAX_STEPS)
    check_count(num_images, "--num-images", max_images)
    check_device(device)
    check_attention(attention)
