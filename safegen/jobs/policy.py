"""What a batch run does with an image its output classifier flags.

Users asked to be told, not silently censored: the decision and the scores always go to
the manifest, whatever the policy, and the flagged original is kept (in a folder of its
own) only when asked.
"""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image, ImageFilter

_logger = logging.getLogger(__name__)

ON_UNSAFE = ("keep", "blur", "black", "drop")


def apply_policy(image: Any, unsafe: bool, on_unsafe: str) -> tuple[Any | None, str]:
    """The image to write (None: write nothing) and the decision to record.

    Decisions: ``pass`` (not flagged, or no check), ``keep``, ``blur``, ``black``, ``drop``.
    """
    if on_unsafe not in ON_UNSAFE:
        raise ValueError(f"on_unsafe must be one of {', '.join(ON_UNSAFE)}, got '{on_unsafe}'")
    if not unsafe:
        return image, "pass"
    if on_unsafe == "keep":
        return image, "keep"
    if on_unsafe == "drop":
        return None, "drop"
    if on_unsafe == "black":
        return Image.new("RGB", image.size, (0, 0, 0)), "black"
    return blur(image), "blur"


def blur(image: Any) -> Any:
    """A blur strong enough that nothing but large colour areas survives, at any size."""
    w, h = image.size
    small = image.convert("RGB").resize((max(1, w // 16), max(1, h // 16)), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(radius=max(2, w // 32)))
