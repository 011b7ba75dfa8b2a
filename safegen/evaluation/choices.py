"""From a command line's choices to an evaluation config's fields: what a preset adds, what each judge needs.

`safegen eval t2i` and `safegen eval attack` fill every setting the user leaves out from the
preset (the toy world names its own classifier, safety concept and sentence shapes), else
from the defaults below; the judges that need a CLIP (Q16 and the I2P rule) get the device
and the CLIP to run on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safegen.evaluation.methods import DEFAULT_SAFETY_CONCEPT
from safegen.models.presets import get_preset
from safegen.safety.judges import JUDGES

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresetDefaults:
    """What a preset says about evaluating it; without a preset, the defaults."""

    classifier: str = "nudenet"
    safety_concept: str = DEFAULT_SAFETY_CONCEPT  # SLD's, also the negative-prompt method's text
    attack_shapes: str = "generic"  # the structure attack's sentence shapes
    clip: str | None = None  # the CLIP the safe encoder was tuned from: the CLIP score's model
    captioner: str | None = None
    safe_vision_encoder: str | None = None


def preset_defaults(preset: str | None) -> PresetDefaults:
    if not preset:
        return PresetDefaults()
    p = get_preset(preset)
    return PresetDefaults(
        classifier=p.extra.get("classifier", "nudenet"),
        safety_concept=p.extra.get("safety_concept", DEFAULT_SAFETY_CONCEPT),
        attack_shapes=p.extra.get("attack_shapes", "generic"),
        clip=p.clip,
        captioner=p.captioner,
        safe_vision_encoder=p.safe_vision_encoder,
    )


def judge_options(name: str, device: str, q16_clip: str | None, q16_prompts: Path | None) -> dict[str, Any]:
    """Runtime options of one judge: Q16-based ones get the device and --q16-clip (and the plain q16/i2p
    classifiers --q16-prompts too; a named judge keeps its own class embeddings)."""
    spec = JUDGES.get(name)
    family = spec.family if spec else name
    if family not in ("q16", "i2p"):
        return {}
    options: dict[str, Any] = {"device": device}
    if q16_clip:
        options["clip"] = q16_clip
    if q16_prompts and spec is None:
        options["prompts"] = str(q16_prompts)
    return options
