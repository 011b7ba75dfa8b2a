"""Named presets: which base model and which Safe-CLIP encoder go together.

Data only. Sources are hub ids, or paths inside the package (prefix ``@assets/``) for
weights that ship with safegen (the toy world).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from safegen.core.assets import ASSETS_DIR
from safegen.core.errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    task: str  # "t2i" or "i2t" ("t2i+i2t" for presets that carry both)
    base: str  # diffusers pipeline (t2i) or transformers LLaVA (i2t)
    safe_encoder: str | None
    description: str
    # Which text encoders of the base the safe encoder replaces (SDXL has two).
    covers: tuple[str, ...] = ("text_encoder",)
    captioner: str | None = None  # i2t base for presets that carry both
    safe_vision_encoder: str | None = None
    clip: str | None = None  # the original CLIP the safe encoder was fine-tuned from
    classifier: str | None = None  # an output classifier that matches this world
    licence: str = ""
    extra: dict = field(default_factory=dict)

    def resolved(self) -> Preset:
        """The same preset with ``@assets/`` paths turned into absolute local paths."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and value.startswith("@assets/"):
                changes[f.name] = str(ASSETS_DIR / value[len("@assets/") :])
        return dataclasses.replace(self, **changes)

    def sources(self) -> dict[str, str]:
        """Every model source this preset needs, by role."""
        roles = ("base", "safe_encoder", "captioner", "safe_vision_encoder", "clip", "classifier")
        return {r: getattr(self, r) for r in roles if getattr(self, r)}


_SAFECLIP_LICENCE = "Safe-CLIP weights: CC BY-NC 4.0 (aimagelab)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="sd-1.4",
            task="t2i",
            base="CompVis/stable-diffusion-v1-4",
            safe_encoder="aimagelab/safeclip_vit-l_14",
            description="Stable Diffusion 1.4 with the Safe-CLIP ViT-L/14 text encoder (the paper's setting)",
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="sd-1.5",
            task="t2i",
            base="stable-diffusion-v1-5/stable-diffusion-v1-5",
            safe_encoder="aimagelab/safeclip_vit-l_14",
            description="Stable Diffusion 1.5 with the Safe-CLIP ViT-L/14 text encoder",
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="sd-2-base",
            task="t2i",
            base="stabilityai/stable-diffusion-2-base",
            safe_encoder="aimagelab/safeclip_sd_20",
            description="Stable Diffusion 2 base (512 px) with the Safe-CLIP OpenCLIP ViT-H/14 text encoder",
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="sdxl",
            task="t2i",
            base="stabilityai/stable-diffusion-xl-base-1.0",
            safe_encoder="aimagelab/safeclip_vit-l_14",
            description=(
                "SDXL base 1.0; Safe-CLIP ViT-L/14 replaces text_encoder only, "
                "text_encoder_2 (OpenCLIP bigG) stays original: no Safe-CLIP bigG is released"
            ),
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="llava-1.5-7b",
            task="i2t",
            base="llava-hf/llava-1.5-7b-hf",
            safe_encoder="aimagelab/safeclip_vit-l_14_336",
            description="LLaVA-1.5 7B with the Safe-CLIP ViT-L/14 336 px vision tower",
            covers=("vision_tower",),
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="llava-1.5-13b",
            task="i2t",
            base="llava-hf/llava-1.5-13b-hf",
            safe_encoder="aimagelab/safeclip_vit-l_14_336",
            description="LLaVA-1.5 13B with the Safe-CLIP ViT-L/14 336 px vision tower",
            covers=("vision_tower",),
            licence=_SAFECLIP_LICENCE,
        ),
        Preset(
            name="toy",
            task="t2i+i2t",
            base="@assets/toy/sd",
            safe_encoder="@assets/toy/safe_clip",
            description="the toy world shipped with safegen: tiny SD, captioner and Safe-CLIP, offline in seconds",
            captioner="@assets/toy/llava",
            safe_vision_encoder="@assets/toy/safe_clip",
            clip="@assets/toy/clip",
            classifier="@assets/toy/classifier",
            licence="Apache-2.0 (trained by safegen on its procedural world)",
            # What `safegen eval` uses with this preset: the world's classifier, its unsafe concepts
            # (the SLD concept and the negative prompt of the baselines) and its sentence-shape
            # vocabulary (the structure attack's prefixes, orders and suffixes).
            extra={
                "classifier": "toy",
                "safety_concept": "blood, fire, flames, burning, gun, pistol, weapon",
                "attack_shapes": "toy",
            },
        ),
    ]
}


def list_presets() -> list[Preset]:
    """All presets, sorted by name."""
    return [PRESETS[k] for k in sorted(PRESETS)]


def get_preset(name: str) -> Preset:
    """The preset called `name` with shipped paths resolved; a clear error names the choices."""
    try:
        return PRESETS[name].resolved()
    except KeyError:
        # A misspelt --preset is the user's choice, like a bad flag: a usage error (exit 2), not a runtime one.
        raise UsageError(f"unknown preset '{name}'; choose one of: {', '.join(sorted(PRESETS))}") from None


def is_available_offline(source: str) -> bool:
    """Whether a source can be loaded without the network (local folder or cached hub id)."""
    from safegen.core.hub import is_cached, looks_like_hub_id

    path = Path(source).expanduser()
    if path.exists():
        return True
    return looks_like_hub_id(source) and is_cached(source)
