"""Stable Diffusion text-to-image pipelines whose CLIP text encoder is a Safe-CLIP encoder.

The classes subclass diffusers' own pipelines (see :mod:`safegen.pipelines.safe_pipeline`
for what changes), so every call argument, scheduler, LoRA loader and offloading helper
works unchanged; only the text encoder's weights differ. ``safe_encoder=None`` gives the
original model, so the same code is the A/B baseline. Saved folders are plain diffusers
pipelines with a ``safegen.json`` beside them recording which safe encoder is baked in.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput

from safegen.pipelines.safe_pipeline import SAFEGEN_CONFIG, SafePipelineMixin, register_safe_output

__all__ = [
    "SAFEGEN_CONFIG",
    "SafeStableDiffusionPipeline",
    "SafeStableDiffusionPipelineOutput",
    "SafeStableDiffusionXLPipeline",
    "SafeStableDiffusionXLPipelineOutput",
]


@register_safe_output
@dataclass
class SafeStableDiffusionPipelineOutput(StableDiffusionPipelineOutput):
    """diffusers' output plus the id of the safe encoder that produced it.

    Args:
        images: the generated images (PIL list or array, per ``output_type``).
        nsfw_content_detected: diffusers' safety-checker flags (None when no checker ran).
        safe_encoder_id: the Safe-CLIP encoder used, None for the original model. Not part of
            ``to_tuple()``, which stays diffusers' ``(images,)`` or ``(images, nsfw)``.
    """

    safe_encoder_id: str | None = None


@register_safe_output
@dataclass
class SafeStableDiffusionXLPipelineOutput(StableDiffusionXLPipelineOutput):
    """diffusers' SDXL output plus ``safe_encoder_id`` (not part of ``to_tuple()``)."""

    safe_encoder_id: str | None = None


class SafeStableDiffusionPipeline(SafePipelineMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x with a Safe-CLIP text encoder.

    >>> pipe = SafeStableDiffusionPipeline.from_pretrained(
    ...     "CompVis/stable-diffusion-v1-4", safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> out = pipe("a photo of ...", num_inference_steps=30)
    >>> out.images, out.nsfw_content_detected, out.safe_encoder_id
    """


class SafeStableDiffusionXLPipeline(SafePipelineMixin, StableDiffusionXLPipeline):
    """SDXL with Safe-CLIP text encoders.

    SDXL reads two text encoders: ``text_encoder`` (CLIP ViT-L/14, covered by the released
    ``aimagelab/safeclip_vit-l_14``) and ``text_encoder_2`` (OpenCLIP ViT-bigG/14, for which
    no Safe-CLIP is released). ``safe_encoder`` replaces the first, ``safe_encoder_2`` the
    second; an encoder passed for the wrong slot is refused by the shape check. The slots left
    original are listed in ``uncovered_text_encoders`` and named once on stderr.
    """
